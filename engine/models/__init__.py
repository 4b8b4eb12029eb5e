"""Model registry: names map to constructors in an explicit dict (torch is needed here)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from engine.models.rdg import RDG, RDGConfig
from engine.models.rvsr import RVSR, RVSRConfig

# name -> default config (scale is set per build). Sizes: see benchmarks/RESULTS.md model cards.
MODELS: dict[str, RVSRConfig] = {
    "rvsr-s": RVSRConfig(channels=32, blocks=3, hidden=16),  # CPU model
    "rvsr-m": RVSRConfig(channels=48, blocks=4, hidden=32, slope=0.1),  # GPU real-time model
    # the same cost as rvsr-m (9.6 vs 8.8 GMAC per 180x320 step at x4) spent on depth: 15 convolutions, not 6
    "rvsr-md": RVSRConfig(channels=32, blocks=13, hidden=32, slope=0.1, he_init=True),
    # the same two with block-matching alignment of the recurrent state (RVSRConfig.align)
    "rvsr-sa": RVSRConfig(channels=32, blocks=3, hidden=16, align=3),
    "rvsr-ma": RVSRConfig(channels=48, blocks=4, hidden=32, slope=0.1, align=3),
    "rvsr-tiny": RVSRConfig(channels=8, blocks=1, hidden=4),  # tests and smoke runs only
}
# real-world weights (training --degradation real: codec, noise, blur) of the same architectures, plus the history
# blend (RVSR.blend_history, no weights). Training gives no motion, so it runs through the still blend (blend,
# blend_levels: the steadiest setting that cost no PSNR, session 6); the engine gives the motion estimate
# (engine/flow.py) and the blend follows it (motion_blend, motion_levels: session 12). Both chosen on training clips
# through x264 CRF 28 (benchmarks/RESULTS.md).
MODELS["rvsr-s-real"] = replace(MODELS["rvsr-s"], blend=0.7, blend_levels=3.0, motion_blend=0.9, motion_levels=6.0)
MODELS["rvsr-m-real"] = replace(MODELS["rvsr-m"], blend=0.7, blend_levels=6.0, motion_blend=0.9, motion_levels=10.0)
# the BI weights with a light blend along the motion, for clean input (the default for lossless input at x2 and x4;
# at x3 the real-world model is as sharp on clean input and stays): the narrow agreement scale averages the little
# codec noise of high-quality files without softening detail. No retraining; the still blend (no motion) has the
# same strength and scale. Chosen on training clips (RESULTS.md, session 13).
MODELS["rvsr-s-clean"] = replace(MODELS["rvsr-s"], blend=0.9, blend_levels=2.0, motion_blend=0.9, motion_levels=2.0)
MODELS["rvsr-m-clean"] = replace(MODELS["rvsr-m"], blend=0.9, blend_levels=3.0, motion_blend=0.9, motion_levels=3.0)

# G-buffer-guided models (step takes gbuffer=GBufferBatch): name -> default config. Each is sized to about the
# multiply-accumulates per render pixel of the RGB-only model on the same line (see count_macs).
GBUFFER_MODELS: dict[str, RDGConfig] = {
    "rdg-s": RDGConfig(channels=48, blocks=4, expand=2, hidden=16, guide=16),  # ~ rvsr-s cost
    "rdg-m": RDGConfig(channels=64, blocks=7, expand=2, hidden=32, guide=24),  # ~ rvsr-m cost
    "rdg-tiny": RDGConfig(channels=9, blocks=1, expand=1, hidden=4, guide=4),  # tests and smoke runs only
}


def build_model(name: str, scale: int) -> RVSR | RDG:
    """Fresh (untrained) model ``name`` at ``scale``."""
    if name in GBUFFER_MODELS:
        return RDG(replace(GBUFFER_MODELS[name], scale=scale))
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted([*MODELS, *GBUFFER_MODELS]))}")
    return RVSR(replace(MODELS[name], scale=scale))


def model_config(name: str, scale: int) -> dict:
    """The config dict recorded beside weights."""
    cfg = GBUFFER_MODELS[name] if name in GBUFFER_MODELS else MODELS[name]
    return {"model": name, **asdict(replace(cfg, scale=scale))}


def load_weights(model: RVSR | RDG, path: str | Path) -> RVSR | RDG:
    """Load safetensors weights into ``model`` (strict)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def count_macs(model: RVSR | RDG, h: int = 180, w: int = 320) -> int:
    """Multiply-accumulates of one step at input size h x w (convolutions only)."""
    macs = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            macs += m.in_channels * m.out_channels * k * h * w // (m.groups or 1)
    return macs
