"""RenderUpscaler: FSR2/DLSS-style upscaling of rendered frames guided by G-buffers (conventions in docs/render.md)."""

from __future__ import annotations

import math
from pathlib import Path

from engine.render_inputs import VALIDATE, Xp, as_array, check_jitter, checks_values, fail, restore, validate

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

SCALES = (2, 3, 4)  # what the G-buffer models build at (shipped weights, engine/registry.py: 2 and 4)
BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")  # engine.backends.select.CHOICES (kept here: no import)



class RenderUpscaler:
    """Upscale rendered frames with a G-buffer-guided recurrent model (conventions: docs/render.md).

    The model runs through the engine's one backend family (``engine.backends.select.open_backend``) on the
    graph contract of engine/graph.py; numpy inputs on the onnxruntime backend need neither torch nor onnx.

    Parameters
    ----------
    scale : model output/input size ratio per axis (2 or 4).
    model : model name (engine.models.GBUFFER_MODELS; shipped: rdg-s).
    backend : "auto", "onnxruntime", "torch" or "tensorrt".
    weights : .onnx (onnxruntime, tensorrt) or .safetensors (torch); None = the shipped model.
    device : "cpu" or "cuda..." to pin the backend's device; None = its own choice.
    depth_inverted : True for reverse-Z depth (1 = near plane, 0 = far plane).
    motion_scale : multiplies the motion vectors into render pixels, x right and y down: (W, H) for UV
        offsets, (W, -H) for UV offsets with y up, (1, -1) for pixels with y up.
    layout : "hwc" (channels last, as read back from a texture) or "chw".
    output_size : (width, height) of the display; the model output is resized to it when it differs.
    validate : value checks (ranges, units, finiteness). True: every frame for host arrays, and for device arrays
        on the first frame of each history only (a check waits for the device; shapes and dtypes are checked every
        frame from metadata); "every": every frame everywhere; "first": first frame of each history; False: none.
    """

    def __init__(self, scale: int, model: str = "rdg-s", backend: str = "auto", weights: str | Path | None = None,
                 device: str | None = None, depth_inverted: bool = False, motion_scale: tuple[float, float] = (1.0, 1.0),
                 layout: str = "hwc", output_size: tuple[int, int] | None = None, validate: bool | str = True) -> None:
        from engine.errors import UsageError, require

        if backend == "torch":
            require("torch", "torch", "RenderUpscaler(backend='torch')")
        if layout not in ("hwc", "chw"):
            raise UsageError(f"layout must be 'hwc' or 'chw', got {layout!r}")
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if scale not in SCALES:
            raise UsageError(f"scale must be one of {', '.join(map(str, SCALES))} (output / render size per axis), "
                             f"got {scale!r}; for other display sizes pass output_size=(w, h)")
        if not any(validate is v or (isinstance(v, str) and validate == v) for v in VALIDATE):
            raise UsageError(f"validate must be True, False, 'first' or 'every', got {validate!r}")
        self.scale, self.layout, self.validate = scale, layout, validate
        if len(tuple(motion_scale)) != 2:
            raise UsageError(f"motion_scale must be (sx, sy), got {motion_scale!r}")
        self.depth_inverted, self.output_size = depth_inverted, output_size
        self.motion_scale = (float(motion_scale[0]), float(motion_scale[1]))
        self._backend = _open(scale, model, backend, weights, device)
        self._spec = self._backend.io_spec()
        self._state: dict = {}
        self._size: tuple[int, int] | None = None
        self._fresh = True  # the next frame starts a history (value checks of validate=True on a device)
        self._consts: dict = {}  # constants already on the frames' device (no host-to-device copy per frame)

    def __enter__(self) -> RenderUpscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend_name(self) -> str:
        """The backend that runs the model, e.g. "torch-cuda" or "onnxruntime-cpu"; "closed" after close()."""
        return self._backend.name if self._backend is not None else "closed"

    def close(self) -> None:
        """Release the backend (sessions, device memory); safe to call twice."""
        if self._backend is not None:
            self._backend.close()
        self._backend, self._state = None, {}

    def reset(self) -> None:
        """Forget the history (camera cut, teleport, resolution change)."""
        self._state, self._fresh = {}, True

    def upscale(self, color, depth, motion, normals=None, albedo=None, jitter: tuple[float, float] = (0.0, 0.0),
                reset: bool = False, exposure: float | None = None):
        """Upscale one frame; returns it in ``color``'s container, dtype family and device.

        color (H, W, 3|4) display-referred in [0, 1] (uint8 or float), or linear HDR when ``exposure`` is given;
        depth (H, W[, 1]) device depth in [0, 1]; motion (H, W, 2) current -> previous in render pixels (x right,
        y down) without jitter; normals (H, W, 3) view-space unit vectors (None: facing the camera); albedo
        (H, W, 3) in [0, 1] (None: the colour); jitter: this frame's projection offset in render pixels (FSR2's).
        Shapes are (C, H, W) with layout="chw". numpy, torch and DLPack arrays are accepted, and device arrays
        (CUDA DLPack or ``__cuda_array_interface__``: torch, CuPy, ...) stay on their device with no host sync in
        the steady state (see ``validate``); float16 inputs are accepted everywhere.
        """
        from engine.errors import BackendError

        if self._backend is None:
            raise BackendError("this RenderUpscaler was closed; create a new one")
        t = {k: as_array(k, v, self.layout) for k, v in
             (("color", color), ("depth", depth), ("motion", motion), ("normals", normals), ("albedo", albedo)) if v is not None}
        xp = Xp(t["color"], self._consts)
        t = {k: xp.follow(v) for k, v in t.items()}  # G-buffers follow the colour's device
        h, w = t["color"].shape[-2:]
        if h == 0 or w == 0:
            fail(f"color is {h}x{w}: a frame needs at least one pixel")
        for k, v in t.items():
            if tuple(v.shape[-2:]) != (h, w):
                fail(f"{k} is {v.shape[-2]}x{v.shape[-1]} but color is {h}x{w}: all inputs are at render size")
        if reset or self._size != (h, w):
            if self._size is not None and self._size != (h, w) and not reset:
                fail(f"render size changed from {self._size[0]}x{self._size[1]} to {h}x{w}; pass reset=True")
            self._state, self._size, self._fresh = {}, (h, w), True
        feeds = self._prepare(xp, t, check_jitter(jitter), exposure)
        out = self._backend.run({**feeds, **self._state})
        self._state, self._fresh = self._spec.next_state(out), False
        sr = self._finish(xp, xp.follow(out["sr"]), exposure)
        return restore(xp, sr, color, self.layout)

    def _prepare(self, xp: Xp, t: dict, jit: tuple[float, float], exposure: float | None) -> dict:
        color = t["color"][:3]
        if exposure is not None:
            if not (isinstance(exposure, (int, float)) and math.isfinite(exposure) and exposure > 0):
                fail(f"exposure must be a positive number (pre-exposure multiplier), got {exposure!r}")
            x = color * float(exposure)
            color = x / (1.0 + x)  # reversible tonemap into [0, 1); inverted in _finish
        depth = 1.0 - t["depth"] if self.depth_inverted else t["depth"]
        motion = t["motion"] * xp.const(self.motion_scale).reshape(2, 1, 1)
        normals = t["normals"][:3] if "normals" in t else xp.broadcast(xp.const((0.0, 0.0, 1.0)).reshape(3, 1, 1), color.shape)
        albedo = t["albedo"][:3] if "albedo" in t else color.clip(0, 1)
        if checks_values(self.validate, xp.device, self._fresh):
            validate(xp, color, depth, motion, normals, albedo, exposure is not None)
        frame = {"lr": color, "depth": depth, "motion": motion, "normals": normals, "albedo": albedo}
        frame = {k: xp.contiguous(v[None]) for k, v in frame.items()}
        frame["jitter"] = xp.upload(jit).reshape(1, 2)
        return frame

    def _finish(self, xp: Xp, sr, exposure: float | None):
        sr = sr[0].clip(0.0, None)
        if self.output_size is not None and tuple(sr.shape[-1:-3:-1]) != tuple(self.output_size):
            sr = xp.resize(sr, self.output_size).clip(0.0, None)
        if exposure is not None:
            sr = sr.clip(None, 1.0 - 1e-4)
            return sr / (1.0 - sr) / float(exposure)
        return sr.clip(None, 1.0)


def _open(scale: int, model: str, backend: str, weights: str | Path | None, device: str | None):
    """The backend for (model, scale), through the engine's one opener; ModelError unless it is a G-buffer graph."""
    from engine.backends.select import ModelChoice, open_backend
    from engine.errors import ModelError
    from engine.graph import GBUFFER
    from engine.registry import SHIPPED

    if weights is None and (model, scale) not in SHIPPED:
        raise ModelError(f"no trained weights shipped for {model} x{scale}; train them (docs/render.md) and pass "
                         "weights=PATH")
    choice = ModelChoice(model=model, scale=scale, weights=Path(weights) if weights is not None else None)
    if choice.weights is not None and not choice.weights.is_file():
        raise ModelError(f"weights file {choice.weights} not found")
    name = backend
    if device is not None and backend in ("onnxruntime", "torch"):
        name = f"{backend}-{'cuda' if device.startswith('cuda') else 'cpu'}"
    opened = open_backend(name, choice).backend
    if opened.io_spec().kind != GBUFFER:
        opened.close()
        raise ModelError(f"{model!r} is not a G-buffer model (its graph is a {opened.io_spec().kind} graph); "
                         "RenderUpscaler runs rdg-* models")
    return opened
