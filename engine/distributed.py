"""Segments as tasks on an existing Ray cluster; pieces come back through the object store and are joined here."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.errors import BackendError, UsageError
from engine.workers import SegmentResult, SegmentTask, run_segment

TASK_CPUS = 1  # CPUs Ray reserves per segment task; the task's inference threads match it
CONNECT_S = 60.0  # seconds to keep trying to join a cluster that is still starting
PIECE_LIMIT = 2 << 30  # bytes: a piece larger than this is refused (object store traffic); cut shorter segments


def _segment_on_node(task: SegmentTask, threads: int) -> SegmentResult:
    """Runs inside a Ray worker: the piece is written to the node's temp folder and returned as bytes."""
    os.environ["VSR_ORT_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="vsr-piece-") as d:
        piece = Path(d) / task.options.output.name
        result = run_segment(replace(task, options=replace(task.options, output=piece)))
        size = piece.stat().st_size
        if size > PIECE_LIMIT:
            raise UsageError(f"segment {task.segment} encoded to {size >> 20} MiB, over the {PIECE_LIMIT >> 20} MiB "
                             "a piece may take through Ray's object store; use a smaller --segment-seconds")
        return replace(result, data=piece.read_bytes())


def _connect(address: str) -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage statistics leave this machine
    try:
        import ray
    except ImportError:
        raise BackendError("--ray needs Ray: pip install 'vsr-upscale[ray]'") from None
    deadline = time.monotonic() + CONNECT_S
    while True:
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            return ray
        except (ConnectionError, RuntimeError, ValueError) as e:
            if time.monotonic() > deadline:  # a cluster that is still starting gets CONNECT_S to come up
                raise BackendError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
            time.sleep(2)


def run_ray(tasks: list[SegmentTask], address: str, gpus: float = 0.0) -> Iterator[SegmentResult]:
    """Run ``tasks`` on the Ray cluster at ``address``; yields results (piece bytes in ``data``) as they finish.

    ``gpus`` is what each task reserves: 1 gives one worker per GPU (Ray sets CUDA_VISIBLE_DEVICES for it).
    """
    if not tasks:
        return
    ray = _connect(address)
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=TASK_CPUS, num_gpus=gpus, max_retries=0)(_segment_on_node)
        pending = [remote.remote(t, TASK_CPUS) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:  # the worker's own exception (a VsrError keeps its exit code)
                cause = getattr(e, "cause", None)
                raise (cause if isinstance(cause, Exception) else BackendError(str(e).splitlines()[0])) from None
            yield result
    finally:
        for ref in pending:  # on error or Ctrl-C: stop what is still running on the cluster
            ray.cancel(ref, force=True)
        ray.shutdown()
