"""The one small ABC every inference backend implements: io_spec, run, close; named arrays in and out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.graph import VIDEO, GraphSpec

# Named arrays crossing the backend boundary: numpy on the host, or device arrays (DLPack / the backend's own
# device values for the hidden state, which callers pass back unchanged and never inspect).
Arrays = Mapping[str, Any]


class Backend(ABC):
    """Runs one recurrent step of a graph of the engine/graph.py contract, video or G-buffer alike.

    The caller owns the state: it feeds ``hidden_in*`` from the previous call's ``hidden_out*``
    (``GraphSpec.next_state``) or leaves them out for a zero state (first frame, after a cut).
    """

    name: str = "?"  # short name shown in the summary, e.g. "onnxruntime-cpu"

    @abstractmethod
    def io_spec(self) -> GraphSpec:
        """Kind, model, scale, dtypes and hidden layout of the loaded graph, validated against the graph."""

    @abstractmethod
    def run(self, feeds: Arrays) -> dict[str, Any]:
        """One step.

        Parameters
        ----------
        feeds : every frame input of ``io_spec().frame_inputs`` (video: integer ``y``/``uv`` planes and the
            colour constants; G-buffer: colour, depth, motion, normals, albedo, jitter), plus ``hidden_in*``
            from the previous step's ``hidden_out*`` (all of them or none: none = zero state).

        Returns
        -------
        Every name of ``io_spec().outputs``: frame outputs (video: ``y_out``/``uv_out`` integer planes;
        G-buffer: ``sr``) and ``hidden_out*``. Frame outputs are host numpy arrays unless the backend was
        given device inputs; hidden outputs stay wherever the backend keeps them.
        """

    frames_in_flight: int = 1  # steps a caller may submit before collecting the oldest (TensorRT: 3)

    def submit(self, feeds: Arrays) -> Any:
        """Queue one step (same feeds as :meth:`run`); returns a ticket for :meth:`collect`. Backends that do not
        overlap steps run it here, and the ticket is the finished output."""
        return self.run(feeds)

    def collect(self, ticket: Any) -> dict[str, Any]:
        """Wait for a submitted step: what :meth:`run` would have returned."""
        return ticket

    def state_after(self, ticket: Any) -> dict[str, Any]:
        """The ``hidden_in*`` feeds that continue from a submitted step, known before it is collected."""
        return self.io_spec().next_state(ticket)

    def prepare(self, h: int, w: int) -> None:
        """Slow per-size work (TensorRT engine builds) before the first ``h`` x ``w`` frame; most need none."""

    @abstractmethod
    def close(self) -> None:
        """Release sessions and device memory; safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_feeds(spec: GraphSpec, h: int = 16, w: int = 16) -> dict[str, np.ndarray]:
    """Zero frame inputs of an ``h`` x ``w`` frame (4:2:0 chroma for video graphs): enough to learn output shapes."""
    if spec.kind == VIDEO:
        feeds = {"y": np.zeros((1, 1, h, w), spec.frame_dtype),
                 "uv": np.zeros((1, 2, h // 2, w // 2), spec.frame_dtype),
                 "to_rgb": np.zeros((3, 4), np.float32), "from_rgb": np.zeros((3, 4), np.float32),
                 "peak": np.ones(1, np.float32)}
        return feeds | ({"motion": np.zeros((1, 2, h, w), np.int32)} if spec.motion else {})
    feeds = {k: np.zeros((1, c, h, w), spec.frame_dtype if k == "lr" else np.float32)
             for k, c in (("lr", 3), ("depth", 1), ("motion", 2), ("normals", 3), ("albedo", 3))}
    return {**feeds, "jitter": np.zeros((1, 2), np.float32)}
