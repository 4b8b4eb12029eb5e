"""PyTorch backend: builds the model from .safetensors weights behind the same graph contract; needs torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.errors import BackendError, ModelError
from engine.graph import GBUFFER, VIDEO, GraphSpec, check_scale


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
        raise ModelError(f"cannot read {path} as safetensors: {str(e).splitlines()[0]}") from None


def load_net(path: Path, model: str | None = None, scale: int | None = None) -> tuple[str, int, Any]:
    """(name, scale, eval-mode module) from safetensors weights whose metadata is validated first."""
    from engine.models import GBUFFER_MODELS, MODELS, build_model, load_weights

    meta = read_meta(path)
    name = model or meta.get("model")
    if name not in MODELS and name not in GBUFFER_MODELS:
        known = ", ".join(sorted([*MODELS, *GBUFFER_MODELS]))
        raise ModelError(f"{path.name}: unknown model {name!r} (known: {known}); pass --model")
    if meta.get("model", name) != name:
        raise ModelError(f"{path.name} holds model {meta['model']!r}, not {name!r}")
    found = check_scale(meta.get("scale", scale), path.name)
    if scale is not None and found != scale:
        raise ModelError(f"{path.name} is a x{found} model, not x{scale}")
    try:
        net = load_weights(build_model(name, found), path)
    except (RuntimeError, KeyError) as e:
        raise ModelError(f"{path.name} does not fit model {name} x{found}: {str(e).splitlines()[0]}") from None
    return name, found, net.eval()


class TorchBackend(Backend):
    """Eager PyTorch step; hidden state stays on the device between frames."""

    def __init__(self, path: str | Path, device: str = "cpu", model: str | None = None,
                 frame_dtype: str = "uint8") -> None:
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            raise ModelError(f"{path.name} is ONNX; the torch backend needs .safetensors weights (or use --backend onnxruntime)")
        if not path.is_file():
            raise ModelError(f"weights file {path} not found")
        missing = torch_missing_reason()
        if missing:
            raise BackendError(f"torch backend not available: {missing}")
        import torch

        from engine.models import GBUFFER_MODELS
        from engine.models.frame_io import VideoStep

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch backend: no CUDA device visible to torch")
        name, scale, net = load_net(path, model)
        kind = GBUFFER if name in GBUFFER_MODELS else VIDEO
        if kind == VIDEO:
            net = VideoStep(net, getattr(torch, frame_dtype))
        else:
            frame_dtype = "float32"
        self._torch, self._device = torch, torch.device(device)
        self._net = net.to(self._device)
        self._spec = GraphSpec(kind=kind, model=name, scale=scale, hidden=tuple(net.hidden_spec()),
                               frame_dtype=frame_dtype, weights=str(path))
        self.name = f"torch-{device}"

    def io_spec(self) -> GraphSpec:
        return self._spec

    def _tensor(self, x: Any) -> Any:
        torch = self._torch
        if isinstance(x, np.ndarray):
            t = torch.from_numpy(x if x.flags.writeable else x.copy())
        elif isinstance(x, torch.Tensor):
            t = x
        else:
            t = torch.from_dlpack(x)
        return t.to(self._device, non_blocking=True)

    def run(self, feeds: Arrays) -> dict[str, Any]:
        if self._net is None:
            raise BackendError("this backend was closed; open a new one")
        spec = self._spec
        args = [self._tensor(feeds[k]) for k in spec.inputs if k in feeds]
        host = isinstance(feeds[spec.frame_inputs[0]], np.ndarray)
        with self._torch.inference_mode():
            res = self._net(*args)
        out = dict(zip(spec.outputs, res))
        if host:
            for k in spec.frame_outputs:
                out[k] = out[k].cpu().numpy()
        return out

    def close(self) -> None:
        self._net = None  # type: ignore[assignment]
