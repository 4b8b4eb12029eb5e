"""TensorRT backend logic on a stand-in GPU (no CUDA needed): a real TensorRT-RTX AOT engine whose execution is
replaced by onnxruntime running the same ONNX at the bound addresses, so the ping-pong, frames in flight and the
pipeline around them are checked on a CPU machine."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from engine.backends.trt_cache import parse_profile
from engine.errors import BackendError

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx not importable (pip install tensorrt-rtx)")
TINY = "36x64"  # static LR profile that keeps an rvsr-tiny AOT build under a second


class _HostDevice:
    """Stands in for the backend's torch/cuda-python device: buffers are numpy arrays addressed by id()."""

    handle = 7  # a fake stream handle
    capture = replay = None

    def __init__(self) -> None:
        self.mem: dict[int, np.ndarray] = {}
        self.recorded: list[str] = []  # stream of every recorded event, in order

    def alloc(self, shape, dtype):
        buf = np.full(shape, 255 if np.dtype(dtype).kind in "ui" else np.nan, dtype)  # unwritten reads show up
        self.mem[id(buf)] = buf
        return buf

    def ptr(self, buf) -> int:
        return id(buf)

    def zero(self, buf) -> None:
        buf[...] = 0

    def pinned(self, shape, dtype):
        return np.full(shape, 255 if np.dtype(dtype).kind == "u" else np.nan, dtype)

    def h2d(self, buf, host, stream) -> None:
        assert stream == "h2d"
        buf[...] = host

    def d2h(self, host, buf, stream) -> None:
        assert stream == "d2h"
        host[...] = buf

    def d2d(self, buf, src, stream) -> None:
        buf[...] = src

    def copy(self, buf):
        return buf.copy()

    def event(self):
        return object()

    def record(self, event, stream) -> None:
        self.recorded.append(stream)

    def wait(self, stream, event) -> None:
        pass

    def event_sync(self, event) -> None:
        pass

    def free(self, buf) -> None:
        del self.mem[id(buf)]

    def sync(self) -> None:
        pass

    close = sync


def _fake_trt(onnx_path, device: _HostDevice):
    """The slice of the TensorRT API the backend uses, executing the ONNX with onnxruntime at bound addresses."""
    import types

    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ios = [*sess.get_inputs(), *sess.get_outputs()]
    from engine.backends.onnxruntime import ORT_TYPES

    dtypes = {v.name: np.dtype(ORT_TYPES[v.type]).type for v in ios}

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}
            self.shapes: dict[str, tuple] = {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            (_, c, h, w), s = self.shapes[name.removesuffix("_out")], 2
            return (1, c, h * s, w * s)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            assert stream == device.handle
            assert len(set(self.addr.values())) == len(self.addr), "TensorRT I/O must not alias"
            feed = {i.name: device.mem[self.addr[i.name]] for i in sess.get_inputs()}
            for o, val in zip(sess.get_outputs(), sess.run(None, feed)):
                device.mem[self.addr[o.name]][...] = val
            return True

    class Engine:
        num_io_tensors = len(ios)
        get_tensor_name = staticmethod(lambda i: ios[i].name)
        get_tensor_dtype = staticmethod(lambda name: dtypes[name])
        create_execution_context = staticmethod(Context)

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine()

    class Logger:
        WARNING = 2

        def __init__(self, level) -> None:
            pass

    return types.SimpleNamespace(__version__="1.7.1.116", Runtime=Runtime, Logger=Logger, nptype=lambda dt: dt), sess


def _stand_in_engine(tmp_path, monkeypatch, seed: int, io: str = "fp32"):
    """(backend module, engine path, stand-in device, ORT session, spec): a real AOT engine of an untrained
    rvsr-tiny and a stand-in GPU that runs its ONNX at the bound addresses."""
    import torch

    import engine.backends.tensorrt as backend_mod
    import engine.backends.trt_cache as trt_cache
    from engine.graph import spec_from_metadata
    from engine.models import build_model
    from export.onnx import export_onnx
    from export.tensorrt import BuildOptions, build_engine

    torch.manual_seed(seed)
    onnx_path = export_onnx(build_model("rvsr-tiny", 2), tmp_path / "t.onnx", "rvsr-tiny", precision=io, io=io)
    engine = build_engine(onnx_path, tmp_path / "t.engine", BuildOptions(parse_profile(TINY), targets=("sm89",))).path
    dev = _HostDevice()
    fake, sess = _fake_trt(onnx_path, dev)
    monkeypatch.setattr(backend_mod, "unavailable_reason", lambda flavour="auto": None)
    monkeypatch.setattr(backend_mod, "Cudart", lambda: dev)
    monkeypatch.setattr(trt_cache, "import_trt", lambda flavour="auto", prefer_rtx=False: (fake, flavour))
    monkeypatch.setattr(trt_cache, "current_device", lambda index=0: trt_cache.Device("Fake RTX", "sm89"))
    return backend_mod, engine, dev, sess, spec_from_metadata(sess.get_modelmeta().custom_metadata_map, onnx_path)


@needs_rtx
@pytest.mark.parametrize("io", ["fp32", "fp16"])
def test_backend_ping_pong_matches_onnxruntime(tmp_path, monkeypatch, io):
    from export.onnx import sample_feeds

    # Prepare: a real AOT engine (and its sidecar), then a stand-in GPU that runs the same ONNX
    backend_mod, engine, dev, sess, spec = _stand_in_engine(tmp_path, monkeypatch, 2, io)
    frames = [sample_feeds(spec, (36, 64), seed=i) for i in range(8)]
    ref_state = spec.zero_state(36, 64)
    # Execute: reference = the same graph streamed on the host with its state fed back
    with backend_mod.TensorRTBackend(engine) as trt:
        state: dict = {}
        outs = []
        for feeds in frames:
            ref = dict(zip(spec.outputs, sess.run(spec.outputs, {**feeds, **ref_state})))
            ref_state = spec.next_state(ref)
            got = trt.run({**feeds, **state})
            state = spec.next_state(got)
            outs.append((ref["y_out"], got["y_out"]))
        first = trt.run(frames[0])["y_out"]  # no state: back to a zero state
        with pytest.raises(BackendError, match="not the one this backend returned last"):
            trt.run({**frames[1], **state})  # two steps old now: its buffers were overwritten
        with pytest.raises(BackendError, match="outside its profile"):
            trt.run(sample_feeds(spec, (40, 64)))
    # Assert
    assert trt.io_spec().model == "rvsr-tiny" and trt.io_spec().scale == 2
    assert all(b.dtype == np.uint8 and np.array_equal(a, b) for a, b in outs)
    assert np.array_equal(first, outs[0][1]) and not np.array_equal(outs[0][1], outs[1][1])
    assert dev.mem == {}  # every device buffer freed on close


@needs_rtx
def test_backend_frames_in_flight_match_one_at_a_time(tmp_path, monkeypatch):
    from export.onnx import sample_feeds

    # Prepare: as above, a real AOT engine run by the stand-in GPU
    backend_mod, engine, dev, sess, spec = _stand_in_engine(tmp_path, monkeypatch, 3)
    frames = [sample_feeds(spec, (36, 64), seed=i) for i in range(7)]
    # Execute: one at a time, then three submitted before the first is collected
    with backend_mod.TensorRTBackend(engine) as trt:
        state: dict = {}
        serial = []
        for f in frames:
            out = trt.run({**f, **state})
            state = spec.next_state(out)
            serial.append(out["y_out"])
        piped, pending, state = [], [], {}
        for f in frames:
            ticket = trt.submit({**f, **state})
            state = {f"hidden_in{i}": ticket.token for i in range(len(spec.hidden))}  # known before collecting
            pending.append(ticket)
            if len(pending) == backend_mod.FRAMES_IN_FLIGHT:
                piped += [trt.collect(t)["y_out"] for t in pending]
                pending = []
        piped += [trt.collect(t)["y_out"] for t in pending]
        contexts = len(trt._ctxs)
    # Assert: same planes; two contexts; events on the copy and compute streams in order
    assert len(piped) == len(serial) and all(np.array_equal(a, b) for a, b in zip(serial, piped))
    assert contexts == 2 and dev.recorded[:4] == ["h2d", "compute", "d2h", "d2h"]


@needs_rtx
def test_pipeline_with_frames_in_flight_writes_what_onnxruntime_writes(tmp_path, monkeypatch):
    import av

    from engine.backends.onnxruntime import OnnxRuntimeBackend
    from engine.encode import EncodeOptions
    from engine.pipeline import PipelineOptions, run

    # Prepare: a 64x36 clip of 9 moving frames; the stand-in TensorRT backend (3 frames in flight) and
    # onnxruntime on the same ONNX
    backend_mod, engine, _, _, _ = _stand_in_engine(tmp_path, monkeypatch, 4)
    clip = tmp_path / "in.mkv"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (36 + 9, 64 + 9, 3), dtype=np.uint8)
    with av.open(str(clip), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = 64, 36, "yuv420p"
        for i in range(9):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(base[i : i + 36, i : i + 64]),
                                                      format="rgb24")))
        c.mux(s.encode())

    def upscale(backend, name):
        out = tmp_path / name
        opts = PipelineOptions(input=clip, output=out, encode=EncodeOptions(codec="ffv1", pix_fmt="yuv420p"))
        with backend:
            summary = run(opts, backend=backend)
        with av.open(str(out)) as c:
            return summary, [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]

    # Execute
    trt, trt_frames = upscale(backend_mod.TensorRTBackend(engine), "trt.mkv")
    ort, ort_frames = upscale(OnnxRuntimeBackend(tmp_path / "t.onnx"), "ort.mkv")
    # Assert: every frame, in order, equal to the one-step-at-a-time run
    assert backend_mod.TensorRTBackend.frames_in_flight == 3 and trt.frames_out == ort.frames_out == 9
    assert len(trt_frames) == 9 and all(np.array_equal(a, b) for a, b in zip(trt_frames, ort_frames))
    assert not np.array_equal(trt_frames[0], trt_frames[1])
