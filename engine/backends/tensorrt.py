"""TensorRT backend placeholder: probes the runtime and reports why it cannot run yet."""

from __future__ import annotations

import importlib.util

from engine.errors import BackendError

MODULES = ("tensorrt", "tensorrt_rtx")  # Python packages of TensorRT and TensorRT-RTX, probed in order


def unavailable_reason() -> str:
    """Why the TensorRT backend cannot be used on this machine (it always can't, until its issue lands)."""
    found = [m for m in MODULES if importlib.util.find_spec(m) is not None]
    if not found:
        return f"no Python module {' or '.join(repr(m) for m in MODULES)} installed"
    return f"{found[0]} is installed but the TensorRT engine builder is not implemented yet"


def open_tensorrt(*_args: object, **_kwargs: object) -> None:
    """Always raises BackendError with the reason; kept so --backend tensorrt fails with a clear message."""
    raise BackendError(f"tensorrt backend not available: {unavailable_reason()}")
