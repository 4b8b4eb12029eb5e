"""GPU backends: what a CPU can check runs here (static-shape runner, IO binding, node placement, TensorRT-RTX AOT
engines with integer I/O, cancellable builds); the CUDA paths run where torch sees a GPU and skip with the reason."""

from __future__ import annotations

import importlib.util
import signal
import threading

import numpy as np
import pytest

from engine import colour
from engine.errors import BackendError
from engine.registry import shipped_file
from engine.step import Stepper

CONSTANTS = {"to_rgb": colour.to_rgb(1, colour.LIMITED, 8), "from_rgb": colour.from_rgb(1, colour.LIMITED, 8),
             "peak": colour.peak(8)}
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None


def _cuda_reason() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device visible to torch (CPU machine)"


CUDA_REASON = _cuda_reason()
needs_cuda = pytest.mark.skipif(CUDA_REASON is not None, reason=str(CUDA_REASON))
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="tensorrt_rtx not importable (pip install tensorrt-rtx)")


def frames(n: int, h: int = 20, w: int = 28, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """4:2:0 8-bit planes with limited-range values."""
    g = np.random.default_rng(seed)
    return [{"y": g.integers(16, 236, (1, 1, h, w), dtype=np.uint8),
             "uv": g.integers(16, 241, (1, 2, h // 2, w // 2), dtype=np.uint8)} for _ in range(n)]


def worst(a, b, xs) -> int:
    """Largest code-value difference between two backends streaming ``xs``, each carrying its own state."""
    sa, sb = Stepper(a, CONSTANTS), Stepper(b, CONSTANTS)
    diffs = []
    for x in xs:
        oa, ob = sa(x), sb(x)
        diffs += [int(np.abs(oa[k].astype(int) - np.asarray(ob[k]).astype(int)).max()) for k in ("y_out", "uv_out")]
    return max(diffs)


# ---------------------------------------------------------------- torch: static-shape runner (CPU checks)

def test_torch_static_runner_matches_eager(tiny_model):
    from engine.backends.torch import TorchBackend, TorchOptions

    # Prepare
    st = tiny_model[2][1]
    xs = frames(8) + frames(3, h=24, w=32, seed=1)  # a size change mid-stream: a second runner
    # Execute
    with TorchBackend(st) as eager, TorchBackend(st, options=TorchOptions("fp32", True, True)) as static:
        diff = worst(eager, static, xs)
        out = static.run({**xs[0], **CONSTANTS})
        again = static.run({**xs[1], **CONSTANTS, **static.io_spec().next_state(out)})
        runners = len(static._runners)
    # Assert: same numbers (channels_last only reorders float sums); the state is handed out in place
    assert diff <= 1
    assert again["hidden_out0"] is out["hidden_out0"]  # the static state buffer itself: never left the device
    assert runners == 2


def test_torch_cpu_fp32_equals_the_onnx_reference():
    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.backends.torch import TorchBackend

    # Execute: the shipped x2 model, 8 recurrent steps, each backend carrying its own state
    with OnnxRuntimeBackend(shipped_file("rvsr-s", 2)) as ref, \
            TorchBackend(shipped_file("rvsr-s", 2, ".safetensors")) as torch_b:
        diff = worst(ref, torch_b, frames(8, 36, 64))
    # Assert: integer planes within one code value (float rounding at .5)
    assert diff <= 1


@needs_cuda
def test_torch_cuda_fp16_graphs_match_cpu_fp32():
    from engine.backends.torch import TorchBackend, TorchOptions, default_options

    st = shipped_file("rvsr-m-real", 4, ".safetensors")
    with TorchBackend(st) as cpu, TorchBackend(st, device="cuda") as gpu:
        diff = worst(cpu, gpu, frames(8, 64, 96))
    assert default_options("cuda") == TorchOptions("fp16", True, True)
    assert diff <= 3  # fp16 weights/activations: a few code values at most (8-bit output)


# ---------------------------------------------------------------- onnxruntime: IO binding and node placement

def test_ort_iobinding_equals_plain_runs_and_keeps_state_bound(tiny_model):
    import onnxruntime as ort

    from engine.backends.onnxruntime import OnnxRuntimeBackend

    # Prepare
    onnx_path = tiny_model[2][0]
    xs = frames(8) + frames(2, h=24, w=32, seed=3)
    # Execute: the IO-binding path on the CPU EP (the same code the CUDA EP runs)
    with OnnxRuntimeBackend(onnx_path) as plain, OnnxRuntimeBackend(onnx_path, iobinding=True) as bound:
        diff = worst(plain, bound, xs)
        out = bound.run({**xs[0], **CONSTANTS})
        nxt = bound.run({**xs[1], **CONSTANTS, **bound.io_spec().next_state(out)})
        host = plain.run({**xs[1], **CONSTANTS, **plain.io_spec().next_state(plain.run({**xs[0], **CONSTANTS}))})
        with pytest.raises(BackendError, match="hidden_in"):
            bound.run({**xs[2], **CONSTANTS, "hidden_in0": "not a state"})
    # Assert: bit-identical to plain runs; the state comes back as the binding's own OrtValues
    assert diff == 0
    assert isinstance(nxt["hidden_out0"], ort.OrtValue) and isinstance(nxt["y_out"], np.ndarray)
    assert np.array_equal(nxt["y_out"], host["y_out"])


def test_node_placement_parses_a_real_profile(tiny_model, tmp_path):
    import json

    import onnxruntime as ort

    from engine.backends.base import probe_feeds
    from engine.backends.ort_binding import cpu_fallback, node_placement
    from engine.graph import spec_from_metadata

    # Prepare: a profiled CPU session (every node on the CPU EP: what a CUDA fallback would look like)
    so = ort.SessionOptions()
    so.enable_profiling, so.profile_file_prefix = True, str(tmp_path / "p")
    sess = ort.InferenceSession(str(tiny_model[2][0]), so, providers=["CPUExecutionProvider"])
    spec = spec_from_metadata(sess.get_modelmeta().custom_metadata_map, tiny_model[2][0])
    sess.run(None, {**probe_feeds(spec, 64, 64), **spec.zero_state(64, 64)})
    # Execute
    rows = node_placement(json.loads(open(sess.end_profiling()).read()))
    flagged = cpu_fallback(rows)
    # Assert: convolutions found on the CPU with frame-sized outputs and flagged; tiny nodes are not
    assert any(op == "Conv" and provider == "CPUExecutionProvider" and size >= 64 * 64
               for _, op, provider, size in rows)
    assert flagged and all("B)" in f for f in flagged)
    assert len(flagged) < len(rows) or all(size >= 4096 for *_, size in rows)
    small = [("shape_of", "Shape", "CPUExecutionProvider", 32), ("c", "Conv", "CUDAExecutionProvider", 1 << 20)]
    assert cpu_fallback(small) == []


@needs_cuda
def test_ort_cuda_iobinding_parity_and_no_cpu_nodes():
    import onnxruntime as ort

    from engine.backends.onnxruntime import CUDA, OnnxRuntimeBackend

    if CUDA not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    path = shipped_file("rvsr-s-real", 2)
    with OnnxRuntimeBackend(path) as cpu, OnnxRuntimeBackend(path, device="cuda") as gpu:  # opening checks placement
        diff = worst(cpu, gpu, frames(8, 64, 96))
    assert diff <= 1


# ---------------------------------------------------------------- TensorRT-RTX: AOT engine with integer I/O (CPU)

@needs_rtx
def test_rtx_aot_fp16_engine_has_integer_frame_io(tmp_path):
    from engine.backends.trt_cache import profile_for, read_key
    from export.tensorrt import BuildOptions, build_engine

    # Prepare: the shipped x4 model's integer-I/O ONNX, the static 270x480 profile (x4 -> 1080p). Without a GPU
    # TensorRT cannot deserialize an engine (no CUDA driver), so the I/O is read back from the network it built
    profile = profile_for((270, 480))
    opts = BuildOptions(profile=profile, precision="fp16", targets=("sm89",))
    # Execute
    res = build_engine(shipped_file("rvsr-m-real", 4), tmp_path / "m.engine", opts)
    io = res.io
    # Assert: strongly typed fp16 engine; uint8 planes in and out, fp16 state; static shapes of the profile
    assert profile.static and read_key(res.path).precision == "fp16" and res.key.targets == ("sm89",)
    assert (io["y"].dtype, io["uv"].dtype, io["y_out"].dtype, io["uv_out"].dtype) == ("uint8",) * 4
    assert io["y"].shapes == ((1, 1, 270, 480),) * 3
    assert io["uv"].shapes == ((1, 2, 135, 240), (1, 2, 135, 240), (1, 2, 270, 480))  # 4:2:0 up to 4:4:4
    assert io["hidden_in0"].dtype == io["hidden_out0"].dtype == "float16"
    assert io["hidden_in0"].shapes[0] == (1, 32, 270, 480) and io["y_out"].shapes[0][:2] == (1, 1)


@needs_rtx
def test_rtx_build_is_cancelled_cleanly(tmp_path, tiny_model, monkeypatch):
    import export.tensorrt as build_mod
    from engine.backends.trt_cache import parse_profile

    # Prepare: cancel as soon as the builder reports its first phase (what Ctrl-C does through the monitor)
    cancel = threading.Event()
    out = tmp_path / "c.engine"
    blobs: list = []
    real = build_mod.interruptible
    monkeypatch.setattr(build_mod, "interruptible", lambda build, ev: blobs.append(real(build, ev)) or blobs[-1])
    # Execute
    with pytest.raises(BackendError, match="cancelled; nothing was written"):
        build_mod.build_engine(tiny_model[2][0], out, build_mod.BuildOptions(parse_profile("36x64"), targets=("sm89",)),
                               report=lambda line: cancel.set(), cancel=cancel)
    # Assert: TensorRT itself stopped (no engine bytes) and nothing is on disk
    assert blobs == [None] and not out.exists() and list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_build_cancels_it_and_waits_for_it():
    import _thread

    from export.tensorrt import interruptible

    # Prepare: a stand-in build that runs until cancelled (as TensorRT does once step_complete returns False)
    cancel, finished = threading.Event(), threading.Event()

    def build():
        cancel.wait(10)
        finished.set()
        return None if cancel.is_set() else b"engine"

    # Python's own SIGINT handler, whatever an earlier test in this process left (interrupt_main does nothing
    # while SIGINT is ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.2, _thread.interrupt_main).start()  # Ctrl-C while the build runs
        # Execute / Assert: KeyboardInterrupt in the caller, only after the build thread has unwound
        with pytest.raises(KeyboardInterrupt):
            interruptible(build, cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert cancel.is_set() and finished.is_set()


def test_static_profiles_cover_the_benchmark_sizes():
    from engine.backends.trt_cache import profile_for

    # Execute / Assert: 270x480 (x4 -> 1080p) is a static profile, not the dynamic fallback
    assert all(profile_for(hw).static for hw in ((270, 480), (540, 960), (1080, 1920)))
    assert not profile_for((300, 500)).static


# ---------------------------------------------------------------- vsr-bench gpu

def test_bench_gpu_dry_run_writes_the_plan(tmp_path, capsys):
    import json

    from benchmarks.cli import main

    # Prepare
    out = tmp_path / "gpu.json"
    # Execute
    rc = main(["gpu", "--dry-run", "--json", str(out)])
    plan = json.loads(out.read_text())
    cap = capsys.readouterr()
    # Assert: the stages and the three target sizes, on a machine without a GPU
    assert rc == 0 and plan["kind"] == "gpu" and plan["dry_run"] is True
    stages = {s["stage"]: s for s in plan["plan"]["stages"]}
    assert list(stages) == ["machine", "parity", "latency", "e2e"]
    assert [(c["model"], c["scale"], tuple(c["hw"])) for c in stages["latency"]["cases"]] == [
        ("rvsr-m-real", 4, (270, 480)), ("rvsr-s-real", 2, (540, 960)), ("rvsr-s-real", 2, (1080, 1920))]
    assert plan["plan"]["backends"] == ["torch-cuda", "onnxruntime-cuda", "tensorrt"]
    assert "8 recurrent steps" in stages["parity"]["what"] and "270x480 -> 1080p x4" in cap.out


@pytest.mark.skipif(CUDA_REASON is None, reason="a CUDA device is present: the real run is the GPU check itself")
def test_bench_gpu_without_a_gpu_says_so(capsys):
    from benchmarks.cli import main

    # Execute
    rc = main(["gpu"])
    # Assert: one line, the backend exit code, the way out
    err = capsys.readouterr().err
    assert rc == 7 and err.count("\n") == 1 and "--dry-run" in err and "Traceback" not in err


def test_bench_gpu_stage_failures_are_recorded_not_fatal():
    from benchmarks.gpu import Budget, guarded

    # Execute
    ok = guarded(lambda: {"x": 1}, Budget(60))
    failed = guarded(lambda: 1 / 0, Budget(60))
    skipped = guarded(lambda: {"x": 1}, Budget(0))
    # Assert
    assert ok == {"x": 1} and failed["error"].startswith("ZeroDivisionError") and "budget" in skipped["skipped"]


def test_bench_gpu_harness_runs_every_stage_on_a_cpu_backend(tmp_path):
    import json

    from benchmarks.gpu import Case, GpuBenchConfig, run_gpu

    # Prepare: the same stages with a CPU backend at small sizes (the harness, not the figures, is under test)
    cfg = GpuBenchConfig(json_out=tmp_path / "g.json", backends=("onnxruntime-cpu", "tensorrt"), parity_steps=2,
                         warmup=1, steps=2, e2e_frames=4, cases=(Case("36x64 x2", "rvsr-s-real", 2, (36, 64)),),
                         parity_hw=(36, 64), e2e_hw=(36, 64))
    # Execute
    report = run_gpu(cfg, log=lambda line: None)
    saved = json.loads((tmp_path / "g.json").read_text())
    # Assert: figures for the CPU backend; tensorrt's failure recorded beside them, not fatal
    ort = [r for r in saved["parity"] if r["backend"] == "onnxruntime-cpu"]
    assert ort and all(r["max_code_diff"] <= 1 and r["pass"] for r in ort)
    assert all("error" in r for r in saved["parity"] if r["backend"] == "tensorrt")
    lat = [r for r in saved["latency"] if r["backend"] == "onnxruntime-cpu"][0]
    assert lat["host_io"]["steps"] == 2 and lat["host_io"]["p99_ms"] >= lat["host_io"]["p50_ms"] > 0
    e2e = [r for r in saved["e2e"] if r["backend"] == "onnxruntime-cpu"][0]
    assert e2e["full"]["frames"] == 4 and set(e2e["full"]["stage_ms"]) >= {"decode", "step", "encode"}
    assert "gpu_busy" in e2e and report["wall_s"] > 0
