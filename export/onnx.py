"""Weights -> ONNX for every model (video and G-buffer) as engine/graph.py defines it; checker and parity."""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine import colour
from engine.errors import ModelError
from engine.flow import synthetic_motion
from engine.graph import (GBUFFER, GBUFFER_INPUTS, VIDEO, VIDEO_INPUTS, VIDEO_OUTPUTS, GraphSpec,
                          hidden_names, spec_from_metadata)

OPSET = 17  # minimum the engine and TensorRT paths rely on (GridSample needs >= 16)
U16_SUFFIX = ".u16.onnx"  # sibling file of a video graph with uint16 planes (10/12/16-bit frames)


def u16_path(path: str | Path) -> Path:
    """Where the uint16-plane variant of the video graph ``path`` lives: ``X.onnx`` -> ``X.u16.onnx``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".onnx") + U16_SUFFIX)


def _dims(name: str, f: int) -> dict[int, str]:
    """Symbolic H/W names of an image tensor at ``f`` x the LR size (``h``/``w``, ``h2``/``w2``; chroma ``hc``...)."""
    tail = "" if f == 1 else str(f)
    return {2: f"{name[0]}{tail}", 3: f"{name[1]}{tail}"}


def _dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    s = spec.scale
    if spec.kind == VIDEO:
        axes = {"y": _dims("hw", 1), "uv": {2: "hc", 3: "wc"}, "y_out": _dims("hw", s), "uv_out": {2: f"hc{s}", 3: f"wc{s}"}}
        if spec.motion:
            axes["motion"] = _dims("hw", 1)
    else:
        axes = {k: _dims("hw", 1) for k in GBUFFER_INPUTS if k != "jitter"} | {"sr": _dims("hw", s)}
    ins, outs = hidden_names(len(spec.hidden))
    for (_, f), i, o in zip(spec.hidden, ins, outs):
        axes[i] = axes[o] = _dims("hw", f)
    return axes


@dataclass(frozen=True)
class TensorLayout:
    """Shape rule of one graph input, read from its dims (exporters here name H/W dims ``h``/``w`` or ``h{f}``)."""

    channels: int  # dim 1 of an NCHW input (0 for non-image inputs)
    factor: int  # spatial size / LR size (0 for non-image inputs)
    fixed: tuple[int, ...] = ()  # the whole shape of a non-image input (e.g. a (1, 2) jitter vector)
    chroma: bool = False  # chroma planes: between half (4:2:0) and the full LR size (4:4:4)


def io_layout(proto) -> dict[str, TensorLayout]:
    """Every graph input's :class:`TensorLayout`; works for video and G-buffer step graphs alike."""
    layout = {}
    for vi in proto.graph.input:
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        if len(dims) == 4 and all(isinstance(d, str) for d in dims[2:]):
            m = re.fullmatch(r"h(c?)(\d*)", dims[2])
            if not m or not isinstance(dims[1], int):
                raise ModelError(f"input {vi.name} has dims {dims}; expected (1, C, h|hF|hc, w|wF|wc) from vsr-export")
            layout[vi.name] = TensorLayout(dims[1], int(m[2] or 1), chroma=bool(m[1]))
        elif all(isinstance(d, int) and d > 0 for d in dims):
            layout[vi.name] = TensorLayout(0, 0, tuple(dims))  # type: ignore[arg-type]
        else:
            raise ModelError(f"input {vi.name} has dims {dims}: neither NCHW with symbolic H/W nor fixed")
    if "y" not in layout and "lr" not in layout:
        raise ModelError("ONNX has no 'y' (video) or 'lr' (G-buffer) input; export it with `vsr-export onnx`")
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


def graph_spec(net, model_name: str, frame_dtype: str = "uint8", state_dtype: str = "float32") -> GraphSpec:
    """The contract an export of ``net`` (an engine.models step module) fulfils."""
    from engine.models.rdg import RDG

    kind = GBUFFER if isinstance(net, RDG) else VIDEO
    return GraphSpec(kind=kind, model=model_name, scale=net.cfg.scale, hidden=tuple(net.hidden_spec()),
                     frame_dtype=frame_dtype if kind == VIDEO else ("float16" if state_dtype == "float16" else "float32"),
                     state_dtype=state_dtype, motion=kind == VIDEO and bool(getattr(net.cfg, "motion_blend", 0.0)))


def sample_feeds(spec: GraphSpec, hw: tuple[int, int] = (36, 40), seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random frame inputs of one ``hw`` frame (video: BT.709 limited 4:2:0 planes; G-buffer: unit
    normals, depth < 1, small motion), in the graph's dtypes."""
    rng = np.random.default_rng(seed)
    h, w = hw
    if spec.kind == VIDEO:
        bits = 8 if spec.frame_dtype == "uint8" else 10
        lo, hi = 16 << (bits - 8), 235 << (bits - 8)
        feeds = {"y": rng.integers(lo, hi + 1, (1, 1, h, w)).astype(spec.frame_dtype),
                 "uv": rng.integers(lo, hi + 1, (1, 2, (h + 1) // 2, (w + 1) // 2)).astype(spec.frame_dtype),
                 "to_rgb": colour.to_rgb(1, colour.LIMITED, bits), "from_rgb": colour.from_rgb(1, colour.LIMITED, bits),
                 "peak": colour.peak(bits)}
        if spec.motion:
            feeds["motion"] = synthetic_motion(h, w, seed)
        return feeds
    n = rng.normal(size=(1, 3, h, w)).astype(np.float32)
    n[:, 2] = np.abs(n[:, 2])
    return {
        "lr": rng.random((1, 3, h, w), dtype=np.float32),
        "depth": (0.9 + 0.1 * rng.random((1, 1, h, w))).astype(np.float32),
        "motion": (rng.normal(size=(1, 2, 1, 1)) * 3 + rng.normal(size=(1, 2, h, w)) * 0.5).astype(np.float32),
        "normals": n / np.linalg.norm(n, axis=1, keepdims=True),
        "albedo": rng.random((1, 3, h, w), dtype=np.float32),
        "jitter": (rng.random((1, 2)) - 0.5).astype(np.float32),
    }


def step_module(net, spec: GraphSpec):
    """The module whose flat forward is the graph: VideoStep around a video model, the G-buffer model itself."""
    import torch

    from engine.models.frame_io import VideoStep

    return VideoStep(net, getattr(torch, spec.frame_dtype)).eval() if spec.kind == VIDEO else net.eval()


def _retype_planes(proto, elem_type: int) -> None:
    """Give the frame planes (inputs y/uv, outputs y_out/uv_out and the Casts that make them) ``elem_type``: they
    are read only by Cast-to-float and Shape, so the traced int32 graph is the uint16 graph once retyped."""
    planes = {*VIDEO_INPUTS, *VIDEO_OUTPUTS} - {"to_rgb", "from_rgb", "peak"}
    for v in [*proto.graph.input, *proto.graph.output]:
        if v.name in planes:
            v.type.tensor_type.elem_type = elem_type
    for node in proto.graph.node:
        if node.op_type == "Cast" and set(node.output) & set(VIDEO_OUTPUTS):
            for a in node.attribute:
                if a.name == "to":
                    a.i = elem_type


def export_onnx(net, path: str | Path, model_name: str, sample_hw: tuple[int, int] = (36, 40), opset: int = OPSET,
                precision: str = "fp32", io: str = "fp32", frame_dtype: str = "uint8") -> Path:
    """Export ``net`` (an engine.models RVSR/RDG step module) to ``path`` atomically, as engine/graph.py defines.

    Metadata: :meth:`GraphSpec.metadata` plus ``vsr.weights_sha256`` and ``vsr.precision``. Video graphs take and
    return ``frame_dtype`` planes; ``precision="fp16"`` converts with :func:`export.fp16.convert_to_fp16` and
    ``io="fp16"`` keeps the hidden state (and G-buffer colour) in fp16 too.
    """
    import onnx
    import torch

    if opset < 16:
        raise ModelError(f"opset {opset} has no GridSample (G-buffer and aligned models); use {OPSET}")
    if precision not in ("fp32", "fp16") or io not in ("fp32", "fp16") or (precision, io) == ("fp32", "fp16"):
        raise ModelError(f"unsupported precision/io {precision}/{io}: use fp32/fp32, fp16/fp32 or fp16/fp16")
    path = Path(path)
    net = net.eval().cpu()
    spec = graph_spec(net, model_name, frame_dtype)
    # the legacy exporter has no uint16: trace with int32 planes, then retype the frame I/O (see _retype_planes)
    traced = replace(spec, frame_dtype="int32") if spec.frame_dtype == "uint16" else spec
    module = step_module(net, traced)
    feeds = {k: torch.from_numpy(v) for k, v in sample_feeds(traced, sample_hw).items()}
    hidden = [torch.from_numpy(v) for v in spec.zero_state(*sample_hw).values()]
    tmp = path.with_name(path.name + ".tmp")
    # dynamo=False on purpose: the torch.export-based exporter can specialise H/W (see check_symbolic); its
    # deprecation notice for the legacy exporter is expected and silenced.
    with torch.no_grad(), warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (*feeds.values(), *hidden), str(tmp), input_names=spec.inputs,
                          output_names=spec.outputs, opset_version=opset, dynamic_axes=_dynamic_axes(spec),
                          dynamo=False)
    proto = onnx.load(str(tmp))
    if traced is not spec:
        _retype_planes(proto, onnx.TensorProto.UINT16)
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in net.state_dict().values()))
    # written as fp32; convert_to_fp16 records its own precision and state dtype
    meta = {**spec.metadata(), "vsr.weights_sha256": digest.hexdigest(), "vsr.precision": "fp32"}
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


def parity(net, path: str | Path, steps: int = 8, hw: tuple[int, int] = (23, 31), seed: int = 0) -> float:
    """Max abs difference of the frame output, torch (fp32) vs onnxruntime, over ``steps`` recurrent steps, each
    side feeding back its own state: code values for video graphs, colour for G-buffer graphs."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    # ORT's optimiser folds Cast(fp32->fp16)->Cast(fp16->fp32) pairs it inserts for CPU kernels, which would
    # hide the fp16 rounding between ops; unoptimised, every fp16 tensor really is stored as fp16.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1  # tiny frames: threads only add spin-waiting (slow on busy CI machines)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    spec = spec_from_metadata(sess.get_modelmeta().custom_metadata_map, path)
    module = step_module(net, graph_spec(net, spec.model, spec.frame_dtype))
    main = spec.frame_outputs[0]
    state_t: list = []
    state_o = spec.zero_state(*hw)
    worst = 0.0
    for i in range(steps):
        feeds = sample_feeds(spec, hw, seed + i)
        with torch.no_grad(), one_torch_thread():
            res_t = module(*[torch.from_numpy(v) for v in feeds.values()], *state_t)
        res_o = dict(zip(spec.outputs, sess.run(spec.outputs, {**feeds, **state_o})))
        state_t, state_o = list(res_t[len(spec.frame_outputs):]), spec.next_state(res_o)
        ref = res_t[0].float().numpy()
        worst = max(worst, float(np.abs(res_o[main].astype(np.float32) - ref).max()))
    return worst
