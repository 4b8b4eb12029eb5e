"""`vsr-upscale`: the command line; parses options, runs the pipeline, maps errors to exit codes."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from engine.errors import ResourceError, UsageError, VsrError

PROG = "vsr-upscale"
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGHUP gives 129, SIGTERM 143; no output file is left in any case


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one UsageError line (exit 2) instead of usage text; used by every CLI."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (cheap: no engine imports)."""
    p = OneLineParser(prog=PROG, description="Upscale a video with a recurrent super-resolution model; audio and "
                "subtitles are copied untouched, timestamps and colour tags are kept.",
                epilog="Exit codes: 0 ok, 1 internal, 2 usage, 3 input missing, 4 not a decodable video, 5 output, "
                "6 model, 7 backend, 8 encoder, 10 out of memory, 129/130/143 hang-up/interrupted/terminated. "
                "See docs/cli.md.")
    p.add_argument("input", type=Path, nargs="+", metavar="INPUT",
                   help="video file (anything FFmpeg decodes); several files or a folder upscale them all into -o DIR")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT",
                   help="output file; the extension picks the container (.mp4, .mkv, .mov, .webm); a folder for "
                   "several inputs")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="upscaling factor (default 2, or the one of --weights)")
    p.add_argument("--model", metavar="NAME",
                   help="shipped model (default by input: lossy video gets the real-world rvsr-s-real x2 and x3 / "
                   "rvsr-m-real x4, lossless video rvsr-s-clean x2 / rvsr-m-clean x4, the BI-trained weights; also "
                   "rvsr-s, rvsr-m (BI, no blend) and rvsr-sa for x2)")
    p.add_argument("--weights", type=Path, metavar="FILE", help=".onnx (onnxruntime) or .safetensors (torch) weights")
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch", "tensorrt"),
                   help="inference backend (default auto: tensorrt, onnxruntime-cuda, torch-cuda, onnxruntime-cpu)")
    p.add_argument("--hwaccel", default="auto", choices=("auto", "none", "cuda"),
                   help="hardware video (default auto: NVDEC decoding and NVENC encoding where they open, else the "
                   "CPU; none: CPU only; cuda: NVDEC or an error); the summary says which and why")
    p.add_argument("--codec", metavar="C", help="video encoder (default libx264, h264_nvenc where it opens; "
                   "libvpx-vp9 for .webm; ffv1 = lossless)")
    p.add_argument("--crf", type=int, metavar="N", help="quality, lower is better (x264 default 18; 0 = lossless)")
    p.add_argument("--preset", metavar="P", help="encoder speed preset (x264 default medium)")
    p.add_argument("--pix-fmt", metavar="F", help="output pixel format (default yuv420p, yuv420p10le for 10-bit input, "
                   "yuv444p when a side is odd; gbrp with ffv1 = lossless RGB)")
    p.add_argument("--fps", metavar="F", help="constant output frame rate (repeat/drop by timestamp), e.g. 30 or 30000/1001")
    p.add_argument("--max-memory", type=float, metavar="GIB",
                   help="memory the run may use; larger frame sizes are refused before starting "
                        "(default: the free memory; 0 = no check)")
    p.add_argument("-y", "--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--no-audio", action="store_true", help="drop audio streams (subtitles are still copied)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, notes or summary line on stderr")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    g = p.add_argument_group("segments (resumable; see docs/distributed.md)")
    g.add_argument("--jobs", type=int, metavar="N", help="cut at keyframes and upscale the segments in N worker "
                   "processes; re-running after a crash resumes")
    g.add_argument("--segment-seconds", type=float, metavar="S", help="segment length: cut at the first keyframe at or "
                   "after each multiple of S seconds (default 10)")
    g.add_argument("--ray", metavar="ADDRESS", help="run the segments on a Ray cluster (HOST:PORT of `ray start --head`"
                   ", or auto); the input path must be readable on every node")
    g.add_argument("--ray-gpus", type=float, default=0.0, metavar="G", help="GPUs each Ray task reserves (1 = one "
                   "worker per GPU; default 0)")
    return p


class ProgressBar:
    """Single-line progress with fps and ETA on a terminal (stderr); silent elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        fps = done / max(now - self.t0, 1e-9)
        if total and done <= total:
            width = 24
            bar = "#" * (width * done // total) + "-" * (width - width * done // total)
            eta = int((total - done) / fps) if fps else 0
            text = f"{100 * done // total:3d}% [{bar}] {done}/{total}  {fps:5.1f} fps  ETA {eta // 60}:{eta % 60:02d}"
        else:
            text = f"{done} frames  {fps:5.1f} fps"
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        """Erase the bar line."""
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def summary_line(s: Any) -> str:
    """The one-line human summary."""
    (w, h), (ow, oh) = s.size_in, s.size_out
    frames = f"{s.frames_in} frames" + (f" -> {s.frames_out}" if s.frames_out != s.frames_in else "")
    extra = [f"{s.resets} state reset{'s' * (s.resets != 1)}"]
    if s.corrupt:
        extra.append(f"{s.corrupt} corrupt packet(s) skipped")
    return (f"{PROG}: {frames} {w}x{h} -> {ow}x{oh} in {s.wall_s:.1f} s ({s.fps:.1f} fps); backend {s.backend}; "
            f"model {s.model} x{s.scale}; {s.codec} {s.pix_fmt}; {', '.join(extra)}; wrote {s.output}")


def _options(args: argparse.Namespace, source: Path | None = None, output: Path | None = None) -> Any:
    from engine.backends.select import ModelChoice
    from engine.encode import EncodeOptions
    from engine.pipeline import PipelineOptions
    from engine.retime import parse_rate

    try:
        fps = parse_rate(args.fps) if args.fps else None
    except ValueError as e:
        raise UsageError(f"--fps: {e}") from None
    if args.crf is not None and not 0 <= args.crf <= 63:
        raise UsageError(f"--crf must be between 0 and 63, got {args.crf}")
    if args.max_memory is not None and not 0 <= args.max_memory < float("inf"):
        raise UsageError(f"--max-memory is in GiB, >= 0 (0 = no check), got {args.max_memory}")
    enc = EncodeOptions(codec=args.codec, crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt, fps=fps,
                        audio=not args.no_audio, overwrite=args.overwrite)
    model = ModelChoice(model=args.model, scale=args.scale, weights=args.weights)
    return PipelineOptions(input=source or args.input[0], output=output or args.output, model=model,
                           backend=args.backend, encode=enc, max_memory=args.max_memory, hwaccel=args.hwaccel)


def _segmented(args: argparse.Namespace) -> bool:
    return len(args.input) > 1 or any(x is not None for x in (args.jobs, args.segment_seconds, args.ray)) or \
        (args.input[0].is_dir() and args.output.is_dir())  # a folder into a folder is a batch


def _run_segmented(args: argparse.Namespace, bar: ProgressBar) -> int:
    import json

    from engine.batch import expand_inputs
    from engine.parallel import ParallelOptions, report_json, report_lines, run_many
    from engine.segments import SEGMENT_SECONDS

    pairs = expand_inputs(args.input, args.output)
    par = ParallelOptions(jobs=args.jobs or 1, seconds=args.segment_seconds or SEGMENT_SECONDS, ray=args.ray,
                          ray_gpus=args.ray_gpus)
    try:
        summaries = run_many([_options(args, i, o) for i, o in pairs], par, progress=bar)
    finally:
        bar.close()
    if not args.quiet:
        for line in report_lines(summaries):
            print(f"{PROG}: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(report_json(summaries, batch=len(pairs) > 1 or pairs[0][1] != args.output), indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    from engine.pipeline import run

    if _segmented(args):
        return _run_segmented(args, ProgressBar(enabled=not args.quiet and sys.stderr.isatty()))
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        summary = run(_options(args), progress=bar)
    finally:
        bar.close()
    if not args.quiet:
        if len(summary.backend_notes) > 1:
            print(f"{PROG}: note: backend {summary.backend} ({'; '.join(summary.backend_notes[1:])})", file=sys.stderr)
        notes = summary.video_notes * summary.video_gpu + summary.notes  # CPU-only machines: as before
        for note in notes:
            print(f"{PROG}: note: {note}", file=sys.stderr)
        print(summary_line(summary), file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    return 0


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signum)  # same cleanup path as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:  # under nohup it stays ignored
            signal.signal(signal.SIGHUP, _on_sigterm)  # terminal closed / ssh dropped: same cleanup
    except (ValueError, AttributeError):
        pass  # not the main thread (embedded use), or no SIGHUP (Windows): leave signals alone
    try:
        args = build_parser().parse_args(argv)
        return _run(args)
    except SystemExit as e:  # --help / --version from argparse
        return int(e.code or 0)
    except VsrError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr)
        return 128 + int(e.args[0]) if e.args and isinstance(e.args[0], int) else EXIT_INTERRUPTED
    except MemoryError:
        print(f"{PROG}: error: out of memory; try a smaller input or another machine (no output written)",
              file=sys.stderr)
        return ResourceError.exit_code
    except Exception as e:  # a bug: still one line unless asked for the traceback
        if os.environ.get("VSR_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(e).__name__}: {e} (set VSR_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
