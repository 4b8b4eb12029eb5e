"""The one small ABC every inference backend implements: io_spec, run, close."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

# Opaque per-backend hidden state: numpy arrays (onnxruntime) or device tensors (torch); never inspected outside.
Hidden = tuple[Any, ...]


@dataclass(frozen=True)
class IoSpec:
    """What one recurrent step graph consumes and produces."""

    model: str  # model name recorded with the weights ("rvsr-s", ...)
    scale: int  # output/input size ratio
    hidden: tuple[tuple[int, int], ...]  # per hidden tensor: (channels, spatial factor vs the LR frame)
    weights: str  # file the backend loaded (ONNX or safetensors)

    def hidden_shapes(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        """NCHW shape of each hidden tensor for an LR frame of ``h`` x ``w``."""
        return [(1, c, h * f, w * f) for c, f in self.hidden]


class Backend(ABC):
    """Runs one recurrent step: ``(lr, hidden) -> (sr, hidden)``; the caller owns the state."""

    name: str = "?"  # short name shown in the summary, e.g. "onnxruntime-cpu"

    @abstractmethod
    def io_spec(self) -> IoSpec:
        """Model name, scale and hidden-state layout of the loaded weights."""

    @abstractmethod
    def run(self, lr: np.ndarray, hidden: Hidden | None) -> tuple[np.ndarray, Hidden]:
        """One step.

        Parameters
        ----------
        lr : float32 (1, 3, H, W) RGB in [0, 1], C-contiguous.
        hidden : the state returned by the previous call, or None for a zero state (first frame, after a cut).

        Returns
        -------
        sr : float32 (1, 3, scale*H, scale*W) on the host (not clipped).
        hidden : the new state, to pass back unchanged on the next call.
        """

    @abstractmethod
    def close(self) -> None:
        """Release sessions and device memory; safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def spec_from_metadata(meta: Mapping[str, str], path: Path) -> IoSpec:
    """IoSpec from ONNX ``vsr.*`` metadata props (written by export.onnx.export_onnx)."""
    try:
        scale = int(meta["vsr.scale"])
        hidden = tuple((int(c), int(f)) for c, f in json.loads(meta["vsr.hidden"]))
    except (KeyError, ValueError, TypeError) as e:
        raise ModelError(
            f"{path} is not a vsr-upscale ONNX model (missing or bad vsr.scale/vsr.hidden metadata: {e}); "
            "export one with `vsr-export onnx`"
        ) from None
    return IoSpec(model=meta.get("vsr.model", "unknown"), scale=scale, hidden=hidden, weights=str(path))


def zeros_hidden(spec: IoSpec, lr: np.ndarray) -> Hidden:
    """Host zero state for ``lr`` (1, 3, H, W), in ``lr``'s float dtype."""
    h, w = lr.shape[-2:]
    return tuple(np.zeros(s, lr.dtype) for s in spec.hidden_shapes(h, w))
