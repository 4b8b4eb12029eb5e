"""Cutting a video at keyframes into segments, each with the warm-up frames that prime its recurrent state."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from engine.decode import Window, open_container, pick_video_stream
from engine.errors import UsageError

# Warm-up frames before each cut (benchmarks/segments_bench.py warmup; see RESULTS.md): the BI models' state fades
# 6-7 dB a frame (K = 6 gave >= 67 dB), but the real-world models' blend along the motion keeps 0.9 of its history,
# about 0.9 dB a frame; K = 12 keeps their first kept frame >= 53.7 dB from the single pass (45 dB promised)
WARMUP_FRAMES = 12
# Default segment length in seconds: a segment's measured extra cost is its K warm-up steps, 4.0-5.0 % of a single
# pass at 30-24 fps (RESULTS.md), and a film still has hundreds of segments to balance and resume by
SEGMENT_SECONDS = 10.0


@dataclass(frozen=True)
class Segment:
    """One piece of the plan: a Window of the input plus its place in the output."""

    index: int  # position in the plan, from 0
    window: Window  # what the worker decodes, warms on and keeps
    frames: int  # frames kept (encoded) by this segment
    warmup: int  # frames stepped before the first kept one (0 for the first segment)


@dataclass(frozen=True)
class Plan:
    """How one input is cut."""

    segments: tuple[Segment, ...]  # in presentation order; their kept ranges tile the video
    frames: int  # video frames in the input (packets with a timestamp)
    keyframes: int  # keyframes found
    time_base: Fraction  # unit of every pts in the plan
    note: str = ""  # why the input could not be cut finer, if it could not


def scan(path: Path) -> tuple[list[int], list[int], Fraction]:
    """Presentation times of every video packet and of the keyframes, sorted, without decoding."""
    container = open_container(path)
    try:
        stream = pick_video_stream(container, path)
        times: list[int] = []
        keys: list[int] = []
        for packet in container.demux(stream):
            if packet.pts is None:
                if packet.size:
                    return [], [], Fraction(stream.time_base)  # no timestamps: cannot cut by time
                continue
            times.append(int(packet.pts))
            if packet.is_keyframe:
                keys.append(int(packet.pts))
        return sorted(set(times)), sorted(set(keys)), Fraction(stream.time_base)
    finally:
        container.close()


def cut_points(times: list[int], keys: list[int], tb: Fraction, seconds: float) -> list[int]:
    """Start pts of each segment: the first frame, then the first keyframe at or after each multiple of ``seconds``."""
    if not times:
        return []
    start = times[0]
    step = Fraction(seconds) / tb  # segment length in pts units
    cuts = [start]
    for key in keys:
        if key <= cuts[-1] or key > times[-1]:
            continue
        if key >= start + step * math.ceil((cuts[-1] - start) / step + Fraction(1, 10**9)):
            cuts.append(key)
    return cuts


def warm_window(times: list[int], keys: list[int], start: int, end: int | None, warmup: int) -> tuple[Window, int]:
    """Window of a segment starting at ``start``: ``warmup`` frames before it, sought from the keyframe before them."""
    i = bisect.bisect_left(times, start)
    w = max(0, i - warmup)
    warm_pts = times[w]
    if w == 0:
        return Window(warm_pts=warm_pts, start_pts=start, end_pts=end, seek_pts=None), i
    k = bisect.bisect_right(keys, warm_pts) - 1
    seek = keys[k] if k >= 0 and keys[k] > times[0] else None  # a seek to the first frame is a plain start
    return Window(warm_pts=warm_pts, start_pts=start, end_pts=end, seek_pts=seek), i - w


def plan(path: Path, seconds: float = SEGMENT_SECONDS, warmup: int = WARMUP_FRAMES) -> Plan:
    """Cut ``path`` into segments of about ``seconds`` at keyframes, each warmed on ``warmup`` frames."""
    if not seconds > 0:
        raise UsageError(f"--segment-seconds must be > 0, got {seconds}")
    times, keys, tb = scan(path)
    if not times:
        whole = Segment(0, Window(warm_pts=-(2**62), start_pts=-(2**62)), 0, 0)
        return Plan((whole,), 0, 0, tb, note="video packets carry no timestamps: one segment")
    cuts = cut_points(times, keys, tb, seconds)
    segments = []
    for n, start in enumerate(cuts):
        end = cuts[n + 1] if n + 1 < len(cuts) else None
        window, warm = warm_window(times, keys, start, end, warmup)
        kept = (bisect.bisect_left(times, end) if end is not None else len(times)) - bisect.bisect_left(times, start)
        segments.append(Segment(n, window, kept, warm))
    note = "" if len(cuts) > 1 or len(keys) > 1 else "no keyframe after the first: one segment"
    return Plan(tuple(segments), len(times), len(keys), tb, note=note)
