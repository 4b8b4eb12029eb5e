"""Stage 2: decoded frame -> integer planes in one of a few layouts (engine/graph.py), as decoded; scene cuts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.decode import VideoInfo

# AVColorSpace (as tagged in streams) -> swscale colorspace constant (SWS_CS_*) used for the YUV<->RGB matrix
SWS_MATRIX: dict[int, int] = {
    1: 1,  # BT.709
    4: 4,  # FCC
    5: 5,  # BT.470BG (BT.601 625)
    6: 5,  # SMPTE 170M (BT.601 525): same matrix as 470BG
    7: 7,  # SMPTE 240M
    9: 9,  # BT.2020 non-constant luminance
    10: 9,  # BT.2020 constant luminance: swscale only has the NCL matrix
}
BT709, BT601 = 1, 5  # AVColorSpace values used when a stream is untagged
LIMITED, FULL = 1, 2  # AVColorRange: MPEG (16-235) and JPEG (0-255)


def matrix_of(info: VideoInfo) -> int:
    """AVColorSpace the YUV frames were made with; untagged HD (>= 720 lines) is BT.709, smaller BT.601."""
    if info.colorspace in SWS_MATRIX:
        return info.colorspace
    return BT709 if info.height >= 720 else BT601


def range_of(info: VideoInfo) -> int:
    """AVColorRange of the frames; untagged YUV is limited (as FFmpeg assumes), RGB and yuvj* are full."""
    if info.is_rgb or info.pix_fmt.startswith("yuvj"):
        return FULL
    return FULL if info.color_range == FULL else LIMITED


@dataclass(frozen=True)
class SceneCutOptions:
    """Cheap scene-cut detector settings; a cut resets the recurrent state."""

    threshold: float = 0.12  # mean abs difference of grey thumbnails, in [0, 1], above which a frame starts a scene
    min_gap: int = 6  # frames that must pass after a reset before another cut may be declared
    thumb: tuple[int, int] = (32, 18)  # thumbnail width, height in pixels


class SceneCutDetector:
    """Flags frames whose low-resolution grey thumbnail differs strongly from the previous one."""

    def __init__(self, opts: SceneCutOptions = SceneCutOptions()) -> None:
        from av.video.reformatter import VideoReformatter

        self.opts = opts
        self._sws = VideoReformatter()  # own scaler context: the thumbnail size never changes
        self._prev: np.ndarray | None = None
        self._since = 0  # frames since the last reset

    def is_cut(self, frame: Any) -> bool:
        """True when ``frame`` starts a new scene (never for the first frame)."""
        w, h = self.opts.thumb
        return self.judge(self._sws.reformat(frame, width=w, height=h, format="gray").to_ndarray())

    def judge(self, thumb: np.ndarray) -> bool:
        """``is_cut`` for a grey thumbnail (0-255, ``opts.thumb`` in size) made elsewhere (on a GPU)."""
        thumb = thumb.astype(np.float32)
        prev, self._prev = self._prev, thumb
        self._since += 1
        if prev is None or self._since <= self.opts.min_gap or self.opts.threshold <= 0:
            return False
        diff = float(np.abs(thumb - prev).mean()) / 255.0
        if diff > self.opts.threshold:
            self._since = 0
            return True
        return False

    def restart(self) -> None:
        """Forget history (after a forced reset such as a resolution change)."""
        self._prev, self._since = None, 0


def plane_format(is_rgb: bool, sub: tuple[int, int], bits: int) -> str:
    """The planar layout a graph reads and writes: gbrp* for RGB, yuv4xxp* for YUV, at ``bits`` per sample."""
    depth = "" if bits <= 8 else f"{bits}le"
    if is_rgb:
        return f"gbrp{depth}"
    kind = {(1, 1): "444", (2, 1): "422", (2, 2): "420"}.get(sub, "444")
    return f"yuv{kind}p{depth}"


def layout_of(pix_fmt: str) -> tuple[bool, tuple[int, int], int]:
    """(is RGB, chroma subsampling (x, y), bits per sample) of an FFmpeg pixel format."""
    import av

    fmt = av.VideoFormat(pix_fmt, 16, 16)
    bits = max(c.bits for c in fmt.components)
    sub = (16 // max(fmt.chroma_width(16), 1), 16 // max(fmt.chroma_height(16), 1)) if len(fmt.components) > 1 else (1, 1)
    bits = bits if bits in (8, 10, 12, 16) else (8 if bits < 8 else 16)
    return fmt.is_rgb, sub, bits


def read_planes(frame: Any, dtype: type) -> dict[str, np.ndarray]:
    """``y`` (1, 1, H, W) and ``uv`` (1, 2, Hc, Wc) copied out of a planar frame (gbrp planes: G, then B, R)."""
    item = 2 if frame.format.components[0].bits > 8 else 1
    raw = np.uint16 if item == 2 else np.uint8
    views = [np.frombuffer(p, raw).reshape(p.height, p.line_size // item)[:, : p.width] for p in frame.planes[:3]]
    y = np.empty((1, 1, *views[0].shape), dtype)
    uv = np.empty((1, 2, *views[1].shape), dtype)
    y[0, 0] = views[0]
    uv[0, 0], uv[0, 1] = views[1], views[2]
    return {"y": y, "uv": uv}


class Preprocessor:
    """Turns decoded frames of one stream into the graph's ``y``/``uv`` planes, resizing stragglers to the first
    frame's size. Frames already in a planar layout of the contract are copied as they are; others (nv12, p010,
    rgb24, yuyv422, ...) are converted once by swscale into the nearest one."""

    def __init__(self, info: VideoInfo, dtype: str = "uint8", out_sub: tuple[int, int] = (2, 2)) -> None:
        from av.video.reformatter import VideoReformatter

        self.info = info
        self._sws = VideoReformatter()
        is_rgb, sub, bits = layout_of(info.pix_fmt)
        # the graph keeps the chroma resolution it is given: upsample here when the output needs more (rare)
        sub = (min(sub[0], out_sub[0]), min(sub[1], out_sub[1]))
        self.format = plane_format(is_rgb, sub, bits)  # the layout every frame is read in
        self.sub = sub  # chroma subsampling (x, y) of that layout
        self.bits = bits  # bits per sample of that layout
        self._dtype = np.dtype(dtype).type

    def __call__(self, frame: Any) -> dict[str, np.ndarray]:
        """``frame`` (any pixel format) -> ``{"y", "uv"}`` integer planes at the stream's first size."""
        if frame.format.name != self.format or (frame.width, frame.height) != (self.info.width, self.info.height):
            frame = self._sws.reformat(frame, width=self.info.width, height=self.info.height, format=self.format,
                                       interpolation="BICUBIC")
        return read_planes(frame, self._dtype)
