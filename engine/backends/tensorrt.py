"""TensorRT / TensorRT-RTX backend: execute_async_v3 on its own stream, hidden state ping-ponged on the device.

Device memory via torch when it has CUDA, else cuda-python (cuda-bindings). Engines: a `vsr-export trt` file, or
an ONNX built on demand by the builder the CLI hands in (export.tensorrt.ensure_engine, found through the
``vsr_upscale.engine_builders`` entry point: the engine never imports export/). NOT YET RUN ON A GPU (docs/export.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.backends.cuda_mem import Cudart, TorchCuda
from engine.errors import BackendError, ModelError
from engine.graph import GraphSpec, spec_from_metadata

MODULES = ("tensorrt", "tensorrt_rtx")  # Python packages of TensorRT and TensorRT-RTX, probed in order


def unavailable_reason(flavour: str = "auto") -> str | None:
    """Why the TensorRT backend cannot run here (None when it can), as precisely as the machine allows."""
    from engine.backends.trt_cache import current_device, import_trt, no_rtx_target

    try:
        trt, found = import_trt(flavour)
    except BackendError as e:
        return str(e)
    device = current_device()  # torch with CUDA, else cuda-python: the same libraries that give device memory
    if device is None:
        return "no CUDA device (neither torch with CUDA nor cuda-python sees one)"
    if found == "tensorrt_rtx":
        known = [n.lower() for n in trt.ComputeCapability.__members__ if n.startswith("SM")]
        if device.sm not in known:
            return f"{no_rtx_target(device.sm)} ({device.name}); install tensorrt for this GPU"
    return None


@dataclasses.dataclass(frozen=True)
class _State:
    """Opaque hidden-state token: names the device buffer set that holds the latest state."""

    owner: int  # id() of the backend that produced it
    generation: int  # step counter: only the newest token is valid (older buffers get overwritten)


Builder = Callable[[Path, Any, str, str, "Path | None"], Path]  # (onnx, Profile, precision, flavour, cache) -> engine


def find_builder() -> Builder | None:
    """The engine builder installed beside the engine (export.tensorrt:engine_for, registered as the
    ``vsr_upscale.engine_builders`` entry point ``tensorrt``), or None: then only prebuilt engines run."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="vsr_upscale.engine_builders"):
        if ep.name == "tensorrt":
            return ep.load()  # type: ignore[no-any-return]
    return None


def _device_ptr(x: Any) -> int | None:
    cai = getattr(x, "__cuda_array_interface__", None)
    return int(cai["data"][0]) if cai else None


class TensorRTBackend(Backend):
    """Runs a step graph with TensorRT; ``path`` is an ONNX (engines built by ``builder`` and cached per profile)
    or a built ``.engine``."""

    def __init__(self, path: str | Path, precision: str = "fp32", cuda_graph: bool = False, flavour: str = "auto",
                 cache_dir: Path | None = None, builder: Builder | None = None) -> None:
        reason = unavailable_reason(flavour)
        if reason:
            raise BackendError(f"tensorrt backend not available: {reason}")
        self._path, self._precision, self._flavour, self._cache = Path(path), precision, flavour, cache_dir
        self._builder = builder
        self._use_graph = self._manual_graph = cuda_graph  # manual: captured here, not by TensorRT-RTX itself
        if not self._path.is_file():
            raise ModelError(f"{self._path} not found; pass an ONNX from `vsr-export onnx` or an engine")
        torch_cuda = importlib.util.find_spec("torch") and importlib.import_module("torch").cuda.is_available()
        self._dev: TorchCuda | Cudart = TorchCuda() if torch_cuda else Cudart()
        self._closed = False
        self._engine: Any = None
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._bufs: dict[str, Any] = {}
        self._sets: list[list[Any]] = []
        self._graphs: dict[int, Any] = {}  # ping-pong direction -> captured CUDA graph (addresses are baked in)
        self._cur = self._gen = 0
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
            return self._builder(self._path, profile, self._precision, self._flavour, self._cache)
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
        """(Re)load the engine for these frame input shapes, bind them, allocate I/O and the two hidden sets."""
        self._release_buffers()
        hw = shapes[self._spec.frame_inputs[0]][-2:]
        hw = (int(hw[0]), int(hw[1])) if len(hw) == 2 else (0, 0)
        trt, engine, path = self._deserialize(hw)
        self._engine = engine
        self._ctx, self._rt_cache = self._context(trt, engine, path)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        hidden = self._spec.hidden_shapes(*hw)
        ins, outs = self._spec.inputs, self._spec.frame_outputs
        all_in = shapes | dict(zip(ins[len(shapes):], hidden))
        for name, shape in all_in.items():
            if not self._ctx.set_input_shape(name, shape):
                raise BackendError(f"{path.name} rejects {name} of shape {shape} (outside its profile)")
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._bufs = {k: self._dev.alloc(shapes[k], self._dtypes[k]) for k in shapes}
        self._bufs |= {k: self._dev.alloc(tuple(self._ctx.get_tensor_shape(k)), self._dtypes[k]) for k in outs}
        self._sets = [[self._dev.alloc(s, self._dtypes[f"hidden_in{i}"]) for i, s in enumerate(hidden)]
                      for _ in range(2)]  # ping-pong: step k reads set k%2 and writes the other
        for k, buf in self._bufs.items():
            self._ctx.set_tensor_address(k, self._dev.ptr(buf))
        self._shapes, self._graphs = shapes, {}

    def _context(self, trt: Any, engine: Any, path: Path) -> tuple[Any, Any]:
        """Execution context; on TensorRT-RTX with its JIT-kernel runtime cache (and its own CUDA graphs)."""
        from engine.backends.trt_cache import current_device, runtime_cache_path

        self._manual_graph = self._use_graph and self._dev.capture is not None
        if not hasattr(engine, "create_runtime_config"):
            return engine.create_execution_context(), None
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
        return engine.create_execution_context(config), cache

    def _bind(self, cur: int) -> None:
        for i, (a, b) in enumerate(zip(self._sets[cur], self._sets[1 - cur])):
            self._ctx.set_tensor_address(f"hidden_in{i}", self._dev.ptr(a))
            self._ctx.set_tensor_address(f"hidden_out{i}", self._dev.ptr(b))

    def _launch(self) -> None:
        if not self._ctx.execute_async_v3(self._dev.handle):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _upload(self, feeds: Arrays) -> bool:
        """Frame inputs into the engine: device arrays bound by address (no copy), host arrays copied.
        True when every frame input was a device array."""
        on_device = True
        for k in self._spec.frame_inputs:
            ptr = _device_ptr(feeds[k])
            if ptr is None:
                on_device = False
                self._ctx.set_tensor_address(k, self._dev.ptr(self._bufs[k]))
                self._dev.upload(self._bufs[k], np.ascontiguousarray(feeds[k], dtype=self._dtypes[k]))
            else:
                self._ctx.set_tensor_address(k, ptr)
        return on_device

    def run(self, feeds: Arrays) -> dict[str, Any]:
        if getattr(self, "_closed", True):
            raise BackendError("this backend was closed; open a new one")
        shapes = {k: tuple(int(d) for d in np.shape(feeds[k])) for k in self._spec.frame_inputs}
        state = feeds.get("hidden_in0")
        if shapes != self._shapes:
            if state is not None:
                raise BackendError("frame size changed with a hidden state; leave hidden_in* out after a size change")
            self._load(shapes)
        if state is None:
            for buf in self._sets[self._cur]:
                self._dev.zero(buf)
        elif state != _State(id(self), self._gen):
            raise BackendError("hidden state is not the one this backend returned last; pass that, or none")
        device_in = self._upload(feeds)
        self._bind(self._cur)
        if not self._manual_graph or device_in:  # device inputs change addresses: no baked-in graph
            self._launch()
        else:
            if self._cur not in self._graphs:
                self._launch()  # warm-up run outside capture (lazy allocations are not capturable)
                self._graphs[self._cur] = self._dev.capture(self._launch)
            self._dev.replay(self._graphs[self._cur])
        get = self._dev.copy if device_in else self._dev.download
        out: dict[str, Any] = {k: get(self._bufs[k]) for k in self._spec.frame_outputs}
        self._cur, self._gen = 1 - self._cur, self._gen + 1
        token = _State(id(self), self._gen)
        return out | {f"hidden_out{i}": token for i in range(len(self._spec.hidden))}

    def _release_buffers(self) -> None:
        """Save the runtime cache, free graphs and buffers, then context, engine and runtime (in that order)."""
        from engine.backends.trt_cache import current_device, runtime_cache_path, write_atomic

        self._dev.sync()  # queued work still reads these buffers
        cache, self._rt_cache = getattr(self, "_rt_cache", None), None
        try:
            if cache is not None and self._engine_path is not None:
                write_atomic(runtime_cache_path(self._engine_path, current_device()), cache.serialize())
        finally:
            for buf in [*self._bufs.values(), *(b for s in self._sets for b in s)]:
                self._dev.free(buf)
            self._graphs, self._bufs, self._sets, self._shapes = {}, {}, [], None
            self._ctx = self._engine = self._runtime = None

    def close(self) -> None:
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before owning anything
            return
        self._closed = True
        try:
            self._release_buffers()
        finally:
            self._dev.close()


def open_tensorrt(weights: Path, builder: Builder | None = None) -> Backend:
    """Backend for ``weights``; BackendError (prefixed "tensorrt backend not available: ") if it can't."""
    reason = unavailable_reason()
    if reason:
        raise BackendError(f"tensorrt backend not available: {reason}")
    if weights.suffix.lower() == ".safetensors":
        raise BackendError("tensorrt backend not available: it needs ONNX or an engine, not .safetensors")
    return TensorRTBackend(weights, builder=builder or find_builder())
