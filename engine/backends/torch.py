"""PyTorch backend: builds the model from .safetensors weights behind the same graph contract; needs torch."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.backends.torch_static import StaticRunner, static_buffers
from engine.errors import BackendError, ModelError
from engine.graph import GBUFFER, VIDEO, GraphSpec, check_scale, hidden_names

PRECISIONS = {"fp32": "float32", "fp16": "float16"}  # precision -> torch/numpy dtype of weights and state
CONSTANTS = ("to_rgb", "from_rgb", "peak")  # per-stream inputs: copied to the device only when they change


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


@dataclass(frozen=True)
class TorchOptions:
    """How the torch backend runs the step (defaults: :func:`default_options` per device)."""

    precision: str = "fp32"  # "fp32" or "fp16": weights, activations and hidden state (video models; colour maths fp32)
    channels_last: bool = False  # NHWC weights, activations and state (what tensor-core convolutions want)
    static: bool = False  # fixed buffers per input size (torch_static.StaticRunner); on CUDA one CUDA graph each


def default_options(device: str) -> TorchOptions:
    """CUDA: fp16, channels_last, CUDA graphs (the fast path); CPU: eager fp32 (the reference)."""
    return TorchOptions("fp16", True, True) if device == "cuda" else TorchOptions()


class TorchBackend(Backend):
    """PyTorch step; the hidden state stays on the device between frames (static buffers with ``options.static``)."""

    def __init__(self, path: str | Path, device: str = "cpu", model: str | None = None,
                 frame_dtype: str = "uint8", options: TorchOptions | None = None) -> None:
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
        opts = options or default_options(device)
        if opts.precision not in PRECISIONS:
            raise BackendError(f"torch backend: precision {opts.precision!r}; use one of {', '.join(PRECISIONS)}")
        name, scale, net = load_net(path, model)
        kind = GBUFFER if name in GBUFFER_MODELS else VIDEO
        if kind == VIDEO:
            net.to(getattr(torch, PRECISIONS[opts.precision]))
            net = VideoStep(net, getattr(torch, frame_dtype))
        else:
            frame_dtype, opts = "float32", replace(opts, precision="fp32")  # G-buffer graphs: float colour, fp32
        if opts.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._torch, self._device, self._opts = torch, torch.device(device), opts
        self._net = net.to(self._device)
        self._spec = GraphSpec(kind=kind, model=name, scale=scale, hidden=tuple(net.hidden_spec()),
                               frame_dtype=frame_dtype, state_dtype=PRECISIONS[opts.precision], weights=str(path),
                               motion=bool(getattr(net, "motion", False)))
        self._runners: dict[tuple[tuple[int, ...], ...], StaticRunner] = {}
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
        host = isinstance(feeds[spec.frame_inputs[0]], np.ndarray)
        try:
            with self._torch.inference_mode():
                out = self._run_static(feeds) if self._opts.static else self._run_eager(feeds)
        except RuntimeError as e:  # shape mismatches, CUDA errors: one line, not a traceback
            raise BackendError(f"torch backend failed: {str(e).splitlines()[0]}") from None
        for k in spec.frame_outputs:
            out[k] = out[k].cpu().numpy() if host else out[k].clone()  # static buffers are overwritten next step
        return out

    def _run_eager(self, feeds: Arrays) -> dict[str, Any]:
        spec = self._spec
        args = [self._tensor(feeds[k]) for k in spec.inputs if k in feeds]
        if self._opts.channels_last:
            args = [a.contiguous(memory_format=self._torch.channels_last) if a.dim() == 4 else a for a in args]
        return dict(zip(spec.outputs, self._net(*args)))

    def _runner(self, feeds: Arrays) -> StaticRunner:
        spec, torch = self._spec, self._torch
        key = tuple(tuple(np.shape(feeds[k])) for k in spec.frame_inputs)
        if key not in self._runners:
            h, w = key[0][-2:]
            dtype = getattr(torch, spec.state_dtype)
            ins, outs = hidden_names(len(spec.hidden))
            state = {n: (s, dtype) for n, s in zip(ins, spec.hidden_shapes(h, w))}
            host = {k: feeds[k] if isinstance(feeds[k], np.ndarray) else self._tensor(feeds[k])
                    for k in spec.frame_inputs}
            bufs = static_buffers(torch, host, spec.inputs, state, self._device, self._opts.channels_last)
            self._runners[key] = StaticRunner(torch, self._net, (spec.inputs, spec.outputs), bufs, ins,
                                              capture=self._device.type == "cuda")
        return self._runners[key]

    def _run_static(self, feeds: Arrays) -> dict[str, Any]:
        spec = self._spec
        runner = self._runner(feeds)
        for k in spec.frame_inputs:
            runner.load(k, feeds[k], constant=k in CONSTANTS)
        given = [k for k in runner.hidden if k in feeds]
        if not given:
            runner.zero_state()
        for k in given:
            runner.load(k, feeds[k])
        out = runner.replay()
        return out | {f"hidden_out{i}": runner.bufs[k] for i, k in enumerate(runner.hidden)}

    def close(self) -> None:
        self._runners = {}
        self._net = None  # type: ignore[assignment]
