"""`vsr-train`: train a model centrally (one client) or federated (see --strategy)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig

FED_ONLY = ("clients", "rounds", "partition", "local_steps", "local_epochs", "prox_mu", "eval_frames", "data",
            "tls_ca", "tls_cert", "tls_key", "flower_port")  # options that need --strategy


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import OneLineParser

    p = OneLineParser(prog="vsr-train", description="Train vsr-upscale models on ../shared/data (never Vid4)."
                      " Federated roles: vsr-train serve|join|keys --help (docs/federated.md).",
                      epilog="Exit codes: 0 ok, 1 internal, 2 usage, 3 data or file missing, 5 --out not writable, "
                             "6 unusable --init weights, 7 torch missing, 9 Flower deployment, 10 out of memory, "
                             "11 site refused (join), 130 interrupted. See docs/federated.md.")
    add_train_args(p)
    add_federated_args(p)
    return p


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The model and local-training options (centralised runs, and every federated client)."""
    from training.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--model", default=d.model, help="model name (engine.models.MODELS)")
    p.add_argument("--scale", type=int, default=d.scale, choices=(2, 3, 4))
    p.add_argument("--out", required=True, type=Path, help="run folder: checkpoint, log, weights")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--patch", type=int, default=d.patch, help="HR patch side (<=256; above 128 builds its own sequence cache)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per truncated-BPTT window")
    p.add_argument("--windows", type=int, default=d.windows,
                   help="windows per training sequence, state carried across them (sequence = frames x windows)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--degradation", default=d.degradation, choices=("bi", "bd", "real"),
                   help="bi: MATLAB bicubic; bd: blur + subsample; real: per-sequence blur, resize, noise and "
                   "x264/x265/AV1 round trips (docs in training/realworld.py)")
    p.add_argument("--noise", type=float, default=d.noise, help="max LR noise std (0..1 scale)")
    p.add_argument("--compress", type=float, default=d.compress,
                   help="share of LR sequences x264-compressed at a random CRF (0 = off)")
    p.add_argument("--crf-range", default=f"{d.crf_min},{d.crf_max}", type=crf_range, metavar="LO,HI",
                   help="CRF range of --compress (inclusive)")
    p.add_argument("--hf-weight", type=float, default=d.hf_weight, help="3D Haar high-frequency loss weight")
    p.add_argument("--temporal-weight", type=float, default=d.temporal_weight,
                   help="weight of the loss on frame-to-frame differences (steadier output)")
    p.add_argument("--warp-weight", type=float, default=d.warp_weight,
                   help="weight of the loss on frame-to-frame differences along the truth's motion (DIS flow on "
                        "the HR frames): steadier moving content, the benchmarks' warping error")
    p.add_argument("--reset-weight", type=float, default=d.reset_weight,
                   help="extra weight of the --temporal-weight loss on the first change after a zero state "
                        "(reset jump)")
    p.add_argument("--clean-share", type=float, default=d.clean_share,
                   help="with --degradation real: share of sequences left clean (bicubic only)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes)
    p.add_argument("--data-root", default=d.data_root)
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--init", default=d.init, metavar="WEIGHTS",
                   help="start a new run from these weights (matching tensors; new input channels start at zero)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")


def crf_range(text: str) -> tuple[int, int]:
    """argparse type of --crf-range: "LO,HI" with 0 <= LO <= HI <= 51."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two integers), got {text!r}") from None
    if not 0 <= lo <= hi <= 51:
        raise argparse.ArgumentTypeError(f"need 0 <= LO <= HI <= 51 (x264 CRF), got {text!r}")
    return lo, hi


def add_federated_args(p: argparse.ArgumentParser) -> None:
    """Options of federated training; --strategy switches it on (writes OUT/global.safetensors)."""
    from training.partition import SCHEMES
    from training.strategies import STRATEGIES

    g = p.add_argument_group("federated training (docs/federated.md)")
    g.add_argument("--strategy", choices=list(STRATEGIES), help="train federated with this aggregation rule")
    g.add_argument("--clients", type=int, help="K clients, one data partition each (default 4)")
    g.add_argument("--rounds", type=int, help="communication rounds (default 20)")
    g.add_argument("--partition", choices=SCHEMES,
                   help="iid shares, one content type per client, or IID with skewed sizes (default content)")
    add_round_args(g)
    g.add_argument("--data", type=Path, help=".npz of uint8 (N,T,H,W,3) sequences instead of the data cache")
    g.add_argument("--flower", action="store_true", help="run on Flower: a SuperLink and K SuperNodes (processes)")
    g.add_argument("--flower-host", default="127.0.0.1", help="SuperLink address; off loopback TLS is required")
    g.add_argument("--flower-port", type=int, help="SuperLink port (default: a free one)")
    g.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) SuperNodes trust")
    g.add_argument("--tls-cert", type=Path, help="SuperLink certificate (PEM), SAN covering --flower-host")
    g.add_argument("--tls-key", type=Path, help="SuperLink private key (PEM)")


def add_round_args(g: argparse._ArgumentGroup) -> None:
    """Options of each federated round, shared by the runners and `vsr-train serve`."""
    g.add_argument("--local-epochs", type=float, help="passes over the client's sequences per round (default 1)")
    g.add_argument("--local-steps", type=int, help="cap on optimiser steps per round (0 = none; for smoke runs)")
    g.add_argument("--prox-mu", type=float, help="FedProx proximal coefficient (default 1e-3)")
    g.add_argument("--size-weighted", action="store_true", help="FedVSR: fold client sizes into its weights")
    g.add_argument("--eval-frames", type=int, help="Vid4 frames per clip scored after each round (0 = off)")
    g.add_argument("--eval-dir", default="../shared/data/vid4", help="Vid4 folder for --eval-frames")


def train_config(args: argparse.Namespace) -> TrainConfig:
    from training.config import TrainConfig

    return TrainConfig(model=args.model, scale=args.scale, steps=args.steps, batch=args.batch, patch=args.patch,
                       frames=args.frames, windows=args.windows, lr=args.lr, degradation=args.degradation, noise=args.noise,
                       compress=args.compress, crf_min=args.crf_range[0], crf_max=args.crf_range[1],
                       hf_weight=args.hf_weight, temporal_weight=args.temporal_weight, warp_weight=args.warp_weight,
                       reset_weight=args.reset_weight, clean_share=args.clean_share, seed=args.seed,
                       checkpoint_minutes=args.checkpoint_minutes,
                       data_root=args.data_root, cache_dir=args.cache_dir, init=args.init)


def federated(args: argparse.Namespace, command: str) -> Path:
    """`vsr-train --strategy ...`: in-process simulation, or a Flower deployment with --flower."""
    from dataclasses import replace

    from training.fed_report import vid4_evaluator
    from training.federated import FedConfig, check_configs

    given = {k: v for k, v in vars(args).items() if k in FedConfig.__dataclass_fields__ and v is not None}
    given.update(size_weighted=args.size_weighted, eval_dir=str(Path(args.eval_dir).resolve()))
    fed = replace(FedConfig(), **given)
    cfg = train_config(args)
    check_configs(cfg, fed)
    evaluate = vid4_evaluator(cfg, fed.eval_frames, fed.eval_dir)  # fails here, not on the server, if it cannot
    if args.flower:
        from training.fed_report import cache_path
        from training.flower_run import Deployment, TlsFiles, launch

        tls_files = (args.tls_ca, args.tls_cert, args.tls_key)
        if any(tls_files) and not all(tls_files):
            raise ValueError("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
        dep = Deployment(host=args.flower_host, port=args.flower_port or 0,
                         tls=TlsFiles(*tls_files) if all(tls_files) else None, threads=args.threads)
        launch(cfg, fed, (args.data or cache_path(cfg)).resolve(), args.out, dep, command)
    else:
        from training.fed_report import load_groups
        from training.federated import run_federated
        from training.partition import partition

        clients = partition(load_groups(cfg, args.data), fed.clients, fed.partition, cfg.seed)
        run_federated(clients, cfg, fed, args.out, command, evaluate=evaluate)
    return args.out / "global.safetensors"


def exit_code(err: BaseException) -> int:
    """The error's own code (VsrError family), else 3 for missing files, 2 for bad values, 1 otherwise."""
    if hasattr(err, "exit_code"):
        return int(err.exit_code)
    return 3 if isinstance(err, FileNotFoundError) else 2 if isinstance(err, ValueError) else 1


# first-argument subcommands -> "module:function" taking the remaining argv
SUBCOMMANDS: dict[str, str] = {
    "render-data": "training.render.cli:main",
    "render-train": "training.render.cli:train_main",
    "render-eval": "training.render.cli:eval_main",
    "serve": "training.roles_cli:serve_main",
    "join": "training.roles_cli:join_main",
    "keys": "training.roles_cli:keys_main",
}


def parse(argv: list[str]) -> argparse.Namespace:
    """Parsed and cross-checked options; UsageError (one line, exit 2) on a bad combination."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.strategy is None:
        extra = [k for k in FED_ONLY if getattr(args, k) is not None] + (["flower"] if args.flower else [])
        if extra:
            parser.error(f"--{extra[0].replace('_', '-')} is a federated option: add --strategy")
    if args.strategy is not None and args.init:
        parser.error("--init starts a centralised run; federated runs start from a fresh model")
    if args.strategy is not None and args.windows != 1:
        parser.error("--windows is for centralised runs; federated clients train on single windows")
    if args.frames < 2 or args.windows < 1:
        parser.error("--frames must be >= 2 and --windows >= 1")
    if not 0.0 <= args.compress <= 1.0 or args.noise < 0:
        parser.error("--compress is a share in [0, 1] and --noise must be >= 0")
    if not 0.0 <= args.clean_share <= 1.0 or args.reset_weight < 0:
        parser.error("--clean-share is a share in [0, 1] and --reset-weight must be >= 0")
    if args.clean_share and args.degradation != "real":
        parser.error("--clean-share applies to --degradation real only")
    bounds = {"steps": (1, 10**9), "batch": (1, 4096), "patch": (8, 256), "frames": (2, 7), "threads": (0, 1024)}
    for name, (lo, hi) in bounds.items():
        if not lo <= getattr(args, name) <= hi:
            parser.error(f"--{name} must be in [{lo}, {hi}], got {getattr(args, name)}")
    if args.patch % args.scale:
        parser.error(f"--patch {args.patch} must be a multiple of --scale {args.scale}")
    if not 0 < args.lr < 1 or not args.checkpoint_minutes > 0:
        parser.error("--lr must be in (0, 1) and --checkpoint-minutes > 0")
    return args


def check_out(out: Path) -> None:
    """Create the run folder now, so an unwritable --out fails before any work (OutputError, exit 5)."""
    import os

    from engine.errors import OutputError

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create --out {out}: {e.strerror or e}") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out} is not a writable folder")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from engine.errors import VsrError, require

    if argv and argv[0] in SUBCOMMANDS:  # renderer jobs: `vsr-train render-data|render-train ...`
        import importlib

        try:
            require("torch", "train", f"vsr-train {argv[0]}")
        except VsrError as err:
            print(f"vsr-train: error: {err}", file=sys.stderr)
            return err.exit_code
        module, func = SUBCOMMANDS[argv[0]].split(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    try:
        args = parse(argv)
        require("torch", "train", "vsr-train")
        from engine.errors import UsageError
        from engine.models import MODELS

        if args.model not in MODELS:
            raise UsageError(f"unknown --model {args.model!r}; known: {', '.join(sorted(MODELS))}")
        check_out(args.out)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except VsrError as err:
        print(f"vsr-train: error: {err}", file=sys.stderr)
        return err.exit_code
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "vsr-train " + " ".join(shlex.quote(a) for a in argv)
    try:
        if args.strategy is None:
            from training.run import train_centralised

            path = train_centralised(train_config(args), args.out, command)
        else:
            path = federated(args, command)
    except KeyboardInterrupt:
        print("vsr-train: interrupted", file=sys.stderr)
        return 130
    except (VsrError, ValueError, LookupError, OSError, RuntimeError, ArithmeticError) as err:
        print(f"vsr-train: error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return exit_code(err)
    except MemoryError:
        print("vsr-train: error: out of memory; lower --batch or --patch", file=sys.stderr)
        return 10
    print(f"weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
