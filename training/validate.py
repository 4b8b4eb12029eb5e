"""Validation during training: a model's recurrent Y-PSNR / Y-SSIM on a folder of clips (e.g. Vid4), BI protocol.

The federated trainer scores the global model with it after each round. It is the recurrent method of
``vsr-bench quality`` with the default BI degradation and no temporal metrics (tests check they agree), kept here
so training needs nothing of benchmarks/.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np

from engine.errors import DecodeError, InputError
from training.degrade import bicubic_down
from training.scores import frame_metrics

VIDEO_EXTENSIONS = (".mkv", ".mp4", ".mov", ".avi", ".webm", ".nut", ".y4m")  # files taken as clips


def list_clips(dataset_dir: str | Path, clips: Sequence[str] | None = None) -> list[Path]:
    """Video files of ``dataset_dir`` sorted by name, optionally only the stems in ``clips``."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(f"dataset folder {root} not found; pass --dataset DIR, a folder of video files")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not files:
        raise InputError(f"no videos in {root}; expected files ending in {', '.join(VIDEO_EXTENSIONS)}")
    if clips is None:
        return files
    by_stem = {p.stem: p for p in files}
    missing = [c for c in clips if c not in by_stem]
    if missing:
        raise InputError(f"clip(s) {', '.join(missing)} not in {root}; have {', '.join(by_stem)}")
    return [by_stem[c] for c in clips]


def read_frames(path: Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode ``path`` to uint8 RGB (H, W, 3) frames, at most ``max_frames``."""
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if max_frames is not None and i >= max_frames:
                    return
                yield frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, IndexError) as e:
        raise DecodeError(f"cannot decode {path.name}: {e}; expected a video file") from e


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right of ``img`` so both sides divide by ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


@contextlib.contextmanager
def _torch_eval(model: Any, threads: int | None) -> Iterator[None]:
    """Eval mode and ``threads`` torch threads for the block; both restored after."""
    import torch

    was_training, old_threads = model.training, torch.get_num_threads()
    model.eval()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)


def _clip_scores(model: Any, path: Path, scale: int, max_frames: int | None) -> dict[str, Any]:
    """Frame-mean scores of the recurrent run of ``model`` on one clip (outputs rounded to uint8)."""
    import torch

    device = next(model.parameters()).device
    hidden, seconds, rows = None, 0.0, []
    for hr in read_frames(path, max_frames):
        gt = mod_crop(hr, scale)
        x = torch.from_numpy(bicubic_down(gt, scale)).to(device).permute(2, 0, 1)[None].float() / 255.0
        start = time.perf_counter()
        with torch.no_grad():
            sr, hidden = model.step(x, hidden)
        seconds += time.perf_counter() - start
        out = torch.round(sr[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        rows.append(frame_metrics(out, gt))
    if not rows:
        raise DecodeError(f"{path.name} has no video frames")
    return {**{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}, "frames": len(rows), "seconds": seconds}


def validate(model: Any, dataset_dir: str | Path, scale: int, max_frames: int | None = None,
             clips: Sequence[str] | None = None, threads: int | None = 1) -> dict[str, Any]:
    """Recurrent Y-PSNR / Y-SSIM / RGB-PSNR of ``model`` (a ``step``-able torch module) on BI-degraded clips.

    Returns
    -------
    dict
        ``{"y_psnr", "y_ssim", "rgb_psnr"}`` as the mean of clip means, ``"frames"`` and ``"seconds"`` summed,
        and ``"clips": {clip: scores}``. The model's train/eval mode and torch's thread count are restored.
    """
    with _torch_eval(model, threads):
        per_clip = {p.stem: _clip_scores(model, p, scale, max_frames) for p in list_clips(dataset_dir, clips)}
    out: dict[str, Any] = {k: float(np.mean([c[k] for c in per_clip.values()])) for k in ("y_psnr", "y_ssim",
                                                                                          "rgb_psnr")}
    out.update(frames=sum(c["frames"] for c in per_clip.values()),
               seconds=sum(c["seconds"] for c in per_clip.values()), clips=per_clip)
    return out
