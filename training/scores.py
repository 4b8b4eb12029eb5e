"""BasicSR's frame metrics (MATLAB BT.601 Y, PSNR, SSIM) and the warping error's optical flow, shared by training
(validation, the warped temporal loss) and the benchmarks.

Images are uint8 RGB (H, W, 3); every metric works in float64 on the 0-255 scale. Conventions are documented in
benchmarks/metrics.py, which re-exports these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# MATLAB rgb2ycbcr luma row for RGB in [0, 1]; output offset 16 (studio range 16-235)
Y_COEFFS = np.array([65.481, 128.553, 24.966])
Y_OFFSET = 16.0

SSIM_WINDOW = 11  # Gaussian window side (px)
SSIM_SIGMA = 1.5  # Gaussian window sigma (px)
SSIM_C1 = (0.01 * 255) ** 2  # luminance stabiliser for a 0-255 range
SSIM_C2 = (0.03 * 255) ** 2  # contrast stabiliser for a 0-255 range

FB_ALPHA = 0.01  # forward-backward test: relative tolerance (of squared flow magnitudes)
FB_BETA = 0.5  # forward-backward test: absolute tolerance (px^2)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB image, as MATLAB ``rgb2ycbcr`` (range 16-235, not rounded).

    Parameters
    ----------
    img : np.ndarray
        (H, W, 3) RGB on the 0-255 scale (uint8 or float).

    Returns
    -------
    np.ndarray
        (H, W) float64 Y on the 0-255 scale.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {img.shape}")
    return img.astype(np.float64) @ (Y_COEFFS / 255.0) + Y_OFFSET


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of two same-shaped images on the 0-``peak`` scale; ``inf`` when identical."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def _ssim_window() -> np.ndarray:
    """The 11x11 Gaussian SSIM window (sums to one)."""
    k = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    return np.outer(k, k.T)


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float64 single-channel images (0-255 scale), BasicSR's ``_ssim``."""
    win = _ssim_window()
    p = SSIM_WINDOW // 2  # 'valid' trim per side

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, win)[p:-p, p:-p]

    mu_a, mu_b = filt(a), filt(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = filt(a * a) - mu_aa
    var_b = filt(b * b) - mu_bb
    cov = filt(a * b) - mu_ab
    num = (2 * mu_ab + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_aa + mu_bb + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two images on the 0-255 scale (BasicSR ``calculate_ssim`` without border crop).

    Parameters
    ----------
    a, b : np.ndarray
        (H, W) or (H, W, C) images, H and W at least 11.

    Returns
    -------
    float
        Mean SSIM (the mean over channels for (H, W, C) input).
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images at least {SSIM_WINDOW} px on each side, got {a.shape[:2]}")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if a64.ndim == 2:
        return _ssim_2d(a64, b64)
    return float(np.mean([_ssim_2d(a64[..., c], b64[..., c]) for c in range(a64.shape[2])]))


def frame_metrics(sr: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Y-PSNR, Y-SSIM and RGB-PSNR of one uint8 RGB output frame against its ground truth."""
    y_sr, y_gt = rgb_to_y(sr), rgb_to_y(gt)
    return {"y_psnr": psnr(y_sr, y_gt), "y_ssim": ssim(y_sr, y_gt), "rgb_psnr": psnr(sr, gt)}


@dataclass(frozen=True)
class FlowWarp:
    """How to pull frame t-1 onto frame t, and where that is trustworthy."""

    map_x: np.ndarray  # (H, W) float32 source column in frame t-1 of each pixel of frame t
    map_y: np.ndarray  # (H, W) float32 source row in frame t-1 of each pixel of frame t
    valid: np.ndarray  # (H, W) bool, False where occluded (forward-backward test) or out of frame


def make_flow_estimator() -> cv2.DISOpticalFlow:
    """The optical flow used by the warping error: OpenCV DIS, medium preset."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def grey(img: np.ndarray) -> np.ndarray:
    """uint8 grey of a uint8 RGB image (the flow estimator's input)."""
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def flow_warp(prev_grey: np.ndarray, cur_grey: np.ndarray, dis: cv2.DISOpticalFlow) -> FlowWarp:
    """Backward warp from ground-truth frame t-1 to t with a forward-backward occlusion mask.

    Parameters
    ----------
    prev_grey, cur_grey : np.ndarray
        (H, W) uint8 grey ground-truth frames t-1 and t.
    dis : cv2.DISOpticalFlow
        Estimator from :func:`make_flow_estimator`.
    """
    back = dis.calc(cur_grey, prev_grey, None)  # cur(x) ~ prev(x + back(x)), px
    fwd = dis.calc(prev_grey, cur_grey, None)  # prev(x) ~ cur(x + fwd(x)), px
    h, w = cur_grey.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = gx + back[..., 0], gy + back[..., 1]
    fwd_at = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    loop = back + fwd_at  # ~0 where the two flows agree
    tol = FB_ALPHA * (np.sum(back**2, axis=2) + np.sum(fwd_at**2, axis=2)) + FB_BETA
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    valid = (np.sum(loop**2, axis=2) <= tol) & inside
    return FlowWarp(map_x=map_x, map_y=map_y, valid=valid)
