"""ONNX Runtime backend: CPU by default, CUDA when its provider really activates; runs video and G-buffer graphs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend, probe_feeds
from engine.backends.ort_binding import Bound, cpu_fallback, node_placement
from engine.errors import BackendError, ModelError
from engine.graph import GraphSpec, Tensor, check_io, check_probe, spec_from_metadata
from engine.privacy import ORT_QUIET, quiet_onnxruntime

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PLACEMENT_HW = (64, 64)  # LR size of the profiled probe step: frame-sized tensors then dwarf shape tensors
# onnxruntime's type strings -> numpy dtype names (the graph contract speaks numpy)
ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(uint16)": "uint16", "tensor(int32)": "int32"}


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


class OnnxRuntimeBackend(Backend):
    """Runs an exported step graph of the engine/graph.py contract with onnxruntime."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 iobinding: bool | None = None) -> None:
        """``iobinding``: run through pre-bound device buffers (default: on CUDA; the CPU EP takes it too)."""
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
        self._device = "cuda" if self._cuda else "cpu"
        self._iobinding = self._cuda if iobinding is None else iobinding
        self._out_types = {o.name: ORT_TYPES[o.type] for o in self._sess.get_outputs()}
        self._bound: Bound | None = None
        self.name = "onnxruntime-cuda" if self._cuda else "onnxruntime-cpu"
        self._validate()
        if self._cuda:
            self._check_placement(path, n)

    def _check_placement(self, path: Path, threads: int) -> None:
        """BackendError when a node moving frame- or state-sized data runs on the CPU (one profiled probe step in a
        throwaway session). onnxruntime's "session.disable_cpu_ep_fallback" is not used: it also rejects the small
        shape computations onnxruntime places on the CPU on purpose, and conflicts with listing the CPU EP."""
        import tempfile

        ort = quiet_onnxruntime()
        so = _session_options(threads)
        with tempfile.TemporaryDirectory(prefix="vsr-ort-profile-") as tmp:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "probe")
            sess = ort.InferenceSession(str(path), sess_options=so, providers=[CUDA, CPU])
            sess.run(None, self._feeds(probe_feeds(self._spec, *PLACEMENT_HW)))
            events = json.loads(Path(sess.end_profiling()).read_text())
        bad = cpu_fallback(node_placement(events))
        if bad:
            self.close()
            raise BackendError(f"onnxruntime placed {len(bad)} data-sized node(s) on the CPU under CUDA "
                               f"({', '.join(bad[:4])}); every frame would cross PCIe. Use another backend")

    def _validate(self) -> None:
        """One tiny real step: the declared scale and state layout must be what the graph computes."""
        feeds = probe_feeds(self._spec)
        h, w = feeds["y" if "y" in feeds else "lr"].shape[-2:]
        try:
            out = self.run(feeds)
        except BackendError as e:
            raise ModelError(f"{Path(self._spec.weights).name} fails a 16x16 probe step: {e}") from None
        check_probe(self._spec, h, w, {k: tuple(v.shape()) if callable(getattr(v, "shape", None)) else np.shape(v)
                                       for k, v in out.items()})  # OrtValue.shape is a method

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
        if self._iobinding:
            return self._run_bound(feeds)
        full = self._feeds(feeds)
        host = {k: v if isinstance(v, np.ndarray) else np.from_dlpack(v) for k, v in full.items()}
        try:
            res = self._sess.run(self._spec.outputs, host)
        except Exception as e:
            shape = np.shape(full[self._spec.frame_inputs[0]])
            raise BackendError(f"onnxruntime failed on a {shape} frame: {str(e).splitlines()[0]}") from None
        return dict(zip(self._spec.outputs, res))

    def _run_bound(self, feeds: Arrays) -> dict[str, Any]:
        """IO binding (engine/backends/ort_binding.py): state and constants stay where the session runs; frame
        outputs come to the host only when the frames came from the host."""
        spec = self._spec
        missing = [k for k in spec.frame_inputs if k not in feeds]
        if missing:
            raise BackendError(f"missing inputs {missing} (graph {spec.kind} takes {spec.frame_inputs})")
        shapes = tuple(tuple(np.shape(feeds[k])) for k in spec.frame_inputs)
        if self._bound is None or self._bound.shapes != shapes:
            self._bound = Bound(self._sess, spec, feeds, self._device, self._out_types)
        try:
            out = self._bound.run(feeds)
        except BackendError:
            raise
        except Exception as e:  # onnxruntime's own exception classes
            raise BackendError(f"onnxruntime ({self._device}) failed on a {shapes[0]} frame: "
                               f"{str(e).splitlines()[0]}") from None
        if isinstance(feeds[spec.frame_inputs[0]], np.ndarray):
            for k in spec.frame_outputs:  # the only device -> host copy per frame: the output planes
                host = out[k].numpy()
                out[k] = host.copy() if self._device == "cpu" else host  # on the CPU EP numpy() is a view
        return out

    def close(self) -> None:
        self._bound = None
        self._sess = None  # type: ignore[assignment]  # onnxruntime frees the session with its last reference
