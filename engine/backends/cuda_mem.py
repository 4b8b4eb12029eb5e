"""Device memory, one stream and CUDA graphs for the TensorRT backend: through torch, or through cuda-python."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import BackendError


class TorchCuda:
    """Device memory, stream and CUDA graphs through torch."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()  # non-default: TensorRT warns about (and serialises on) the legacy stream
        self.handle = self.stream.cuda_stream

    def alloc(self, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        t = self.torch
        with t.cuda.stream(self.stream):  # the caching allocator ties blocks to the stream that allocates them
            return t.empty(shape, dtype=getattr(t, np.dtype(dtype).name), device="cuda")

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

    def copy(self, buf: Any) -> Any:
        """A device copy the caller may keep (``buf`` is overwritten by the next step)."""
        with self.torch.cuda.stream(self.stream):
            return buf.clone()

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


class Cudart:
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

    copy = download  # no device array type of its own: outputs for device inputs come back to the host

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
