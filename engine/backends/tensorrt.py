"""TensorRT / TensorRT-RTX backend: execute_async_v3 on its own stream, hidden state ping-ponged on the device.

Device memory via torch when it has CUDA, else cuda-python (cuda-bindings). Engines: the export.tensorrt cache
(static for 540p/720p/1080p inputs, else dynamic) or a `vsr-export trt` file. NOT YET RUN ON A GPU (see docs/export.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Backend, Hidden, IoSpec, spec_from_metadata
from engine.errors import BackendError, ModelError

MODULES = ("tensorrt", "tensorrt_rtx")  # Python packages of TensorRT and TensorRT-RTX, probed in order


def unavailable_reason(flavour: str = "auto") -> str | None:
    """Why the TensorRT backend cannot run here (None when it can), as precisely as the machine allows."""
    from export.cache import current_device
    from export.tensorrt import import_trt, no_rtx_target

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


class _Torch:
    """Device memory, stream and CUDA graphs through torch."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()  # non-default: TensorRT warns about (and serialises on) the legacy stream
        self.handle = self.stream.cuda_stream

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        t = self.torch
        with t.cuda.stream(self.stream):  # the caching allocator ties blocks to the stream that allocates them
            return t.empty(shape, dtype=t.float16 if dtype == np.float16 else t.float32, device="cuda")

    def ptr(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def zero(self, buf: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.zero_()

    def upload(self, buf: Any, host: np.ndarray) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.copy_(self.torch.from_numpy(host), non_blocking=False)

    def download(self, buf: Any) -> np.ndarray:
        with self.torch.cuda.stream(self.stream):
            out = buf.cpu()  # waits for this stream's work
        return out.numpy()

    def capture(self, launch: Any) -> Any:
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=self.stream):
            launch()
        return graph

    def replay(self, graph: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            graph.replay()

    def free(self, buf: Any) -> None:
        pass  # torch's caching allocator reclaims tensors and graphs with their last reference

    def sync(self) -> None:
        self.stream.synchronize()

    close = sync


class _Cudart:
    """Device memory, stream and CUDA graphs through cuda-python's runtime bindings."""

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.handle = self._ok(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self.shapes: dict[int, tuple[tuple[int, ...], np.dtype]] = {}

    def _ok(self, res: Any) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise BackendError(f"CUDA error {int(err)} ({self.rt.cudaGetErrorString(err)[1].decode()})")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        ptr = int(self._ok(self.rt.cudaMallocAsync(int(np.prod(shape)) * np.dtype(dtype).itemsize, self.handle)))
        self.shapes[ptr] = (shape, np.dtype(dtype))
        return ptr

    def ptr(self, buf: int) -> int:
        return buf

    def _nbytes(self, buf: int) -> int:
        return int(np.prod(self.shapes[buf][0])) * self.shapes[buf][1].itemsize

    def zero(self, buf: int) -> None:
        self._ok(self.rt.cudaMemsetAsync(buf, 0, self._nbytes(buf), self.handle))

    def upload(self, buf: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._ok(self.rt.cudaMemcpyAsync(buf, host.ctypes.data, self._nbytes(buf), kind, self.handle))
        self._ok(self.rt.cudaStreamSynchronize(self.handle))  # pageable ``host`` must outlive the copy

    def download(self, buf: int) -> np.ndarray:
        shape, dtype = self.shapes[buf]
        out = np.empty(shape, dtype)
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._ok(self.rt.cudaMemcpyAsync(out.ctypes.data, buf, out.nbytes, kind, self.handle))
        self._ok(self.rt.cudaStreamSynchronize(self.handle))
        return out

    capture: Any = None  # CUDA graphs need torch here (or TensorRT-RTX's own WHOLE_GRAPH_CAPTURE)
    replay: Any = None

    def free(self, buf: int) -> None:
        self._ok(self.rt.cudaFreeAsync(buf, self.handle))
        self.shapes.pop(buf, None)

    def sync(self) -> None:
        self._ok(self.rt.cudaStreamSynchronize(self.handle))

    def close(self) -> None:
        self.sync()
        self._ok(self.rt.cudaStreamDestroy(self.handle))  # buffers were freed (async) on this stream first


@dataclasses.dataclass(frozen=True)
class _State:
    """Opaque hidden-state token: names the device buffer set that holds the latest state."""

    owner: int  # id() of the backend that produced it
    generation: int  # step counter: only the newest token is valid (older buffers get overwritten)


class TensorRTBackend(Backend):
    """Runs a step graph with TensorRT; ``path`` is an ONNX (engines cached per profile) or a built ``.engine``."""

    def __init__(self, path: str | Path, precision: str = "fp32", cuda_graph: bool = False, flavour: str = "auto",
                 cache_dir: Path | None = None) -> None:
        reason = unavailable_reason(flavour)
        if reason:
            raise BackendError(f"tensorrt backend not available: {reason}")
        self._path, self._precision, self._flavour, self._cache = Path(path), precision, flavour, cache_dir
        self._use_graph = self._manual_graph = cuda_graph  # manual: captured here, not by TensorRT-RTX itself
        if not self._path.is_file():
            raise ModelError(f"{self._path} not found; pass an ONNX from `vsr-export onnx` or an engine")
        torch_cuda = importlib.util.find_spec("torch") and importlib.import_module("torch").cuda.is_available()
        self._dev: _Torch | _Cudart = _Torch() if torch_cuda else _Cudart()
        self._closed = False
        self._engine: Any = None
        self._hw: tuple[int, int] | None = None
        self._bufs: dict[str, Any] = {}
        self._sets: list[list[Any]] = []
        self._graphs: dict[int, Any] = {}  # ping-pong direction -> captured CUDA graph (addresses are baked in)
        self._cur = self._gen = 0
        self._engine_path: Path | None = None  # engine in use; its runtime cache is saved beside it
        self._spec = self._read_spec()
        self.name = "tensorrt"

    def _read_spec(self) -> IoSpec:
        if self._path.suffix == ".onnx":
            from export.onnx import load_onnx

            meta = {p.key: p.value for p in load_onnx(self._path).metadata_props}
        else:
            from export.cache import read_key, read_meta

            read_key(self._path)
            meta = read_meta(self._path)
        if meta.get("vsr.gbuffer"):
            raise ModelError(f"{self._path.name} is a G-buffer graph; this backend runs (lr, hidden) step graphs")
        return spec_from_metadata(meta, self._path)

    def io_spec(self) -> IoSpec:
        return self._spec

    def _engine_file(self, hw: tuple[int, int]) -> Path:
        from export.cache import profile_for, read_key
        from export.tensorrt import BuildOptions, ensure_engine, import_trt

        if self._path.suffix == ".onnx":
            opts = BuildOptions(profile=profile_for(hw), precision=self._precision, flavour=self._flavour)
            if not opts.profile.accepts(hw):
                raise BackendError(f"{hw[0]}x{hw[1]} input is outside the dynamic profile; build an engine with "
                                   "`vsr-export trt --profile MIN:OPT:MAX` and pass it")
            return ensure_engine(self._path, opts, self._cache).path
        from export.cache import current_device, mismatch, parse_profile

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

    def _load(self, hw: tuple[int, int]) -> None:
        """(Re)load the engine for ``hw``, bind shapes, allocate I/O and the two hidden buffer sets."""
        from export.cache import read_key
        from export.tensorrt import engine_validity, import_trt

        self._release_buffers()
        engine: Any = None
        for attempt in (1, 2):  # a cached engine TensorRT itself rejects (new driver...) is rebuilt once
            path = self._engine_path = self._engine_file(hw)
            trt, _ = import_trt(read_key(path).flavour)
            blob = path.read_bytes()
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            why = engine_validity(trt, self._runtime, blob)
            engine = None if why and "suboptimal" not in why else self._runtime.deserialize_cuda_engine(blob)
            if engine is not None:
                break
            if attempt == 2 or self._path.suffix != ".onnx":
                raise BackendError(f"{path.name}: {why or 'TensorRT cannot deserialize it'}; rebuild it")
            path.unlink()
        self._engine = engine
        self._ctx, self._rt_cache = self._context(trt, engine, path)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        hidden = self._spec.hidden_shapes(*hw)
        shapes = {"lr": (1, 3, *hw)} | {f"hidden_in{i}": s for i, s in enumerate(hidden)}
        for name, shape in shapes.items():
            if not self._ctx.set_input_shape(name, shape):
                raise BackendError(f"{path.name} rejects {name} of shape {shape} (outside its profile)")
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._bufs = {"lr": self._dev.alloc(shapes["lr"], self._dtypes["lr"]),
                      "sr": self._dev.alloc(tuple(self._ctx.get_tensor_shape("sr")), self._dtypes["sr"])}
        self._sets = [[self._dev.alloc(s, self._dtypes[f"hidden_in{i}"]) for i, s in enumerate(hidden)]
                      for _ in range(2)]  # ping-pong: step k reads set k%2 and writes the other
        self._ctx.set_tensor_address("lr", self._dev.ptr(self._bufs["lr"]))
        self._ctx.set_tensor_address("sr", self._dev.ptr(self._bufs["sr"]))
        self._hw, self._graphs = hw, {}

    def _context(self, trt: Any, engine: Any, path: Path) -> tuple[Any, Any]:
        """Execution context; on TensorRT-RTX with its JIT-kernel runtime cache (and its own CUDA graphs)."""
        from export.cache import current_device, runtime_cache_path

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

    def run(self, lr: np.ndarray, hidden: Hidden | None) -> tuple[np.ndarray, Hidden]:
        hw = (int(lr.shape[-2]), int(lr.shape[-1]))
        if hw != self._hw:
            if hidden is not None:
                raise BackendError("frame size changed with a hidden state; pass hidden=None after a size change")
            self._load(hw)
        if hidden is None:
            for buf in self._sets[self._cur]:
                self._dev.zero(buf)
        elif not (len(hidden) == 1 and hidden[0] == _State(id(self), self._gen)):
            raise BackendError("hidden state is not the one this backend returned last; pass that, or None")
        self._dev.upload(self._bufs["lr"], np.ascontiguousarray(lr, dtype=self._dtypes["lr"]))
        self._bind(self._cur)
        if not self._manual_graph:
            self._launch()
        else:
            if self._cur not in self._graphs:
                self._launch()  # warm-up run outside capture (lazy allocations are not capturable)
                self._graphs[self._cur] = self._dev.capture(self._launch)
            self._dev.replay(self._graphs[self._cur])
        sr = self._dev.download(self._bufs["sr"]).astype(np.float32, copy=False)
        self._cur, self._gen = 1 - self._cur, self._gen + 1
        return sr, (_State(id(self), self._gen),)

    def _release_buffers(self) -> None:
        """Save the runtime cache, free graphs and buffers, then context, engine and runtime (in that order)."""
        from export.cache import current_device, runtime_cache_path
        from export.tensorrt import write_atomic

        self._dev.sync()  # queued work still reads these buffers
        cache, self._rt_cache = getattr(self, "_rt_cache", None), None
        try:
            if cache is not None and self._engine_path is not None:
                write_atomic(runtime_cache_path(self._engine_path, current_device()), cache.serialize())
        finally:
            for buf in [*self._bufs.values(), *(b for s in self._sets for b in s)]:
                self._dev.free(buf)
            self._graphs, self._bufs, self._sets, self._hw = {}, {}, [], None
            self._ctx = self._engine = self._runtime = None

    def close(self) -> None:
        if getattr(self, "_closed", True):  # closed already, or __init__ failed before owning anything
            return
        self._closed = True
        try:
            self._release_buffers()
        finally:
            self._dev.close()


def open_tensorrt(choice: Any) -> Backend:
    """Backend for a select.ModelChoice; BackendError (prefixed "tensorrt backend not available: ") if it can't."""
    from engine.backends.select import weights_for

    reason = unavailable_reason()
    if reason:
        raise BackendError(f"tensorrt backend not available: {reason}")
    weights = weights_for(choice, ".onnx")
    if weights.suffix.lower() == ".safetensors":
        raise BackendError("tensorrt backend not available: it needs ONNX or an engine, not .safetensors")
    return TensorRTBackend(weights)
