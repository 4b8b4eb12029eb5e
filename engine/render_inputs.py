"""RenderUpscaler's inputs, checks and outputs in the caller's array library (numpy, or torch on its device)."""

from __future__ import annotations

import math

from engine.errors import UsageError, require

# name -> channels per layout, for the frame inputs; None marks "single channel, channel axis optional"
CHANNELS: dict[str, tuple[int, ...] | None] = {"color": (3, 4), "depth": None, "motion": (2,), "normals": (3, 4), "albedo": (3, 4)}
KDL_CPU = 1  # DLPack's kDLCPU; every other device type (CUDA, CUDA host, ROCm, managed...) is read through torch
VALIDATE = (True, False, "first", "every")  # RenderUpscaler(validate=...) values; True = "first" on a device

def fail(msg: str):
    """Raise the UsageError every input check raises."""
    raise UsageError(msg)


def is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


class Xp:
    """The few array operations the upscaler needs, in the colour input's own library: numpy on the host, torch
    where the caller's frames are torch tensors (kept on their device). torch is never imported for numpy input."""

    def __init__(self, like, cache: dict | None = None) -> None:
        self.like = like
        self.torch = is_torch(like)
        self.device = self.torch and like.device.type != "cpu"  # frames on an accelerator: no host syncs
        self._cache = {} if cache is None else cache  # constants already on the colour's device
        if self.torch:
            import torch

            self.lib = torch
        else:
            import numpy as np

            self.lib = np

    def follow(self, x):
        """``x`` (numpy, torch or DLPack) as an array of this library, on the colour's device."""
        if self.torch:
            t = x if is_torch(x) else self.lib.from_dlpack(x) if not hasattr(x, "ctypes") else self.lib.from_numpy(x)
            return t.to(self.like.device)
        return x if hasattr(x, "ctypes") else host_array(x)

    def const(self, values):
        """A float32 constant on the colour's device; made once per device (a host-to-device copy waits)."""
        if not self.torch:
            return self.lib.asarray(values, dtype=self.lib.float32)
        key = (str(self.like.device), tuple(values))
        if key not in self._cache:
            self._cache[key] = self.lib.tensor(values, dtype=self.lib.float32, device=self.like.device)
        return self._cache[key]

    def upload(self, values):
        """A float32 array of per-frame ``values`` on the colour's device, copied asynchronously from pinned memory."""
        if not self.torch:
            return self.lib.asarray(values, dtype=self.lib.float32)
        host = self.lib.tensor(values, dtype=self.lib.float32)
        if self.like.device.type != "cuda":
            return host.to(self.like.device)
        # pinned: the copy is queued on the stream, and the caching host allocator reuses the block once it is done
        return host.pin_memory().to(self.like.device, non_blocking=True)

    def broadcast(self, x, shape):
        return self.lib.broadcast_to(x, tuple(shape))

    def contiguous(self, x):
        return x.float().contiguous() if self.torch else self.lib.ascontiguousarray(x, dtype=self.lib.float32)

    def isfinite(self, x) -> bool:
        return bool(self.lib.isfinite(x).all())

    def resize(self, x, size: tuple[int, int]):
        """(3, H, W) -> (3, h, w) for ``size`` = (w, h), bicubic with antialiasing (torch) / swscale (numpy)."""
        w, h = size
        if self.torch:
            import torch.nn.functional as F

            return F.interpolate(x[None], size=(h, w), mode="bicubic", align_corners=False, antialias=True)[0]
        import av

        frame = av.VideoFrame.from_ndarray(self.lib.ascontiguousarray(x.transpose(1, 2, 0)), format="gbrpf32le")
        return frame.reformat(width=w, height=h, interpolation="BICUBIC").to_ndarray().transpose(2, 0, 1)


def host_array(x):
    """A DLPack array as numpy; device arrays are copied to the host through torch when it is installed."""
    import numpy as np

    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError):
        import torch

        return torch.from_dlpack(x).cpu().numpy()


def dlpack_device(x) -> int:
    """DLPack device type of ``x`` (1 = CPU, 2 = CUDA, ...); producers without ``__dlpack_device__`` are taken as CPU."""
    try:
        return int(x.__dlpack_device__()[0])
    except (AttributeError, TypeError, ValueError, IndexError):
        return KDL_CPU


def device_tensor(name: str, x):
    """A device array (DLPack or ``__cuda_array_interface__``: CuPy, Numba, JAX...) as a torch tensor, no copy."""
    require("torch", "torch", f"RenderUpscaler with a device array as {name}")
    import torch

    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x)
    return torch.as_tensor(x, device="cuda")  # __cuda_array_interface__ only: torch wraps the pointer


def as_array(name: str, v, layout: str):
    """numpy / torch / DLPack -> float32 (C, H, W) in the array's own library and device (no copy when possible)."""
    import numpy as np

    if isinstance(v, np.ndarray) or is_torch(v):
        x = v
    elif hasattr(v, "__dlpack__") and dlpack_device(v) == KDL_CPU:
        x = host_array(v)
    elif hasattr(v, "__dlpack__") or hasattr(v, "__cuda_array_interface__"):
        x = device_tensor(name, v)
    else:
        fail(f"{name} must be a numpy array, a torch tensor or a DLPack array, got {type(v).__name__}")
    kind = str(x.dtype).removeprefix("torch.")
    if kind == "uint8" and name in ("color", "albedo"):
        x = x / 255.0
    elif kind.startswith(("float", "bfloat")):
        pass
    else:
        kinds = "uint8 or float" if name in ("color", "albedo") else "float (16, 32 or 64 bit)"
        fail(f"{name} has dtype {kind}; expected {kinds}")
    x = x.float() if is_torch(x) else x.astype(np.float32, copy=False)
    want = CHANNELS[name]
    c_axis = 2 if layout == "hwc" else 0
    if want is None:  # depth: (H, W) or with a single channel axis
        if x.ndim == 3 and x.shape[c_axis] == 1:
            x = x[..., 0] if layout == "hwc" else x[0]
        if x.ndim != 2:
            fail(f"depth must be (H, W) or (H, W, 1), got shape {tuple(x.shape)}")
        return x[None]
    if x.ndim != 3 or x.shape[c_axis] not in want:
        form = "(H, W, C)" if layout == "hwc" else "(C, H, W)"
        other = "chw" if layout == "hwc" else "hwc"
        fail(f"{name} must be {form} with C in {list(want)}, got shape {tuple(x.shape)} "
              f"(one frame, no batch axis; layout={other!r} reads the other channel order)")
    return (x.permute(2, 0, 1) if is_torch(x) else x.transpose(2, 0, 1)) if layout == "hwc" else x


def check_jitter(jitter) -> tuple[float, float]:
    try:
        jx, jy = (float(j) for j in jitter)
    except (TypeError, ValueError):
        fail(f"jitter must be two numbers (x, y) in render pixels, got {jitter!r}")
    if not (math.isfinite(jx) and math.isfinite(jy) and abs(jx) <= 0.5 + 1e-6 and abs(jy) <= 0.5 + 1e-6):
        fail(f"jitter is the projection's sub-pixel offset in render pixels, each in [-0.5, 0.5]; got ({jx}, {jy}). "
              "Offsets in NDC are 2 * jitter / size; offsets in display pixels must be divided by the scale")
    return jx, jy


def checks_values(mode: bool | str, on_device: bool, fresh: bool) -> bool:
    """Whether this frame's values (ranges, finiteness) are checked: each check reads a result back, which on a
    device waits for the queued work. ``fresh``: first frame of a history (start, reset, size change)."""
    if mode is False:
        return False
    if mode == "every" or (mode is True and not on_device):
        return True
    return fresh  # "first", or True on a device: shapes and dtypes (metadata) are still checked every frame


def validate(xp: Xp, color, depth, motion, normals, albedo, hdr: bool) -> None:
    """Value checks of the prepared (C, H, W) inputs; a UsageError names the first that fails."""
    for name, x in (("color", color), ("depth", depth), ("motion", motion), ("normals", normals), ("albedo", albedo)):
        if not xp.isfinite(x):
            fail(f"{name} contains NaN or Inf")
    lo, hi = float(color.min()), float(color.max())
    if lo < -1e-3 or (not hdr and hi > 1.0 + 1e-3):
        fail(f"color must be display-referred in [0, 1] (uint8, or float = uint8 / 255); got [{lo:.3g}, {hi:.3g}]. "
              "Pass exposure= for linear HDR colour")
    lo, hi = float(depth.min()), float(depth.max())
    if lo < 0.0 or hi > 1.0:
        fail(f"depth must be device depth in [0, 1] (0 = near plane; depth_inverted=True for reverse-Z); got "
              f"[{lo:.3g}, {hi:.3g}]. Linear view distance z maps to far * (z - near) / (z * (far - near))")
    h, w = motion.shape[-2:]
    reach = float(abs(motion).max())
    if reach > max(h, w):
        fail(f"motion reaches {reach:.1f} render pixels on a {w}x{h} frame; expected render pixels (x right, y down, "
              "current -> previous). Convert other units with motion_scale=, e.g. (W, H) for UV offsets")
    length = float(abs(((normals * normals).sum(0)) ** 0.5 - 1.0).mean())
    if length > 0.05:
        fail(f"normals must be unit vectors with components in [-1, 1]; mean | |n| - 1 | is {length:.2f}. "
              "Normals packed into [0, 1] need n * 2 - 1 first")
    lo, hi = float(albedo.min()), float(albedo.max())
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        fail(f"albedo must be in [0, 1] (uint8, or float = uint8 / 255); got [{lo:.3g}, {hi:.3g}]")


def restore(xp: Xp, out, original, layout: str):
    """Model output (3, H, W) float32 -> the container, dtype family and device of the colour input (a DLPack-only
    input gets numpy back, which speaks DLPack; a torch tensor when torch is what carried it)."""
    import sys

    import numpy as np

    src = str(getattr(original, "dtype", "")).removeprefix("torch.")
    if not hasattr(original, "dtype") and "torch" in sys.modules:  # DLPack-only: read its dtype through torch
        src = str(sys.modules["torch"].from_dlpack(original).dtype).removeprefix("torch.")
    if layout == "hwc":
        out = out.permute(1, 2, 0) if xp.torch else out.transpose(1, 2, 0)
    if src == "uint8":
        out = (out * 255.0).round().clip(0, 255)
        out = out.to(xp.lib.uint8) if xp.torch else out.astype(np.uint8)
    elif src == "float16":
        out = out.half() if xp.torch else out.astype(np.float16)
    out = out.contiguous() if xp.torch else np.ascontiguousarray(out)
    if not xp.torch and not isinstance(original, np.ndarray) and "torch" in sys.modules:
        return sys.modules["torch"].from_numpy(out)
    return out
