"""`vsr-export`: weights -> ONNX (fp32 or fp16) and ONNX -> TensorRT / TensorRT-RTX engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROFILE_HELP = ("LR input shapes: 540p | 720p | 1080p (static), dynamic (16x16..1080x1920, opt 720x1280), "
                "HxW (static) or MINHxMINW:OPTHxOPTW:MAXHxMAXW; default dynamic")


def _load_model(args: argparse.Namespace):
    from engine.backends.torch import load_net
    from engine.errors import InputError
    from engine.registry import default_model, shipped_file

    if args.weights is None:
        weights = shipped_file(args.model or default_model(args.scale), args.scale, ".safetensors")
    else:
        weights = args.weights
        if not weights.is_file():
            raise InputError(f"weights file {weights} does not exist")
    name, _, net = load_net(weights, args.model, args.scale)
    return name, net


def _check_out(path: Path) -> None:
    from engine.errors import OutputError

    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist; create it first")
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name such as {path / 'model.onnx'}")


def _onnx(args: argparse.Namespace) -> int:
    from export.onnx import export_onnx, graph_spec, parity, u16_path

    _check_out(args.out)
    name, model = _load_model(args)
    precision = "fp16" if args.fp16 or args.fp16_io else "fp32"
    io = "fp16" if args.fp16_io else "fp32"
    # video models ship two graphs: uint8 planes (8-bit video) and uint16 planes (10/12/16-bit video)
    dtypes = ("uint8", "uint16") if graph_spec(model, name).kind == "video" else ("float32",)
    for dtype, out in zip(dtypes, (args.out, u16_path(args.out))):
        export_onnx(model, out, name, precision=precision, io=io, frame_dtype=dtype)
        err = parity(model, out, steps=8)
        unit = "code values" if dtype != "float32" else "colour"
        print(f"wrote {out} ({name} x{args.scale}, {dtype} frames, {precision}, {io} state); "
              f"torch vs onnxruntime max abs error over 8 steps: {err:.2e} {unit}")
    return 0


def _trt(args: argparse.Namespace) -> int:
    from engine.backends.trt_cache import parse_profile, parse_target
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
    o = sub.add_parser("onnx", help="weights (safetensors) -> the shipped ONNX format (video: X.onnx with uint8 planes and X.u16.onnx with uint16 planes; G-buffer: X.onnx)")
    o.add_argument("--model", help="model name (default: the shipped model for --scale)")
    o.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    o.add_argument("--weights", type=Path, help="safetensors weights (default: the shipped ones)")
    o.add_argument("--fp16", action="store_true", help="fp16 weights and compute, fp32 inputs/outputs")
    o.add_argument("--fp16-io", action="store_true", help="fp16 hidden state too (implies --fp16)")
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
