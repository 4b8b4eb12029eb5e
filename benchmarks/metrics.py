"""Frame metrics of the quality harness: BT.601 Y, PSNR, SSIM (BasicSR convention) and warping error.

Conventions, chosen to reproduce the numbers papers report with BasicSR's video test scripts:

- Images are uint8 RGB (H, W, 3); every metric works in float64 on the 0-255 scale.
- Y is MATLAB's ``rgb2ycbcr`` luma, ``16 + (65.481 R + 128.553 G + 24.966 B)`` with RGB in [0, 1],
  so it spans 16-235. It is *not* rounded to integers (BasicSR's ``to_y_channel`` keeps floats).
- PSNR uses a peak of 255; identical images give ``inf``.
- SSIM is BasicSR's ``calculate_ssim``: 11x11 Gaussian window with sigma 1.5, C1 = (0.01*255)^2,
  C2 = (0.03*255)^2, statistics kept only where the window fits ('valid', 5 px trimmed per side),
  averaged over the SSIM map (and over channels for multi-channel input).
- Warping error measures temporal flicker. Optical flow is computed between the *ground-truth*
  frames t and t-1 (OpenCV DIS, medium preset, on grey), so every method is judged with the same
  flow. The method's output t-1 is warped to t with ``cv2.remap`` (bilinear). Pixels are dropped
  when their backward flow is not undone by the forward flow (the forward-backward test of
  Sundaram et al. 2010: ``|b + f(x+b)|^2 > 0.01 (|b|^2 + |f(x+b)|^2) + 0.5``) or when it points
  outside the frame. The error is the mean absolute difference over the kept pixels and the three
  channels (0-255 scale).
- Static flicker: where the ground truth does not move (its Y changes by at most ``STATIC_LEVEL`` between
  frames t-1 and t, anywhere within ``STATIC_RADIUS`` px), the mean |change of Y| of the output minus that of
  the ground truth, in Y levels. 0 means the output is as steady as the truth there; codec noise that a method
  passes on or amplifies makes it positive. Frames with under 1 % static pixels count as undefined.
- Reset jump: the static flicker of the first transition after a state reset (frames 0 -> 1 of a clip), when
  a recurrent model's output changes character as its state fills. Y levels over the same static mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# re-exported: the harness's metrics and the warping error's flow (training's warped temporal loss uses the same)
from training.scores import (FlowWarp, flow_warp, frame_metrics, grey, make_flow_estimator, psnr,  # noqa: F401
                             rgb_to_y, ssim)

STATIC_LEVEL = 1.0  # Y levels: a GT pixel changing by at most this between frames counts as not moving
STATIC_RADIUS = 2  # px: motion is dilated by this, so pixels next to moving ones do not count as static
STATIC_MIN_SHARE = 0.01  # frames with fewer static pixels than this share give no static-flicker value


def warp(img: np.ndarray, fw: FlowWarp) -> np.ndarray:
    """Frame t-1 (any dtype, (H, W) or (H, W, C)) resampled onto frame t's grid (float32)."""
    src = img.astype(np.float32)
    return cv2.remap(src, fw.map_x, fw.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warping_error(prev_out: np.ndarray, cur_out: np.ndarray, fw: FlowWarp) -> float:
    """Mean |warp(out t-1) - out t| over valid pixels and channels (0-255 scale); NaN if none valid."""
    if not fw.valid.any():
        return math.nan
    diff = np.abs(warp(prev_out, fw) - cur_out.astype(np.float32))
    return float(np.mean(diff[fw.valid]))


def static_mask(prev_gt: np.ndarray, cur_gt: np.ndarray) -> np.ndarray:
    """(H, W) bool: GT pixels that do not move between two uint8 RGB frames (see the module docstring)."""
    moving = (np.abs(rgb_to_y(cur_gt) - rgb_to_y(prev_gt)) > STATIC_LEVEL).astype(np.uint8)
    side = 2 * STATIC_RADIUS + 1
    return cv2.dilate(moving, np.ones((side, side), np.uint8)) == 0


def static_flicker(prev_out: np.ndarray, cur_out: np.ndarray, mask: np.ndarray, gt_change: float) -> float:
    """Mean |Y change| of the output over ``mask`` minus the GT's (``gt_change``), Y levels; NaN if too few."""
    if mask.mean() < STATIC_MIN_SHARE:
        return math.nan
    return float(np.mean(np.abs(rgb_to_y(cur_out) - rgb_to_y(prev_out))[mask])) - gt_change


def mean_change(prev: np.ndarray, cur: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean |Y change| between two uint8 RGB frames, over ``mask`` (all pixels when None), Y levels."""
    diff = np.abs(rgb_to_y(cur) - rgb_to_y(prev))
    return float(np.mean(diff if mask is None else diff[mask])) if mask is None or mask.any() else math.nan
