"""Model runners behind RenderUpscaler: torch module or onnxruntime session, one step with explicit state."""

from __future__ import annotations

from pathlib import Path


def resolve_weights(model: str, scale: int, weights: str | Path | None, shipped: dict[tuple[str, int], str]) -> Path:
    """The weights file to load: ``weights`` if given, else the shipped file for (model, scale)."""
    from engine.errors import ModelError
    from engine.registry import WEIGHTS_DIR

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"weights file {path} not found")
        return path
    stem = shipped.get((model, scale))
    path = WEIGHTS_DIR / f"{stem}.safetensors"
    if stem is None or not path.is_file():
        raise ModelError(f"no trained weights shipped for {model} x{scale}; train them (docs/render.md) and pass weights=PATH")
    return path


def _load_torch_model(model: str, scale: int, weights: Path):
    from safetensors import safe_open

    from engine.errors import ModelError
    from engine.models import GBUFFER_MODELS, build_model, load_weights

    if model not in GBUFFER_MODELS:
        raise ModelError(f"{model!r} is not a G-buffer model; known: {', '.join(GBUFFER_MODELS)}")
    if weights.suffix != ".safetensors":
        raise ModelError(f"{weights.name}: the torch backend loads .safetensors; use backend='onnxruntime' for .onnx")
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("model", model) != model or int(meta.get("scale", scale)) != scale:
        raise ModelError(f"{weights.name} holds {meta.get('model')} x{meta.get('scale')}, not {model} x{scale}")
    try:
        return load_weights(build_model(model, scale), weights).eval()
    except RuntimeError as e:
        raise ModelError(f"{weights.name} does not fit {model} x{scale}: {str(e).splitlines()[0]}") from e


class _TorchRunner:
    """The model as a torch module, on the given device or on the device of the inputs."""

    def __init__(self, model: str, scale: int, weights: Path, device: str | None) -> None:
        import torch

        self.model = _load_torch_model(model, scale, weights)
        self.device = torch.device(device) if device else None

    def run(self, frame: dict, hidden: tuple | None) -> tuple:
        from engine.models.rdg import GBufferBatch

        dev = self.device or frame["lr"].device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        f = {k: v.to(dev) for k, v in frame.items()}
        lr = f.pop("lr")
        return self.model.step(lr, hidden, GBufferBatch(**f))

    def close(self) -> None:
        self.model = None


class _OrtRunner:
    """onnxruntime session (CUDA provider when the device asks for it and it is installed, else CPU)."""

    def __init__(self, model: str, scale: int, weights: Path, device: str | None) -> None:
        import json
        import tempfile

        from engine.errors import ModelError
        from engine.privacy import quiet_onnxruntime
        from export.onnx_gbuffer import GBUFFER_INPUTS, export_gbuffer_onnx, io_names

        ort = quiet_onnxruntime()
        self._tmp = None
        path = weights
        if weights.suffix == ".safetensors":  # export once into a folder this runner owns
            self._tmp = tempfile.TemporaryDirectory(prefix="vsr-render-")
            path = export_gbuffer_onnx(_load_torch_model(model, scale, weights), Path(self._tmp.name) / "model.onnx", model)
        gpu = bool(device and device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers())
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(str(path), providers=providers)
        meta = self.sess.get_modelmeta().custom_metadata_map
        if "vsr.gbuffer" not in meta or int(meta.get("vsr.scale", 0)) != scale:
            raise ModelError(f"{path.name} is not a x{scale} G-buffer model (metadata: {meta.get('vsr.model')} x{meta.get('vsr.scale')})")
        self.spec = json.loads(meta["vsr.hidden"])
        self.ins, self.outs = io_names(len(self.spec))
        self.n_frame = len(GBUFFER_INPUTS)

    def run(self, frame: dict, hidden: tuple | None) -> tuple:
        import numpy as np
        import torch

        feeds = {k: v.detach().cpu().numpy() for k, v in frame.items()}
        if hidden is None:
            h, w = feeds["lr"].shape[-2:]
            hidden = tuple(np.zeros((1, c, h * f, w * f), np.float32) for c, f in self.spec)
        res = self.sess.run(self.outs, {**feeds, **dict(zip(self.ins[self.n_frame :], hidden))})
        return torch.from_numpy(res[0]).to(frame["lr"].device), tuple(res[1:])

    def close(self) -> None:
        self.sess = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# backend name -> runner class
RUNNERS: dict[str, type] = {"torch": _TorchRunner, "onnxruntime": _OrtRunner}
