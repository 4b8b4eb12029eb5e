"""Colour constants fed to a video graph: YUV/RGB matrices in code values for a stream's matrix, range and depth."""

from __future__ import annotations

import numpy as np

# AVColorSpace -> (Kr, Kb) luma coefficients (ITU-R BT.601/709/2020, SMPTE 240M, FCC)
KR_KB: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance: converted as NCL (as swscale does)
}
RGB = 0  # AVCOL_SPC_RGB: planes are G, B, R (gbrp order), no matrix
LIMITED, FULL = 1, 2  # AVColorRange: MPEG (16-235 at 8 bits) and JPEG (0-255)


def rgb_to_yuv(matrix: int) -> np.ndarray:
    """(3, 3) normalised R'G'B' -> (Y', Cb, Cr) with Y' in [0, 1] and Cb, Cr in [-0.5, 0.5]."""
    kr, kb = KR_KB.get(matrix, KR_KB[1])
    kg = 1.0 - kr - kb
    return np.array([[kr, kg, kb],
                     [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
                     [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))]])


def code_scale(color_range: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-plane (gain, offset) from (Y', Cb, Cr) to code values of ``bits``-bit samples in ``color_range``."""
    if color_range == FULL:
        peak = float(2**bits - 1)
        return np.array([peak, peak, peak]), np.array([0.0, 2.0 ** (bits - 1), 2.0 ** (bits - 1)])
    unit = 2.0 ** (bits - 8)
    return np.array([219.0, 224.0, 224.0]) * unit, np.array([16.0, 128.0, 128.0]) * unit


def from_rgb(matrix: int, color_range: int, bits: int) -> np.ndarray:
    """(3, 4) float32 affine: RGB in [0, 1] -> code values of the planes (y, u, v); for RGB, (G, B, R)."""
    if matrix == RGB:
        m = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) * (2**bits - 1)
        return np.concatenate([m, np.zeros((3, 1))], axis=1).astype(np.float32)
    gain, offset = code_scale(color_range, bits)
    return np.concatenate([rgb_to_yuv(matrix) * gain[:, None], offset[:, None]], axis=1).astype(np.float32)


def to_rgb(matrix: int, color_range: int, bits: int) -> np.ndarray:
    """(3, 4) float32 affine: code values of the planes (y, u, v) -> RGB in [0, 1]; the inverse of ``from_rgb``."""
    fwd = from_rgb(matrix, color_range, bits).astype(np.float64)
    inv = np.linalg.inv(fwd[:, :3])
    return np.concatenate([inv, -inv @ fwd[:, 3:]], axis=1).astype(np.float32)


def peak(bits: int) -> np.ndarray:
    """(1,) float32: the largest code value of ``bits``-bit samples."""
    return np.array([2**bits - 1], np.float32)
