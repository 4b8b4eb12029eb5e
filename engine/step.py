"""Stage 3: the recurrent step with explicit hidden state, reset at scene cuts and size changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.backends.base import Backend
from engine.flow import MotionEstimator


def step(backend: Backend, feeds: Mapping[str, Any], state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One frame: ``(frame feeds, state) -> (frame outputs, next state)``; an empty ``state`` starts from zeros."""
    spec = backend.io_spec()
    out = backend.run({**feeds, **state})
    return {k: out[k] for k in spec.frame_outputs}, spec.next_state(out)


class Stepper:
    """Holds one stream's state between frames; the only place the state lives."""

    def __init__(self, backend: Backend, constants: Mapping[str, Any], bits: int = 8) -> None:
        self.backend = backend
        self.spec = backend.io_spec()
        self.constants = dict(constants)  # per-stream inputs (colour matrices, peak), the same every frame
        # graphs that align their history take the motion of each luma plane (``bits`` deep) against the last one
        self.motion = MotionEstimator(bits) if self.spec.motion else None
        self.state: dict[str, Any] = {}  # hidden_in* for the next step; empty = start from a zero state
        self.resets = 0  # state resets after the first frame (scene cuts, size changes)
        self.reset_at: list[int] = []  # frame indices where the state was reset
        self._shape: tuple[int, ...] | None = None  # frame shape the state belongs to
        self._frames = 0

    def __call__(self, planes: Mapping[str, Any], reset: bool = False) -> dict[str, Any]:
        """Upscale one frame's planes (``y``, ``uv``); ``reset`` drops the state first (new scene).
        Returns the frame outputs (``y_out``, ``uv_out``)."""
        return self.collect(self.submit(planes, reset))

    def collect(self, ticket: Any) -> dict[str, Any]:
        """The frame outputs of a :meth:`submit`, in submission order."""
        out = self.backend.collect(ticket)
        return {k: out[k] for k in self.spec.frame_outputs}

    def submit(self, planes: Mapping[str, Any], reset: bool = False) -> Any:
        """Queue one frame's step (the backend may still be running earlier ones); the state moves on at once."""
        shape = tuple(planes["y"].shape)
        fresh = not self._frames
        if self._frames and (reset or shape != self._shape):
            self.state = {}
            self.resets += 1
            self.reset_at.append(self._frames)
            fresh = True
        self._shape = shape
        self._frames += 1
        if self.motion is not None and "motion" not in planes:  # the pipeline estimates it on its decode thread
            planes = {**planes, "motion": self.motion(planes["y"], fresh)}
        ticket = self.backend.submit({**planes, **self.constants, **self.state})
        self.state = self.backend.state_after(ticket)
        return ticket
