"""The ``motion`` input of video graphs that align their history blend (``vsr.motion``): optical flow on the host.

OpenCV's DIS optical flow (Kroeger et al., ECCV 2016) of each LR luma plane against the previous one, medium preset:
the estimator the quality harness's warping error also uses. It runs on the decoded 8-bit luma (deeper samples are
shifted down; planes over MAX_FLOW_PIXELS are area-downscaled first), small next to the step: at 320 x 180 about
5 ms on one core against 50-120 ms for the CPU models.
The result crosses the backend boundary as an integer plane like the frames (int32, 1/64 pixel; engine/graph.py:
TensorRT takes no int16 inputs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.graph import MOTION_UNIT

LIMIT = 1 << 20  # motion beyond +-16384 LR pixels per frame is clipped (a cut, not motion)
# Larger luma planes are area-downscaled by an integer factor to at most this many pixels before the flow, and the
# flow scaled back: DIS medium costs about 22 ms at 640 x 360 and 200 ms at 1920 x 1080 on one core, and half or a
# third of the size lost 0.03-0.05 dB on the held-out clip (benchmarks/RESULTS.md, session 12)
MAX_FLOW_PIXELS = 640 * 360


def flow_factor(h: int, w: int) -> int:
    """Integer downscale of an h x w plane that brings it within MAX_FLOW_PIXELS (1 = full size)."""
    return max(1, math.ceil(math.sqrt(h * w / MAX_FLOW_PIXELS)))


def luma8(y: Any, bits: int = 8) -> np.ndarray:
    """(H, W) uint8 of a ``y`` plane (1, 1, H, W): numpy, or a device tensor read back (LR luma, a few hundred KB)."""
    plane = y[0, 0]
    if not isinstance(plane, np.ndarray):
        plane = plane.cpu().numpy()
    if bits > 8:
        plane = np.right_shift(plane, bits - 8)
    return np.ascontiguousarray(plane, dtype=np.uint8)


class MotionEstimator:
    """One stream's motion: call it on every frame's ``y`` plane, in order; ``fresh`` (first frame, cut, size change)
    gives zeros, as the step's state is zeros then too."""

    def __init__(self, bits: int = 8) -> None:
        import cv2

        self.bits = bits  # bits per luma sample (right-aligned in uint16 planes)
        self._cv2 = cv2
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._prev: np.ndarray | None = None

    def __call__(self, y: Any, fresh: bool = False) -> np.ndarray:
        """(1, 2, H, W) int32 current -> previous motion in 1/``MOTION_UNIT`` LR pixel."""
        cv2 = self._cv2
        grey = luma8(y, self.bits)
        h, w = grey.shape
        f = flow_factor(h, w)
        if f > 1:
            grey = cv2.resize(grey, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        prev, self._prev = self._prev, grey
        if fresh or prev is None or prev.shape != grey.shape:
            return np.zeros((1, 2, h, w), np.int32)
        try:
            flow = self._dis.calc(grey, prev, None)  # grey(p) ~ prev(p + flow(p))
        except cv2.error:  # frames too small for its patches (under about 12 pixels a side): the still blend
            return np.zeros((1, 2, h, w), np.int32)
        if f > 1:  # back to the plane's size, vectors in its pixels
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * (w / grey.shape[1], h / grey.shape[0])
        return np.clip(np.rint(flow * MOTION_UNIT), -LIMIT, LIMIT).astype(np.int32).transpose(2, 0, 1)[None].copy()


def synthetic_motion(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A plausible ``motion`` plane for parity checks and benchmarks: a global shift of a few pixels plus sub-pixel
    jitter per pixel, (1, 2, h, w) int32 in 1/``MOTION_UNIT`` pixel."""
    rng = np.random.default_rng(seed)
    shift = rng.normal(size=(1, 2, 1, 1)) * 3 + rng.normal(size=(1, 2, h, w)) * 0.5
    return np.rint(shift * MOTION_UNIT).astype(np.int32)
