"""Integer-plane graph vs float reference on real footage; the previous commit's preprocess bias and host cost.

``python -m benchmarks.colour_parity CLIP [--old-tree DIR [--old-hostpath WxH]]``: (1) histogram of |integer
graph - float reference| in code values, per plane, over every frame of CLIP with the shipped rvsr-s x2 (the
reference runs the same model and colour maths in float32 torch and rounds only at the end); (2) with
``--old-tree`` (an extract of the previous commit), the mean RGB difference of its swscale preprocess against
the exact conversion; (3) with ``--old-hostpath``, its Preprocessor + Postprocessor CPU ms per frame on the
synthetic frame `vsr-bench hostpath` uses, and the float32 bytes it moved per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _frames(clip: Path):
    from engine.decode import FrameItem, Source

    with Source(clip) as src:
        for item in src.items():
            if isinstance(item, FrameItem):
                yield src.info, item.frame


def parity(clip: Path) -> dict:
    """Histogram of |ORT integer planes - torch float reference| over the clip (rvsr-s x2, shipped)."""
    import torch

    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import load_net
    from engine.models.frame_io import VideoStep, affine
    from engine.pipeline import colour_constants
    from engine.postprocess import OutputFormat
    from engine.preprocess import Preprocessor, matrix_of, range_of
    from engine.registry import shipped_file
    from engine.step import Stepper

    backend = OnnxRuntimeBackend(shipped_file("rvsr-s", 2))
    wrap = VideoStep(load_net(shipped_file("rvsr-s", 2, ".safetensors"))[2])
    hist = {k: np.zeros(256, np.int64) for k in ("y", "uv")}
    stepper, pre, state = None, None, None
    for info, frame in _frames(clip):
        if stepper is None:
            fmt = OutputFormat(info.width * 2, info.height * 2, "yuv420p", matrix_of(info), range_of(info), 2, 2)
            pre = Preprocessor(info)
            consts = colour_constants(info, pre.bits, fmt)
            stepper, c = Stepper(backend, consts), {k: torch.from_numpy(v) for k, v in consts.items()}
        planes = pre(frame)
        got = stepper(planes)
        with torch.no_grad():
            y, uv = (torch.from_numpy(planes[k]) for k in ("y", "uv"))
            sr, state = wrap.net.step(wrap.to_rgb(y, uv, c["to_rgb"]), state)
            code = affine(c["from_rgb"], *sr.clamp(0, 1).split(1, dim=1))
            chroma = torch.nn.functional.interpolate(code[:, 1:], size=got["uv_out"].shape[2:], mode="bilinear",
                                                     align_corners=False)
            ref = {"y": code[:, :1].round().clamp(0, 255).numpy(), "uv": chroma.round().clamp(0, 255).numpy()}
        for k in hist:
            d = np.abs(got[f"{k}_out"].astype(np.int64) - ref[k].astype(np.int64))
            hist[k] += np.bincount(d.ravel(), minlength=256)[:256]
    return {k: {str(i): int(n) for i, n in enumerate(h) if n} for k, h in hist.items()}


def _old(old_tree: Path, name: str):
    """Module ``name`` of the previous commit's tree, imported beside this one's."""
    import importlib

    sys.path.insert(0, str(old_tree))
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "engine" or k.startswith("engine.")}
    try:
        return importlib.import_module(name)
    finally:
        for k in [k for k in sys.modules if k == "engine" or k.startswith("engine.")]:
            sys.modules.pop(k)
        sys.modules.update(saved)
        sys.path.remove(str(old_tree))


def old_hostpath(old_tree: Path, w: int, h: int, frames: int = 10) -> dict:
    """The previous commit's host work per frame (its Preprocessor + Postprocessor, thread CPU ms) at w x h -> x2."""
    import time

    from benchmarks.hostpath import synthetic_frame

    pre_mod, post_mod = _old(old_tree, "engine.preprocess"), _old(old_tree, "engine.postprocess")
    frame = synthetic_frame(w, h, "yuv420p")
    info = pre_mod.VideoInfo(w, h, None, None, 0, 0, "yuv420p", 8, False, 1, 1, 1, 1, 0, "synthetic")
    pre = pre_mod.Preprocessor(info)
    post = post_mod.Postprocessor(post_mod.OutputFormat(2 * w, 2 * h, "yuv420p", 1, 1, 1, 1))
    sr = np.random.default_rng(1).random((1, 3, 2 * h, 2 * w), dtype=np.float32)
    cpu = [0.0, 0.0]
    for i in range(frames + 3):
        t0 = time.thread_time()
        lr = pre(frame)
        t1 = time.thread_time()
        post(sr)
        if i >= 3:
            cpu[0] += (t1 - t0) * 1000 / frames
            cpu[1] += (time.thread_time() - t1) * 1000 / frames
    state = (16 * h * w + 3 * 4 * h * w) * 4  # rvsr-s hidden state, float32, round-tripped in and out
    return {"size": [w, h], "pre_ms": round(cpu[0], 2), "post_ms": round(cpu[1], 2),
            "mb_per_frame": round((lr.nbytes + sr.nbytes) / 1e6, 1),
            "mb_per_frame_with_state": round((lr.nbytes + sr.nbytes + 2 * state) / 1e6, 1)}


def old_bias(clip: Path, old_tree: Path) -> dict:
    """Mean (old swscale preprocess - exact float conversion of the same planes), per RGB channel, x255."""
    from engine import colour
    from engine.preprocess import Preprocessor, matrix_of, range_of

    old_pre_mod = _old(old_tree, "engine.preprocess")
    diffs = []
    for info, frame in _frames(clip):
        p = Preprocessor(info, "uint16", out_sub=(1, 1))(frame)  # exact: chroma upsampled by swscale, no matrix
        m = colour.to_rgb(matrix_of(info), range_of(info), 8)
        yuv = np.concatenate([p["y"][0], p["uv"][0]]).reshape(3, -1).astype(np.float64)
        exact = (m[:, :3] @ yuv + m[:, 3:]).clip(0, 1)
        old = old_pre_mod.Preprocessor(info)(frame)[0].reshape(3, -1)
        diffs.append((old - exact).mean(axis=1) * 255)
    return {"mean_rgb_x255": [round(float(v), 3) for v in np.mean(diffs, axis=0)], "frames": len(diffs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.colour_parity", description=__doc__)
    p.add_argument("clip", type=Path)
    p.add_argument("--old-tree", type=Path, help="extract of the previous commit (git archive ed45005 | tar -x)")
    p.add_argument("--old-hostpath", metavar="WxH", help="also time the previous commit's host path at this size")
    args = p.parse_args(argv)
    out = {"clip": str(args.clip), "parity_histogram": parity(args.clip)}
    if args.old_tree:
        out["old_preprocess_bias"] = old_bias(args.clip, args.old_tree)
    if args.old_tree and args.old_hostpath:
        w, h = (int(v) for v in args.old_hostpath.split("x"))
        out["old_hostpath"] = old_hostpath(args.old_tree, w, h)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
