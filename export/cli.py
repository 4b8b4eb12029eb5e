"""`vsr-export`: weights -> ONNX (fp32 or fp16) and ONNX -> TensorRT / TensorRT-RTX engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROFILE_HELP = ("LR input shapes: 540p | 720p | 1080p (static), dynamic (16x16..1080x1920, opt 720x1280), "
                "HxW (static) or MINHxMINW:OPTHxOPTW:MAXHxMAXW; default dynamic")


def _load_model(args: argparse.Namespace):
    from engine.errors import InputError, ModelError
    from engine.models import MODELS, build_model, load_weights
    from engine.registry import default_model, shipped_file

    if args.weights is None:
        name = args.model or default_model(args.scale)
        weights = shipped_file(name, args.scale, ".safetensors")
    else:
        from safetensors import SafetensorError, safe_open

        weights = args.weights
        if not weights.is_file():
            raise InputError(f"weights file {weights} does not exist")
        try:
            with safe_open(str(weights), "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise ModelError(f"{weights} is not a readable safetensors file ({e})") from e
        scale = _meta_scale(weights, meta)
        if scale is not None and scale != args.scale:
            raise ModelError(f"{weights} is a x{scale} model, not x{args.scale}; pass --scale {scale}")
        name = args.model or meta.get("model") or ""
        if not name:
            raise ModelError(f"{weights} does not record its model; pass --model ({', '.join(sorted(MODELS))})")
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return name, load_weights(build_model(name, args.scale), weights)
    except (RuntimeError, ValueError) as e:  # strict load_state_dict: missing/unexpected/mis-shaped tensors
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:] or str(e).splitlines())[:300]
        raise ModelError(f"{weights} does not fit {name} x{args.scale}: {detail}") from e


def _meta_scale(weights: Path, meta: dict[str, str]) -> int | None:
    """The ``scale`` a safetensors file records (None when it records none), checked to be 2, 3 or 4."""
    from engine.errors import ModelError

    text = meta.get("scale")
    if not text:
        return None
    if text.strip() not in ("2", "3", "4"):
        raise ModelError(f"{weights} records scale {text[:40]!r} in its metadata, not 2, 3 or 4; "
                         "fix the file's metadata or re-save the weights")
    return int(text)


def _check_out(path: Path) -> None:
    from engine.errors import OutputError

    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name such as {path / 'model.onnx'}")


def _onnx(args: argparse.Namespace) -> int:
    from export.onnx import export_onnx, parity

    _check_out(args.out)
    name, model = _load_model(args)
    precision = "fp16" if args.fp16 or args.fp16_io else "fp32"
    out = export_onnx(model, args.out, name, precision=precision, io="fp16" if args.fp16_io else "fp32")
    err = parity(model, out, steps=8)
    io = "fp16" if args.fp16_io else "fp32"
    print(f"wrote {out} ({name} x{args.scale}, {precision}, {io} I/O); "
          f"torch vs onnxruntime max abs error over 8 steps: {err:.2e}")
    return 0


def _trt(args: argparse.Namespace) -> int:
    from export.cache import parse_profile, parse_target
    from export.tensorrt import BuildOptions, build_engine

    from engine.errors import InputError

    if not args.onnx.is_file():
        raise InputError(f"ONNX file {args.onnx} does not exist; make one with `vsr-export onnx`")
    _check_out(args.out)
    targets = tuple(parse_target(t) for spec in args.target for t in spec.split(",") if t.strip())
    opts = BuildOptions(profile=parse_profile(args.profile), precision="fp16" if args.fp16 else "fp32",
                        targets=targets, flavour=args.flavour, workspace_mib=args.workspace,
                        opt_level=args.opt_level, timing_cache=args.timing_cache)
    report = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    res = build_engine(args.onnx, args.out, opts, report)
    k = res.key
    print(f"wrote {res.path} ({res.size / 1e6:.2f} MB) in {res.seconds:.1f}s: {k.flavour} {k.trt_version}, "
          f"{k.precision}, profile {k.profile}, targets {'+'.join(k.targets)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import OneLineParser

    p = OneLineParser(prog="vsr-export", description="Export vsr-upscale models.",
                      epilog="Exit codes: 0 ok, 1 internal, 2 usage, 3 input missing, 5 output, 6 model, "
                             "7 backend/TensorRT or torch missing, 130 interrupted. See docs/export.md.")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx", help="weights (safetensors) -> ONNX with named hidden-state I/O")
    o.add_argument("--model", help="model name (default: the shipped model for --scale)")
    o.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    o.add_argument("--weights", type=Path, help="safetensors weights (default: the shipped ones)")
    o.add_argument("--fp16", action="store_true", help="fp16 weights and compute, fp32 inputs/outputs")
    o.add_argument("--fp16-io", action="store_true", help="fp16 inputs/outputs too (implies --fp16)")
    o.add_argument("--out", type=Path, required=True)
    o.set_defaults(func=_onnx)
    t = sub.add_parser("trt", help="ONNX -> TensorRT (GPU) or TensorRT-RTX (GPU, or CPU with --target) engine")
    t.add_argument("--onnx", type=Path, required=True, help="ONNX from `vsr-export onnx`")
    t.add_argument("--out", type=Path, required=True, help="engine file; its key is written to OUT.json")
    t.add_argument("--fp16", action="store_true", help="fp16 engine (an fp16 ONNX is always built as fp16)")
    t.add_argument("--profile", default="dynamic", help=PROFILE_HELP)
    t.add_argument("--target", action="append", default=[], metavar="SM",
                   help="compute capability to build for, e.g. sm89 or 8.9 (repeat or comma-separate); "
                        "TensorRT-RTX only, works without a GPU; default: this GPU, or RTX's portable set")
    t.add_argument("--flavour", default="auto", choices=("auto", "tensorrt", "tensorrt_rtx"),
                   help="auto: tensorrt_rtx when --target is given, else tensorrt, falling back to the other")
    t.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file to read and update")
    t.add_argument("--workspace", type=int, default=0, metavar="MIB",
                   help="builder workspace limit (default 0: TensorRT's default, the device memory)")
    t.add_argument("--opt-level", type=int, default=3, choices=range(6), help="builder optimisation level")
    t.add_argument("--quiet", action="store_true", help="no build progress on stderr")
    t.set_defaults(func=_trt)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    from engine.errors import VsrError, require

    import warnings

    # torch.onnx's notes on constant folding are about our graph, not the user's input: keep stderr for errors
    warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
    try:
        args = build_parser().parse_args(argv)
        if args.cmd == "onnx":
            require("torch", "export", "vsr-export onnx")
        return args.func(args)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except VsrError as e:
        print(f"vsr-export: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # unwritable --out, full disk...: one line, no traceback
        print(f"vsr-export: {e.strerror or e} ({e.filename or ''})", file=sys.stderr)
        return 3 if isinstance(e, FileNotFoundError) else 5
    except KeyboardInterrupt:
        print("vsr-export: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless asked for the traceback
        if os.environ.get("VSR_DEBUG"):
            raise
        print(f"vsr-export: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              "(set VSR_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
