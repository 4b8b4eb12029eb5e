"""End-to-end CPU fps of this tree against an extract of an older commit, pairs alternated in one run.

``python -m benchmarks.cpu_ratio --old-tree DIR [--pairs N] [--json OUT]``: runs ``vsr-upscale CLIP -o OUT.mp4
--backend onnxruntime --scale 2 --json`` from each tree (``git archive COMMIT | tar -x -C DIR``) on the sample clip
and on a 12-frame 1280x720 H.264 clip of moving texture, alternating old/new and new/old, and reports the new/old
fps ratio of every pair and their median. Run it on a quiet machine: only ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def texture_clip(path: Path, frames: int = 12, size: tuple[int, int] = (1280, 720)) -> Path:
    """A moving random texture with a horizontal ramp, H.264 yuv420p CRF 18 at 24 fps."""
    import av

    w, h = size
    rng = np.random.default_rng(0)
    base = np.clip(rng.normal(128, 40, (h + 3 * frames, w + 5 * frames, 3)), 0, 255).astype(np.uint8)
    ramp = (np.arange(w) * 255 // w // 2).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=24, options={"preset": "veryfast", "crf": "18"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = base[i * 3 : i * 3 + h, i * 5 : i * 5 + w].copy()
            img[..., 0] = img[..., 0] // 2 + ramp
            c.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(s.encode())
    return path


def fps(tree: Path, clip: Path, out_dir: Path) -> float:
    out = out_dir / f"o{time.time_ns()}.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", str(clip), "-o", str(out), "--backend", "onnxruntime",
                        "--scale", "2", "--json"], cwd=tree, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{tree}: vsr-upscale exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    out.unlink(missing_ok=True)
    return float(json.loads(r.stdout)["fps"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_ratio", description=__doc__.split("\n\n")[0])
    p.add_argument("--old-tree", type=Path, required=True, help="extract of the older commit")
    p.add_argument("--pairs", type=int, default=4, help="old/new pairs per clip")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vsr-cpu-ratio-"))
    clips = {"sample 320x180 x2": ROOT / "samples/dog_320x180.mp4", "720p->1440p x2": texture_clip(tmp / "c720.mp4")}
    res = {}
    for name, clip in clips.items():
        runs: dict[str, list[float]] = {"old": [], "new": []}
        for i in range(args.pairs):
            for side in (("old", "new") if i % 2 == 0 else ("new", "old")):
                runs[side].append(fps(args.old_tree if side == "old" else ROOT, clip, tmp))
        ratios = [n / o for n, o in zip(runs["new"], runs["old"])]
        res[name] = {"old_fps": runs["old"], "new_fps": runs["new"], "ratio_new_over_old": ratios,
                     "median_ratio": float(np.median(ratios))}
        print(f"{name}: pairs {', '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
