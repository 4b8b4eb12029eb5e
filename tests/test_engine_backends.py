"""Backends and the recurrent step: parity torch <-> onnxruntime, streaming == unrolled, resets, auto choice."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import ROOT

from engine import colour
from engine.backends.base import Backend
from engine.backends.select import ModelChoice, open_backend
from engine.errors import BackendError, ModelError
from engine.graph import VIDEO, GraphSpec
from engine.retime import Retimer, parse_rate
from engine.step import Stepper

# BT.709 limited-range 8-bit in and out, as an HD H.264 stream
CONSTANTS = {"to_rgb": colour.to_rgb(1, colour.LIMITED, 8), "from_rgb": colour.from_rgb(1, colour.LIMITED, 8),
             "peak": colour.peak(8)}


def frames(n: int, h: int = 20, w: int = 28, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """4:2:0 8-bit planes with limited-range values."""
    g = np.random.default_rng(seed)
    return [{"y": g.integers(16, 236, (1, 1, h, w), dtype=np.uint8),
             "uv": g.integers(16, 241, (1, 2, h // 2, w // 2), dtype=np.uint8)} for _ in range(n)]


def diff(a: dict, b: dict) -> int:
    """Largest difference in code values between two frame outputs."""
    return max(int(np.abs(a[k].astype(int) - b[k].astype(int)).max()) for k in ("y_out", "uv_out"))


def test_torch_and_onnxruntime_agree_over_recurrent_steps(tiny_model):
    # Prepare
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import TorchBackend

    onnx_path, st_path = tiny_model[2]
    # Execute
    with OnnxRuntimeBackend(onnx_path) as ort_b, TorchBackend(st_path) as torch_b:
        a, b = Stepper(ort_b, CONSTANTS), Stepper(torch_b, CONSTANTS)
        worst = max(diff(a(x), b(x)) for x in frames(6))
        spec_o, spec_t = ort_b.io_spec(), torch_b.io_spec()
    # Assert: integer planes within one code value (rounding of float differences)
    assert worst <= 1
    assert (spec_o.model, spec_o.scale, spec_o.hidden) == (spec_t.model, spec_t.scale, spec_t.hidden)


def test_onnxruntime_runs_fp16_graphs(tiny_model, tmp_path):
    # Prepare: the same tiny model exported with fp16 compute and an fp16 state
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import load_net
    from export.onnx import export_onnx

    onnx32, st_path = tiny_model[2]
    _, _, model = load_net(st_path)
    onnx16 = export_onnx(model, tmp_path / "tiny16.onnx", "rvsr-tiny", precision="fp16", io="fp16")
    # Execute
    with OnnxRuntimeBackend(onnx32) as b32, OnnxRuntimeBackend(onnx16) as b16:
        a, b = Stepper(b32, CONSTANTS), Stepper(b16, CONSTANTS)
        outs = [(a(x), b(x)) for x in frames(4)]
        state = b.state
    # Assert: integer frames come back, close to the fp32 graph; the state really is fp16
    assert all(o16["y_out"].dtype == np.uint8 and o16["y_out"].shape == o32["y_out"].shape for o32, o16 in outs)
    assert max(diff(o32, o16) for o32, o16 in outs) <= 8
    assert all(v.dtype == np.float16 for v in state.values())


def test_streaming_steps_equal_the_unrolled_model(tiny_model):
    # Prepare: the float reference does the same colour maths in numpy around the torch model's unroll
    import torch

    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import load_net
    from engine.models.frame_io import VideoStep

    onnx_path, st_path = tiny_model[3]
    xs = frames(5)
    _, _, model = load_net(st_path)
    wrap = VideoStep(model)
    # Execute
    with OnnxRuntimeBackend(onnx_path) as backend:
        stepper = Stepper(backend, CONSTANTS)
        streamed = [stepper(x) for x in xs]
    with torch.no_grad():
        c = {k: torch.from_numpy(v) for k, v in CONSTANTS.items()}
        rgb = torch.stack([wrap.to_rgb(torch.from_numpy(x["y"]), torch.from_numpy(x["uv"]), c["to_rgb"]) for x in xs], 1)
        sr = model.unroll(rgb)
        unrolled = [wrap.to_planes(sr[:, t], torch.from_numpy(x["uv"]), c["from_rgb"], c["peak"]) for t, x in enumerate(xs)]
    # Assert
    assert streamed[0]["y_out"].shape == (1, 1, 60, 84) and streamed[0]["uv_out"].shape == (1, 2, 30, 42)
    for got, (y, uv) in zip(streamed, unrolled):
        assert diff(got, {"y_out": y.numpy(), "uv_out": uv.numpy()}) <= 1


class Recorder(Backend):
    """Fake backend: output = input repeated; records whether each call got a fresh state."""

    name = "recorder"

    def __init__(self) -> None:
        self.fresh: list[bool] = []

    def io_spec(self) -> GraphSpec:
        return GraphSpec(kind=VIDEO, model="fake", scale=2, hidden=((1, 1),), weights="-")

    def run(self, feeds):
        self.fresh.append("hidden_in0" not in feeds)
        y, uv = feeds["y"], feeds["uv"]
        return {"y_out": y.repeat(2, 2).repeat(2, 3), "uv_out": uv.repeat(2, 2).repeat(2, 3), "hidden_out0": y}

    def close(self) -> None:
        pass


def test_stepper_resets_on_cut_and_size_change():
    # Prepare
    backend = Recorder()
    stepper = Stepper(backend, CONSTANTS)
    small, big = frames(1, 8, 8)[0], frames(1, 10, 12)[0]
    # Execute
    for x, cut in [(small, False), (small, False), (small, True), (small, False), (big, False), (big, False)]:
        stepper(x, reset=cut)
    # Assert: state dropped at the cut (2) and at the new size (4); never carried across
    assert backend.fresh == [True, False, True, False, True, False]
    assert stepper.resets == 2 and stepper.reset_at == [2, 4]


def test_state_after_reset_equals_a_fresh_start(tiny_model):
    # Prepare
    from engine.backends.onnxruntime import OnnxRuntimeBackend

    a, b = frames(3, seed=1), frames(2, seed=2)
    # Execute
    with OnnxRuntimeBackend(tiny_model[2][0]) as backend:
        carried = Stepper(backend, CONSTANTS)
        for x in a:
            carried(x)
        after_cut = [carried(b[0], reset=True), carried(b[1])]
        fresh = Stepper(backend, CONSTANTS)
        clean = [fresh(x) for x in b]
    # Assert
    for got, want in zip(after_cut, clean):
        assert diff(got, want) == 0


def test_auto_backend_says_what_it_picked_and_skipped(tiny_model):
    # Execute
    opened = open_backend("auto", ModelChoice(weights=tiny_model[2][0]))
    opened.backend.close()
    # Assert
    assert opened.notes[0].startswith("auto picked ")
    assert any(n.startswith("skipped tensorrt: ") for n in opened.notes)
    if opened.backend.name == "onnxruntime-cpu":
        assert len(opened.notes) == 4  # three skips, each with a reason


def test_backend_errors_are_clear(tiny_model):
    # Execute / Assert
    with pytest.raises(BackendError, match="tensorrt backend not available"):
        open_backend("tensorrt", ModelChoice(weights=tiny_model[2][0]))
    with pytest.raises(ModelError, match="vsr-export onnx"):
        open_backend("onnxruntime", ModelChoice(weights=tiny_model[2][1]))
    with pytest.raises(ModelError, match="x2 model"):
        open_backend("auto", ModelChoice(weights=tiny_model[2][0], scale=4))
    with pytest.raises(ModelError, match="uint16-plane graph"):  # 10-bit video with an 8-bit-only graph file
        open_backend("onnxruntime", ModelChoice(weights=tiny_model[3][0].with_name("lonely.onnx"), frame_bits=10))


def test_retimer_repeats_and_drops_by_timestamp():
    # Prepare: 10 fps source in ms with a gap and a burst, resampled to 20 fps
    tb, pts = Fraction(1, 1000), [0, 100, 300, 310, 320, 400]
    r = Retimer(tb, 0, Fraction(20))
    # Execute
    out = [pair for i, p in enumerate(pts) for pair in r.push(i, p)] + list(r.flush(500))
    # Assert: each slot is 50 ms; a frame covers the slots up to the next frame's slot
    assert [p for _, p in out] == list(range(0, 500, 50))
    assert [i for i, _ in out] == [0, 0, 1, 1, 1, 1, 4, 4, 5, 5]
    assert r.dropped == 2  # frames 2 and 3 (300, 310 ms) share slot 6 with frame 4 (320 ms): the last one wins


def test_parse_rate():
    assert parse_rate("30") == 30 and parse_rate("29.97") == Fraction(30000, 1001)
    assert parse_rate("24000/1001") == Fraction(24000, 1001) and parse_rate("12.5") == Fraction(25, 2)
    with pytest.raises(ValueError):
        parse_rate("0")


def test_cli_import_and_help_pull_in_no_torch():
    # Execute
    code = ("import sys, engine.cli; heavy = {'torch', 'onnxruntime', 'av', 'numpy'} & set(sys.modules); "
            "print(sorted(heavy))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    helped = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    # Assert
    assert res.stdout.strip() == "[]"
    assert helped.returncode == 0 and "--backend" in helped.stdout


@pytest.mark.parametrize(("model", "scale"), [("rvsr-s-real", 2), ("rvsr-s-real", 3), ("rvsr-m-real", 4)])
def test_shipped_onnx_matches_the_registry(model, scale):
    # Prepare
    from engine.registry import DEFAULT_MODEL, SHIPPED, WEIGHTS_DIR

    path = WEIGHTS_DIR / f"{SHIPPED[(model, scale)]}.onnx"
    if not path.exists():
        pytest.skip(f"shipped weights {path.name} not in this checkout yet")
    # Execute
    opened = open_backend("onnxruntime", ModelChoice(scale=scale))
    spec = opened.backend.io_spec()
    opened.backend.close()
    # Assert: the default model of the scale is what the file says it is
    assert DEFAULT_MODEL[scale] == model and (spec.model, spec.scale) == (model, scale)


def _shipped() -> list[tuple[str, int]]:
    from engine.registry import SHIPPED

    return sorted(SHIPPED)


@pytest.mark.parametrize(("model", "scale"), _shipped())
def test_every_shipped_model_opens_by_name(model, scale):
    # Prepare
    from engine.registry import RENDER_MODELS

    if model in RENDER_MODELS:
        pytest.skip("renderer models run through RenderUpscaler (tests/test_render_api.py)")
    x = frames(1, 12, 20)[0]
    # Execute: what `vsr-upscale --model NAME --scale S` opens (8-bit and 10-bit), stepped twice from zeros
    for bits in (8, 10):
        with open_backend("onnxruntime", ModelChoice(model=model, scale=scale, frame_bits=bits)).backend as backend:
            spec = backend.io_spec()
            stepper = Stepper(backend, CONSTANTS)
            feeds = {k: v.astype(spec.frame_dtype) for k, v in x.items()}
            first, second = stepper(feeds), stepper(feeds)
        # Assert
        assert (spec.model, spec.scale, spec.frame_dtype) == (model, scale, "uint16" if bits > 8 else "uint8")
        assert second["y_out"].shape == (1, 1, 12 * scale, 20 * scale) and second["y_out"].dtype == spec.frame_dtype
        assert abs(float(first["y_out"].mean()) - float(x["y"].mean())) < 12  # a residual on bicubic
