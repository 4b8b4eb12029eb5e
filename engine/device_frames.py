"""NVDEC frames kept on the GPU (PyAV >= 18): nv12/p010 planes read through DLPack into the graph's y/uv planes."""

from __future__ import annotations

from typing import Any

import numpy as np

SEMI_PLANAR: dict[str, int] = {"nv12": 8, "p010le": 10, "p016le": 16}  # NVDEC's layouts -> bits per sample
DEVICE_BACKENDS = ("torch-cuda",)  # backends whose run() takes CUDA tensors as frame inputs (engine/backends/)


def device_frames_missing() -> str | None:
    """None when this PyAV keeps NVDEC frames on the device and exports their planes by DLPack, else why not."""
    import av

    if not hasattr(av.VideoFrame, "sw_format"):
        return f"PyAV {av.__version__} cannot hand NVDEC frames over by DLPack (needs av >= 18)"
    return None


def is_hw_frame(frame: Any) -> bool:
    """True for a frame whose samples are in device memory (NVDEC with ``HWAccel(is_hw_owned=True)``)."""
    return getattr(frame, "sw_format", None) is not None


def sample_format(frame: Any) -> Any:
    """The av.VideoFormat of the samples: a hardware frame's ``sw_format`` (e.g. nv12), else its own format."""
    return getattr(frame, "sw_format", None) or frame.format


def download(frame: Any) -> Any:
    """A hardware frame copied to host memory in its sample format (PyAV's reformat transfers it first)."""
    return frame.reformat(format=sample_format(frame).name) if is_hw_frame(frame) else frame


class DevicePlanes:
    """Turns nv12/p010/p016 frames into the graph's ``y`` (1, 1, H, W) and ``uv`` (1, 2, H/2, W/2) torch tensors on
    the frames' device, without a host copy: each plane is read through DLPack (PyAV's export of CUDA frames; host
    frames of these layouts take the same path on the CPU). Needs torch."""

    def __init__(self, size: tuple[int, int], dtype: str, thumb: tuple[int, int], full_range: bool = False,
                 device: str = "cuda") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)  # where NVDEC writes (FFmpeg's default CUDA device) and the constants go
        self.size = size  # (width, height) of the stream's first frame: stragglers are resized to it (bicubic)
        self.dtype = getattr(torch, dtype)  # the graph's frame dtype, uint8 or uint16
        self.thumb = thumb  # (width, height) of the scene-cut thumbnail
        self.full_range = full_range  # luma uses the full code range; else 16-235 (scaled by depth), as swscale's grey
        self.bits = 8  # bits per sample of the latest frame (its samples are right-aligned: peak 2^bits - 1)

    def __call__(self, frame: Any) -> dict[str, Any]:
        """``frame`` -> ``{"y", "uv"}`` on its device, samples right-aligned like the host path's yuv420p*."""
        from torch.utils.dlpack import from_dlpack

        name = sample_format(frame).name
        if name not in SEMI_PLANAR:
            raise ValueError(f"device frames must be nv12, p010le or p016le, got {name}")
        # the capsules, not the planes: PyAV's CUDA export refuses a stream argument (FFmpeg and torch share the
        # legacy default stream, which orders NVDEC's copy before the kernels that read it)
        y, uv = (from_dlpack(p.__dlpack__()) for p in frame.planes[:2])
        shift = 16 - SEMI_PLANAR[name] if y.dtype == self.torch.uint16 else 0  # p010: 10 bits in the top of 16
        y, uv = y[None, None], uv.permute(2, 0, 1)[None]
        if shift:
            y, uv = (x.to(self.torch.int32) >> shift for x in (y, uv))
        if (frame.width, frame.height) != self.size:
            y, uv = self._resize(y), self._resize(uv)
        self.bits = SEMI_PLANAR[name]
        # contiguous copies in the graph's dtype: the decoder's surface goes back to its pool at once
        return {"y": y.to(self.dtype).contiguous(), "uv": uv.to(self.dtype).contiguous()}

    def _resize(self, x: Any) -> Any:
        import torch.nn.functional as F

        w, h = self.size
        sub = 1 if x.shape[1] == 1 else 2  # uv planes are 4:2:0
        peak = float(self.torch.iinfo(self.dtype).max)
        out = F.interpolate(x.float(), size=(h // sub, w // sub), mode="bicubic", align_corners=False)
        return out.round().clamp(0, peak)

    def thumbnail(self, y: Any) -> np.ndarray:
        """Grey thumbnail (0-255) of a ``y`` plane for the scene-cut detector: a few hundred bytes read back."""
        import torch.nn.functional as F

        w, h = self.thumb
        unit = 2 ** (self.bits - 8)  # one 8-bit code value in this depth
        black, span = (0.0, 2**self.bits - 1.0) if self.full_range else (16.0 * unit, 219.0 * unit)
        small = (F.adaptive_avg_pool2d(y.float(), (h, w))[0, 0] - black) * (255.0 / span)
        return small.clamp(0, 255).cpu().numpy()  # waits for the device: once per frame, on the decode thread

    def upload(self, constants: dict[str, Any]) -> dict[str, Any]:
        """The per-stream constants (colour matrices, peak) as tensors on the frames' device, copied once."""
        return {k: self.torch.from_numpy(np.asarray(v)).to(self.device) for k, v in constants.items()}
