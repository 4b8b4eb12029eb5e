"""Device memory, pinned host staging, three streams, events and CUDA graphs for the TensorRT backend: through torch,
or through cuda-python. Both speak one small interface; streams are named ("compute", "h2d", "d2h")."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.errors import BackendError

STREAMS = ("compute", "h2d", "d2h")  # the engine runs on one, host->device and device->host copies on the others


class TorchCuda:
    """Device memory, streams, events and CUDA graphs through torch."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        # non-default streams: TensorRT warns about (and serialises on) the legacy default stream
        self.streams = {name: torch.cuda.Stream() for name in STREAMS}
        self.stream = self.streams["compute"]
        self.handle = self.stream.cuda_stream  # the raw cudaStream_t TensorRT enqueues on

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        t = self.torch
        with t.cuda.stream(self.stream):  # the caching allocator ties blocks to the stream that allocates them
            return t.empty(shape, dtype=getattr(t, np.dtype(dtype).name), device="cuda")

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Page-locked host array (async copies need it; pageable memory makes them synchronous)."""
        t = self.torch
        return t.empty(shape, dtype=getattr(t, np.dtype(dtype).name), pin_memory=True).numpy()

    def ptr(self, buf: Any) -> int:
        return int(buf.data_ptr())

    def zero(self, buf: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            buf.zero_()

    def h2d(self, buf: Any, host: np.ndarray, stream: str) -> None:
        with self.torch.cuda.stream(self.streams[stream]):
            buf.copy_(self.torch.from_numpy(host), non_blocking=True)

    def d2h(self, host: np.ndarray, buf: Any, stream: str) -> None:
        with self.torch.cuda.stream(self.streams[stream]):
            self.torch.from_numpy(host).copy_(buf, non_blocking=True)

    def d2d(self, buf: Any, src: Any, stream: str) -> None:
        """Copy a device array (torch tensor or any DLPack producer) into ``buf``."""
        t = src if isinstance(src, self.torch.Tensor) else self.torch.from_dlpack(src)
        with self.torch.cuda.stream(self.streams[stream]):
            buf.copy_(t, non_blocking=True)

    def copy(self, buf: Any) -> Any:
        """A device copy the caller may keep (``buf`` is overwritten two steps later)."""
        with self.torch.cuda.stream(self.streams["d2h"]):
            return buf.clone()

    def event(self) -> Any:
        return self.torch.cuda.Event()

    def record(self, event: Any, stream: str) -> None:
        event.record(self.streams[stream])

    def wait(self, stream: str, event: Any) -> None:
        self.streams[stream].wait_event(event)

    def event_sync(self, event: Any) -> None:
        event.synchronize()

    def capture(self, launch: Callable[[], None]) -> Any:
        graph = self.torch.cuda.CUDAGraph()
        # thread_local: decode/encode threads may allocate meanwhile without invalidating the capture
        with self.torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            launch()
        return graph

    def replay(self, graph: Any) -> None:
        with self.torch.cuda.stream(self.stream):
            graph.replay()

    def free(self, buf: Any) -> None:
        pass  # torch's caching allocator reclaims tensors and graphs with their last reference

    def sync(self) -> None:
        for s in self.streams.values():
            s.synchronize()

    close = sync


class Cudart:
    """Device memory, streams, events and CUDA graphs through cuda-python's runtime bindings."""

    def __init__(self) -> None:
        from cuda.bindings import runtime as cudart

        self.rt = cudart
        self.streams = {n: self._ok(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)) for n in STREAMS}
        self.handle = self.streams["compute"]
        self.shapes: dict[int, tuple[tuple[int, ...], np.dtype]] = {}
        self._host: list[int] = []  # pinned allocations, freed on close
        self._owned: list[Any] = []  # events and graphs, destroyed on close

    def _ok(self, res: Any) -> Any:
        err, *rest = res if isinstance(res, tuple) else (res,)
        if int(err) != 0:
            raise BackendError(f"CUDA error {int(err)} ({self.rt.cudaGetErrorString(err)[1].decode()})")
        return rest[0] if len(rest) == 1 else rest

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> int:
        ptr = int(self._ok(self.rt.cudaMallocAsync(int(np.prod(shape)) * np.dtype(dtype).itemsize, self.handle)))
        self.shapes[ptr] = (shape, np.dtype(dtype))
        return ptr

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self._ok(self.rt.cudaMallocHost(nbytes)))
        self._host.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(memoryview(raw), np.uint8).view(dtype).reshape(shape)

    def ptr(self, buf: int) -> int:
        return buf

    def _nbytes(self, buf: int) -> int:
        return int(np.prod(self.shapes[buf][0])) * self.shapes[buf][1].itemsize

    def zero(self, buf: int) -> None:
        self._ok(self.rt.cudaMemsetAsync(buf, 0, self._nbytes(buf), self.handle))

    def _copy(self, dst: int, src: int, nbytes: int, kind: str, stream: str) -> None:
        k = getattr(self.rt.cudaMemcpyKind, kind)
        self._ok(self.rt.cudaMemcpyAsync(dst, src, nbytes, k, self.streams[stream]))

    def h2d(self, buf: int, host: np.ndarray, stream: str) -> None:
        self._copy(buf, host.ctypes.data, self._nbytes(buf), "cudaMemcpyHostToDevice", stream)

    def d2h(self, host: np.ndarray, buf: int, stream: str) -> None:
        self._copy(host.ctypes.data, buf, self._nbytes(buf), "cudaMemcpyDeviceToHost", stream)

    def d2d(self, buf: int, src: Any, stream: str) -> None:
        ptr = int(src.__cuda_array_interface__["data"][0])
        self._copy(buf, ptr, self._nbytes(buf), "cudaMemcpyDeviceToDevice", stream)

    def copy(self, buf: int) -> np.ndarray:
        """No device array type of its own: outputs for device inputs come back to the host."""
        shape, dtype = self.shapes[buf]
        out = np.empty(shape, dtype)
        self._copy(out.ctypes.data, buf, out.nbytes, "cudaMemcpyDeviceToHost", "d2h")
        self._ok(self.rt.cudaStreamSynchronize(self.streams["d2h"]))
        return out

    def event(self) -> Any:
        ev = self._ok(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDisableTiming))
        self._owned.append(("event", ev))
        return ev

    def record(self, event: Any, stream: str) -> None:
        self._ok(self.rt.cudaEventRecord(event, self.streams[stream]))

    def wait(self, stream: str, event: Any) -> None:
        self._ok(self.rt.cudaStreamWaitEvent(self.streams[stream], event, 0))

    def event_sync(self, event: Any) -> None:
        self._ok(self.rt.cudaEventSynchronize(event))

    def capture(self, launch: Callable[[], None]) -> Any:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ok(self.rt.cudaStreamBeginCapture(self.handle, mode))
        try:
            launch()
        finally:
            graph = self._ok(self.rt.cudaStreamEndCapture(self.handle))
        self._owned.append(("graph", graph))
        exe = self._ok(self.rt.cudaGraphInstantiate(graph, 0))
        self._owned.append(("exec", exe))
        return exe

    def replay(self, graph: Any) -> None:
        self._ok(self.rt.cudaGraphLaunch(graph, self.handle))

    def free(self, buf: int) -> None:
        self._ok(self.rt.cudaFreeAsync(buf, self.handle))
        self.shapes.pop(buf, None)

    def sync(self) -> None:
        for s in self.streams.values():
            self._ok(self.rt.cudaStreamSynchronize(s))

    def close(self) -> None:
        self.sync()
        destroy = {"event": self.rt.cudaEventDestroy, "graph": self.rt.cudaGraphDestroy,
                   "exec": self.rt.cudaGraphExecDestroy}
        for kind, obj in reversed(self._owned):
            self._ok(destroy[kind](obj))
        for ptr in self._host:
            self._ok(self.rt.cudaFreeHost(ptr))
        for s in self.streams.values():
            self._ok(self.rt.cudaStreamDestroy(s))  # buffers were freed (async) on the compute stream first
        self._owned, self._host = [], []
