"""`vsr-bench`: benchmark commands (``quality`` now; ``latency`` and ``pipeline`` plug into COMMANDS).

Each command registers its flags with an ``add_<name>(subparsers)`` function listed in
``COMMANDS`` and runs through the ``run`` default it sets; heavy imports (torch, cv2, the
harness itself) happen inside that ``run`` so ``vsr-bench --help`` stays instant. Errors of the
``engine.errors.VsrError`` family become one ``vsr-bench: error: ...`` line on stderr and the
error's exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import VsrError

QUALITY_METHODS = "bicubic,framewise,recurrent"  # the harness's METHODS, kept here to avoid importing it


def _csv(text: str) -> tuple[str, ...]:
    """Comma list flag -> tuple of non-empty items."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def run_quality(args: argparse.Namespace) -> int:
    """``vsr-bench quality``: score bicubic and a model on a folder of clips."""
    import cv2

    from benchmarks.quality_report import QualityConfig, output_paths, run_quality as run

    cv2.setNumThreads(1)  # the machine's other cores belong to training jobs
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # bicubic-only runs need no torch
        pass
    cfg = QualityConfig(dataset=args.dataset, scale=args.scale, model=args.model, weights=args.weights,
                        methods=args.methods, max_frames=args.max_frames, clips=args.clips, json_out=args.json)
    _, table = run(cfg)
    print(table)
    if args.json is not None:
        print("wrote " + ", ".join(str(p) for p in output_paths(args.json)), file=sys.stderr)
    return 0


def add_quality(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench quality``."""
    p = sub.add_parser(
        "quality", help="Y-PSNR / Y-SSIM / warping error on BI-degraded clips (e.g. Vid4)",
        description="Score bicubic, the model run frame by frame and the model run recurrently on every "
        "video of --dataset, LR made by MATLAB bicubic downscaling (BI), BasicSR metric convention.",
    )
    p.add_argument("--dataset", required=True, type=Path, help="folder of video files, one clip each")
    p.add_argument("--scale", required=True, type=int, help="SR factor: 2, 3 or 4")
    p.add_argument("--model", help="model name; default: the weights' metadata or the shipped model for --scale")
    p.add_argument("--weights", type=Path, help=".safetensors (with model/scale metadata) or .onnx file")
    p.add_argument("--methods", type=_csv, default=_csv(QUALITY_METHODS),
                   help=f"comma list out of {QUALITY_METHODS} (default all; 'bicubic' needs no model)")
    p.add_argument("--max-frames", type=int, help="frames per clip (default all)")
    p.add_argument("--clips", type=_csv, help="comma list of clip file stems (default all)")
    p.add_argument("--json", type=Path, help="write the JSON report here, OUT.md and OUT_crops.png beside it")
    p.set_defaults(run=run_quality)


# command name -> function adding its subparser (explicit, in --help order)
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {"quality": add_quality}


def build_parser() -> argparse.ArgumentParser:
    """The ``vsr-bench`` parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(prog="vsr-bench", description="vsr-upscale benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vsr-bench``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except VsrError as e:
        print(f"vsr-bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vsr-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
