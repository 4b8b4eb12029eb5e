"""Quality harness: BI-degraded clips, bicubic vs a recurrent model, scored as BasicSR scores video SR.

Protocol (``vsr-bench quality``):

- A dataset is a folder of video files (extensions in ``VIDEO_EXTENSIONS``, sorted by name); each
  file is one clip, decoded to 8-bit RGB with PyAV. Vid4 lives at /work/shared/data/vid4.
- Ground truth (GT) is each frame cropped at the bottom/right to a multiple of the scale. The LR
  clip is made by ``benchmarks.lr_protocol``: by default the BI degradation (MATLAB ``imresize``
  bicubic, antialiased, by 1/scale, rounded to uint8); ``--degrade x264:28`` etc. add a codec round
  trip of the whole LR clip (the real-world protocol).
- Methods: ``bicubic`` is MATLAB ``imresize`` bicubic of the uint8 LR up to the GT size
  (``training.degrade.imresize``, rounded to uint8); ``lanczos`` is FFmpeg's swscale Lanczos
  (what ``ffmpeg -vf scale=...:flags=lanczos`` users get); ``recurrent`` runs the model carrying its hidden
  state from frame to frame (from zeros at each clip start); ``framewise`` runs the same model with
  the hidden state reset to zeros at every frame.
- Every output is quantised to uint8 (round, clip) as a saved video would be, then scored on all
  frames without border crop (see benchmarks/metrics.py): Y-PSNR and Y-SSIM on MATLAB BT.601 Y,
  RGB-PSNR, the warping error (flow from the GT frames, so all methods share one flow), the static
  flicker and reset jump (benchmarks/metrics.py), and VMAF when asked (benchmarks/vmaf.py).
  ``reference_warp_error`` is the warping error of the GT itself: what flow and interpolation
  errors cost sharp content. It is not a floor: blurry output (bicubic) scores lower, so compare
  warping errors only between methods of similar PSNR.
- Frame scores are averaged per clip, clip scores averaged over clips ("mean"). ``frames`` and
  ``seconds`` (time inside the method's step calls, tensor conversions included) are summed.
  Undefined scores (identical frames give infinite PSNR; no valid flow pixel) are reported as None.

Reusable API:

- ``evaluate(methods, dataset_dir, scale, max_frames=None, clips=None, warp=True, crop_side=None,
  degrade=Degrade(), vmaf=False)`` takes ``{name: factory}``; a factory returns a fresh per-clip stepper
  ``lr_uint8_hwc -> sr`` where ``sr`` is uint8 or float RGB in [0, 1]. Returns ``{"clips": {...}, "mean":
  {name: scores}, ...}``; with ``crop_side`` it also holds ``"crops"`` (numpy arrays, not JSON).
- Training's per-round validation is ``training.validate.validate`` (the recurrent BI run only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.lr_protocol import Degrade, make_lr
from benchmarks.methods import Stepper, StepperFactory
from benchmarks.metrics import (FlowWarp, flow_warp, frame_metrics, grey, make_flow_estimator, mean_change,
                                static_flicker, static_mask, warping_error)
from engine.errors import DecodeError, ModelError
from training.validate import list_clips, mod_crop, read_frames

METHODS = ("bicubic", "lanczos", "framewise", "recurrent")  # report order
SCORES = ("y_psnr", "y_ssim", "rgb_psnr", "warp_error", "static_flicker", "reset_jump", "vmaf")  # averaged scores


def to_uint8(sr: np.ndarray) -> np.ndarray:
    """Quantise a float RGB output in [0, 1] as a saved video would be (uint8 passes through)."""
    if sr.dtype == np.uint8:
        return sr
    return np.clip(np.round(sr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def pick_crop(gt: np.ndarray, side: int) -> tuple[int, int, int]:
    """(top, left, side) of the most detailed square of ``gt`` (largest |Laplacian| sum)."""
    h, w = gt.shape[:2]
    side = min(side, h, w)
    energy = np.abs(cv2.Laplacian(grey(gt).astype(np.float32), cv2.CV_32F))
    ii = cv2.integral(energy)
    step = max(side // 4, 1)
    best = max(
        (ii[y + side, x + side] - ii[y, x + side] - ii[y + side, x] + ii[y, x], y, x)
        for y in range(0, h - side + 1, step)
        for x in range(0, w - side + 1, step)
    )
    return best[1], best[2], side


def _mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values; None when there are none (JSON has no inf/NaN)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _check_shape(name: str, sr: np.ndarray, gt: np.ndarray, lr: np.ndarray) -> None:
    """Raise ModelError when a method's output is not the GT size (typically a wrong scale)."""
    if sr.shape != gt.shape:
        raise ModelError(
            f"{name} turned a {lr.shape[1]}x{lr.shape[0]} frame into {sr.shape[1]}x{sr.shape[0]}, "
            f"expected {gt.shape[1]}x{gt.shape[0]}; do the weights match --scale?"
        )


def _crop_all(frames: dict[str, np.ndarray], side: int) -> dict[str, np.ndarray]:
    """The same most-detailed square (chosen on ``frames["gt"]``) cut from every frame."""
    y, x, s = pick_crop(frames["gt"], side)
    return {k: v[y : y + s, x : x + s].copy() for k, v in frames.items()}


def _step_and_score(
    steppers: Mapping[str, Stepper], lr: np.ndarray, gt: np.ndarray, prev: dict[str, np.ndarray],
    fw: FlowWarp | None, scores: dict[str, dict[str, list[float]]], seconds: dict[str, float],
) -> dict[str, np.ndarray]:
    """Run every stepper on one LR frame, append its scores; returns the uint8 outputs (and the GT)."""
    outs = {"gt": gt}
    for name, stepper in steppers.items():
        start = time.perf_counter()
        sr = to_uint8(stepper(lr))
        seconds[name] += time.perf_counter() - start
        _check_shape(name, sr, gt, lr)
        for key, value in frame_metrics(sr, gt).items():
            scores[name][key].append(value)
        if fw is not None:
            scores[name]["warp_error"].append(warping_error(prev[name], sr, fw))
        outs[name] = sr
    return outs


def _score_temporal(outs: dict[str, np.ndarray], prev: dict[str, np.ndarray], t: int,
                    scores: dict[str, dict[str, list[float]]]) -> None:
    """Static flicker of frame t (t >= 1) for every method; at t == 1 it is also the reset jump."""
    mask = static_mask(prev["gt"], outs["gt"])
    gt_static = mean_change(prev["gt"], outs["gt"], mask)
    for name in scores:
        flicker = static_flicker(prev[name], outs[name], mask, gt_static)
        scores[name]["static_flicker"].append(flicker)
        if t == 1:
            scores[name]["reset_jump"].append(flicker)


def _vmaf_scores(gts: list[np.ndarray], kept: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """VMAF of every kept output clip against the GT (nothing when none were kept)."""
    if not kept:
        return {}
    from benchmarks.vmaf import vmaf_clip

    return {name: vmaf_clip(gts, frames) for name, frames in kept.items()}


def evaluate_clip(
    path: Path, methods: Mapping[str, StepperFactory], scale: int, max_frames: int | None = None,
    warp: bool = True, crop_side: int | None = None, degrade: Degrade = Degrade(), vmaf: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """Scores of every method on one clip, and the middle-frame crops (``crop_side`` given)."""
    gts = [mod_crop(hr, scale) for hr in read_frames(path, max_frames)]
    if not gts:
        raise DecodeError(f"{path.name} has no video frames")
    lrs = make_lr(gts, scale, degrade)
    steppers = {name: make() for name, make in methods.items()}
    scores: dict[str, dict[str, list[float]]] = {n: {k: [] for k in SCORES} for n in methods}
    seconds = dict.fromkeys(methods, 0.0)
    reference: list[float] = []  # warping error of the GT itself
    kept: dict[str, list[np.ndarray]] = {n: [] for n in methods} if vmaf else {}
    dis = make_flow_estimator() if warp else None
    prev: dict[str, np.ndarray] = {}
    crops = None
    for t, (gt, lr) in enumerate(zip(gts, lrs)):
        fw = flow_warp(grey(prev["gt"]), grey(gt), dis) if dis is not None and t > 0 else None
        if fw is not None:
            reference.append(warping_error(prev["gt"], gt, fw))
        outs = _step_and_score(steppers, lr, gt, prev, fw, scores, seconds)
        if t > 0:
            _score_temporal(outs, prev, t, scores)
        for name in kept:
            kept[name].append(outs[name])
        if crop_side and t == (len(gts) - 1) // 2:
            crops = _crop_all(outs, crop_side)
        prev = outs
    for name, value in _vmaf_scores(gts, kept).items():
        scores[name]["vmaf"].append(value)
    h, w = gts[0].shape[:2]
    per_method = {
        name: {**{k: _mean(v) for k, v in scores[name].items()}, "frames": len(gts), "seconds": seconds[name]}
        for name in methods
    }
    clip = {"frames": len(gts), "width": w, "height": h, "reference_warp_error": _mean(reference),
            "methods": per_method}
    return clip, crops


def evaluate(
    methods: Mapping[str, StepperFactory], dataset_dir: str | Path, scale: int, max_frames: int | None = None,
    clips: Sequence[str] | None = None, warp: bool = True, crop_side: int | None = None,
    degrade: Degrade = Degrade(), vmaf: bool = False,
) -> dict[str, Any]:
    """Score ``methods`` on every clip of ``dataset_dir`` (see the module docstring).

    Parameters
    ----------
    methods : Mapping[str, StepperFactory]
        Method name -> factory of a fresh per-clip stepper.
    dataset_dir : str or Path
        Folder of video files, one clip each.
    scale : int
        SR factor; the LR is the BI degradation of the GT by this factor.
    max_frames : int, optional
        Frames per clip (default all).
    clips : sequence of str, optional
        Clip file stems to run (default all).
    warp : bool
        Compute the warping error (two DIS flows per frame).
    crop_side : int, optional
        Keep a crop of this HR side from each clip's middle frame under ``"crops"``.
    degrade : Degrade
        How the LR clip is made (benchmarks.lr_protocol); default BI.
    vmaf : bool
        Also score VMAF per clip (benchmarks.vmaf).

    Returns
    -------
    dict
        ``{"dataset", "scale", "max_frames", "methods", "clips": {clip: ...}, "mean": {method: ...},
        "reference_warp_error"}`` (+ ``"crops"``).
    """
    per_clip, crops = {}, {}
    for path in list_clips(dataset_dir, clips):
        per_clip[path.stem], crop = evaluate_clip(path, methods, scale, max_frames, warp, crop_side, degrade, vmaf)
        if crop is not None:
            crops[path.stem] = crop
    mean = {
        name: {
            **{k: _mean([c["methods"][name][k] for c in per_clip.values() if c["methods"][name][k] is not None])
               for k in SCORES},
            "frames": sum(c["methods"][name]["frames"] for c in per_clip.values()),
            "seconds": sum(c["methods"][name]["seconds"] for c in per_clip.values()),
        }
        for name in methods
    }
    refs = [c["reference_warp_error"] for c in per_clip.values() if c["reference_warp_error"] is not None]
    result = {"dataset": str(dataset_dir), "scale": scale, "degrade": degrade.name, "max_frames": max_frames,
              "methods": list(methods),
              "clips": per_clip, "mean": mean, "reference_warp_error": _mean(refs)}
    if crop_side:
        result["crops"] = crops
    return result
