"""Stage 4: integer planes from the graph -> a VideoFrame in the encoder's pixel format, tagged with its colour."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.preprocess import layout_of, plane_format

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
    def bits(self) -> int:
        """Bits per sample the encoder gets (8, 10, 12 or 16)."""
        return layout_of(self.pix_fmt)[2]

    @property
    def sub(self) -> tuple[int, int]:
        """Chroma subsampling (x, y) of the encoder's format; (1, 1) for RGB."""
        return layout_of(self.pix_fmt)[1]


def tag_frame(frame: Any, fmt: OutputFormat) -> None:
    """Write the colour tags on ``frame`` (properties missing in older PyAV are set on the codec instead)."""
    for name, value in (("colorspace", fmt.matrix), ("color_range", fmt.color_range),
                        ("color_primaries", fmt.primaries), ("color_trc", fmt.trc)):
        try:
            setattr(frame, name, value)
        except (AttributeError, TypeError, ValueError):
            pass


def write_planes(frame: Any, y: np.ndarray, uv: np.ndarray) -> None:
    """Copy ``y`` (1, 1, H, W) and ``uv`` (1, 2, Hc', Wc') into ``frame``'s planes (chroma cropped to the plane)."""
    deep = frame.format.components[0].bits > 8
    raw, item = (np.uint16, 2) if deep else (np.uint8, 1)
    for plane, src in zip(frame.planes[:3], (y[0, 0], uv[0, 0], uv[0, 1])):
        view = np.frombuffer(plane, raw).reshape(plane.height, plane.line_size // item)
        view[:, : plane.width] = src[: plane.height, : plane.width]


def host(x: Any) -> np.ndarray:
    """A backend's output plane as numpy: device tensors (a backend fed device frames) are copied back here."""
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


class Postprocessor:
    """Turns graph outputs into encoder-ready frames; keeps one scaler context for the stream's rare slow path."""

    def __init__(self, fmt: OutputFormat, sub: tuple[int, int]) -> None:
        from av.video.reformatter import VideoReformatter

        self.fmt = fmt
        is_rgb = layout_of(fmt.pix_fmt)[0]
        # the planes the graph writes: the encoder's family and depth, the chroma subsampling the graph was fed
        self.native = plane_format(is_rgb, sub, fmt.bits)
        self._sws = VideoReformatter()

    def __call__(self, planes: Mapping[str, np.ndarray]) -> Any:
        """``{"y_out", "uv_out"}`` -> av.VideoFrame in ``fmt.pix_fmt`` with colour tags (pts is set by the caller)."""
        import av

        frame = av.VideoFrame(self.fmt.width, self.fmt.height, self.native)
        write_planes(frame, host(planes["y_out"]), host(planes["uv_out"]))
        if self.native != self.fmt.pix_fmt:  # packing, subsampling or depth only: no matrix is applied here
            frame = self._sws.reformat(frame, format=self.fmt.pix_fmt, interpolation="BICUBIC")
        tag_frame(frame, self.fmt)
        return frame
