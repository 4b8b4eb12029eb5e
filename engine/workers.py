"""Segment tasks and the local worker processes that run them, each with its own backend session and threads."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.errors import BackendError
from engine.pipeline import PipelineOptions

_BACKENDS: dict[tuple[str, str], Any] = {}  # this process's open backends: (backend, model choice) -> Backend
PR_SET_PDEATHSIG = 1  # prctl option: signal this process when its parent dies


@dataclass(frozen=True)
class SegmentTask:
    """One segment to upscale into one piece file."""

    job: int  # which input of the batch
    segment: int  # index in that input's plan
    options: PipelineOptions  # the whole run's options with output = the piece and window = the segment
    warmup: int  # warm-up frames at the segment's start (their state resets are not reported)


@dataclass(frozen=True)
class SegmentResult:
    """What a worker sends back."""

    job: int  # which input of the batch
    segment: int  # index in that input's plan
    frames: int  # frames encoded
    corrupt: int  # corrupt packets/frames met while decoding (warm-up included)
    resets: int  # state resets inside the kept frames
    backend: str  # backend that ran, e.g. onnxruntime-cpu
    model: str  # model name from the weights
    wall_s: float  # seconds the segment took in the worker
    data: bytes | None = None  # the piece itself when it travels back through Ray's object store


def piece_options(opts: PipelineOptions, piece: Path) -> PipelineOptions:
    """Options for a piece: video only (streams are copied once at the join), written over any stale piece."""
    enc = replace(opts.encode, audio=False, subtitles=False, overwrite=True)
    return replace(opts, output=piece, encode=enc)


def _backend(opts: PipelineOptions) -> Any:
    """This process's backend for ``opts``: the graph of the input's sample depth (uint8 or uint16 planes)."""
    from engine.backends.select import open_backend
    from engine.decode import Source
    from engine.input_model import input_choice

    with Source(opts.input) as src:
        choice = input_choice(opts.model, src.info, opts.encode.pix_fmt)
    key = (opts.backend, repr(choice))
    if key not in _BACKENDS:
        _BACKENDS[key] = open_backend(opts.backend, choice).backend
    return _BACKENDS[key]


def run_segment(task: SegmentTask) -> SegmentResult:
    """Upscale one segment with this process's backend session; the piece is renamed into place when complete."""
    from engine.pipeline import run

    s = run(task.options, backend=_backend(task.options))
    resets = sum(1 for f in s.reset_frames if f > task.warmup)
    return SegmentResult(job=task.job, segment=task.segment, frames=s.frames_in, corrupt=s.corrupt, resets=resets,
                         backend=s.backend, model=s.model, wall_s=s.wall_s)


def thread_budget(workers: int) -> int:
    """Inference threads per worker: the cores shared out evenly, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int) -> None:
    os.environ["VSR_ORT_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and ends the workers
    if sys.platform.startswith("linux"):  # die with the driver even when it is SIGKILLed
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_local(tasks: Iterable[SegmentTask], workers: int) -> Iterator[SegmentResult]:
    """Run ``tasks`` on ``workers`` processes; yields results as they finish, raises the first failure."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    tasks = list(tasks)
    if not tasks:
        return
    ctx = multiprocessing.get_context("spawn")  # no inherited threads or open files
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                               initargs=(thread_budget(workers),))
    pending = {pool.submit(run_segment, t) for t in tasks}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    yield future.result()
                except BrokenProcessPool:
                    raise BackendError("a worker process died (out of memory or killed); re-run to resume") from None
    finally:
        if pending:  # an error or Ctrl-C: end the running segments now (no public API for it before Python 3.14)
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

