"""Backend choice: explicit names map to openers; `auto` tries them in order and says why it skipped each."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.backends.base import Backend
from engine.errors import BackendError, ModelError, UsageError

CHOICES = ("auto", "onnxruntime", "torch", "tensorrt")  # values of --backend
TRT_MODULES = ("tensorrt", "tensorrt_rtx")  # Python modules of TensorRT and TensorRT-RTX
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu")  # fastest first


@dataclass(frozen=True)
class ModelChoice:
    """Which weights to run, as the user asked for them."""

    model: str | None = None  # --model NAME; None = the shipped default for the scale
    scale: int | None = None  # --scale; None = from --weights metadata, else 2
    weights: Path | None = None  # --weights FILE (.onnx or .safetensors); None = shipped package data
    frame_bits: int = 8  # deepest samples in or out of the video; > 8 runs the graph with uint16 planes
    clean: bool = False  # the input went through no lossy codec: the default model is the BI-trained one


def frame_dtype(choice: ModelChoice) -> str:
    """Integer dtype of a video graph's planes for ``choice`` (see engine/graph.py)."""
    return "uint16" if choice.frame_bits > 8 else "uint8"


@dataclass(frozen=True)
class Opened:
    """A ready backend and the story of how it was chosen."""

    backend: Backend  # the backend to run
    notes: tuple[str, ...]  # one line per candidate: picked or skipped, and why


def weights_for(choice: ModelChoice, suffix: str) -> Path:
    """The file a backend of kind ``suffix`` ('.onnx' / '.safetensors') loads; for ONNX and deep video the
    uint16-plane sibling (``X.u16.onnx``) of the named or shipped graph."""
    from engine.registry import RENDER_MODELS, SHIPPED, default_model, shipped_file

    deep = suffix == ".onnx" and frame_dtype(choice) == "uint16"
    if choice.weights is not None:
        path = choice.weights
        if deep and path.suffix.lower() == ".onnx" and not path.name.endswith(".u16.onnx"):
            sibling = path.with_name(path.name[: -len(".onnx")] + ".u16.onnx")
            if not sibling.is_file():
                raise ModelError(f"{choice.frame_bits}-bit video needs the uint16-plane graph {sibling.name} beside "
                                 f"{path.name}; `vsr-export onnx` writes both")
            return sibling
        return path
    scale = choice.scale or 2
    model = choice.model or default_model(scale, choice.clean)
    video = model not in RENDER_MODELS and (model, scale) in SHIPPED
    return shipped_file(model, scale, ".u16.onnx" if deep and video else suffix)


def _has_nvidia_gpu() -> bool:
    # cheap check before importing torch (seconds) just to learn there is no GPU
    paths = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")  # Linux driver, WSL2 GPU bridge
    return any(os.path.exists(p) for p in paths) or os.name == "nt"


def _open_ort(choice: ModelChoice, device: str) -> Backend:
    from engine.backends.onnxruntime import CUDA, OnnxRuntimeBackend

    if device == "cuda":
        import onnxruntime as ort

        if CUDA not in ort.get_available_providers():
            raise BackendError(f"{CUDA} is not in this onnxruntime build (pip install onnxruntime-gpu)")
    return OnnxRuntimeBackend(weights_for(choice, ".onnx"), device=device)


def _open_torch(choice: ModelChoice, device: str) -> Backend:
    from engine.backends.torch import TorchBackend, torch_missing_reason

    missing = torch_missing_reason()
    if missing:
        raise BackendError(missing)
    if device == "cuda" and not _has_nvidia_gpu():
        raise BackendError("no NVIDIA GPU found")
    return TorchBackend(weights_for(choice, ".safetensors"), device=device, model=choice.model,
                        frame_dtype=frame_dtype(choice))


def _open_trt(choice: ModelChoice) -> Backend:
    if not _has_nvidia_gpu():  # probing the TensorRT runtime itself costs seconds (it loads CUDA libraries)
        found = [m for m in TRT_MODULES if importlib.util.find_spec(m) is not None]
        have = f"{', '.join(found)} installed" if found else f"no {' or '.join(TRT_MODULES)} module either"
        raise BackendError(f"tensorrt backend not available: no NVIDIA GPU found ({have})")
    from engine.backends.tensorrt import open_tensorrt

    # raises BackendError("tensorrt backend not available: <reason>") when it can't; engine builds (minutes) say
    # what they do on stderr, phase by phase
    return open_tensorrt(weights_for(choice, ".onnx"), report=_progress_line)


def _progress_line(line: str) -> None:
    print(f"tensorrt: {line}", file=sys.stderr, flush=True)


OPENERS: dict[str, Callable[[ModelChoice], Backend]] = {
    "tensorrt": _open_trt,
    "onnxruntime-cuda": lambda c: _open_ort(c, "cuda"),
    "onnxruntime-cpu": lambda c: _open_ort(c, "cpu"),
    "torch-cuda": lambda c: _open_torch(c, "cuda"),
    "torch-cpu": lambda c: _open_torch(c, "cpu"),
}


def _auto_order(choice: ModelChoice) -> tuple[str, ...]:
    if choice.weights is not None and choice.weights.suffix.lower() == ".safetensors":
        return ("tensorrt", "torch-cuda", "torch-cpu")  # ONNX paths cannot take safetensors
    return AUTO_ORDER


def _auto(choice: ModelChoice) -> Opened:
    notes: list[str] = []
    for name in _auto_order(choice):
        try:
            backend = OPENERS[name](choice)
        except BackendError as e:
            notes.append(f"skipped {name}: {str(e).removeprefix('tensorrt backend not available: ')}")
            continue
        notes.insert(0, f"auto picked {name}")
        return Opened(backend, tuple(notes))
    raise BackendError("no backend could run this model: " + "; ".join(notes))


def _checked(opened: Opened, choice: ModelChoice) -> Opened:
    spec = opened.backend.io_spec()
    problem = None
    if choice.scale is not None and spec.scale != choice.scale:
        problem = f"{Path(spec.weights).name} is a x{spec.scale} model but --scale {choice.scale} was asked"
    elif choice.weights is not None and choice.model is not None and spec.model not in (choice.model, "unknown"):
        problem = f"{Path(spec.weights).name} holds model {spec.model!r}, not --model {choice.model!r}"
    if problem:
        opened.backend.close()
        raise ModelError(problem)
    return opened


def open_backend(name: str, choice: ModelChoice) -> Opened:
    """Open backend ``name`` (one of CHOICES) for ``choice``; ``auto`` falls through AUTO_ORDER."""
    if name == "auto":
        return _checked(_auto(choice), choice)
    if name in OPENERS:  # a precise one ("onnxruntime-cpu", "torch-cuda", ...): that one or its error
        return _checked(Opened(OPENERS[name](choice), ()), choice)
    if name not in CHOICES:
        raise UsageError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}")
    if name == "torch":
        torch_ok = importlib.util.find_spec("torch") is not None and _has_nvidia_gpu()
        opener = OPENERS["torch-cuda" if torch_ok else "torch-cpu"]
        try:
            return _checked(Opened(opener(choice), ("torch asked",)), choice)
        except BackendError:
            if not torch_ok:
                raise
            return _checked(Opened(OPENERS["torch-cpu"](choice), ("torch-cuda failed; using torch-cpu",)), choice)
    if name == "onnxruntime":
        try:
            return _checked(Opened(OPENERS["onnxruntime-cuda"](choice), ("onnxruntime asked: CUDA active",)), choice)
        except BackendError as e:
            return _checked(Opened(OPENERS["onnxruntime-cpu"](choice), (f"onnxruntime asked: CPU ({e})",)), choice)
    return _checked(Opened(OPENERS[name](choice), ()), choice)
