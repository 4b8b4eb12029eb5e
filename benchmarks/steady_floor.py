"""How much of a warping error is flicker: the warping error of perfectly steady output of a given fidelity.

The ground truth blurred by a Gaussian of growing sigma (no noise, the same blur on every frame) is an output that
never flickers. Its warping error against its Y-PSNR gives the floor a method of that PSNR would reach if none of its
error changed from frame to frame along the motion; a method's warping error above that floor at the same PSNR is
flicker along the motion (the ground truth's own warping error, ``reference_warp_error``, is sigma 0).

``vsr-bench steady-floor --dataset ../shared/data/vid4`` prints one row per clip and sigma (Y-PSNR on
every fifth frame, warping error on every transition, both as ``vsr-bench quality`` scores them). With
``--quality REPORT.json`` (a ``vsr-bench quality --json`` report of the same clips; repeatable) it also prints each
method's excess over the floor, clip by clip and as the mean of the clips, for every degradation in the report.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from benchmarks.metrics import flow_warp, grey, make_flow_estimator, psnr, rgb_to_y, warping_error
from engine.errors import InputError
from training.validate import list_clips, read_frames

SIGMAS = (0.0, 0.6, 0.9, 1.2, 1.5, 2.0, 2.5, 3.0)  # Gaussian sigmas (px of the GT) of the steady outputs
PSNR_EVERY = 5  # Y-PSNR on every n-th frame (a steady blur scores the same on every frame)


def blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 RGB ``frame`` blurred by a Gaussian of ``sigma`` px and quantised as a saved output would be."""
    if sigma == 0:
        return frame
    out = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), sigma)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def floor_curve(gt: list[np.ndarray], sigmas: tuple[float, ...] = SIGMAS) -> list[dict[str, float]]:
    """(sigma, Y-PSNR, warping error) of the steady blurred ground truth ``gt`` (uint8 RGB frames) at each sigma;
    Y-PSNR is None at sigma 0 (identical frames)."""
    dis = make_flow_estimator()
    warps = [flow_warp(grey(gt[t - 1]), grey(gt[t]), dis) for t in range(1, len(gt))]
    rows = []
    for sigma in sigmas:
        out = [blur(g, sigma) for g in gt]
        y_psnr = None if sigma == 0 else float(np.mean([psnr(rgb_to_y(o), rgb_to_y(g))  # Y-PSNR, no SSIM to pay
                                                        for o, g in zip(out[::PSNR_EVERY], gt[::PSNR_EVERY])]))
        warp = float(np.nanmean([warping_error(out[t - 1], out[t], warps[t - 1]) for t in range(1, len(out))]))
        rows.append({"sigma": sigma, "y_psnr": y_psnr, "warp_error": warp})
    return rows


def floor_at(rows: list[dict[str, float]], y_psnr: float) -> float:
    """The steady floor's warping error at ``y_psnr``, linear between the measured sigmas (clamped at the ends)."""
    pts = sorted((r["y_psnr"], r["warp_error"]) for r in rows if r["y_psnr"] is not None)
    return float(np.interp(y_psnr, [p for p, _ in pts], [w for _, w in pts]))


def excess(report: dict, floors: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """{degradation: {method: {clip: warping error - floor at its Y-PSNR, ..., "mean": mean of clips}}} of a
    ``vsr-bench quality`` report, for the clips ``floors`` (clip -> ``floor_curve`` rows) covers."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for degrade, run in report["runs"].items():
        for clip, scores in run["clips"].items():
            if clip not in floors:
                continue
            for method, m in scores["methods"].items():
                if m["warp_error"] is not None and m["y_psnr"] is not None:
                    by_clip = out.setdefault(degrade, {}).setdefault(method, {})
                    by_clip[clip] = m["warp_error"] - floor_at(floors[clip], m["y_psnr"])
    for methods in out.values():
        for by_clip in methods.values():
            by_clip["mean"] = float(np.mean(list(by_clip.values())))
    return out


def read_report(path: Path) -> dict:
    """A ``vsr-bench quality --json`` report; InputError (one line) if ``path`` is missing or is not one."""
    try:
        report = json.loads(path.read_text())
        if not isinstance(report, dict) or not isinstance(report.get("runs"), dict):
            raise ValueError("no 'runs' table")
    except (OSError, ValueError) as e:
        raise InputError(f"--quality {path}: not a vsr-bench quality --json report ({e})") from None
    return report


def run(dataset: Path, clips: tuple[str, ...] = (), max_frames: int | None = None, json_out: Path | None = None,
        quality: tuple[Path, ...] = ()) -> list[str]:
    """``vsr-bench steady-floor``: the floor of every clip of ``dataset`` (or of ``clips``), written to ``json_out``
    when given, and each method's excess over it in the ``quality`` reports; returns the printed lines."""
    reports = [(path.name, read_report(path)) for path in quality]  # refuse a bad report before the slow part
    lines, result = [], {}
    for path in list_clips(dataset, list(clips) or None):
        result[path.stem] = floor_curve(list(read_frames(path, max_frames)))
        for r in result[path.stem]:
            psnr = "-" if r["y_psnr"] is None else f"{r['y_psnr']:.2f}"
            lines.append(f"{path.stem} sigma {r['sigma']:.1f}: Y-PSNR {psnr}, warping error {r['warp_error']:.3f}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    for name, report in reports:
        for degrade, methods in excess(report, result).items():
            for method, by_clip in methods.items():
                per_clip = ", ".join(f"{c} {v:.3f}" for c, v in by_clip.items() if c != "mean")
                lines.append(f"{name} {degrade} {method}: excess over the floor {by_clip['mean']:.3f} "
                             f"({per_clip})")
    return lines
