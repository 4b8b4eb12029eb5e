"""G-buffer model -> ONNX: named colour/G-buffer/jitter inputs, named hidden state, symbolic H/W, parity check."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

OPSET = 17  # GridSample needs >= 16; 17 matches the RGB-only export and the TensorRT path

# Per-frame inputs in graph order: name -> (channels, meaning). Shapes (1, C, H, W) except jitter (1, 2).
GBUFFER_INPUTS: dict[str, tuple[int, str]] = {
    "lr": (3, "colour in [0, 1], display-referred, jittered render"),
    "depth": (1, "device depth in [0, 1], 0 = near plane (convert inverted depth first)"),
    "motion": (2, "current -> previous position in render pixels, x right, y down, without jitter"),
    "normals": (3, "view-space unit normals, x right, y up, z towards the camera"),
    "albedo": (3, "unlit surface colour in [0, 1]"),
    "jitter": (2, "projection offset of this frame in render pixels, x right, y down (FSR2 sign)"),
}


def io_names(n_hidden: int) -> tuple[list[str], list[str]]:
    """Input and output tensor names of an exported G-buffer step graph."""
    return [*GBUFFER_INPUTS, *(f"hidden_in{i}" for i in range(n_hidden))], ["sr", *(f"hidden_out{i}" for i in range(n_hidden))]


def _dynamic_axes(spec: list[tuple[int, int]], scale: int) -> dict[str, dict[int, str]]:
    def dims(f: int) -> dict[int, str]:
        return {2: "h", 3: "w"} if f == 1 else {2: f"h{f}", 3: f"w{f}"}

    ins, outs = io_names(len(spec))
    axes = {name: dims(1) for name in GBUFFER_INPUTS if name != "jitter"}
    axes["sr"] = dims(scale)
    for i, (_, f) in enumerate(spec):
        axes[ins[len(GBUFFER_INPUTS) + i]] = dims(f)
        axes[outs[1 + i]] = dims(f)
    return axes


def sample_inputs(hw: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Plausible random inputs of one frame at render size ``hw`` (unit normals, depth < 1, small motion)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    n = rng.normal(size=(1, 3, h, w)).astype(np.float32)
    n[:, 2] = np.abs(n[:, 2])
    return {
        "lr": rng.random((1, 3, h, w), dtype=np.float32),
        "depth": (0.9 + 0.1 * rng.random((1, 1, h, w))).astype(np.float32),
        "motion": (rng.normal(size=(1, 2, 1, 1)) * 3 + rng.normal(size=(1, 2, h, w)) * 0.5).astype(np.float32),
        "normals": n / np.linalg.norm(n, axis=1, keepdims=True),
        "albedo": rng.random((1, 3, h, w), dtype=np.float32),
        "jitter": (rng.random((1, 2)) - 0.5).astype(np.float32),
    }


def export_gbuffer_onnx(model, path: str | Path, model_name: str, sample_hw: tuple[int, int] = (36, 40),
                        opset: int = OPSET) -> Path:
    """Export an RDG-like model (``forward(lr, depth, motion, normals, albedo, jitter, *hidden)``) atomically.

    Metadata: ``vsr.model``, ``vsr.scale``, ``vsr.hidden`` (JSON [channels, factor] per hidden tensor),
    ``vsr.gbuffer`` (JSON name -> meaning of each per-frame input), ``vsr.weights_sha256``.
    """
    import onnx
    import torch

    if opset < 16:
        raise ValueError(f"GridSample needs opset >= 16, got {opset}")
    path = Path(path)
    model = model.eval().cpu()
    spec = model.hidden_spec()
    frame = {k: torch.from_numpy(v) for k, v in sample_inputs(sample_hw).items()}
    hidden = model.init_hidden(frame["lr"])
    ins, outs = io_names(len(spec))
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(model, (*frame.values(), *hidden), str(tmp), input_names=ins, output_names=outs,
                          opset_version=opset, dynamic_axes=_dynamic_axes(spec, model.cfg.scale), dynamo=False)
    proto = onnx.load(str(tmp))
    digest = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()))
    meta = {"vsr.model": model_name, "vsr.scale": str(model.cfg.scale), "vsr.hidden": json.dumps([list(s) for s in spec]),
            "vsr.gbuffer": json.dumps({k: v[1] for k, v in GBUFFER_INPUTS.items()}), "vsr.weights_sha256": digest.hexdigest()}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def gbuffer_parity(model, path: str | Path, steps: int = 8, hw: tuple[int, int] = (23, 31), seed: int = 0) -> float:
    """Max abs difference of ``sr`` torch vs onnxruntime over ``steps`` recurrent steps, each side feeding back
    its own hidden state (so drift would accumulate and show)."""
    import onnxruntime as ort
    import torch

    from engine.models.rdg import GBufferBatch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins, outs = io_names(len(model.hidden_spec()))
    model = model.eval()
    hidden_t: tuple[torch.Tensor, ...] | None = None
    hidden_o: list[np.ndarray] | None = None
    worst = 0.0
    for i in range(steps):
        frame = sample_inputs(hw, seed + i)
        t = {k: torch.from_numpy(v) for k, v in frame.items()}
        with torch.no_grad():
            sr_t, hidden_t = model.step(t["lr"], hidden_t, GBufferBatch(t["depth"], t["motion"], t["normals"],
                                                                        t["albedo"], t["jitter"]))
        if hidden_o is None:
            hidden_o = [h.numpy() for h in model.init_hidden(t["lr"])]
        res = sess.run(outs, {**frame, **dict(zip(ins[len(GBUFFER_INPUTS):], hidden_o))})
        hidden_o = res[1:]
        worst = max(worst, float(np.abs(res[0] - sr_t.numpy()).max()))
    return worst
