"""onnxruntime IO binding for one input size: two pre-bound state sets (ping-pong), constants bound once, and the
node-placement check that finds work onnxruntime put on the CPU under the CUDA provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.errors import BackendError
from engine.graph import GraphSpec, hidden_names

# frame output -> the frame input whose size (times the scale) it has; channel counts match
OUTPUT_OF = {"y_out": "y", "uv_out": "uv", "sr": "lr"}
CONSTANTS = ("to_rgb", "from_rgb", "peak")  # per-stream inputs: bound once, re-copied only when their values change
CPU_EP = "CPUExecutionProvider"
SHAPE_BYTES = 4096  # a CPU node whose outputs stay below this moves shape arithmetic, not pixels or state


def device_ptr(x: Any) -> int | None:
    """CUDA address of a device array (torch, CuPy, anything with ``__cuda_array_interface__``), else None."""
    cai = getattr(x, "__cuda_array_interface__", None)
    return int(cai["data"][0]) if cai else None


class Bound:
    """Two IOBindings of one session for one frame size: binding ``k`` reads state set ``k`` and writes set ``1-k``.

    Frame inputs from the host are copied into pre-allocated OrtValues on the session's device (``update_inplace``);
    device arrays are bound by address. The ``hidden_out*`` a step returns are this object's OrtValues: fed back
    unchanged they are already bound, so the state never leaves the device.
    """

    def __init__(self, sess: Any, spec: GraphSpec, feeds: Mapping[str, Any], device: str,
                 out_types: Mapping[str, str]) -> None:
        import onnxruntime as ort

        self.ort, self.sess, self.spec, self.device = ort, sess, spec, device
        self.shapes = tuple(tuple(np.shape(feeds[k])) for k in spec.frame_inputs)  # the frame size bound here
        h, w = self.shapes[0][-2:]
        new = lambda shape, dtype: ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.dtype(dtype).type,
                                                                             device, 0)
        self.ins = {k: new(np.shape(feeds[k]), np.asarray(feeds[k]).dtype if isinstance(feeds[k], np.ndarray)
                           else _dtype(feeds[k])) for k in spec.frame_inputs}
        s = spec.scale
        self.outs = {k: new((*self.ins[OUTPUT_OF[k]].shape()[:2], self.ins[OUTPUT_OF[k]].shape()[2] * s,
                             self.ins[OUTPUT_OF[k]].shape()[3] * s), out_types[k]) for k in spec.frame_outputs}
        self.sets = [[new(shape, spec.state_dtype) for shape in spec.hidden_shapes(h, w)] for _ in range(2)]
        self.bindings = [self._binding(sess, k) for k in range(2)]
        self.cur = 0  # the set holding the current state
        self._host: dict[str, np.ndarray] = {}  # constants as last copied in
        self._device_bound: set[str] = set()  # inputs bound by address last step (re-bound to ours when host again)
        self.zero()

    def _binding(self, sess: Any, k: int) -> Any:
        b = sess.io_binding()
        ins, outs = hidden_names(len(self.spec.hidden))
        for name, v in self.ins.items():
            b.bind_ortvalue_input(name, v)
        for name, v in self.outs.items():
            b.bind_ortvalue_output(name, v)
        for i, o, a, z in zip(ins, outs, self.sets[k], self.sets[1 - k]):
            b.bind_ortvalue_input(i, a)
            b.bind_ortvalue_output(o, z)
        return b

    def zero(self) -> None:
        """Zero state in the current set (first frame, after a cut)."""
        for v in self.sets[self.cur]:
            v.update_inplace(np.zeros(v.shape(), self.spec.state_dtype))

    def _load_state(self, feeds: Mapping[str, Any]) -> None:
        names = hidden_names(len(self.spec.hidden))[0]
        given = [feeds.get(n) for n in names]
        if all(v is None for v in given):
            self.zero()
            return
        for v, dst in zip(given, self.sets[self.cur]):
            if v is dst:
                continue  # the state this object returned last step: bound already
            if isinstance(v, self.ort.OrtValue):
                v = v.numpy()  # a foreign OrtValue (another session's): one round trip, rare
            if not isinstance(v, np.ndarray):
                raise BackendError("hidden_in* must be the hidden_out* this backend returned, host arrays, or none")
            dst.update_inplace(np.ascontiguousarray(v, dtype=self.spec.state_dtype))

    def _load_frame(self, binding: Any, name: str, value: Any) -> None:
        ptr = device_ptr(value)
        if ptr is not None:  # a CUDA array: bind its memory, no copy
            binding.bind_input(name, "cuda", 0, _dtype(value).type, tuple(value.shape), ptr)
            self._device_bound.add(name)
            return
        if name in self._device_bound:
            self._device_bound.discard(name)
            for b in self.bindings:
                b.bind_ortvalue_input(name, self.ins[name])
        host = np.ascontiguousarray(value)
        if name in CONSTANTS:
            if name in self._host and np.array_equal(self._host[name], host):
                return
            self._host[name] = host.copy()
        self.ins[name].update_inplace(host)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """One step: frame outputs as this object's OrtValues (copy or read them before the next step) and
        ``hidden_out*`` as the set the next step reads."""
        self._load_state(feeds)
        binding = self.bindings[self.cur]
        for k in self.spec.frame_inputs:
            self._load_frame(binding, k, feeds[k])
        self.sess.run_with_iobinding(binding)
        self.cur = 1 - self.cur
        return dict(self.outs) | dict(zip(hidden_names(len(self.spec.hidden))[1], self.sets[self.cur]))


def _dtype(x: Any) -> np.dtype:
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai:
        return np.dtype(cai["typestr"])
    return np.dtype(str(x.dtype).removeprefix("torch."))


def node_placement(events: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """(node, op type, provider, output bytes) of every node kernel in an onnxruntime profile (the JSON list that
    ``InferenceSession.end_profiling`` writes), one row per node."""
    rows: dict[str, tuple[str, str, str, int]] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or "provider" not in args:
            continue
        node = str(e.get("name", "")).removesuffix("_kernel_time")
        rows[node] = (node, str(args.get("op_name", "?")), str(args["provider"]), int(args.get("output_size", 0)))
    return list(rows.values())


def cpu_fallback(rows: list[tuple[str, str, str, int]], limit: int = SHAPE_BYTES) -> list[str]:
    """Nodes of ``rows`` that ran on the CPU with at least ``limit`` output bytes: real work that fell back (the
    small shape computations onnxruntime puts on the CPU deliberately stay below it)."""
    return [f"{node} ({op}, {size} B)" for node, op, provider, size in rows if provider == CPU_EP and size >= limit]
