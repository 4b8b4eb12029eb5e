"""Real-world degradations per sequence: random blur, resize, noise and codec round trips (x264, x265, AV1).

After Real-ESRGAN's (second-order) pipeline and RealBasicVSR's video compression: every parameter is drawn once
per sequence, so blur, resize and codec settings stay the same across its frames and the codec sees a real clip
(motion, inter prediction, GOP), giving temporally consistent artefacts as in real video. Noise is drawn afresh
per frame, as sensor noise is.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

# libsvtav1 logs a banner per encoder; level 1 keeps errors only (SVT-AV1's documented SVT_LOG variable)
os.environ.setdefault("SVT_LOG", "1")

# encoder name, decoder name, and the options that make each round trip single-threaded. libx264's slower presets
# (medium here) still vary by a few code values between runs of the same input, even on one thread: 6 encodes of
# Vid4 city at CRF 28 gave 3 different bitstreams, while asm=0, mbtree=0 or me=dia gave one, so it is x264's SIMD
# motion search / macroblock-tree path, not threading. The quality harness runs every method on one LR clip per pass.
CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "x264": ("libx264", "h264", {"threads": "1"}),
    "x265": ("libx265", "hevc", {"x265-params": "log-level=none:pools=none:frame-threads=1"}),
    "av1": ("libsvtav1", "libdav1d", {"svtav1-params": "lp=1"}),
}
MIN_SIDE: dict[str, int] = {"x265": 64}  # frames smaller than this are padded before the round trip
PRESETS: dict[str, tuple[str, ...]] = {
    "x264": ("ultrafast", "veryfast", "medium"),
    "x265": ("ultrafast", "veryfast", "medium"),
    "av1": ("8", "10", "12"),
}


@dataclass(frozen=True)
class RealWorldRecipe:
    """Probabilities and ranges of the real-world degradation (one draw per sequence)."""

    blur_p: float = 0.1  # share of sequences blurred at HR before the resize
    blur_sigma: tuple[float, float] = (0.2, 0.4)  # Gaussian sigma range, in units of the scale factor
    resize_modes: tuple[str, ...] = ("bicubic", "bicubic", "bicubic", "bicubic", "area", "bilinear")  # uniform
    noise_p: float = 0.15  # share of sequences with Gaussian noise
    noise_levels: tuple[float, float] = (1.0, 5.0)  # noise std range in 8-bit levels
    gray_noise_p: float = 0.4  # share of noisy sequences whose noise is the same on R, G and B
    codec_p: float = 0.8  # share of sequences through a codec round trip
    codec_weights: tuple[tuple[str, float], ...] = (("x264", 0.6), ("x265", 0.2), ("av1", 0.2))
    crf: tuple[tuple[str, int, int], ...] = (("x264", 20, 36), ("x265", 22, 38), ("av1", 30, 55))  # inclusive
    second_p: float = 0.05  # share of sequences given a second, lighter round of noise + codec at LR
    clean_p: float = 0.0  # share of sequences left clean: bicubic resize only (drawn first, only when > 0)

@dataclass(frozen=True)
class SequenceDegradation:
    """One sequence's draw: what real_world_lr applies."""

    blur: tuple[float, float, float] | None  # (sigma_x, sigma_y, angle) at HR, or None
    resize: str  # bicubic (MATLAB, antialiased) | area | bilinear (antialiased)
    noise: tuple[float, bool] | None  # (std in levels, gray), or None
    codec: tuple[str, int, str] | None  # (codec key, CRF, preset), or None
    second: tuple[float, tuple[str, int, str]] | None  # (noise std, codec draw) of the second order, or None


def _codec_draw(recipe: RealWorldRecipe, rng: np.random.Generator, crf_shift: int = 0) -> tuple[str, int, str]:
    names = [n for n, _ in recipe.codec_weights]
    p = np.array([w for _, w in recipe.codec_weights], dtype=np.float64)
    name = names[int(rng.choice(len(names), p=p / p.sum()))]
    lo, hi = next((a, b) for n, a, b in recipe.crf if n == name)
    crf = min(int(rng.integers(lo, hi + 1)) + crf_shift, 63 if name == "av1" else 51)
    return name, crf, str(rng.choice(PRESETS[name]))


def draw(recipe: RealWorldRecipe, scale: int, rng: np.random.Generator) -> SequenceDegradation:
    """Draw one sequence's degradation parameters."""
    if recipe.clean_p > 0 and rng.random() < recipe.clean_p:
        return SequenceDegradation(None, "bicubic", None, None, None)
    blur = None
    if rng.random() < recipe.blur_p:
        lo, hi = recipe.blur_sigma
        sx, sy = rng.uniform(lo * scale, hi * scale, size=2)
        blur = (float(sx), float(sy), float(rng.uniform(0, np.pi)))
    resize = str(rng.choice(recipe.resize_modes))
    noise = None
    if rng.random() < recipe.noise_p:
        noise = (float(rng.uniform(*recipe.noise_levels)), bool(rng.random() < recipe.gray_noise_p))
    codec = _codec_draw(recipe, rng) if rng.random() < recipe.codec_p else None
    second = None
    if rng.random() < recipe.second_p:
        second = (float(rng.uniform(0, recipe.noise_levels[1] / 2)), _codec_draw(recipe, rng, crf_shift=-6))
    return SequenceDegradation(blur, resize, noise, codec, second)


def gaussian_kernel2d(sx: float, sy: float, angle: float, size: int = 0) -> np.ndarray:
    """Normalised anisotropic Gaussian kernel with axis sigmas (sx, sy) rotated by ``angle`` (radians)."""
    size = size or 2 * int(np.ceil(3 * max(sx, sy))) + 1
    ax = np.arange(size) - (size - 1) / 2
    xx, yy = np.meshgrid(ax, ax)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    k = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return k / k.sum()


def codec_roundtrip(frames: np.ndarray, codec: str, crf: int, preset: str) -> np.ndarray:
    """Encode uint8 RGB frames (T, H, W, 3) as yuv420p with ``codec`` (a CODECS key) in memory and decode them.

    Odd sides are edge-padded to even for 4:2:0 and cropped back. Deterministic for the same arguments except
    libx264's slower presets (see CODECS).
    """
    import av

    enc_name, dec_name, options = CODECS[codec]
    t, h, w, _ = frames.shape
    # libx265 corrupts its heap on some frames under 64 px a side (ultrafast at 40x40 and 48x48 aborts the process),
    # so x265 sees such frames edge-padded to 64
    least = MIN_SIDE.get(codec, 0)
    frames = np.pad(frames, ((0, 0), (0, max(h % 2, least - h)), (0, max(w % 2, least - w)), (0, 0)), mode="edge")
    enc = av.CodecContext.create(enc_name, "w")
    enc.width, enc.height, enc.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {**options, "crf": str(int(crf)), "preset": preset}
    packets = []
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    dec = av.CodecContext.create(dec_name, "r")
    out = [decode_rgb(f) for p in packets for f in dec.decode(p)]
    out += [decode_rgb(f) for f in dec.decode(None)]
    if len(out) != t:
        raise RuntimeError(f"{codec} round trip returned {len(out)} of {t} frames")
    return np.stack(out)[:, :h, :w]


def decode_rgb(frame: Any) -> np.ndarray:
    """A decoded yuv420p frame -> uint8 RGB exactly as the engine's graphs convert it (BT.601 limited range, chroma
    bilinear and centre-sited: engine.models.frame_io.planes_to_rgb), so training and benchmark LR frames are what a
    model sees in `vsr-upscale`. (PyAV's ``to_ndarray("rgb24")`` takes swscale's fast path, which reads 1-1.4 levels
    darker per channel than the exact conversion; models trained on it learn to brighten, and overshoot in the
    engine.)"""
    import torch

    from engine.models.frame_io import planes_to_rgb
    from engine.preprocess import read_planes

    planes = read_planes(frame, np.uint8)
    rgb = planes_to_rgb(torch.from_numpy(planes["y"]), torch.from_numpy(planes["uv"]), _bt601_to_rgb())
    return torch.round(rgb.clamp(0, 1) * 255)[0].permute(1, 2, 0).to(torch.uint8).numpy()


@functools.cache
def _bt601_to_rgb() -> Any:
    """The (3, 4) BT.601 limited-range 8-bit planes -> RGB affine as a torch tensor, built once (not per frame)."""
    import torch

    from engine.colour import LIMITED, to_rgb
    from engine.preprocess import BT601

    return torch.from_numpy(to_rgb(BT601, LIMITED, 8))


def x264_roundtrip(frames: np.ndarray, crf: int, preset: str = "veryfast") -> np.ndarray:
    """``codec_roundtrip`` through x264 (the ``--compress`` degradation)."""
    return codec_roundtrip(frames, "x264", crf, preset)


def _to_uint8(x) -> np.ndarray:
    """(T, 3, H, W) float tensor in [0, 1] -> (T, H, W, 3) uint8."""
    import torch

    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _add_noise(x, std: float, gray: bool, rng: np.random.Generator):
    import torch

    shape = (x.shape[0], 1, *x.shape[2:]) if gray else tuple(x.shape)
    n = torch.from_numpy(rng.standard_normal(shape).astype(np.float32)) * (std / 255)
    return x + n


def _encode(x, draw_: tuple[str, int, str]):
    import torch

    return torch.from_numpy(codec_roundtrip(_to_uint8(x), *draw_)).permute(0, 3, 1, 2).float() / 255


def real_world_lr(hr, scale: int, d: SequenceDegradation, rng: np.random.Generator):
    """Degrade one HR sequence (T, 3, H, W) in [0, 1] to its LR (T, 3, H/scale, W/scale), 8-bit levels."""
    import torch
    import torch.nn.functional as F

    from training.degrade import torch_bicubic_down

    x = hr
    if d.blur is not None:
        k = torch.as_tensor(gaussian_kernel2d(*d.blur), dtype=x.dtype)
        pad = k.shape[0] // 2
        y = F.pad(x.reshape(-1, 1, *x.shape[2:]), (pad, pad, pad, pad), mode="reflect")
        x = F.conv2d(y, k[None, None]).reshape(x.shape)
    out_hw = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    if d.resize == "bicubic":
        x = torch_bicubic_down(x, scale, quantize=False)
    else:
        x = F.interpolate(x, size=out_hw, mode=d.resize, **({"antialias": True} if d.resize == "bilinear" else {}))
    if d.noise is not None:
        x = _add_noise(x, *d.noise, rng)
    x = torch.round(x.clamp(0, 1) * 255) / 255
    if d.codec is not None:
        x = _encode(x, d.codec)
    if d.second is not None:
        std, codec = d.second
        x = _encode(torch.round(_add_noise(x, std, False, rng).clamp(0, 1) * 255) / 255, codec)
    return x
