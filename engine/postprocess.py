"""Stage 4: float RGB model output -> a VideoFrame in the encoder's pixel format, matrix and range, tagged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.preprocess import FULL, SWS_MATRIX

RGB_MATRIX = 0  # AVCOL_SPC_RGB: what an RGB (gbrp) output is tagged with


@dataclass(frozen=True)
class OutputFormat:
    """Pixels and colour tags of the encoded video."""

    width: int  # output width in pixels (scale x input width)
    height: int  # output height in pixels
    pix_fmt: str  # encoder pixel format, e.g. "yuv420p", "yuv420p10le", "gbrp"
    matrix: int  # AVColorSpace used for RGB->YUV (and tagged); 0 for RGB outputs
    color_range: int  # AVColorRange written: 1 limited, 2 full
    primaries: int  # AVColorPrimaries tagged (copied from the input; 2 = unspecified)
    trc: int  # AVColorTransferCharacteristic tagged (copied from the input)

    @property
    def deep(self) -> bool:
        """More than 8 bits per sample: quantise through rgb48 instead of rgb24."""
        import av

        return max(c.bits for c in av.VideoFormat(self.pix_fmt).components) > 8


def tag_frame(frame: Any, fmt: OutputFormat) -> None:
    """Write the colour tags on ``frame`` (properties missing in older PyAV are set on the codec instead)."""
    for name, value in (("colorspace", fmt.matrix), ("color_range", fmt.color_range),
                        ("color_primaries", fmt.primaries), ("color_trc", fmt.trc)):
        try:
            setattr(frame, name, value)
        except (AttributeError, TypeError, ValueError):
            pass


def quantise(sr: np.ndarray, deep: bool) -> np.ndarray:
    """float (1, 3, H, W) -> HWC uint8 (or uint16 when ``deep``), rounded and clipped, no Python loops."""
    peak = 65535.0 if deep else 255.0
    hwc = np.empty((sr.shape[2], sr.shape[3], 3), np.float32)
    np.multiply(sr[0].transpose(1, 2, 0), np.float32(peak), out=hwc)
    np.add(hwc, np.float32(0.5), out=hwc)
    np.clip(hwc, 0.0, peak, out=hwc)
    return hwc.astype(np.uint16 if deep else np.uint8)


class Postprocessor:
    """Turns SR arrays into encoder-ready frames; keeps one scaler context for the stream."""

    def __init__(self, fmt: OutputFormat) -> None:
        from av.video.reformatter import VideoReformatter

        self.fmt = fmt
        self._deep = fmt.deep
        self._sws = VideoReformatter()
        self._matrix = SWS_MATRIX.get(fmt.matrix, 1)

    def __call__(self, sr: np.ndarray) -> Any:
        """(1, 3, H, W) float RGB -> av.VideoFrame in ``fmt.pix_fmt`` with colour tags (pts is set by the caller)."""
        import av

        rgb = av.VideoFrame.from_ndarray(quantise(sr, self._deep), format="rgb48le" if self._deep else "rgb24")
        if self.fmt.pix_fmt in ("rgb24", "rgb48le"):
            frame = rgb
        else:
            frame = self._sws.reformat(rgb, format=self.fmt.pix_fmt, src_color_range=FULL,
                                       dst_colorspace=self._matrix, dst_color_range=self.fmt.color_range)
        tag_frame(frame, self.fmt)
        return frame
