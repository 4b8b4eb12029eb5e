"""`vsr-train render-data` (render scenes to a dataset), `render-train` (train on it), `render-eval` (score)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def data_parser() -> argparse.ArgumentParser:
    from training.render.dataset import RenderDataConfig

    d = RenderDataConfig()
    p = argparse.ArgumentParser(prog="vsr-train render-data",
                                description="Render animated scenes to G-buffers + supersampled targets (moderngl, EGL).")
    p.add_argument("--out", required=True, type=Path, help="dataset folder (resumes if it exists)")
    p.add_argument("--train-scenes", type=int, default=d.train_scenes)
    p.add_argument("--test-scenes", type=int, default=d.test_scenes, help="held out: own seeds and textures")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per scene")
    p.add_argument("--height", type=int, default=d.height, help="render height")
    p.add_argument("--width", type=int, default=d.width, help="render width")
    p.add_argument("--target-scale", type=int, default=d.target_scale, choices=(2, 4), help="target size / render size")
    p.add_argument("--supersample", type=int, default=d.supersample, help="samples per target pixel per axis")
    p.add_argument("--jitter", default=d.jitter, choices=("halton", "none"))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--data-root", default=d.data_root, help="folder holding images/ (textures)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vsr-train render-data`; returns the exit code."""
    args = data_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from training.render.dataset import RenderDataConfig, render_dataset

    cfg = RenderDataConfig(data_root=args.data_root, train_scenes=args.train_scenes, test_scenes=args.test_scenes,
                           frames=args.frames, height=args.height, width=args.width, target_scale=args.target_scale,
                           supersample=args.supersample, jitter=args.jitter, seed=args.seed)
    try:
        index = render_dataset(cfg, args.out)
    except (ValueError, FileNotFoundError) as e:
        print(f"vsr-train render-data: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(index['splits']['train'])} train + {len(index['splits']['test'])} test scenes, "
          f"{index['bytes'] / 1e6:.0f} MB, {index['seconds']:.0f}s")
    return 0


def train_parser() -> argparse.ArgumentParser:
    from training.render.train import RenderTrainConfig

    d = RenderTrainConfig()
    p = argparse.ArgumentParser(prog="vsr-train render-train", description="Train a model on a rendered dataset.")
    p.add_argument("--data", required=True, help="dataset folder made by render-data")
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoint, log, weights")
    p.add_argument("--model", default=d.model, help="engine.models name: rdg-* (G-buffers) or rvsr-* (RGB only)")
    p.add_argument("--scale", type=int, default=d.scale, choices=(2, 4))
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="LR patch side")
    p.add_argument("--frames", type=int, default=d.frames, help="BPTT length")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--hf-weight", type=float, default=d.hf_weight)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p


def train_main(argv: list[str] | None = None) -> int:
    """Entry point of `vsr-train render-train`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = train_parser().parse_args(argv)
    import torch

    from training.render.train import RenderTrainConfig, train_render

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RenderTrainConfig(data=args.data, model=args.model, scale=args.scale, steps=args.steps, batch=args.batch,
                            patch=args.patch, frames=args.frames, lr=args.lr, hf_weight=args.hf_weight, seed=args.seed,
                            checkpoint_minutes=args.checkpoint_minutes)
    command = "vsr-train render-train " + " ".join(shlex.quote(a) for a in argv)
    try:
        path = train_render(cfg, args.out, command)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"vsr-train render-train: {e}", file=sys.stderr)
        return 2
    print(f"weights: {path}")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """Entry point of `vsr-train render-eval`: bicubic and each model on the held-out scenes; returns the exit code."""
    p = argparse.ArgumentParser(prog="vsr-train render-eval",
                                description="Score weights on a rendered dataset's held-out scenes, beside bicubic.")
    p.add_argument("--data", required=True, help="dataset folder made by render-data")
    p.add_argument("--weights", required=True, nargs="+", help="safetensors written by render-train (one scale)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--json", type=Path, help="write the result here, and the markdown table beside it (.md)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import json

    from training.render.evaluate import compare, markdown

    try:
        result = compare(args.weights, args.data, args.split)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"vsr-train render-eval: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    table = markdown(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        args.json.with_suffix(".md").write_text(table)
    print(table, end="")
    return 0
