"""Model registry: names map to constructors in an explicit dict (torch is needed here)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from engine.models.rvsr import RVSR, RVSRConfig

# name -> default config (scale is set per build). Sizes: see benchmarks/RESULTS.md model cards.
MODELS: dict[str, RVSRConfig] = {
    "rvsr-s": RVSRConfig(channels=32, blocks=3, hidden=16),  # CPU model
    "rvsr-m": RVSRConfig(channels=48, blocks=4, hidden=32),  # GPU real-time model
    "rvsr-tiny": RVSRConfig(channels=8, blocks=1, hidden=4),  # tests and smoke runs only
}


def build_model(name: str, scale: int) -> RVSR:
    """Fresh (untrained) model ``name`` at ``scale``."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return RVSR(replace(MODELS[name], scale=scale))


def model_config(name: str, scale: int) -> dict:
    """The config dict recorded beside weights."""
    return {"model": name, **asdict(replace(MODELS[name], scale=scale))}


def load_weights(model: RVSR, path: str | Path) -> RVSR:
    """Load safetensors weights into ``model`` (strict)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def count_macs(model: RVSR, h: int = 180, w: int = 320) -> int:
    """Multiply-accumulates of one step at input size h x w (convolutions only)."""
    macs = 0
    for m in model.modules():
        if isinstance(m, __import__("torch").nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            macs += m.in_channels * m.out_channels * k * h * w // (m.groups or 1)
    return macs
