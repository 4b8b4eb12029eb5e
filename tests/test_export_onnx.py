"""ONNX export: named symbolic I/O for every model, checker, parity over recurrent steps, fp16 variants, CLI."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from engine.errors import ModelError  # noqa: E402
from engine.models import MODELS, build_model  # noqa: E402
from export.cli import main  # noqa: E402
from export.fp16 import convert_to_fp16, float_leftovers  # noqa: E402
from export.onnx import check_symbolic, export_onnx, io_layout, parity, symbolic_dims  # noqa: E402

FP16_CODES = {"fp32": 2, "fp16": 2}  # fp16 graphs by state type, in 8-bit code values (float: ~5e-4 and ~7.5e-4)


def _model(name: str, scale: int):
    torch.manual_seed(0)
    return build_model(name, scale)


@pytest.mark.parametrize("name,scale", [("rvsr-tiny", 2), ("rvsr-tiny", 3), ("rvsr-tiny", 4), ("rvsr-s", 2),
                                        ("rvsr-m", 4), ("rvsr-sa", 2), ("rvsr-ma", 4), ("rvsr-s-real", 2)])
def test_every_model_exports_named_symbolic_io(tmp_path, name, scale):
    # Prepare
    assert name in MODELS
    model = _model(name, scale)
    # Execute
    path = export_onnx(model, tmp_path / "m.onnx", name)
    # Assert
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = symbolic_dims(path)
    n = len(model.hidden_spec())
    motion = ["motion"] * bool(MODELS[name].motion_blend)  # the aligned history blend's input (engine/graph.py)
    assert list(dims) == ["y", "uv", "to_rgb", "from_rgb", "peak", *motion, *[f"hidden_in{i}" for i in range(n)],
                          "y_out", "uv_out", *[f"hidden_out{i}" for i in range(n)]]
    for tensor, shape in dims.items():
        assert len(shape) != 4 or all(isinstance(d, str) for d in shape[2:]), f"{tensor} H/W specialised: {shape}"
    assert dims["y_out"][2:] == [f"h{scale}", f"w{scale}"] and dims["y"][2:] == ["h", "w"]
    assert dims["uv"] == [1, 2, "hc", "wc"] and dims["to_rgb"] == [3, 4]
    types = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    assert types["y"] == types["uv"] == types["y_out"] == types["uv_out"] == TensorProto.UINT8
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (meta["vsr.model"], meta["vsr.scale"], meta["vsr.precision"]) == (name, str(scale), "fp32")
    assert (meta["vsr.format"], meta["vsr.kind"], meta["vsr.frame_dtype"]) == ("2", "video", "uint8")
    assert meta["vsr.motion"] == ("1" if motion else "0")
    if motion:
        assert dims["motion"] == [1, 2, "h", "w"] and types["motion"] == TensorProto.INT32


def test_specialised_dims_are_rejected(tiny_model):
    # Prepare: what dynamo does silently, e.g. when a grid is built with linspace over the sample size
    proto = onnx.load(str(tiny_model[2][0]))
    check_symbolic(proto)
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 36
    # Execute / Assert
    with pytest.raises(ModelError, match="specialised H/W.*y"):
        check_symbolic(proto)


@pytest.mark.parametrize("name,scale", [("rvsr-tiny", 3), ("rvsr-s", 2), ("rvsr-sa", 3), ("rvsr-m-real", 4)])
def test_fp32_parity_over_8_steps(tmp_path, name, scale):
    # Prepare
    model = _model(name, scale)
    path = export_onnx(model, tmp_path / "m.onnx", name)
    # Execute: sample size 36x40 at export, a different (odd) size here
    err = parity(model, path, steps=8, hw=(23, 31))
    # Assert: integer planes, so within one code value (a float difference that crosses a rounding edge)
    assert err <= 1


@pytest.mark.parametrize("io", ["fp32", "fp16"])
def test_fp16_export_parity_and_types(tmp_path, io):
    # Prepare
    model = _model("rvsr-s", 2)
    # Execute
    path = export_onnx(model, tmp_path / "m16.onnx", "rvsr-s", precision="fp16", io=io)
    err = parity(model, path, steps=8)
    # Assert
    proto = onnx.load(str(path))
    want = TensorProto.FLOAT if io == "fp32" else TensorProto.FLOAT16
    types = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    assert {t for k, t in types.items() if k.startswith("hidden")} == {want}
    assert types["to_rgb"] == TensorProto.FLOAT and types["y"] == types["y_out"] == TensorProto.UINT8
    assert TensorProto.FLOAT16 in {i.data_type for i in proto.graph.initializer}
    assert float_leftovers(proto) == []
    assert symbolic_dims(path)["y"][2:] == ["h", "w"]
    assert err <= FP16_CODES[io]


@pytest.mark.parametrize("name,scale", [("rvsr-s-real", 2), ("rvsr-sa", 2)])
def test_fp16_grid_sample_runs_in_fp32(tmp_path, name, scale):
    # Prepare: the motion-aligned blend and the block-matched state both sample with GridSample
    model = _model(name, scale)
    # Execute
    path = export_onnx(model, tmp_path / "m16.onnx", name, precision="fp16", io="fp16")
    err = parity(model, path, steps=4)
    # Assert: input and grid of every GridSample in one type, fp32 (TensorRT refuses mixed types; an fp16 grid is off
    # by up to a pixel at 4K widths), while the rest of the graph is fp16
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    samplers = [n for n in g.node if n.op_type == "GridSample"]
    assert samplers and all(types[t] == TensorProto.FLOAT for n in samplers for t in [*n.input[:2], *n.output])
    assert types["hidden_in0"] == TensorProto.FLOAT16
    assert err <= FP16_CODES["fp16"]


def _pitfall_model():
    """A state-like graph (hidden_in0 -> hidden_out0, the I/O that keep_io_types=False halves): resize with fp32 scales, a Cast(to=FLOAT), a value_float Constant, a weight beyond the fp16 range and a
    float Range (no fp16 in the spec) computed from Constants."""
    x = helper.make_tensor_value_info("hidden_in0", TensorProto.FLOAT, [1, 1, "h", "w"])
    y = helper.make_tensor_value_info("hidden_out0", TensorProto.FLOAT, [1, 1, "h2", 10])
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([1e5], np.float32), "big")]
    nodes = [helper.make_node("Resize", ["hidden_in0", "", "scales"], ["r"], mode="linear"),
             helper.make_node("Cast", ["r"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["k"], value_float=0.5),
             helper.make_node("Mul", ["c", "k"], ["m"]),
             helper.make_node("Constant", [], ["start"], value_float=0.0),
             helper.make_node("Constant", [], ["limit"], value_float=10.0),
             helper.make_node("Constant", [], ["delta"], value_float=1.0),
             helper.make_node("Range", ["start", "limit", "delta"], ["ramp"]),
             helper.make_node("Add", ["m", "ramp"], ["a"]),
             helper.make_node("Min", ["a", "big"], ["hidden_out0"])]
    graph = helper.make_graph(nodes, "pitfalls", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("keep_io", [True, False])
def test_fp16_converter_handles_known_pitfalls(keep_io):
    import onnxruntime as ort

    # Prepare
    proto = _pitfall_model()
    x = np.random.default_rng(0).random((1, 1, 4, 5), dtype=np.float32)
    (want,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"hidden_in0": x})
    # Execute
    half, report = convert_to_fp16(proto, keep_io_types=keep_io)
    # Assert
    assert (report.casts, report.constants, report.clipped) == (1, 1, 1)
    assert {"scales", "start", "limit", "delta", "ramp"} <= set(report.kept_fp32) and "m" not in report.kept_fp32
    types = {i.name: i.data_type for i in half.graph.initializer}
    assert types == {"scales": TensorProto.FLOAT, "big": TensorProto.FLOAT16}
    assert float_leftovers(half) == []
    io_type = np.float32 if keep_io else np.float16
    (out,) = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"hidden_in0": x.astype(io_type)})
    assert out.dtype == io_type and out.shape == (1, 1, 8, 10)
    assert np.abs(out.astype(np.float32) - want).max() < 1e-2  # |values| <= 10.5: fp16 ulp there is 2**-7
    with pytest.raises(ModelError, match="already fp16"):
        convert_to_fp16(half)


def test_io_layout_reads_factors_and_fixed_inputs(tiny_model):
    # Prepare: a G-buffer style graph has a non-image (1, 2) jitter input next to the images
    proto = onnx.load(str(tiny_model[3][0]))
    proto.graph.input.append(helper.make_tensor_value_info("jitter", TensorProto.FLOAT, [1, 2]))
    # Execute
    layout = io_layout(proto)
    # Assert
    assert (layout["y"].channels, layout["y"].factor, layout["y"].chroma) == (1, 1, False)
    assert (layout["uv"].channels, layout["uv"].chroma) == (2, True) and layout["to_rgb"].fixed == (3, 4)
    assert (layout["hidden_in0"].channels, layout["hidden_in0"].factor) == (MODELS["rvsr-tiny"].hidden, 1)
    assert (layout["hidden_in1"].channels, layout["hidden_in1"].factor) == (3, 3)
    assert layout["jitter"].fixed == (1, 2)


def test_cli_onnx_fp16(tmp_path, tiny_model, capsys):
    # Prepare
    weights = tiny_model[2][1]
    out = tmp_path / "cli16.onnx"
    # Execute
    rc = main(["onnx", "--scale", "2", "--weights", str(weights), "--fp16", "--out", str(out)])
    # Assert
    assert rc == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["vsr.model"], meta["vsr.precision"], meta["vsr.io"]) == ("rvsr-tiny", "fp16", "fp32")
    assert "max abs error over 8 steps" in capsys.readouterr().out


@pytest.mark.parametrize("args,code,needle", [
    (["--scale", "3"], 6, "is a x2 model, not x3"),
    (["--scale", "2", "--model", "rvsr-m"], 6, "holds model 'rvsr-tiny', not 'rvsr-m'"),
    (["--scale", "2", "--out-dir-missing"], 5, "output folder"),
])
def test_cli_onnx_errors_are_one_line(tmp_path, tiny_model, capsys, args, code, needle):
    # Prepare
    out = tmp_path / ("missing/x.onnx" if "--out-dir-missing" in args else "x.onnx")
    args = [a for a in args if a != "--out-dir-missing"]
    # Execute
    rc = main(["onnx", *args, "--weights", str(tiny_model[2][1]), "--out", str(out)])
    # Assert
    err = capsys.readouterr().err
    assert rc == code and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()
