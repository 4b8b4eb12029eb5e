"""fp32 ONNX -> fp16 ONNX (fp32 or fp16 I/O) for strongly typed TensorRT builds, with the converter pitfalls handled.

Pitfalls of the usual converters (onnxconverter-common's ``convert_float_to_float16``) handled here:

* ``Cast(to=FLOAT)`` nodes are left at float, so an fp32 tensor meets fp16 ones and a strongly typed
  builder rejects the graph -> every ``Cast(to=FLOAT)`` in the fp16 region becomes ``Cast(to=FLOAT16)``.
* Inputs the ONNX spec types as fp32 whatever the data (``Resize`` roi/scales), and ops with no fp16 at all
  (``Range``), break the model -> those tensors, and the chains computing them, stay fp32.
* ``GridSample`` grids in fp16 are off by up to a pixel at 1080p widths -> the grid chain stays fp32 too; and
  TensorRT wants its input and grid in one type -> the node itself runs in fp32 (Casts around it), without
  pulling the sampled tensor's upstream chain into fp32.
* Weights beyond the fp16 range silently become inf -> clipped to +-65504 and counted.
* Stale fp32 ``value_info`` entries contradict the new types -> dropped and re-inferred in strict mode.
* Boundary Casts break when a graph output is also consumed inside the graph (``sr`` feeds ``hidden_out1``)
  -> Casts are inserted per consumer, by type, never by renaming outputs in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ModelError

FP16_MAX = 65504.0  # largest finite float16
# op type -> input slots that must stay fp32: spec-typed fp32, no fp16 kernel type, or too coarse in fp16
FLOAT_ONLY_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "Upsample": (1,), "GridSample": (1,),
                                                 "Range": (0, 1, 2)}
FP32_OPS = frozenset({"Range"})  # ops whose outputs stay fp32 (the ONNX spec has no float16 Range)
FP32_NODES = frozenset({"GridSample"})  # ops run in fp32 behind Casts, their upstream chains left as they are


@dataclass(frozen=True)
class Fp16Report:
    """What a conversion changed."""

    initializers: int  # float32 initializers stored as float16
    constants: int  # Constant / ConstantOfShape nodes converted
    casts: int  # Cast(to=FLOAT) nodes retargeted to FLOAT16
    kept_fp32: tuple[str, ...]  # tensors left fp32 (spec-fp32 inputs and the chains computing them)
    boundary_casts: int  # Cast nodes inserted between fp32 and fp16 regions (and at fp32 I/O)
    clipped: int  # weight values outside the fp16 range, clipped to +-65504
    io: str  # "fp32" or "fp16" graph inputs/outputs


def _float_types(proto: Any) -> dict[str, int]:
    """Element type of every tensor of the fp32 model (from shape inference)."""
    import onnx

    g = onnx.shape_inference.infer_shapes(proto).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def fp32_region(graph: Any) -> tuple[set[str], set[int]]:
    """(tensors, node indices) that stay fp32: FLOAT_ONLY_INPUTS slots, FP32_OPS, and their upstream chains (up to
    graph inputs, initializers, Constants or Casts), plus the FP32_NODES themselves."""
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    nodes = {i for i, n in enumerate(graph.node) if n.op_type in FP32_OPS}
    stack = [t for n in graph.node for k in FLOAT_ONLY_INPUTS.get(n.op_type, ()) if k < len(n.input) and
             (t := n.input[k])]
    stack += [t for i in nodes for t in graph.node[i].input if t]
    keep: set[str] = set()
    while stack:
        t = stack.pop()
        if t in keep:
            continue
        keep.add(t)
        i = producer.get(t)
        if i is not None:
            nodes.add(i)
            if graph.node[i].op_type != "Cast":  # a Cast is the natural boundary: it takes any input type
                stack += [x for x in graph.node[i].input if x]
    nodes |= {i for i, n in enumerate(graph.node) if n.op_type in FP32_NODES}
    keep |= {o for i in nodes for o in graph.node[i].output}
    return keep, nodes


def _to_half(arr: np.ndarray) -> tuple[np.ndarray, int]:
    clipped = int(np.count_nonzero(np.abs(arr[np.isfinite(arr)]) > FP16_MAX))
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16), clipped


def _convert_tensor(t: Any) -> int:
    """Rewrite a FLOAT TensorProto in place as FLOAT16; returns the clipped count."""
    from onnx import numpy_helper

    half, clipped = _to_half(numpy_helper.to_array(t))
    t.CopyFrom(numpy_helper.from_array(half, t.name))
    return clipped


def _convert_node(node: Any) -> tuple[int, int, int]:
    """(constants, casts, clipped) after moving one fp16-region node's float attributes to float16."""
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    constants = casts = clipped = 0
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i, casts = TensorProto.FLOAT16, casts + 1
        elif attr.type == AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            clipped, constants = clipped + _convert_tensor(attr.t), constants + 1
    if node.op_type == "Constant" and node.attribute[0].name in ("value_float", "value_floats"):
        attr = node.attribute[0]  # Constant(value_float[s]=...) always yields fp32: make it an fp16 tensor
        half, clip = _to_half(np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float32))
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(half)))
        clipped, constants = clipped + clip, constants + 1
    return constants, casts, clipped


def convert_to_fp16(proto: Any, keep_io_types: bool = True) -> tuple[Any, Fp16Report]:
    """Return an fp16 copy of an fp32 ONNX ``proto`` and what changed.

    Parameters
    ----------
    proto : onnx.ModelProto
        fp32 model (not modified).
    keep_io_types : bool
        True: inputs/outputs stay fp32 (drop-in replacement, Casts at the boundary).
        False: the hidden state (``hidden_in*``/``hidden_out*``) becomes fp16 (half the traffic between steps);
        frames and the colour constants keep their types.
    """
    import onnx
    from onnx import TensorProto, helper

    if _meta(proto).get("vsr.precision") == "fp16":
        raise ModelError("model is already fp16; convert the fp32 export instead")
    types = _float_types(proto)
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    g = model.graph
    keep, fp32_nodes = fp32_region(g)
    boundary = {vi.name for vi in [*g.input, *g.output] if types.get(vi.name) == TensorProto.FLOAT}
    half_io = set() if keep_io_types else {n for n in boundary if n.startswith("hidden_")}
    tail = _split_outputs(g, boundary - half_io, fp32_nodes, keep, types, TensorProto.FLOAT)
    tail += _split_outputs(g, half_io, fp32_nodes, keep, types, TensorProto.FLOAT16)

    def io_type(t: str) -> int:
        return TensorProto.FLOAT16 if t in half_io else TensorProto.FLOAT

    def new_type(t: str) -> int:  # element type a float tensor has after conversion
        return io_type(t) if t in boundary else TensorProto.FLOAT if t in keep else TensorProto.FLOAT16

    inits = clipped = constants = casts = 0
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            clipped, inits = clipped + _convert_tensor(init), inits + 1
    nodes, made = [], {}
    for i, node in enumerate(g.node):
        if i not in fp32_nodes:
            c, k, cl = _convert_node(node)
            constants, casts, clipped = constants + c, casts + k, clipped + cl
        slots = FLOAT_ONLY_INPUTS.get(node.op_type, ())
        for k, t in enumerate(node.input):
            if not t or types.get(t) != TensorProto.FLOAT or node.op_type == "Cast":  # Cast takes any type
                continue
            want = TensorProto.FLOAT if i in fp32_nodes or k in slots else TensorProto.FLOAT16
            if new_type(t) != want:
                name = f"{t}_as_{'fp32' if want == TensorProto.FLOAT else 'fp16'}"
                if name not in made:
                    made[name] = helper.make_node("Cast", [t], [name], to=want, name=f"cast_{name}")
                    nodes.append(made[name])
                node.input[k] = name
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes + tail)
    for vi in [*g.input, *g.output]:
        if vi.name in boundary:
            vi.type.tensor_type.elem_type = io_type(vi.name)
    del g.value_info[:]
    _set_meta(model, {"vsr.precision": "fp16", "vsr.io": "fp32" if keep_io_types else "fp16",
                      "vsr.state_dtype": "float32" if keep_io_types else "float16"})
    model = _check(model)
    report = Fp16Report(inits, constants, casts, tuple(sorted(keep)), len(made) + len(tail), clipped,
                        "fp32" if keep_io_types else "fp16")
    return model, report


def _split_outputs(g: Any, boundary: set[str], fp32_nodes: set[int], keep: set[str], types: dict[str, int],
                   io_type: int) -> list[Any]:
    """Graph outputs computed in the other precision than the I/O: the producer writes a twin that internal
    readers use, and a Cast (returned, to append last) makes the output. Updates ``keep``/``types``."""
    from onnx import TensorProto, helper

    tail = []
    for i, node in enumerate(g.node):
        have = TensorProto.FLOAT if i in fp32_nodes else TensorProto.FLOAT16
        for j, out in enumerate(node.output):
            if out not in boundary or types.get(out) != TensorProto.FLOAT or have == io_type:
                continue
            twin = f"{out}_{'fp32' if have == TensorProto.FLOAT else 'fp16'}"
            for n in g.node:
                n.input[:] = [twin if x == out else x for x in n.input]
            node.output[j] = twin
            types[twin] = TensorProto.FLOAT  # a float tensor of the source model, like ``out``
            if have == TensorProto.FLOAT:
                keep.add(twin)
            tail.append(helper.make_node("Cast", [twin], [out], to=io_type, name=f"cast_out_{out}"))
    return tail


def _check(model: Any) -> Any:
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(f"fp16 conversion produced an invalid graph ({e}); export fp32 instead") from e
    leftovers = float_leftovers(model)
    if leftovers:
        raise ModelError(f"fp16 conversion left fp32 tensors in the fp16 region: {', '.join(leftovers[:5])}")
    return model


def float_leftovers(proto: Any) -> list[str]:
    """fp32 tensors of an fp16 model outside its fp32 region and I/O (empty when the conversion is clean)."""
    from onnx import TensorProto

    g = proto.graph
    keep, _ = fp32_region(g)
    allowed = keep | {vi.name for vi in [*g.input, *g.output]} | {n.output[0] for n in g.node if
                                                                  n.name.startswith(("cast_", "cast_out_"))}
    bad = [i.name for i in g.initializer if i.data_type == TensorProto.FLOAT and i.name not in allowed]
    bad += [vi.name for vi in g.value_info if vi.type.tensor_type.elem_type == TensorProto.FLOAT and
            vi.name not in allowed]
    return bad


def _meta(proto: Any) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _set_meta(proto: Any, values: dict[str, str]) -> None:
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for k, v in [*kept, *values.items()]:
        proto.metadata_props.add(key=k, value=v)
