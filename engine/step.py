"""Stage 3: the recurrent step with explicit hidden state, reset at scene cuts and size changes."""

from __future__ import annotations

import numpy as np

from engine.backends.base import Backend, Hidden


def step(backend: Backend, lr: np.ndarray, hidden: Hidden | None) -> tuple[np.ndarray, Hidden]:
    """One frame: ``(lr, hidden) -> (sr, hidden)``; ``hidden=None`` starts from a zero state."""
    return backend.run(lr, hidden)


class Stepper:
    """Holds one stream's state between frames; the only place the state lives."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.hidden: Hidden | None = None  # what the previous step returned; None = start fresh
        self.resets = 0  # state resets after the first frame (scene cuts, size changes)
        self.reset_at: list[int] = []  # frame indices where the state was reset
        self._shape: tuple[int, ...] | None = None  # LR shape the state belongs to
        self._frames = 0

    def __call__(self, lr: np.ndarray, reset: bool = False) -> np.ndarray:
        """Upscale ``lr`` (1, 3, H, W); ``reset`` drops the state first (new scene)."""
        if self._frames and (reset or lr.shape != self._shape):
            self.hidden = None
            self.resets += 1
            self.reset_at.append(self._frames)
        self._shape = lr.shape
        self._frames += 1
        sr, self.hidden = step(self.backend, lr, self.hidden)
        return sr
