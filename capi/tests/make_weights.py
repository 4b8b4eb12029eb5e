"""Write randomly initialised G-buffer model weights for the C API's ctest (no trained rdg weights ship yet)."""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import save_file

from engine.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="path of the .safetensors to write")
    parser.add_argument("--model", default="rdg-tiny")
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, args.scale)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.out, metadata={"model": args.model, "scale": str(args.scale)})


if __name__ == "__main__":
    main()
