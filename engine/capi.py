"""Python side of the C API (capi/vsr_upscale.c): caller buffers in, RenderUpscaler, output buffer filled."""

from __future__ import annotations

from typing import Any

from engine.errors import DeviceError
from engine.render_api import RenderUpscaler


def create(**options: Any) -> RenderUpscaler:
    """``RenderUpscaler(**options)``; the C side leaves out the options the caller left NULL."""
    return RenderUpscaler(**options)


def upscale(up: RenderUpscaler, height: int, width: int, color: memoryview, depth: memoryview, motion: memoryview,
            normals: memoryview | None, albedo: memoryview | None, jitter: tuple[float, float], reset: bool,
            exposure: float | None, out: memoryview) -> None:
    """Upscale one frame given as float32 HWC memoryviews over the caller's memory; write the result into ``out``.

    The inputs are read-only views, so RenderUpscaler copies them (it needs writable tensors) and its history
    never points into the caller's memory; ``out`` is written in place. Nothing here may outlive the call: the
    C side checks that no reference to a view is left afterwards.
    """
    import numpy as np

    def view(buf: memoryview | None) -> np.ndarray | None:
        return None if buf is None else np.frombuffer(buf, np.float32).reshape(height, width, -1)

    sr = up.upscale(view(color), view(depth), view(motion), view(normals), view(albedo), jitter=jitter,
                    reset=reset, exposure=exposure)
    np.copyto(np.frombuffer(out, np.float32).reshape(sr.shape), sr)


class DeviceBuffer:
    """A caller's float32 CUDA buffer, described by ``__cuda_array_interface__`` (v3) for torch to wrap, no copy."""

    def __init__(self, pointer: int, shape: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": "<f4", "data": (pointer, False), "version": 3,
                                         "strides": None}


def cuda_torch() -> Any:
    """torch, when it sees a CUDA device; else a DeviceError saying what is missing."""
    try:
        import torch
    except ImportError:
        raise DeviceError("vsr_upscale_cuda needs torch with CUDA, which is not installed; pass host buffers to "
                          "vsr_upscale") from None
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(f"vsr_upscale_cuda needs a CUDA device; torch {torch.__version__} ({build}) sees none: "
                          "pass host buffers to vsr_upscale")
    return torch


def upscale_cuda(up: RenderUpscaler, height: int, width: int, pointers: tuple[int, ...], channels: tuple[int, ...],
                 jitter: tuple[float, float], reset: bool, exposure: float | None, out: int, stream: int) -> None:
    """Upscale one frame of float32 HWC CUDA buffers (color, depth, motion, normals, albedo; 0 = left out) into the
    CUDA buffer ``out``, as work queued on the CUDA stream ``stream`` (a cudaStream_t; 0 = the legacy default
    stream). Returns without waiting for the device: the caller synchronises the stream before reading ``out``."""
    torch = cuda_torch()
    if up.backend_name.endswith("-cpu"):
        raise DeviceError(f"vsr_upscale_cuda: this upscaler runs on {up.backend_name}; create it with device "
                          "\"cuda\" to pass device pointers")
    queue = torch.cuda.ExternalStream(stream) if stream else torch.cuda.default_stream()
    with torch.cuda.stream(queue):
        arrays = [torch.as_tensor(DeviceBuffer(p, (height, width, c)), device="cuda") if p else None
                  for p, c in zip(pointers, channels)]
        sr = up.upscale(*arrays, jitter=jitter, reset=reset, exposure=exposure)
        torch.as_tensor(DeviceBuffer(out, tuple(sr.shape)), device="cuda").copy_(sr)
