"""Stage 2: decoded frame -> float32 RGB (1, 3, H, W) with the source's own matrix and range; scene-cut detection."""

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
        thumb = self._sws.reformat(frame, width=w, height=h, format="gray").to_ndarray().astype(np.float32)
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


class Preprocessor:
    """Converts decoded frames of one stream to model input, resizing stragglers to the first frame's size."""

    def __init__(self, info: VideoInfo) -> None:
        from av.video.reformatter import VideoReformatter

        self.info = info
        self._sws = VideoReformatter()
        self._deep = info.bit_depth > 8  # 10/12/16-bit sources keep their precision through rgb48
        self._fmt = "rgb48le" if self._deep else "rgb24"
        self._norm = np.float32(1 / 65535 if self._deep else 1 / 255)
        self._matrix = SWS_MATRIX.get(matrix_of(info), 5)
        self._range = range_of(info)

    def __call__(self, frame: Any) -> np.ndarray:
        """``frame`` (any pixel format) -> float32 (1, 3, H, W) RGB in [0, 1], C-contiguous."""
        rgb = self._sws.reformat(
            frame, width=self.info.width, height=self.info.height, format=self._fmt,
            src_colorspace=self._matrix, src_color_range=self._range, dst_color_range=FULL,
            interpolation="BICUBIC",
        ).to_ndarray()
        out = np.empty((1, 3, self.info.height, self.info.width), np.float32)
        np.multiply(rgb.transpose(2, 0, 1), self._norm, out=out[0], casting="unsafe")
        return out
