"""ONNX Runtime backend: CPU by default, CUDA when its provider really activates."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, Hidden, IoSpec, spec_from_metadata, zeros_hidden
from engine.errors import BackendError, ModelError
from engine.privacy import ORT_QUIET, quiet_onnxruntime

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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


class OnnxRuntimeBackend(Backend):
    """Runs an exported step graph (``lr``, ``hidden_in*`` -> ``sr``, ``hidden_out*``) with onnxruntime."""

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
        self._ins = ["lr"] + [f"hidden_in{i}" for i in range(len(self._spec.hidden))]
        self._outs = ["sr"] + [f"hidden_out{i}" for i in range(len(self._spec.hidden))]
        have = {i.name: i.type for i in self._sess.get_inputs()}
        if set(self._ins) != set(have):
            raise ModelError(f"{path.name}: inputs {sorted(have)} do not match the step signature {self._ins}")
        # fp16-I/O graphs (vsr-export --precision fp16 --io fp16): feed float16, keep the state in float16 between
        # steps, hand float32 frames back to the pipeline
        self._dtype = np.float16 if have["lr"] == "tensor(float16)" else np.float32
        self.name = "onnxruntime-cuda" if device == "cuda" else "onnxruntime-cpu"

    def io_spec(self) -> IoSpec:
        return self._spec

    def run(self, lr: np.ndarray, hidden: Hidden | None) -> tuple[np.ndarray, Hidden]:
        x = lr.astype(self._dtype, copy=False)
        if hidden is None:
            hidden = zeros_hidden(self._spec, x)
        try:
            res = self._sess.run(self._outs, dict(zip(self._ins, (x, *hidden))))
        except Exception as e:
            raise BackendError(f"onnxruntime failed on a {lr.shape} frame: {str(e).splitlines()[0]}") from None
        return res[0].astype(np.float32, copy=False), tuple(res[1:])

    def close(self) -> None:
        self._sess = None  # type: ignore[assignment]  # onnxruntime frees the session with its last reference
