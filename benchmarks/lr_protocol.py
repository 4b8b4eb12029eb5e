"""How the quality harness makes LR clips: bicubic or Lanczos downscale, then an optional codec round trip.

A degradation is named as on the command line (``--degrade bi,x264:28,x265:28,av1:45``):

- ``bi``: MATLAB bicubic by 1/scale (antialiased), rounded to 8 bits (BasicSR's BI);
- ``CODEC:CRF`` with CODEC in x264, x265, av1: the same downscale, then the whole LR clip through that encoder
  (yuv420p, one pass, at CRF, the preset below, one thread) and back, as a user's compressed footage would be.
  AV1 goes through libsvtav1 (AIM 2024's efficient VSR challenge used SVT-AV1 at CRF 31-63), decoded by libdav1d.

``--downscale lanczos`` swaps the downscale for FFmpeg's swscale Lanczos (RGB, PyAV ``reformat``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import UsageError

EVAL_PRESETS = {"x264": "medium", "x265": "medium", "av1": "8"}  # fixed presets: the defaults users meet
CRF_LIMITS = {"x264": 51, "x265": 51, "av1": 63}
DOWNSCALES = ("bicubic", "lanczos")


@dataclass(frozen=True)
class Degrade:
    """One LR recipe of the protocol."""

    codec: str | None = None  # None (plain downscale) or a key of EVAL_PRESETS
    crf: int = 0  # the codec's CRF
    downscale: str = "bicubic"  # bicubic (MATLAB) | lanczos (FFmpeg swscale)

    @property
    def name(self) -> str:
        """The flag spelling, prefixed by the downscale when it is not bicubic: ``x264:28``, ``lanczos/bi``."""
        base = f"{self.codec}:{self.crf}" if self.codec else "bi"
        return base if self.downscale == "bicubic" else f"{self.downscale}/{base}"


def parse_degrades(items: Sequence[str], downscale: str = "bicubic") -> tuple[Degrade, ...]:
    """``("bi", "x264:28")`` -> Degrade tuple; UsageError names the bad item."""
    if downscale not in DOWNSCALES:
        raise UsageError(f"--downscale takes {' or '.join(DOWNSCALES)}, got {downscale!r}")
    out = []
    for item in items:
        if item == "bi":
            out.append(Degrade(downscale=downscale))
            continue
        codec, _, crf = item.partition(":")
        if codec not in EVAL_PRESETS or not crf.isdigit() or int(crf) > CRF_LIMITS[codec]:
            raise UsageError(f"--degrade item {item!r}: expected bi or CODEC:CRF with CODEC one of "
                             f"{', '.join(EVAL_PRESETS)} (e.g. x264:28, av1:45)")
        out.append(Degrade(codec, int(crf), downscale))
    if not out:
        raise UsageError("--degrade needs at least one item, e.g. bi or x264:28")
    return tuple(out)


def lanczos_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """FFmpeg swscale Lanczos resize of a uint8 RGB image (what ``-vf scale=W:H:flags=lanczos`` does)."""
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    return frame.reformat(width=width, height=height, interpolation="LANCZOS").to_ndarray(format="rgb24")


def make_lr(gt: Sequence[np.ndarray], scale: int, degrade: Degrade) -> np.ndarray:
    """LR clip (T, h, w, 3) uint8 of GT frames (all of one size, sides divisible by ``scale``)."""
    from training.degrade import bicubic_down
    from training.realworld import codec_roundtrip

    h, w = gt[0].shape[:2]
    if degrade.downscale == "lanczos":
        lr = np.stack([lanczos_resize(f, w // scale, h // scale) for f in gt])
    else:
        lr = np.stack([bicubic_down(f, scale) for f in gt])
    if degrade.codec is not None:
        lr = codec_roundtrip(lr, degrade.codec, degrade.crf, EVAL_PRESETS[degrade.codec])
    return lr
