"""`vsr-export`: weights -> ONNX (and, with the TensorRT issue, ONNX -> engine)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _onnx(args: argparse.Namespace) -> int:
    from engine.models import build_model, load_weights
    from engine.registry import default_model, shipped_file
    from export.onnx import export_onnx, parity

    name = args.model or default_model(args.scale)
    weights = args.weights or shipped_file(name, args.scale, ".safetensors")
    if args.weights is not None:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as f:
            meta = f.metadata() or {}
        name = args.model or meta.get("model", name)
        if meta.get("scale") and int(meta["scale"]) != args.scale:
            raise SystemExit(f"vsr-export: {weights} is a x{meta['scale']} model, not x{args.scale}")
    model = load_weights(build_model(name, args.scale), weights)
    out = export_onnx(model, args.out, name)
    err = parity(model, out, steps=8)
    print(f"wrote {out} ({name} x{args.scale}); torch vs onnxruntime max abs error over 8 steps: {err:.2e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vsr-export", description="Export vsr-upscale models.")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("onnx", help="weights (safetensors) -> ONNX with named hidden-state I/O")
    o.add_argument("--model", help="model name (default: the shipped model for --scale)")
    o.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    o.add_argument("--weights", type=Path, help="safetensors weights (default: the shipped ones)")
    o.add_argument("--out", type=Path, required=True)
    o.set_defaults(func=_onnx)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import VsrError

    try:
        return args.func(args)
    except VsrError as e:
        print(f"vsr-export: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
