"""Output timing: source pts unchanged, or constant-rate output by timestamp-based repeat/drop (--fps)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any


def parse_rate(text: str) -> Fraction:
    """'30', '29.97', '30000/1001' -> Fraction; decimals close to NTSC rates snap to N*1000/1001."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"not a frame rate: {text!r} (e.g. 30, 29.97, 30000/1001)") from None
    if rate <= 0 or rate > 1000:
        raise ValueError(f"frame rate must be in (0, 1000], got {text}")
    ntsc = Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)
    if "/" not in text and rate.denominator != 1 and ntsc and abs(rate - ntsc) < Fraction(1, 100):
        return ntsc
    return rate


class Retimer:
    """Assigns output pts (in ``out_time_base``, by default the source's) to each upscaled frame.

    Without a rate every frame keeps its source pts (VFR stays exact). With a rate, output slot n sits at
    ``start + n / rate``; source frame i owns the slots from ``round((t_i - start) * rate)`` up to the next frame's
    slot, so frames are repeated to fill gaps and dropped when two land in one slot. One frame is held back to
    know how many slots it owns.
    """

    def __init__(self, time_base: Fraction, start_pts: int, rate: Fraction | None,
                 out_time_base: Fraction | None = None) -> None:
        self.tb, self.start, self.rate = time_base, start_pts, rate
        self.out_tb = out_time_base or time_base  # unit of the pts handed out
        self._held: tuple[Any, int] | None = None  # (payload, first slot) waiting for the next frame
        self._next_slot = 0  # first output slot not yet emitted
        self.dropped = 0  # source frames that got no slot
        self.repeated = 0  # extra copies emitted to fill gaps

    def _slot(self, pts: int) -> int:
        assert self.rate is not None
        return max(0, round((pts - self.start) * self.tb * self.rate))

    def _slot_pts(self, n: int) -> int:
        assert self.rate is not None
        first = round(self.start * self.tb / self.out_tb)  # rounded once, so every slot keeps its own tick
        return first + round(Fraction(n) / self.rate / self.out_tb)

    def _release(self, until: int) -> Iterator[tuple[Any, int]]:
        if self._held is None:
            return
        payload, _ = self._held
        n = until - self._next_slot
        if n <= 0:
            self.dropped += 1
        self.repeated += max(0, n - 1)
        for slot in range(self._next_slot, until):
            yield payload, self._slot_pts(slot)
        self._next_slot = max(self._next_slot, until)

    def push(self, payload: Any, pts: int) -> Iterator[tuple[Any, int]]:
        """Frame with source ``pts`` arrives; yields ``(payload, out_pts)`` pairs ready to encode."""
        if self.rate is None:
            yield payload, pts if self.out_tb == self.tb else round(pts * self.tb / self.out_tb)
            return
        slot = self._slot(pts)
        yield from self._release(slot)
        self._held = (payload, slot)

    def flush(self, end_pts: int) -> Iterator[tuple[Any, int]]:
        """End of stream at ``end_pts`` (last pts + its duration): the held frame fills the remaining slots."""
        if self.rate is None or self._held is None:
            return
        yield from self._release(max(self._slot(end_pts), self._next_slot + 1))
        self._held = None
