"""RenderUpscaler: FSR2/DLSS-style upscaling of rendered frames guided by G-buffers (conventions in docs/render.md)."""

from __future__ import annotations

import math
from pathlib import Path

# Render size per display axis for each quality preset (display / render), as FSR2 names them.
PRESETS: dict[str, float] = {
    "quality": 1.5,
    "balanced": 1.7,
    "performance": 2.0,
    "ultra_performance": 3.0,
}


def halton(index: int, base: int) -> float:
    """Element ``index`` (1-based) of the van der Corput sequence in ``base``: a value in [0, 1)."""
    if index < 1:
        raise ValueError(f"halton index is 1-based, got {index}")
    f, r = 1.0, 0.0
    while index > 0:
        f /= base
        r += f * (index % base)
        index //= base
    return r


def jitter_phase_count(render_width: int, display_width: int) -> int:
    """Jitter phases before the Halton(2, 3) sequence repeats: FSR2's 8 x (display / render)^2."""
    if render_width <= 0 or display_width <= 0:
        raise ValueError(f"widths must be positive, got render {render_width}, display {display_width}")
    return int(8.0 * (display_width / render_width) ** 2)


def halton_jitter(frame: int, phase_count: int) -> tuple[float, float]:
    """Sub-pixel jitter of ``frame`` in render pixels, each in [-0.5, 0.5): Halton(2, 3), as FSR2's
    ``ffxFsr2GetJitterOffset``. Translate the projection by it (x right, y down): see ``jitter_matrix``."""
    i = frame % max(phase_count, 1) + 1
    return halton(i, 2) - 0.5, halton(i, 3) - 0.5


def jitter_matrix(jitter: tuple[float, float], render_width: int, render_height: int) -> list[list[float]]:
    """4x4 clip-space translation (row-major, column vectors) to left-multiply onto an OpenGL/D3D projection."""
    jx, jy = jitter
    return [[1.0, 0.0, 0.0, 2.0 * jx / render_width], [0.0, 1.0, 0.0, -2.0 * jy / render_height],
            [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def render_size(display_width: int, display_height: int, preset: str | float) -> tuple[int, int]:
    """(width, height) to render at for ``preset`` (a PRESETS name or a ratio >= 1), rounded down like FSR2."""
    from engine.errors import UsageError

    if isinstance(preset, str):
        if preset not in PRESETS:
            raise UsageError(f"unknown quality preset {preset!r}; known: {', '.join(PRESETS)}")
        ratio = PRESETS[preset]
    else:
        ratio = float(preset)
        if not ratio >= 1.0:
            raise UsageError(f"preset ratio must be >= 1 (display / render per axis), got {preset}")
    return max(1, math.floor(display_width / ratio)), max(1, math.floor(display_height / ratio))


# ---------------------------------------------------------------- the upscaler

# (model, scale) -> stem of the shipped weights in engine/weights/ (<stem>.safetensors, optionally <stem>.onnx)
SHIPPED: dict[tuple[str, int], str] = {
    ("rdg-s", 2): "rdg-s-x2",
    ("rdg-s", 4): "rdg-s-x4",
}

SCALES = (2, 3, 4)  # what the G-buffer models build at (shipped weights: 2 and 4)
BACKENDS = ("torch", "onnxruntime")  # keys of engine.render_runners.RUNNERS (kept here so errors need no import)

# name -> channels per layout, for the frame inputs; None marks "single channel, channel axis optional"
CHANNELS: dict[str, tuple[int, ...] | None] = {"color": (3, 4), "depth": None, "motion": (2,), "normals": (3, 4), "albedo": (3, 4)}


class RenderUpscaler:
    """Upscale rendered frames with a G-buffer-guided recurrent model (conventions: docs/render.md).

    Parameters
    ----------
    scale : model output/input size ratio per axis (2 or 4).
    model : model name (engine.models.GBUFFER_MODELS).
    backend : "torch" or "onnxruntime".
    weights : .safetensors (torch or onnxruntime, exported on the fly) or .onnx (onnxruntime); None = shipped.
    device : torch device for the torch backend; None = the device of the first colour input.
    depth_inverted : True for reverse-Z depth (1 = near plane, 0 = far plane).
    motion_scale : multiplies the motion vectors into render pixels, x right and y down: (W, H) for UV
        offsets, (W, -H) for UV offsets with y up, (1, -1) for pixels with y up.
    layout : "hwc" (channels last, as read back from a texture) or "chw".
    output_size : (width, height) of the display; the model output is resized to it when it differs.
    validate : check ranges, units and finiteness every frame (costs a device sync on GPU tensors).
    """

    def __init__(self, scale: int, model: str = "rdg-s", backend: str = "torch", weights: str | Path | None = None,
                 device: str | None = None, depth_inverted: bool = False, motion_scale: tuple[float, float] = (1.0, 1.0),
                 layout: str = "hwc", output_size: tuple[int, int] | None = None, validate: bool = True) -> None:
        from engine.errors import UsageError, require

        require("torch", "torch", "RenderUpscaler")  # frames and G-buffers become torch tensors on every backend
        if layout not in ("hwc", "chw"):
            raise UsageError(f"layout must be 'hwc' or 'chw', got {layout!r}")
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if scale not in SCALES:
            raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))} (output / render size per axis), "
                             f"got {scale!r}; for other display sizes pass output_size=(w, h)")
        self.scale, self.layout, self.validate = scale, layout, validate
        if len(tuple(motion_scale)) != 2:
            raise UsageError(f"motion_scale must be (sx, sy), got {motion_scale!r}")
        self.depth_inverted, self.output_size = depth_inverted, output_size
        self.motion_scale = (float(motion_scale[0]), float(motion_scale[1]))
        from engine.render_runners import RUNNERS, resolve_weights

        self._runner = RUNNERS[backend](model, scale, resolve_weights(model, scale, weights, SHIPPED), device)
        self._hidden: tuple | None = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> RenderUpscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the model and any exported ONNX file; safe to call twice."""
        self._runner.close()
        self._hidden = None

    def reset(self) -> None:
        """Forget the history (camera cut, teleport, resolution change)."""
        self._hidden = None

    def upscale(self, color, depth, motion, normals=None, albedo=None, jitter: tuple[float, float] = (0.0, 0.0),
                reset: bool = False, exposure: float | None = None):
        """Upscale one frame; returns it in ``color``'s container, dtype family and device.

        color (H, W, 3|4) display-referred in [0, 1] (uint8 or float), or linear HDR when ``exposure`` is given;
        depth (H, W[, 1]) device depth in [0, 1]; motion (H, W, 2) current -> previous in render pixels (x right,
        y down) without jitter; normals (H, W, 3) view-space unit vectors (None: facing the camera); albedo
        (H, W, 3) in [0, 1] (None: the colour); jitter: this frame's projection offset in render pixels (FSR2's).
        Shapes are (C, H, W) with layout="chw". numpy, torch and DLPack arrays are accepted.
        """
        import torch

        from engine.errors import UsageError

        t = {k: _as_tensor(k, v, self.layout) for k, v in
             (("color", color), ("depth", depth), ("motion", motion), ("normals", normals), ("albedo", albedo)) if v is not None}
        h, w = t["color"].shape[-2:]
        t = {k: v.to(t["color"].device) for k, v in t.items()}  # G-buffers follow the colour's device
        for k, v in t.items():
            if v.shape[-2:] != (h, w):
                raise UsageError(f"{k} is {v.shape[-2]}x{v.shape[-1]} but color is {h}x{w}: all inputs are at render size")
        if reset or self._size != (h, w):
            if self._size is not None and self._size != (h, w) and not reset:
                raise UsageError(f"render size changed from {self._size[0]}x{self._size[1]} to {h}x{w}; pass reset=True")
            self._hidden, self._size = None, (h, w)
        jit = _check_jitter(jitter)
        frame = self._prepare(t, jit, exposure)
        with torch.inference_mode():
            sr, self._hidden = self._runner.run(frame, self._hidden)
            out = self._finish(sr.clamp(min=0.0), exposure)
        return _restore(out, color, t["color"], self.layout)

    def _prepare(self, t: dict, jit: tuple[float, float], exposure: float | None) -> dict:
        import torch

        color = t["color"][:3]
        if exposure is not None:
            if not (isinstance(exposure, (int, float)) and math.isfinite(exposure) and exposure > 0):
                _fail(f"exposure must be a positive number (pre-exposure multiplier), got {exposure!r}")
            x = color * float(exposure)
            color = x / (1.0 + x)  # reversible tonemap into [0, 1); inverted in _finish
        depth = 1.0 - t["depth"] if self.depth_inverted else t["depth"]
        motion = t["motion"] * torch.tensor(self.motion_scale, dtype=torch.float32, device=color.device).view(2, 1, 1)
        normals = t["normals"][:3] if "normals" in t else torch.tensor([0.0, 0.0, 1.0], device=color.device).view(3, 1, 1).expand_as(color)
        albedo = t["albedo"][:3] if "albedo" in t else color.clamp(0, 1)
        if self.validate:
            _validate(color, depth, motion, normals, albedo, exposure is not None)
        frame = {"lr": color, "depth": depth, "motion": motion, "normals": normals, "albedo": albedo}
        frame = {k: v.unsqueeze(0).contiguous() for k, v in frame.items()}
        frame["jitter"] = torch.tensor([jit], dtype=torch.float32, device=color.device)
        return frame

    def _finish(self, sr, exposure: float | None):
        import torch.nn.functional as F

        if self.output_size is not None and tuple(sr.shape[-1:-3:-1]) != tuple(self.output_size):
            w, h = self.output_size
            sr = F.interpolate(sr, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(min=0.0)
        if exposure is not None:
            sr = sr.clamp(max=1.0 - 1e-4)
            sr = sr / (1.0 - sr) / float(exposure)
        else:
            sr = sr.clamp(max=1.0)
        return sr[0]


# ---------------------------------------------------------------- inputs, checks, outputs


def _fail(msg: str):
    from engine.errors import UsageError

    raise UsageError(msg)


def _as_tensor(name: str, v, layout: str):
    """numpy / torch / DLPack -> float32 torch tensor (C, H, W) on the array's device (no copy when possible)."""
    import numpy as np
    import torch

    if isinstance(v, torch.Tensor):
        x = v
    elif isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        x = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch wants writable memory (memmaps are not)
    elif hasattr(v, "__dlpack__"):
        x = torch.from_dlpack(v)
    else:
        _fail(f"{name} must be a numpy array, a torch tensor or a DLPack array, got {type(v).__name__}")
    if x.dtype == torch.uint8 and name in ("color", "albedo"):
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
    else:
        kinds = "uint8 or float" if name in ("color", "albedo") else "float (16, 32 or 64 bit)"
        _fail(f"{name} has dtype {x.dtype}; expected {kinds}")
    want = CHANNELS[name]
    if want is None:  # depth: (H, W) or with a single channel axis
        if x.dim() == 3 and x.shape[2 if layout == "hwc" else 0] == 1:
            x = x.squeeze(2 if layout == "hwc" else 0)
        if x.dim() != 2:
            _fail(f"depth must be (H, W) or (H, W, 1), got shape {tuple(x.shape)}")
        return x.unsqueeze(0)
    c_axis = 2 if layout == "hwc" else 0
    if x.dim() != 3 or x.shape[c_axis] not in want:
        form = "(H, W, C)" if layout == "hwc" else "(C, H, W)"
        other = "chw" if layout == "hwc" else "hwc"
        _fail(f"{name} must be {form} with C in {list(want)}, got shape {tuple(x.shape)} "
              f"(one frame, no batch axis; layout={other!r} reads the other channel order)")
    return x.permute(2, 0, 1) if layout == "hwc" else x


def _check_jitter(jitter) -> tuple[float, float]:
    try:
        jx, jy = (float(j) for j in jitter)
    except (TypeError, ValueError):
        _fail(f"jitter must be two numbers (x, y) in render pixels, got {jitter!r}")
    if not (math.isfinite(jx) and math.isfinite(jy) and abs(jx) <= 0.5 + 1e-6 and abs(jy) <= 0.5 + 1e-6):
        _fail(f"jitter is the projection's sub-pixel offset in render pixels, each in [-0.5, 0.5]; got ({jx}, {jy}). "
              "Offsets in NDC are 2 * jitter / size; offsets in display pixels must be divided by the scale")
    return jx, jy


def _validate(color, depth, motion, normals, albedo, hdr: bool) -> None:
    import torch

    for name, x in (("color", color), ("depth", depth), ("motion", motion), ("normals", normals), ("albedo", albedo)):
        if not bool(torch.isfinite(x).all()):
            _fail(f"{name} contains NaN or Inf")
    lo, hi = (float(v) for v in torch.aminmax(color))
    if lo < -1e-3 or (not hdr and hi > 1.0 + 1e-3):
        _fail(f"color must be display-referred in [0, 1] (uint8, or float = uint8 / 255); got [{lo:.3g}, {hi:.3g}]. "
              "Pass exposure= for linear HDR colour")
    lo, hi = (float(v) for v in torch.aminmax(depth))
    if lo < 0.0 or hi > 1.0:
        _fail(f"depth must be device depth in [0, 1] (0 = near plane; depth_inverted=True for reverse-Z); got "
              f"[{lo:.3g}, {hi:.3g}]. Linear view distance z maps to far * (z - near) / (z * (far - near))")
    h, w = motion.shape[-2:]
    reach = float(motion.abs().max())
    if reach > max(h, w):
        _fail(f"motion reaches {reach:.1f} render pixels on a {w}x{h} frame; expected render pixels (x right, y down, "
              "current -> previous). Convert other units with motion_scale=, e.g. (W, H) for UV offsets")
    length = float((normals.norm(dim=0) - 1.0).abs().mean())
    if length > 0.05:
        _fail(f"normals must be unit vectors with components in [-1, 1]; mean | |n| - 1 | is {length:.2f}. "
              "Normals packed into [0, 1] need n * 2 - 1 first")
    lo, hi = (float(v) for v in torch.aminmax(albedo))
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        _fail(f"albedo must be in [0, 1] (uint8, or float = uint8 / 255); got [{lo:.3g}, {hi:.3g}]")


def _restore(out, original, color_t, layout: str):
    """Model output (3, H, W) float32 -> the container, dtype family and device of the colour input."""
    import numpy as np
    import torch

    src_dtype = original.dtype if isinstance(original, (np.ndarray, torch.Tensor)) else torch.from_dlpack(original).dtype
    if layout == "hwc":
        out = out.permute(1, 2, 0)
    if src_dtype in (np.uint8, torch.uint8):
        out = (out * 255.0).round().clamp(0, 255).to(torch.uint8)
    elif src_dtype in (np.float16, torch.float16):
        out = out.half()
    out = out.contiguous()
    if isinstance(original, np.ndarray):
        return out.cpu().numpy()
    return out.to(color_t.device)
