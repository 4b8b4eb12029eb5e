"""Weights -> ONNX: named hidden-state I/O, symbolic H/W, metadata, checker and parity over recurrent steps."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelError

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


@dataclass(frozen=True)
class TensorLayout:
    """Shape rule of one graph input, read from its dims (exporters here name H/W dims ``h``/``w`` or ``h{f}``)."""

    channels: int  # dim 1 of an NCHW input (0 for non-image inputs)
    factor: int  # spatial size / LR size (0 for non-image inputs)
    fixed: tuple[int, ...] = ()  # the whole shape of a non-image input (e.g. a (1, 2) jitter vector)


def io_layout(proto) -> dict[str, TensorLayout]:
    """Every graph input's :class:`TensorLayout`; works for RGB and G-buffer step graphs alike."""
    layout = {}
    for vi in proto.graph.input:
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        if len(dims) == 4 and all(isinstance(d, str) for d in dims[2:]):
            m = re.fullmatch(r"h(\d*)", dims[2])
            if not m or not isinstance(dims[1], int):
                raise ModelError(f"input {vi.name} has dims {dims}; expected (1, C, h|hF, w|wF) from vsr-export")
            layout[vi.name] = TensorLayout(dims[1], int(m[1] or 1))
        elif all(isinstance(d, int) and d > 0 for d in dims):
            layout[vi.name] = TensorLayout(0, 0, tuple(dims))  # type: ignore[arg-type]
        else:
            raise ModelError(f"input {vi.name} has dims {dims}: neither NCHW with symbolic H/W nor fixed")
    if "lr" not in layout:
        raise ModelError("ONNX has no 'lr' input; export it with `vsr-export onnx`")
    return layout


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny export/parity frames: torch's intra-op threads only wait on each other (minutes on a busy 2-core box)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_onnx(path: str | Path):
    """``onnx.load`` with a ModelError (missing file, not an ONNX model) instead of protobuf's exceptions."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except FileNotFoundError as e:
        raise ModelError(f"ONNX file {path} does not exist; make one with `vsr-export onnx`") from e
    except DecodeError as e:
        raise ModelError(f"{path} is not an ONNX model ({e})") from e


def check_symbolic(proto) -> None:
    """Fail if an exporter specialised H or W to the sample size (dynamo does this silently, e.g. linspace grids)."""
    fixed = [f"{v.name}{[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}"
             for v in [*proto.graph.input, *proto.graph.output]
             if any(not d.dim_param for d in v.type.tensor_type.shape.dim[2:])]
    if fixed:
        raise ModelError(f"export specialised H/W to the sample size: {', '.join(fixed)}; "
                         "use the legacy exporter (dynamo=False) or remove size-dependent constants")


def export_onnx(model, path: str | Path, model_name: str, sample_hw: tuple[int, int] = (36, 40), opset: int = OPSET,
                precision: str = "fp32", io: str = "fp32") -> Path:
    """Export ``model`` (an engine.models RVSR-like step module) to ``path`` atomically.

    Metadata keys written: ``vsr.model``, ``vsr.scale``, ``vsr.hidden`` (JSON list of [channels, factor]:
    hidden tensor i has shape (1, channels, H*factor, W*factor)), ``vsr.weights_sha256``, ``vsr.precision`` and
    ``vsr.io`` (fp32/fp16). G-buffer models export with export/onnx_gbuffer.py.
    ``precision="fp16"`` converts with :func:`export.fp16.convert_to_fp16`; ``io`` picks fp32 or fp16 I/O.
    """
    import onnx
    import torch

    if precision not in ("fp32", "fp16") or io not in ("fp32", "fp16") or (precision, io) == ("fp32", "fp16"):
        raise ModelError(f"unsupported precision/io {precision}/{io}: use fp32/fp32, fp16/fp32 or fp16/fp16")
    path = Path(path)
    model = model.eval().cpu()
    spec = model.hidden_spec()
    scale = model.cfg.scale
    lr = torch.rand(1, 3, *sample_hw)
    hidden = model.init_hidden(lr)
    ins, outs = io_names(len(spec))
    tmp = path.with_name(path.name + ".tmp")
    # dynamo=False on purpose: the torch.export-based exporter can specialise H/W (see check_symbolic); its
    # deprecation notice for the legacy exporter is expected and silenced.
    with torch.no_grad(), warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (lr, *hidden), str(tmp), input_names=ins, output_names=outs, opset_version=opset,
                          dynamic_axes=_dynamic_axes(spec, scale), dynamo=False)
    proto = onnx.load(str(tmp))
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()))
    meta = {"vsr.model": model_name, "vsr.scale": str(scale), "vsr.hidden": json.dumps([list(s) for s in spec]),
            "vsr.weights_sha256": digest.hexdigest(), "vsr.precision": "fp32", "vsr.io": "fp32"}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    check_symbolic(proto)
    if precision == "fp16":
        from export.fp16 import convert_to_fp16

        proto, _ = convert_to_fp16(proto, keep_io_types=io == "fp32")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def symbolic_dims(path: str | Path) -> dict[str, list[int | str]]:
    """Shape of each graph input/output: ints for fixed dims, names for symbolic ones."""
    import onnx

    g = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.output]}


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}  # onnxruntime type -> numpy dtype


def parity(model, path: str | Path, steps: int = 8, hw: tuple[int, int] = (23, 31), seed: int = 0) -> float:
    """Max abs difference of ``sr`` torch (fp32) vs onnxruntime over ``steps`` recurrent steps, each side
    feeding back its own state. fp16-I/O graphs get their inputs cast to fp16 and their state kept fp16."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    # ORT's optimiser folds Cast(fp32->fp16)->Cast(fp16->fp32) pairs it inserts for CPU kernels, which would
    # hide the fp16 rounding between ops; unoptimised, every fp16 tensor really is stored as fp16.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1  # tiny frames: threads only add spin-waiting (slow on busy CI machines)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ins, outs = io_names(len(model.hidden_spec()))
    dtypes = {i.name: _NP_TYPES[i.type] for i in sess.get_inputs()}
    g = torch.Generator().manual_seed(seed)
    hidden_t: tuple | None = None
    hidden_o: list[np.ndarray] | None = None
    worst = 0.0
    model = model.eval()
    for _ in range(steps):
        lr = torch.rand(1, 3, *hw, generator=g)
        if hidden_o is None:
            hidden_o = [h.numpy() for h in model.init_hidden(lr)]
        with torch.no_grad(), one_torch_thread():
            sr_t, hidden_t = model.step(lr, hidden_t)
        feed = dict(zip(ins, [lr.numpy(), *hidden_o]))
        res = sess.run(outs, {k: v.astype(dtypes[k], copy=False) for k, v in feed.items()})
        hidden_o = res[1:]
        worst = max(worst, float(np.abs(res[0].astype(np.float32) - sr_t.numpy()).max()))
    return worst
