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
        if meta.get("scale") and int(meta["scale"]) != args.scale:
            raise ModelError(f"{weights} is a x{meta['scale']} model, not x{args.scale}; pass --scale {meta['scale']}")
        name = args.model or meta.get("model") or ""
        if not name:
            raise ModelError(f"{weights} does not record its model; pass --model ({', '.join(sorted(MODELS))})")
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    try:
        return name, load_weights(build_model(name, args.scale), weights)
    except RuntimeError as e:  # torch's strict load_state_dict: missing/unexpected/mis-shaped tensors
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:300]
        raise ModelError(f"{weights} does not fit {name} x{args.scale}: {detail}") from e


def _check_out(path: Path) -> None:
    from engine.errors import OutputError

    if not path.parent.is_dir():
        raise OutputError(f"output folder {path.parent} does not exist; create it first")


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
    p = argparse.ArgumentParser(prog="vsr-export", description="Export vsr-upscale models.")
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
    args = build_parser().parse_args(argv)
    from engine.errors import VsrError

    try:
        return args.func(args)
    except VsrError as e:
        print(f"vsr-export: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # unwritable --out, full disk...: one line, no traceback
        print(f"vsr-export: {e.strerror or e} ({e.filename or ''})", file=sys.stderr)
        return 5
    except KeyboardInterrupt:
        print("vsr-export: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
