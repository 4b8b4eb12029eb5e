"""Parameters and multiply-accumulates of a loaded model: from engine.models when torch is present, else the ONNX."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from engine.backends.base import IoSpec


def _from_torch(spec: IoSpec, sizes: tuple[tuple[int, int], ...]) -> dict[str, Any] | None:
    """Params and GMAC per size via engine.models.count_macs; None without torch or for an unknown model."""
    if importlib.util.find_spec("torch") is None:
        return None
    from engine.models import GBUFFER_MODELS, MODELS, build_model, count_macs

    if spec.model not in MODELS and spec.model not in GBUFFER_MODELS:
        return None
    net = build_model(spec.model, spec.scale)
    params = sum(p.numel() for p in net.parameters())
    gmac = {f"{h}x{w}": count_macs(net, h, w) / 1e9 for h, w in sizes}
    return {"params": int(params), "gmac": gmac, "macs_from": "engine.models.count_macs"}


def conv_macs_per_pixel(path: Path) -> tuple[int, int]:
    """(parameters, conv multiply-accumulates per LR pixel) of an ONNX graph.

    Like count_macs, every Conv is assumed to run at the LR size (true of the RVSR family: the upscale is a
    pixel shuffle at the end), so MACs of a frame are this times H*W.
    """
    import numpy as np
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    params = sum(int(np.prod(s)) for s in shapes.values())
    per_px = 0
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
            out_c, in_per_group, kh, kw = shapes[node.input[1]]
            per_px += out_c * in_per_group * kh * kw  # = in*out*k/groups, as count_macs
    return params, per_px


def params_and_macs(spec: IoSpec, sizes: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """``{"params", "gmac": {"HxW": GMAC per step}, "macs_from"}``; empty values when neither source can tell."""
    info = _from_torch(spec, sizes)
    if info is not None:
        return info
    path = Path(spec.weights)
    if path.suffix.lower() == ".onnx" and importlib.util.find_spec("onnx") is not None:
        params, per_px = conv_macs_per_pixel(path)
        return {"params": params, "gmac": {f"{h}x{w}": per_px * h * w / 1e9 for h, w in sizes}, "macs_from": "onnx"}
    return {"params": None, "gmac": {}, "macs_from": "unknown (no torch, no onnx)"}
