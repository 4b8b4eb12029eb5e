"""TensorRT / TensorRT-RTX backend: two pre-bound execution contexts ping-pong the hidden state on the device.

Context ``p`` (p = step parity) reads frame buffers ``in[p]`` and state set ``p``, writes ``out[p]`` and set ``1-p``;
each has its own CUDA graph. Host frames go through pinned staging slots (FRAMES_IN_FLIGHT of them) with async
copies on their own streams, so copy-in of frame k+1, the engine on frame k and copy-out of frame k-1 overlap
(``submit`` / ``collect``; ``run`` is both). Device memory via torch when it has CUDA, else cuda-python. Engines:
a `vsr-export trt` file, or an ONNX built by the builder the CLI hands in (export.tensorrt.engine_for, found
through the ``vsr_upscale.engine_builders`` entry point: the engine never imports export/), before the first
frame when ``prepare`` is called. NOT YET RUN ON A GPU (docs/export.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.backends.ort_binding import device_ptr as _device_ptr
from engine.backends.cuda_mem import Cudart, TorchCuda
from engine.backends.trt_cache import find_builder, unavailable_reason
from engine.errors import BackendError, ModelError
from engine.graph import GraphSpec, spec_from_metadata

MODULES = ("tensorrt", "tensorrt_rtx")  # Python packages of TensorRT and TensorRT-RTX, probed in order
Builder = Callable[..., Path]  # (onnx, Profile, precision, flavour, cache, report=...) -> engine path
FRAMES_IN_FLIGHT = 3  # pinned staging slots: copy-in, compute and copy-out of three frames overlap
CONSTANTS = ("to_rgb", "from_rgb", "peak")  # per-stream inputs: copied to the device only when they change


@dataclasses.dataclass(frozen=True)
class _State:
    """Opaque hidden-state token: names the device buffer set that holds the latest state."""

    owner: int  # id() of the backend that produced it
    generation: int  # step counter: only the newest token is valid (older buffers get overwritten)


@dataclasses.dataclass
class _Slot:
    """One frame in flight: pinned host staging and the events that say when it may be reused or read."""

    pinned_in: dict[str, np.ndarray]  # frame input name -> page-locked host copy
    pinned_out: dict[str, np.ndarray]  # frame output name -> page-locked host copy
    copied_in: Any  # event: the h2d copy out of pinned_in finished
    copied_out: Any  # event: the d2h copy into pinned_out finished
    parity: int = 0  # context / buffer set the frame ran on
    device_out: dict[str, Any] | None = None  # outputs kept on the device (frames came as device arrays)
    busy: bool = False  # submitted, not yet collected
    token: Any = None  # hidden-state token after this step: feed it as hidden_in* to the next submit


class TensorRTBackend(Backend):
    """Runs a step graph with TensorRT; ``path`` is an ONNX (engines built by ``builder`` and cached per profile)
    or a built ``.engine``. ``precision`` "fp16" builds strongly typed fp16 engines (integer frame I/O kept)."""

    def __init__(self, path: str | Path, precision: str = "fp16", cuda_graph: bool = True, flavour: str = "auto",
                 cache_dir: Path | None = None, builder: Builder | None = None,
                 report: Callable[[str], None] | None = None) -> None:
        reason = unavailable_reason(flavour)
        if reason:
            raise BackendError(f"tensorrt backend not available: {reason}")
        self._path, self._precision, self._flavour, self._cache = Path(path), precision, flavour, cache_dir
        self._builder, self._report = builder, report
        self._use_graph = self._manual_graph = cuda_graph  # manual: captured here, not by TensorRT-RTX itself
        if not self._path.is_file():
            raise ModelError(f"{self._path} not found; pass an ONNX from `vsr-export onnx` or an engine")
        torch_cuda = importlib.util.find_spec("torch") and importlib.import_module("torch").cuda.is_available()
        self._dev: TorchCuda | Cudart = TorchCuda() if torch_cuda else Cudart()
        self._lock = threading.Lock()  # close() waits for a load in progress instead of freeing under it
        self._closed = False
        self._engine: Any = None
        self._ctxs: list[Any] = []
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._io: list[dict[str, Any]] = []  # per parity: frame input/output buffers, name -> device buffer
        self._sets: list[list[Any]] = []
        self._graphs: dict[int, Any] = {}  # parity -> captured CUDA graph (addresses are baked in)
        self._slots: list[_Slot] = []
        self._done: list[Any] = []  # per parity: event "the engine finished with in[p]/out[p]"
        self._read: list[Any] = []  # per parity: event "the copy-out finished reading out[p]"
        self._next = self._cur = self._gen = 0
        self._engine_path: Path | None = None  # engine in use; its runtime cache is saved beside it
        self._spec = self._read_spec()
        self.name = "tensorrt"

    def _read_spec(self) -> GraphSpec:
        if self._path.suffix == ".onnx":
            import onnxruntime as ort  # a core dependency: reads the metadata without the onnx package

            try:
                meta = ort.InferenceSession(str(self._path), providers=["CPUExecutionProvider"]).get_modelmeta()
            except Exception as e:
                raise ModelError(f"{self._path.name} is not a readable ONNX model: {str(e).splitlines()[0]}") from None
            return spec_from_metadata(meta.custom_metadata_map, self._path)
        from engine.backends.trt_cache import read_key, read_meta

        read_key(self._path)
        return spec_from_metadata(read_meta(self._path), self._path)

    def io_spec(self) -> GraphSpec:
        return self._spec

    def prepare(self, h: int, w: int) -> None:
        """Build (or find in the cache) the engine for ``h`` x ``w`` LR frames now, before the first frame;
        progress goes to ``report``; Ctrl-C stops the build cleanly (nothing half-written)."""
        self._engine_file((h, w))

    def _engine_file(self, hw: tuple[int, int]) -> Path:
        from engine.backends.trt_cache import current_device, import_trt, mismatch, parse_profile, profile_for, read_key

        if self._path.suffix == ".onnx":
            profile = profile_for(hw)
            if not profile.accepts(hw):
                raise BackendError(f"{hw[0]}x{hw[1]} input is outside the dynamic profile; build an engine with "
                                   "`vsr-export trt --profile MIN:OPT:MAX` and pass it")
            if self._builder is None:
                raise BackendError("this installation has no TensorRT engine builder (pip install "
                                   "'vsr-upscale[export,trt]'); pass an engine from `vsr-export trt` instead")
            return self._builder(self._path, profile, self._precision, self._flavour, self._cache,
                                 report=self._report)
        key = read_key(self._path)
        trt, _ = import_trt(key.flavour)
        device = current_device()
        assert device is not None  # unavailable_reason() checked
        here = dataclasses.replace(key, trt_version=trt.__version__, gpu_name=device.name, targets=(device.sm,))
        why = mismatch(key, here)
        if why or not parse_profile(key.profile).accepts(hw):
            raise BackendError(f"engine {self._path.name} cannot run a {hw[0]}x{hw[1]} input here: "
                               f"{why or 'outside its profile ' + key.profile}; rebuild it with `vsr-export trt` "
                               "or pass the ONNX so engines are built and cached automatically")
        return self._path

    def _deserialize(self, hw: tuple[int, int]) -> tuple[Any, Any, Path]:
        from engine.backends.trt_cache import engine_validity, import_trt, read_key

        for attempt in (1, 2):  # a cached engine TensorRT itself rejects (new driver...) is rebuilt once
            path = self._engine_path = self._engine_file(hw)
            trt, _ = import_trt(read_key(path).flavour)
            blob = path.read_bytes()
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            why = engine_validity(trt, self._runtime, blob)
            engine = None if why and "suboptimal" not in why else self._runtime.deserialize_cuda_engine(blob)
            if engine is not None:
                return trt, engine, path
            if attempt == 2 or self._path.suffix != ".onnx":
                raise BackendError(f"{path.name}: {why or 'TensorRT cannot deserialize it'}; rebuild it")
            path.unlink()
        raise AssertionError("unreachable")

    def _load(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """(Re)load the engine for these frame input shapes: two contexts, their buffers, the two state sets."""
        self._release_buffers()
        hw = shapes[self._spec.frame_inputs[0]][-2:]
        hw = (int(hw[0]), int(hw[1])) if len(hw) == 2 else (0, 0)
        trt, engine, path = self._deserialize(hw)
        self._engine = engine
        self._ctxs, self._rt_cache = self._contexts(trt, engine, path)
        hidden = self._spec.hidden_shapes(*hw)
        all_in = shapes | dict(zip(self._spec.inputs[len(shapes):], hidden))
        for ctx in self._ctxs:
            for name, shape in all_in.items():
                if not ctx.set_input_shape(name, shape):
                    raise BackendError(f"{path.name} rejects {name} of shape {shape} (outside its profile)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}  # uint8 planes stay uint8
        outs = {k: tuple(self._ctxs[0].get_tensor_shape(k)) for k in self._spec.frame_outputs}
        self._io = [{k: self._dev.alloc(s, self._dtypes[k]) for k, s in (shapes | outs).items()} for _ in range(2)]
        self._sets = [[self._dev.alloc(s, self._dtypes[f"hidden_in{i}"]) for i, s in enumerate(hidden)]
                      for _ in range(2)]
        for p, ctx in enumerate(self._ctxs):  # bound once: context p reads set p, writes set 1-p
            for k, buf in self._io[p].items():
                ctx.set_tensor_address(k, self._dev.ptr(buf))
            for i, (a, b) in enumerate(zip(self._sets[p], self._sets[1 - p])):
                ctx.set_tensor_address(f"hidden_in{i}", self._dev.ptr(a))
                ctx.set_tensor_address(f"hidden_out{i}", self._dev.ptr(b))
        self._slots = [_Slot({k: self._dev.pinned(s, self._dtypes[k]) for k, s in shapes.items()},
                             {k: self._dev.pinned(s, self._dtypes[k]) for k, s in outs.items()},
                             self._dev.event(), self._dev.event()) for _ in range(FRAMES_IN_FLIGHT)]
        self._done = [self._dev.event() for _ in range(2)]
        self._read = [self._dev.event() for _ in range(2)]
        self._shapes, self._graphs, self._next = shapes, {}, 0
        self._consts: list[dict[str, np.ndarray]] = [{}, {}]  # per parity: constants in in[p], as last copied

    def _contexts(self, trt: Any, engine: Any, path: Path) -> tuple[list[Any], Any]:
        """Two execution contexts; on TensorRT-RTX with its JIT-kernel runtime cache (and its own CUDA graphs)."""
        from engine.backends.trt_cache import current_device, runtime_cache_path

        self._manual_graph = self._use_graph and self._dev.capture is not None
        if not hasattr(engine, "create_runtime_config"):
            return [engine.create_execution_context() for _ in range(2)], None
        config = engine.create_runtime_config()
        if self._use_graph and hasattr(config, "cuda_graph_strategy"):
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self._manual_graph = False
        cache = None
        if hasattr(config, "create_runtime_cache"):
            cache = config.create_runtime_cache()
            file = runtime_cache_path(path, current_device())
            if file.exists():
                cache.deserialize(file.read_bytes())  # False (other GPU/driver/version): start empty, overwrite
            config.set_runtime_cache(cache)
        return [engine.create_execution_context(config) for _ in range(2)], cache

    def _launch(self, p: int) -> None:
        if not self._ctxs[p].execute_async_v3(self._dev.handle):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _compute(self, p: int) -> None:
        if not self._manual_graph:
            self._launch(p)
            return
        if p not in self._graphs:
            self._launch(p)  # warm-up run outside capture (lazy allocations are not capturable)
            self._graphs[p] = self._dev.capture(lambda: self._launch(p))
        self._dev.replay(self._graphs[p])

    def _state_in(self, feeds: Arrays) -> None:
        state = feeds.get("hidden_in0")
        if state is None:
            for buf in self._sets[self._cur]:
                self._dev.zero(buf)
        elif state != _State(id(self), self._gen):
            raise BackendError("hidden state is not the one this backend returned last; pass that, or none")

    def _copy_in(self, slot: _Slot, p: int, name: str, value: Any) -> None:
        """One frame input into ``in[p]`` on the h2d stream: device arrays device-to-device, host arrays through
        the slot's pinned buffer; per-stream constants only when they differ from what ``in[p]`` holds."""
        if _device_ptr(value) is not None:
            self._dev.d2d(self._io[p][name], value, "h2d")
            self._consts[p].pop(name, None)
            return
        host = np.asarray(value, dtype=self._dtypes[name])
        if name in CONSTANTS:
            if name in self._consts[p] and np.array_equal(self._consts[p][name], host):
                return
            self._consts[p][name] = host.copy()
        np.copyto(slot.pinned_in[name], host)
        self._dev.h2d(self._io[p][name], slot.pinned_in[name], "h2d")

    def submit(self, feeds: Arrays) -> _Slot:
        """Queue one step; returns a ticket for :meth:`collect`. Up to FRAMES_IN_FLIGHT steps may be queued."""
        if getattr(self, "_closed", True):
            raise BackendError("this backend was closed; open a new one")
        shapes = {k: tuple(int(d) for d in np.shape(feeds[k])) for k in self._spec.frame_inputs}
        if shapes != self._shapes:
            if feeds.get("hidden_in0") is not None:
                raise BackendError("frame size changed with a hidden state; leave hidden_in* out after a size change")
            self._drain()
            with self._lock:
                self._load(shapes)
        self._state_in(feeds)
        slot, p, dev = self._slots[self._next], self._cur, self._dev
        if slot.busy:
            self.collect(slot)  # the caller ran ahead of FRAMES_IN_FLIGHT: finish the oldest first
        dev.event_sync(slot.copied_in)  # pinned_in of this slot is free again
        dev.wait("h2d", self._done[p])  # step k-2 has finished reading in[p]
        device_in = _device_ptr(feeds[self._spec.frame_inputs[0]]) is not None
        for k in self._spec.frame_inputs:
            self._copy_in(slot, p, k, feeds[k])
        dev.record(slot.copied_in, "h2d")
        dev.wait("compute", slot.copied_in)
        dev.wait("compute", self._read[p])  # the copy-out of step k-2 has finished reading out[p]
        self._compute(p)
        dev.record(self._done[p], "compute")
        dev.wait("d2h", self._done[p])
        slot.device_out = {k: dev.copy(self._io[p][k]) for k in self._spec.frame_outputs} if device_in else None
        if not device_in:
            for k in self._spec.frame_outputs:
                dev.d2h(slot.pinned_out[k], self._io[p][k], "d2h")
        dev.record(slot.copied_out, "d2h")
        dev.record(self._read[p], "d2h")
        slot.parity, slot.busy = p, True
        self._next = (self._next + 1) % FRAMES_IN_FLIGHT
        self._cur, self._gen = 1 - self._cur, self._gen + 1
        slot.token = _State(id(self), self._gen)
        return slot

    def collect(self, ticket: _Slot) -> dict[str, Any]:
        """Wait for a submitted step: its frame outputs (host arrays, or device arrays for device inputs) and the
        hidden-state token of the newest step (pass it back as ``hidden_in*``)."""
        self._dev.event_sync(ticket.copied_out)
        ticket.busy = False
        frames = ticket.device_out or {k: v.copy() for k, v in ticket.pinned_out.items()}
        return frames | {f"hidden_out{i}": ticket.token for i in range(len(self._spec.hidden))}

    frames_in_flight = FRAMES_IN_FLIGHT

    def state_after(self, ticket: _Slot) -> dict[str, Any]:
        return {f"hidden_in{i}": ticket.token for i in range(len(self._spec.hidden))}

    def run(self, feeds: Arrays) -> dict[str, Any]:
        return self.collect(self.submit(feeds))

    def _drain(self) -> None:
        for slot in self._slots:
            if slot.busy:
                self._dev.event_sync(slot.copied_out)
                slot.busy = False

    def _release_buffers(self) -> None:
        """Save the runtime cache, free graphs and buffers, then contexts, engine and runtime (in that order)."""
        from engine.backends.trt_cache import current_device, runtime_cache_path, write_atomic

        self._dev.sync()  # queued work still reads these buffers
        cache, self._rt_cache = getattr(self, "_rt_cache", None), None
        try:
            if cache is not None and self._engine_path is not None:
                write_atomic(runtime_cache_path(self._engine_path, current_device()), cache.serialize())
        finally:
            for buf in [*(b for io in self._io for b in io.values()), *(b for s in self._sets for b in s)]:
                self._dev.free(buf)
            self._graphs, self._io, self._sets, self._slots, self._shapes = {}, [], [], [], None
            self._ctxs, self._engine, self._runtime = [], None, None

    def close(self) -> None:
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before owning anything
            return
        with self._lock:  # a load (or engine build) in another thread finishes first
            self._closed = True
            try:
                self._release_buffers()
            finally:
                self._dev.close()


def open_tensorrt(weights: Path, builder: Builder | None = None,
                  report: Callable[[str], None] | None = None) -> Backend:
    """Backend for ``weights`` (fp16, CUDA graphs); BackendError (prefixed "tensorrt backend not available: ") if it
    can't. Call ``prepare(h, w)`` before the first frame to build its engine up front."""
    reason = unavailable_reason()
    if reason:
        raise BackendError(f"tensorrt backend not available: {reason}")
    if weights.suffix.lower() == ".safetensors":
        raise BackendError("tensorrt backend not available: it needs ONNX or an engine, not .safetensors")
    return TensorRTBackend(weights, builder=builder or find_builder(), report=report)
