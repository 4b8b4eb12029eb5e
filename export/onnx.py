"""Weights -> ONNX: named hidden-state I/O, symbolic H/W, metadata, checker and parity over recurrent steps."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

OPSET = 17  # minimum the engine and TensorRT paths rely on


def io_names(n_hidden: int) -> tuple[list[str], list[str]]:
    """Input and output tensor names of an exported step graph."""
    ins = ["lr"] + [f"hidden_in{i}" for i in range(n_hidden)]
    outs = ["sr"] + [f"hidden_out{i}" for i in range(n_hidden)]
    return ins, outs


def _dynamic_axes(spec: list[tuple[int, int]], scale: int) -> dict[str, dict[int, str]]:
    def dims(f: int) -> dict[int, str]:
        return {2: "h", 3: "w"} if f == 1 else {2: f"h{f}", 3: f"w{f}"}

    ins, outs = io_names(len(spec))
    axes = {"lr": dims(1), "sr": dims(scale)}
    for i, (_, f) in enumerate(spec):
        axes[ins[i + 1]] = dims(f)
        axes[outs[i + 1]] = dims(f)
    return axes


def export_onnx(model, path: str | Path, model_name: str, sample_hw: tuple[int, int] = (36, 40), opset: int = OPSET) -> Path:
    """Export ``model`` (an engine.models RVSR-like step module) to ``path`` atomically.

    Metadata keys written: ``vsr.model``, ``vsr.scale``, ``vsr.hidden`` (JSON list of [channels, factor]:
    hidden tensor i has shape (1, channels, H*factor, W*factor)), ``vsr.weights_sha256``.
    """
    import onnx
    import torch

    path = Path(path)
    model = model.eval().cpu()
    spec = model.hidden_spec()
    scale = model.cfg.scale
    lr = torch.rand(1, 3, *sample_hw)
    hidden = model.init_hidden(lr)
    ins, outs = io_names(len(spec))
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(model, (lr, *hidden), str(tmp), input_names=ins, output_names=outs, opset_version=opset,
                          dynamic_axes=_dynamic_axes(spec, scale), dynamo=False)
    proto = onnx.load(str(tmp))
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()))
    meta = {"vsr.model": model_name, "vsr.scale": str(scale), "vsr.hidden": json.dumps([list(s) for s in spec]),
            "vsr.weights_sha256": digest.hexdigest()}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def symbolic_dims(path: str | Path) -> dict[str, list[int | str]]:
    """Shape of each graph input/output: ints for fixed dims, names for symbolic ones."""
    import onnx

    g = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.output]}


def parity(model, path: str | Path, steps: int = 8, hw: tuple[int, int] = (23, 31), seed: int = 0) -> float:
    """Max abs difference torch vs onnxruntime over ``steps`` recurrent steps with state fed back."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins, outs = io_names(len(model.hidden_spec()))
    g = torch.Generator().manual_seed(seed)
    hidden_t = None
    hidden_o: list[np.ndarray] | None = None
    worst = 0.0
    model = model.eval()
    for _ in range(steps):
        lr = torch.rand(1, 3, *hw, generator=g)
        with torch.no_grad():
            sr_t, hidden_t = model.step(lr, hidden_t)
        if hidden_o is None:
            hidden_o = [h.numpy() for h in model.init_hidden(lr)]
        res = sess.run(outs, {"lr": lr.numpy(), **dict(zip(ins[1:], hidden_o))})
        hidden_o = res[1:]
        worst = max(worst, float(np.abs(res[0] - sr_t.numpy()).max()))
    return worst
