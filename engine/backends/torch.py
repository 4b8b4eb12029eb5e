"""PyTorch backend: builds the model from .safetensors weights; needs the optional torch extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, Hidden, IoSpec
from engine.errors import BackendError, ModelError


def torch_missing_reason() -> str | None:
    """None when torch and safetensors can be imported, else why not."""
    for mod in ("torch", "safetensors"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'vsr-upscale[torch]')"
    return None


def read_meta(path: Path) -> dict[str, str]:
    """The ``{"model": ..., "scale": ...}`` metadata stored in a .safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "numpy") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own SafetensorError
        raise ModelError(f"cannot read {path} as safetensors: {e}") from None


class TorchBackend(Backend):
    """Eager PyTorch step; hidden state stays on the device between frames."""

    def __init__(self, path: str | Path, device: str = "cpu", model: str | None = None) -> None:
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            raise ModelError(f"{path.name} is ONNX; the torch backend needs .safetensors weights (or use --backend onnxruntime)")
        if not path.is_file():
            raise ModelError(f"weights file {path} not found")
        missing = torch_missing_reason()
        if missing:
            raise BackendError(f"torch backend not available: {missing}")
        import torch

        from engine.models import MODELS, build_model, load_weights

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch backend: no CUDA device visible to torch")
        meta = read_meta(path)
        name = model or meta.get("model")
        if name not in MODELS:
            raise ModelError(f"{path.name}: unknown model {name!r} (known: {', '.join(sorted(MODELS))}); pass --model")
        scale = int(meta.get("scale", 0) or 0)
        if scale not in (2, 3, 4):
            raise ModelError(f"{path.name}: metadata has no valid 'scale' (got {meta.get('scale')!r})")
        try:
            net = load_weights(build_model(name, scale), path)
        except (RuntimeError, KeyError) as e:
            raise ModelError(f"{path.name} does not fit model {name} x{scale}: {str(e).splitlines()[0]}") from None
        self._torch = torch
        self._device = torch.device(device)
        self._net = net.eval().to(self._device)
        self._spec = IoSpec(model=name, scale=scale, hidden=tuple(net.hidden_spec()), weights=str(path))
        self.name = f"torch-{device}"

    def io_spec(self) -> IoSpec:
        return self._spec

    def run(self, lr: np.ndarray, hidden: Hidden | None) -> tuple[np.ndarray, Hidden]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(lr).to(self._device, non_blocking=True)
            sr, new_hidden = self._net.step(x, hidden)
            return sr.float().cpu().numpy(), tuple(new_hidden)

    def close(self) -> None:
        self._net = None  # type: ignore[assignment]
