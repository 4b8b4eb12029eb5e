"""Memory guard: estimate a run's peak memory from the first frame's size and refuse what cannot fit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ResourceError

GIB = 1 << 30
# Model activations per LR pixel, per float of (input + hidden state + output) that the step carries: measured peak
# RSS of one onnxruntime CPU step is 3.4-5.3x those floats (rvsr-s x2: 740-840 B/px for 40; rvsr-m x4: 1.8 kB for 131).
ACTIVATION_FACTOR = 5
FRAMES_IN_FLIGHT = 7  # per lane: queue_size (4) + the array being made + the one being used + a quantised copy
ENCODER_FRAMES = 48  # output frames x264/x265 keep (lookahead 40 + references), as 8-bit 4:2:0


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of a run at one frame size, in bytes, by part."""

    model: int  # activations of one recurrent step plus its hidden state
    frames: int  # LR and SR float arrays queued between the stages
    encoder: int  # frames held by the encoder (lookahead and references)

    @property
    def total(self) -> int:
        """Sum of the parts."""
        return self.model + self.frames + self.encoder


def estimate(width: int, height: int, scale: int, hidden_floats: int) -> MemoryEstimate:
    """Peak memory for ``width`` x ``height`` LR frames; ``hidden_floats`` = state floats per LR pixel."""
    px = width * height
    step_floats = 3 + hidden_floats + 3 * scale * scale  # lr + state + sr, per LR pixel
    return MemoryEstimate(model=px * 4 * step_floats * ACTIVATION_FACTOR,
                          frames=px * 4 * 3 * (1 + scale * scale) * FRAMES_IN_FLIGHT,
                          encoder=int(px * scale * scale * 1.5) * ENCODER_FRAMES)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    """What the cgroup v2 memory limit of this process still allows, if it has one."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def _rlimit_left() -> int | None:
    """What RLIMIT_AS / RLIMIT_DATA (ulimit -v / -d) leave, counted against this process's current size."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    left = []
    try:
        size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        size = 0
    for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            left.append(soft - size)
    return min(left) if left else None


def available() -> int | None:
    """Bytes this process can still use: the least of free RAM, its cgroup limit and its rlimits; None if unknown."""
    known = [v for v in (_meminfo_available(), _cgroup_left(), _rlimit_left()) if v is not None]
    return max(0, min(known)) if known else None


def check(width: int, height: int, scale: int, hidden_floats: int, limit_gib: float | None) -> None:
    """Raise ResourceError when the estimate exceeds ``limit_gib`` (None = what is available; 0 = never)."""
    if limit_gib == 0:
        return
    need = estimate(width, height, scale, hidden_floats).total
    have = int(limit_gib * GIB) if limit_gib is not None else available()
    if have is None or need <= have:
        return
    where = f"--max-memory {limit_gib:g}" if limit_gib is not None else "free memory"
    raise ResourceError(f"{width}x{height} frames at x{scale} need about {need / GIB:.1f} GiB, more than the "
                        f"{have / GIB:.1f} GiB of {where}; downscale the input, or pass --max-memory GIB "
                        f"(0 = no check) to try anyway")
