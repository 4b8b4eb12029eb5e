"""`vsr-train`: train a model centrally (one client) or federated (see --strategy)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from training.train import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="vsr-train", description="Train vsr-upscale models on ../shared/data (never Vid4).")
    p.add_argument("--model", default=d.model, help="model name (engine.models.MODELS)")
    p.add_argument("--scale", type=int, default=d.scale, choices=(2, 3, 4))
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoint, log, weights")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="HR patch side (<=128)")
    p.add_argument("--frames", type=int, default=d.frames, help="sequence length for BPTT (<=7)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--degradation", default=d.degradation, choices=("bi", "bd"))
    p.add_argument("--noise", type=float, default=d.noise, help="max LR noise std (0..1 scale)")
    p.add_argument("--hf-weight", type=float, default=d.hf_weight, help="3D Haar high-frequency loss weight")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    import torch

    from training.run import train_centralised
    from training.train import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(model=args.model, scale=args.scale, steps=args.steps, batch=args.batch, patch=args.patch,
                      frames=args.frames, lr=args.lr, degradation=args.degradation, noise=args.noise,
                      hf_weight=args.hf_weight, seed=args.seed, checkpoint_minutes=args.checkpoint_minutes,
                      data_root=args.data_root, cache_dir=args.cache_dir)
    command = "vsr-train " + " ".join(shlex.quote(a) for a in argv)
    path = train_centralised(cfg, args.out, command)
    print(f"weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
