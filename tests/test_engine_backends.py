"""Backends and the recurrent step: parity torch <-> onnxruntime, streaming == unrolled, resets, auto choice."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import ROOT

from engine.backends.base import Backend, IoSpec
from engine.backends.select import ModelChoice, open_backend
from engine.errors import BackendError, ModelError
from engine.retime import Retimer, parse_rate
from engine.step import Stepper

TOL = 1e-4  # max abs difference allowed between torch and onnxruntime (float32, different kernels)


def frames(n: int, h: int = 20, w: int = 28, seed: int = 0) -> list[np.ndarray]:
    g = np.random.default_rng(seed)
    return [g.random((1, 3, h, w), dtype=np.float32) for _ in range(n)]


def test_torch_and_onnxruntime_agree_over_recurrent_steps(tiny_model):
    # Prepare
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import TorchBackend

    onnx_path, st_path = tiny_model[2]
    # Execute
    with OnnxRuntimeBackend(onnx_path) as ort_b, TorchBackend(st_path) as torch_b:
        a, b = Stepper(ort_b), Stepper(torch_b)
        worst = max(float(np.abs(a(x) - b(x)).max()) for x in frames(6))
        spec_o, spec_t = ort_b.io_spec(), torch_b.io_spec()
    # Assert
    assert worst < TOL
    assert (spec_o.model, spec_o.scale, spec_o.hidden) == (spec_t.model, spec_t.scale, spec_t.hidden)


def test_onnxruntime_runs_fp16_io_graphs(tiny_model, tmp_path):
    # Prepare: the same tiny model exported with float16 inputs/outputs
    from safetensors.torch import load_file

    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.models import build_model
    from export.onnx import export_onnx

    onnx32, st_path = tiny_model[2]
    model = build_model("rvsr-tiny", 2)
    model.load_state_dict(load_file(str(st_path)))
    onnx16 = export_onnx(model.eval(), tmp_path / "tiny16.onnx", "rvsr-tiny", precision="fp16", io="fp16")
    # Execute
    with OnnxRuntimeBackend(onnx32) as b32, OnnxRuntimeBackend(onnx16) as b16:
        a, b = Stepper(b32), Stepper(b16)
        outs = [(a(x), b(x)) for x in frames(4)]
    # Assert: float32 frames come back, close to the fp32 graph but not identical (it really ran in fp16)
    assert all(o16.dtype == np.float32 and o16.shape == o32.shape for o32, o16 in outs)
    worst = max(float(np.abs(o32 - o16).max()) for o32, o16 in outs)
    assert 1e-5 < worst < 1e-2


def test_streaming_steps_equal_the_unrolled_model(tiny_model):
    # Prepare
    import torch

    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.models import build_model, load_weights

    onnx_path, st_path = tiny_model[3]
    xs = frames(5)
    model = load_weights(build_model("rvsr-tiny", 3), st_path).eval()
    # Execute
    with OnnxRuntimeBackend(onnx_path) as backend:
        stepper = Stepper(backend)
        streamed = np.stack([stepper(x)[0] for x in xs])
    with torch.no_grad():
        unrolled = model.unroll(torch.from_numpy(np.stack(xs, axis=1))).numpy()[0]
    # Assert
    assert streamed.shape == (5, 3, 60, 84)
    assert np.abs(streamed - unrolled).max() < TOL


class Recorder(Backend):
    """Fake backend: output = input repeated; records whether each call got a fresh state."""

    name = "recorder"

    def __init__(self) -> None:
        self.fresh: list[bool] = []

    def io_spec(self) -> IoSpec:
        return IoSpec(model="fake", scale=2, hidden=((1, 1),), weights="-")

    def run(self, lr, hidden):
        self.fresh.append(hidden is None)
        return lr.repeat(2, 2).repeat(2, 3), (lr,)

    def close(self) -> None:
        pass


def test_stepper_resets_on_cut_and_size_change():
    # Prepare
    backend = Recorder()
    stepper = Stepper(backend)
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
        carried = Stepper(backend)
        for x in a:
            carried(x)
        after_cut = [carried(b[0], reset=True), carried(b[1])]
        fresh = Stepper(backend)
        clean = [fresh(x) for x in b]
    # Assert
    for got, want in zip(after_cut, clean):
        assert np.array_equal(got, want)


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


@pytest.mark.parametrize(("model", "scale"), [("rvsr-s", 2), ("rvsr-m", 4)])
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
    from engine.registry import SHIPPED, WEIGHTS_DIR

    if not (WEIGHTS_DIR / f"{SHIPPED[(model, scale)]}.onnx").exists():
        pytest.skip("shipped weights not in this checkout yet")
    lr = np.random.default_rng(0).random((1, 3, 12, 20), dtype=np.float32)
    # Execute: what `vsr-upscale --model NAME --scale S` opens, stepped twice from the zero state
    with open_backend("onnxruntime", ModelChoice(model=model, scale=scale)).backend as backend:
        spec = backend.io_spec()
        sr, hidden = backend.run(lr, None)
        sr2, _ = backend.run(lr, hidden)
    # Assert
    assert (spec.model, spec.scale) == (model, scale)
    assert sr.shape == sr2.shape == (1, 3, 12 * scale, 20 * scale)
    assert np.isfinite(sr2).all() and abs(float(sr.mean()) - float(lr.mean())) < 0.05  # a residual on bicubic
