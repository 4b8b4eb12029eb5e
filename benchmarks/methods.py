"""Methods the quality harness compares: per-clip stepper factories (bicubic, torch, ONNX Runtime) and model loading.

A *stepper* maps one uint8 RGB LR frame (h, w, 3) to an SR frame (sh, sw, 3), uint8 or float RGB
in [0, 1], keeping whatever state it needs between calls; a *factory* returns a fresh stepper
(zero state) for each clip. ``recurrent=False`` builds the frame-by-frame variant of a model: its
hidden state is reset to zeros before every frame.

``--weights FILE.safetensors`` holds a state dict with metadata ``{"model": name, "scale": "2"}``;
``--weights FILE.onnx`` an exported graph (``lr, hidden_in*`` -> ``sr, hidden_out*``) whose
``vsr.hidden`` metadata is a JSON list of ``[channels, factor]``: the zero state of input i has
shape (1, channels, h * factor, w * factor). Without ``--weights`` the shipped safetensors of the
model (default: ``engine.registry.default_model(scale)``) are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError
from training.degrade import imresize

Stepper = Callable[[np.ndarray], np.ndarray]  # LR uint8 (h, w, 3) -> SR (H, W, 3) uint8 or float in [0, 1]
StepperFactory = Callable[[], Stepper]  # fresh zero-state stepper for one clip


def bicubic_factory(scale: int) -> StepperFactory:
    """The ``bicubic`` method: MATLAB imresize of the uint8 LR up by ``scale``."""

    def factory() -> Stepper:
        return lambda lr: imresize(lr, (lr.shape[0] * scale, lr.shape[1] * scale))

    return factory


def lanczos_factory(scale: int) -> StepperFactory:
    """The ``lanczos`` method: FFmpeg swscale Lanczos of the uint8 LR up by ``scale``."""
    from benchmarks.lr_protocol import lanczos_resize

    def factory() -> Stepper:
        return lambda lr: lanczos_resize(lr, lr.shape[1] * scale, lr.shape[0] * scale)

    return factory


def luma_plane(lr: np.ndarray) -> np.ndarray:
    """(1, 1, h, w) uint8 BT.601 luma of a uint8 RGB frame: the ``y`` plane a decoder would give the motion estimate."""
    y = lr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[None, None]


def motion_source(wanted: bool) -> Callable[[np.ndarray, bool], np.ndarray | None]:
    """Per-clip motion of the LR frames (engine/flow.py) when the model's history blend follows it, else None."""
    if not wanted:
        return lambda lr, fresh: None
    from engine.flow import MotionEstimator

    estimate = MotionEstimator()
    return lambda lr, fresh: estimate(luma_plane(lr), fresh)


def torch_factory(model: Any, recurrent: bool = True) -> StepperFactory:
    """Steppers running ``model.step`` under ``torch.no_grad``; state carried when ``recurrent``. Models with an
    aligned history blend get the engine's motion estimate (int32, 1/64 pixel, as the graphs do)."""
    import torch

    from engine.graph import MOTION_UNIT

    device = next(model.parameters()).device

    def factory() -> Stepper:
        hidden = None
        motion_of = motion_source(bool(getattr(model.cfg, "motion_blend", 0.0)))

        def step(lr: np.ndarray) -> np.ndarray:
            nonlocal hidden
            x = torch.from_numpy(np.ascontiguousarray(lr)).to(device).permute(2, 0, 1)[None].float() / 255.0
            m = motion_of(lr, hidden is None)
            motion = None if m is None else torch.from_numpy(m).to(device).float() / MOTION_UNIT
            with torch.no_grad():
                sr, new_hidden = model.step(x, hidden, motion=motion)
            hidden = new_hidden if recurrent else None
            return sr[0].permute(1, 2, 0).float().cpu().numpy()

        return step

    return factory


def onnx_factory(path: Path, recurrent: bool = True) -> StepperFactory:
    """Steppers running an exported video graph (engine/graph.py) with ONNX Runtime on full-range RGB planes."""
    from engine import colour
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.step import step as run_step

    backend = OnnxRuntimeBackend(path, threads=1)  # leave the other cores to training jobs
    rgb = {"to_rgb": colour.to_rgb(colour.RGB, colour.FULL, 8), "from_rgb": colour.from_rgb(colour.RGB, colour.FULL, 8),
           "peak": colour.peak(8)}

    def factory() -> Stepper:
        state: dict[str, Any] = {}
        motion_of = motion_source(backend.io_spec().motion)

        def step(lr: np.ndarray) -> np.ndarray:
            nonlocal state
            planes = lr.transpose(2, 0, 1)[None].astype(backend.io_spec().frame_dtype)  # (1, 3, h, w) R, G, B
            feeds = {"y": np.ascontiguousarray(planes[:, 1:2]), "uv": np.ascontiguousarray(planes[:, [2, 0]]), **rgb}
            motion = motion_of(lr, not state)
            if motion is not None:
                feeds["motion"] = motion
            out, new_state = run_step(backend, feeds, state)
            state = new_state if recurrent else {}
            g, br = out["y_out"][0, 0], out["uv_out"][0]
            return np.stack([br[1], g, br[0]], axis=-1).astype(np.float32) / 255.0

        return step

    return factory


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to be benchmarked, and what the report says about it."""

    name: str  # model name (engine.models.MODELS key, or the ONNX file stem)
    weights: Path  # file the weights came from
    sha256: str  # first 16 hex digits of the weights file's SHA-256
    make: Callable[[bool], StepperFactory]  # recurrent flag -> stepper factory


def sha256_prefix(path: Path, digits: int = 16) -> str:
    """First ``digits`` hex digits of the SHA-256 of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:digits]


def _known_model(name: str) -> str:
    """``name`` if it is in engine.models.MODELS, else ModelError."""
    from engine.models import MODELS

    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return name


def load_torch_model(path: Path, scale: int, model: str | None = None) -> tuple[str, Any]:
    """Build the model named by ``model`` or the file's metadata and load ``path`` into it (eval mode)."""
    from safetensors import safe_open

    from engine.models import build_model, load_weights

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError for a bad header
        raise ModelError(f"cannot read {path.name} as safetensors: {e}") from e
    if model and meta.get("model") and meta["model"] != model:
        raise ModelError(f"{path.name} holds {meta['model']} weights, not {model}; drop --model or fix it")
    name = model or meta.get("model")
    if not name:
        raise ModelError(f"{path.name} has no 'model' metadata; pass --model NAME to say which architecture")
    if meta.get("scale") and int(meta["scale"]) != scale:
        raise ModelError(f"{path.name} is a x{meta['scale']} model; run with --scale {meta['scale']}")
    net = build_model(_known_model(name), scale)
    try:
        load_weights(net, path)
    except RuntimeError as e:  # strict load: missing/unexpected keys or shape mismatch
        raise ModelError(f"{path.name} does not fit {name} x{scale}: {str(e).splitlines()[0]}") from e
    return name, net.eval()


def load_model(scale: int, model: str | None = None, weights: str | Path | None = None) -> LoadedModel:
    """Resolve ``--model`` / ``--weights`` to a :class:`LoadedModel` (see the module docstring)."""
    if weights is None:
        from engine.registry import default_model, shipped_file

        model = _known_model(model or default_model(scale))
        weights = shipped_file(model, scale, ".safetensors")
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"weights file {path} not found")
    if path.suffix == ".onnx":
        onnx_factory(path)  # fail now, not mid-run, on a bad file
        return LoadedModel(path.stem, path, sha256_prefix(path), lambda rec: onnx_factory(path, rec))
    if path.suffix != ".safetensors":
        raise ModelError(f"weights {path.name}: expected a .safetensors or .onnx file")
    name, net = load_torch_model(path, scale, model)
    return LoadedModel(name, path, sha256_prefix(path), lambda rec: torch_factory(net, rec))
