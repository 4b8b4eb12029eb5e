"""Segment-parallel upscaling of one or more inputs: plan, run the segments on workers, journal, join, report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.concat import join
from engine.decode import Source
from engine.encode import resolve_codec, temp_path
from engine.errors import DecodeError, UsageError
from engine.input_model import input_choice, model_note
from engine.jobs import Journal, job_key, open_journal
from engine.pipeline import PipelineOptions
from engine.segments import SEGMENT_SECONDS, WARMUP_FRAMES, Plan, plan
from engine.workers import SegmentResult, SegmentTask, piece_options

Progress = Callable[[int, int], None]  # (frames done, frames expected)


@dataclass(frozen=True)
class ParallelOptions:
    """How segments are cut and where they run."""

    jobs: int = 1  # local worker processes
    seconds: float = SEGMENT_SECONDS  # target segment length (cut at the first keyframe at or after each multiple)
    warmup: int = WARMUP_FRAMES  # frames before each cut that warm the recurrent state
    ray: str | None = None  # Ray cluster address (HOST:PORT or "auto"); None = local processes
    ray_gpus: float = 0.0  # GPUs each Ray task reserves (1 = one worker per GPU)


@dataclass
class JobSummary:
    """One input's result; printed as JSON with --json."""

    input: str  # source path
    output: str  # written path
    frames_in: int = 0  # video frames upscaled (sum over segments)
    segments: int = 0  # segments in the plan
    segments_resumed: int = 0  # segments reused from an earlier, interrupted run
    keyframes: int = 0  # keyframes in the input
    corrupt: int = 0  # corrupt packets/frames met while decoding (warm-up regions may count twice)
    resets: int = 0  # hidden-state resets inside kept frames (scene cuts, size changes)
    backend: str = ""  # backend the workers ran
    model: str = ""  # model name from the weights
    copied_streams: int = 0  # audio/subtitle streams copied from the source at the join
    copied_packets: int = 0  # packets of those streams
    notes: list[str] = field(default_factory=list)  # adaptations, why the input could not be cut finer
    wall_s: float = 0.0  # seconds from planning to the renamed output
    fps: float = 0.0  # frames_in / wall_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class _Input:
    opts: PipelineOptions  # the input's own options (output path set)
    plan: Plan  # how it is cut
    journal: Journal  # its job folder
    rotation: int  # display rotation to write on the joined video
    summary: JobSummary  # filled as segments finish
    t0: float  # when its planning started


def _check(opts: PipelineOptions) -> None:
    if opts.encode.fps is not None:
        raise UsageError("--fps cannot be combined with --jobs/--ray/--segment-seconds yet; run it as a single pass")
    resolve_codec(opts.encode.codec, opts.output)
    temp_path(opts.output, opts.encode.overwrite, opts.input).unlink()  # every output check, before any work


def _prepare(opts: PipelineOptions, par: ParallelOptions) -> _Input:
    t0 = time.perf_counter()
    _check(opts)
    with Source(opts.input) as src:  # input errors surface here, with their own exit codes
        rotation = src.info.rotation
        model_notes = model_note(input_choice(opts.model, src.info, opts.encode.pix_fmt), src.info)
    cut = plan(opts.input, par.seconds, par.warmup)
    journal = open_journal(opts.output, job_key(opts, par.seconds, par.warmup))
    s = JobSummary(input=str(opts.input), output=str(opts.output), segments=len(cut.segments),
                   segments_resumed=journal.resumed, keyframes=cut.keyframes)
    s.notes += model_notes + ([cut.note] if cut.note else [])
    return _Input(opts, cut, journal, rotation, s, t0)


def _tasks(n: int, item: _Input) -> Iterator[SegmentTask]:
    for seg in item.plan.segments:
        if seg.index not in item.journal.done:
            piece = item.journal.piece(seg.index, item.opts.output.suffix)
            yield SegmentTask(job=n, segment=seg.index, warmup=seg.warmup,
                              options=replace(piece_options(item.opts, piece), window=seg.window))


def _finish(item: _Input) -> None:
    s, done = item.summary, item.journal.done
    pieces = [item.journal.piece(i, item.opts.output.suffix) for i in sorted(done) if done[i].frames]
    if not pieces:
        raise DecodeError(f"input {item.opts.input}: no frame could be decoded in any segment")
    joined = join(pieces, item.opts.input, item.opts.output, item.opts.encode, item.rotation)
    item.journal.remove()
    s.frames_in = sum(r.frames for r in done.values())
    s.corrupt = sum(r.corrupt for r in done.values())
    s.resets = sum(r.resets for r in done.values())
    first = done[min(done)]
    s.backend, s.model = first.backend, first.model
    s.copied_streams, s.copied_packets = joined.copied_streams, joined.copied_packets
    s.notes += joined.notes
    s.wall_s = time.perf_counter() - item.t0
    s.fps = s.frames_in / s.wall_s if s.wall_s else 0.0


def _store(item: _Input, result: SegmentResult) -> None:
    if result.data is not None:  # came through Ray's object store: write the piece here, atomically
        piece = item.journal.piece(result.segment, item.opts.output.suffix)
        tmp = piece.with_name(f".{piece.name}.vsr-tmp-ray{piece.suffix}")
        tmp.write_bytes(result.data)
        tmp.replace(piece)
        result = replace(result, data=None)
    item.journal.record(result)


def _runner(par: ParallelOptions) -> Callable[[list[SegmentTask]], Iterator[SegmentResult]]:
    if par.ray is not None:
        from engine.distributed import run_ray

        return lambda tasks: run_ray(tasks, par.ray or "auto", par.ray_gpus)
    from engine.workers import run_local

    return lambda tasks: run_local(tasks, par.jobs)


def run_many(inputs: list[PipelineOptions], par: ParallelOptions, progress: Progress | None = None) -> list[JobSummary]:
    """Upscale every input, its segments spread over the workers; each output appears only when complete.

    An interrupted run leaves each unfinished input's job folder; the same command then resumes it.
    """
    if par.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {par.jobs}")
    if par.ray is not None:  # every node opens the same paths
        inputs = [replace(o, input=o.input.resolve(), model=replace(o.model, weights=o.model.weights and
                                                                    o.model.weights.resolve())) for o in inputs]
    items: list[_Input] = []
    try:
        for opts in inputs:  # one at a time: a failure still closes the journals opened before it
            items.append(_prepare(opts, par))
        tasks = [t for n, item in enumerate(items) for t in _tasks(n, item)]
        total = sum(seg.frames for item in items for seg in item.plan.segments)
        done_frames = sum(r.frames for item in items for r in item.journal.done.values())
        pending = {n: sum(1 for t in tasks if t.job == n) for n in range(len(items))}
        for n, item in enumerate(items):
            if not pending[n]:
                _finish(item)
        for result in _runner(par)(tasks):
            item = items[result.job]
            _store(item, result)
            done_frames += result.frames
            if progress:
                progress(done_frames, total)
            pending[result.job] -= 1
            if not pending[result.job]:
                _finish(item)
    finally:
        for item in items:
            item.journal.close()
    return [item.summary for item in items]


def report_lines(summaries: list[JobSummary]) -> list[str]:
    """Notes and one summary line per input, for stderr."""
    lines = []
    for s in summaries:
        lines += [f"note: {s.input}: {note}" for note in s.notes]
        lines.append(f"{s.frames_in} frames in {s.segments} segments ({s.segments_resumed} resumed) in "
                     f"{s.wall_s:.1f} s ({s.fps:.1f} fps); backend {s.backend}; model {s.model}; wrote {s.output}")
    return lines


def report_json(summaries: list[JobSummary], batch: bool) -> dict[str, Any]:
    """The --json summary: one input's dict, or the inputs and their totals for a batch."""
    if not batch:
        return summaries[0].to_dict()
    return {"inputs": [s.to_dict() for s in summaries], "segments": sum(s.segments for s in summaries),
            "segments_resumed": sum(s.segments_resumed for s in summaries),
            "frames_in": sum(s.frames_in for s in summaries)}
