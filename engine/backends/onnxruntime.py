"""ONNX Runtime backend: CPU by default, CUDA when its provider really activates; runs video and G-buffer graphs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend, probe_feeds
from engine.errors import BackendError, ModelError
from engine.graph import GraphSpec, Tensor, check_io, check_probe, spec_from_metadata
from engine.privacy import ORT_QUIET, quiet_onnxruntime

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# onnxruntime's type strings -> numpy dtype names (the graph contract speaks numpy)
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(uint16)": "uint16"}


def _session_options(threads: int):  # -> ort.SessionOptions
    ort = quiet_onnxruntime()

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # one small graph per frame: no inter-op parallelism
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads  # 0 = one per physical core (onnxruntime's choice)
    so.enable_mem_pattern = True  # shapes repeat every frame, so pre-planned buffers pay off
    so.log_severity_level = ORT_QUIET  # our one-line error says it; onnxruntime's own lines would come first
    # Spinning worker threads steal the cores the decode/encode threads need (and collapse on shared machines).
    so.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("VSR_ORT_SPIN", "0"))
    so.add_session_config_entry("session.set_denormal_as_zero", "1")  # a decaying hidden state must not go subnormal
    return so


def _check_onnx_path(path: Path) -> None:
    if path.suffix.lower() == ".safetensors":
        raise ModelError(
            f"{path.name} is a PyTorch .safetensors file; the onnxruntime backend needs ONNX. Either pass "
            f"--backend torch, or export it: vsr-export onnx --scale S --weights {path} --out {path.stem}.onnx"
        )
    if not path.is_file():
        raise ModelError(f"weights file {path} not found")


def _declared(args: list[Any]) -> dict[str, Tensor]:
    return {a.name: Tensor(ORT_TYPES.get(a.type, a.type), tuple(a.shape)) for a in args}


def _device_ptr(x: Any) -> int | None:
    """CUDA address of a device array (torch, CuPy, anything with ``__cuda_array_interface__``), else None."""
    cai = getattr(x, "__cuda_array_interface__", None)
    return int(cai["data"][0]) if cai else None


class OnnxRuntimeBackend(Backend):
    """Runs an exported step graph of the engine/graph.py contract with onnxruntime."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        ort = quiet_onnxruntime()
        path = Path(path)
        _check_onnx_path(path)
        want = [CUDA, CPU] if device == "cuda" else [CPU]
        n = threads if threads is not None else int(os.environ.get("VSR_ORT_THREADS", "0"))
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=_session_options(n), providers=want)
        except Exception as e:  # onnxruntime raises its own non-exported exception classes
            raise ModelError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
        active = self._sess.get_providers()
        if device == "cuda" and (not active or active[0] != CUDA):
            self.close()
            raise BackendError(f"CUDAExecutionProvider did not activate (active: {', '.join(active)})")
        self._spec = spec_from_metadata(self._sess.get_modelmeta().custom_metadata_map, path)
        check_io(self._spec, _declared(self._sess.get_inputs()), _declared(self._sess.get_outputs()))
        self._cuda = device == "cuda"
        self.name = "onnxruntime-cuda" if self._cuda else "onnxruntime-cpu"
        self._validate()

    def _validate(self) -> None:
        """One tiny real step: the declared scale and state layout must be what the graph computes."""
        feeds = probe_feeds(self._spec)
        h, w = feeds["y" if "y" in feeds else "lr"].shape[-2:]
        try:
            out = self.run(feeds)
        except BackendError as e:
            raise ModelError(f"{Path(self._spec.weights).name} fails a 16x16 probe step: {e}") from None
        check_probe(self._spec, h, w, {k: np.shape(v) for k, v in out.items()})

    def io_spec(self) -> GraphSpec:
        return self._spec

    def _feeds(self, feeds: Arrays) -> dict[str, Any]:
        spec = self._spec
        missing = [k for k in spec.frame_inputs if k not in feeds]
        if missing:
            raise BackendError(f"missing inputs {missing} (graph {spec.kind} takes {spec.frame_inputs})")
        out = {k: feeds[k] for k in spec.inputs if k in feeds}
        if len(out) < len(spec.inputs):  # no state given: zeros at this frame size
            h, w = np.shape(feeds[spec.frame_inputs[0]])[-2:]
            out.update(spec.zero_state(h, w))
        return out

    def run(self, feeds: Arrays) -> dict[str, Any]:
        if self._sess is None:
            raise BackendError("this backend was closed; open a new one")
        full = self._feeds(feeds)
        if self._cuda:
            return self._run_bound(full)
        host = {k: v if isinstance(v, np.ndarray) else np.from_dlpack(v) for k, v in full.items()}
        try:
            res = self._sess.run(self._spec.outputs, host)
        except Exception as e:
            shape = np.shape(full[self._spec.frame_inputs[0]])
            raise BackendError(f"onnxruntime failed on a {shape} frame: {str(e).splitlines()[0]}") from None
        return dict(zip(self._spec.outputs, res))

    def _run_bound(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """CUDA path: device inputs bound by address (IOBinding), host ones copied in; every output is allocated on
        the device, the state stays there (OrtValues fed back as they are) and frame outputs come to the host only
        when the frames came from the host."""
        import onnxruntime as ort

        binding = self._sess.io_binding()
        for k, v in feeds.items():
            ptr = _device_ptr(v)
            if isinstance(v, ort.OrtValue):
                binding.bind_ortvalue_input(k, v)
            elif ptr is None:
                binding.bind_cpu_input(k, np.ascontiguousarray(v))
            else:
                dtype = np.dtype(v.__cuda_array_interface__["typestr"]).type  # np.float32, np.uint8, ...
                binding.bind_input(k, "cuda", 0, dtype, tuple(v.shape), ptr)
        for k in self._spec.outputs:
            binding.bind_output(k, "cuda")
        try:
            self._sess.run_with_iobinding(binding)
        except Exception as e:
            raise BackendError(f"onnxruntime (CUDA) failed: {str(e).splitlines()[0]}") from None
        out = dict(zip(self._spec.outputs, binding.get_outputs()))
        if isinstance(feeds[self._spec.frame_inputs[0]], np.ndarray):
            for k in self._spec.frame_outputs:
                out[k] = out[k].numpy()  # the only device -> host copy per frame: the output planes
        return out

    def close(self) -> None:
        self._sess = None  # type: ignore[assignment]  # onnxruntime frees the session with its last reference
