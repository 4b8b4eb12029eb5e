"""`vsr-bench`: benchmark commands (``quality``, ``steady-floor``, ``latency``, ``pipeline``, ``hostpath``, ``report``,
``gpu``), in COMMANDS.

Each command registers its flags with an ``add_<name>(subparsers)`` function listed in
``COMMANDS`` and runs through the ``run`` default it sets; heavy imports (torch, cv2, the
harness itself) happen inside that ``run`` so ``vsr-bench --help`` stays instant. Errors of the
``engine.errors.VsrError`` family become one ``vsr-bench: error: ...`` line on stderr and the
error's exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import BackendError, UsageError, VsrError

QUALITY_METHODS = "bicubic,lanczos,framewise,recurrent"  # the harness's METHODS, kept here to avoid importing it
# benchmarks.latency.BACKENDS (= engine.backends.select.OPENERS keys), kept here so --help imports nothing heavy
LATENCY_BACKENDS = "tensorrt,onnxruntime-cuda,onnxruntime-cpu,torch-cuda,torch-cpu"


def _emit(md: str, json_out: Path | None) -> int:
    """Print a command's markdown table; say where its JSON and markdown went."""
    print(md)
    if json_out is not None:
        print(f"wrote {json_out}, {json_out.with_suffix('.md')}", file=sys.stderr)
    return 0


def _csv(text: str) -> tuple[str, ...]:
    """Comma list flag -> tuple of non-empty items."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def run_quality(args: argparse.Namespace) -> int:
    """``vsr-bench quality``: score bicubic and a model on a folder of clips."""
    import cv2

    from benchmarks.quality_report import QualityConfig, output_paths, run_quality as run

    cv2.setNumThreads(1)  # the machine's other cores belong to training jobs
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # bicubic-only runs need no torch
        pass
    cfg = QualityConfig(dataset=args.dataset, scale=args.scale, model=args.model, weights=args.weights,
                        methods=args.methods, compare=tuple(args.compare or ()), degrades=args.degrade, downscale=args.downscale, vmaf=args.vmaf,
                        max_frames=args.max_frames, clips=args.clips, json_out=args.json)
    _, table = run(cfg)
    print(table)
    if args.json is not None:
        print("wrote " + ", ".join(str(p) for p in output_paths(args.json)), file=sys.stderr)
    return 0


def add_quality(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench quality``."""
    p = sub.add_parser(
        "quality", help="Y-PSNR / Y-SSIM / warping error / flicker on BI- or codec-degraded clips (e.g. Vid4)",
        description="Score bicubic, the model run frame by frame and the model run recurrently on every "
        "video of --dataset, LR made by MATLAB bicubic downscaling (BI), BasicSR metric convention.",
    )
    p.add_argument("--dataset", required=True, type=Path, help="folder of video files, one clip each")
    p.add_argument("--scale", required=True, type=int, help="SR factor: 2, 3 or 4")
    p.add_argument("--model", help="model name; default: the weights' metadata or the shipped model for --scale")
    p.add_argument("--weights", type=Path, help=".safetensors (with model/scale metadata) or .onnx file")
    p.add_argument("--methods", type=_csv, default=_csv(QUALITY_METHODS),
                   help=f"comma list out of {QUALITY_METHODS} (default all; bicubic and lanczos need no model); "
                   "framewise = the model with its state reset every frame")
    p.add_argument("--degrade", type=_csv, default=("bi",), metavar="LIST",
                   help="LR recipes, comma list: bi (plain downscale) and CODEC:CRF with CODEC x264, x265 or av1, "
                   "e.g. bi,x264:28,x265:28,av1:45 (the codec round trip runs on the whole LR clip)")
    p.add_argument("--downscale", default="bicubic", choices=("bicubic", "lanczos"),
                   help="downscale before any codec: MATLAB bicubic (BasicSR's BI) or FFmpeg Lanczos")
    p.add_argument("--vmaf", action="store_true", help="also score VMAF (vmaf_v0.6.1) per clip")
    p.add_argument("--compare", type=Path, action="append", metavar="WEIGHTS",
                   help="also run these weights recurrently in the same pass (repeatable), e.g. the BI model "
                   "beside a real-world one; columns 'recurrent:<file stem>'")
    p.add_argument("--max-frames", type=int, help="frames per clip (default all)")
    p.add_argument("--clips", type=_csv, help="comma list of clip file stems (default all)")
    p.add_argument("--json", type=Path, help="write the JSON report here, OUT.md and OUT_crops.png beside it")
    p.set_defaults(run=run_quality)


def _limit_threads(threads: int | None) -> None:
    """--threads N: onnxruntime intra-op and torch threads (the engine reads VSR_ORT_THREADS when opening)."""
    import os

    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, got {threads}")
    os.environ["VSR_ORT_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_latency(args: argparse.Namespace) -> int:
    """``vsr-bench latency``: per-step ms, fps and memory per backend x model x size (or --compare A B)."""
    from benchmarks.compare import run_compare
    from benchmarks.latency import LatencyConfig, parse_sizes, run_latency as run
    from benchmarks.report import compare_markdown, latency_markdown, write_outputs

    _limit_threads(args.threads)
    cfg = LatencyConfig(backends=args.backend, models=args.model or (), weights=tuple(args.weights or ()),
                        sizes=parse_sizes(args.sizes), scales=args.scale, warmup=args.warmup, steps=args.steps,
                        bicubic=not args.no_bicubic, json_out=args.json)
    if args.compare:
        report = run_compare(cfg, *args.compare, log=_log)
        print(compare_markdown(report))
    else:
        report = run(cfg, log=_log)
        print(latency_markdown(report))
    if args.json is not None:
        print("wrote " + ", ".join(str(p) for p in write_outputs(report, args.json)), file=sys.stderr)
    if report["kind"] == "latency" and not report["results"]:
        raise BackendError("no backend could run: " + "; ".join(f"{u['backend']}: {u['reason']}"
                                                                 for u in report["unavailable"]))
    return 0


def _scales(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma list of integers expected, got {text!r}") from None


def add_latency(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench latency``."""
    p = sub.add_parser(
        "latency", help="per-step latency, fps and memory per backend, model and input size",
        description="Warm up, then time N recurrent steps (hidden state carried) for every backend x model x LR "
        "size; write JSON, a markdown table and a PNG plot (ms against output pixels). Unavailable backends "
        "are listed with the reason. --compare A B interleaves two backends or models and reports ratios.",
    )
    p.add_argument("--backend", type=_csv, default=_csv(LATENCY_BACKENDS),
                   help=f"comma list out of {LATENCY_BACKENDS} (default all)")
    p.add_argument("--model", type=_csv, help="comma list of shipped model names (default: the shipped default)")
    p.add_argument("--weights", type=Path, action="append",
                   help="weights file (repeatable); FILE.onnx and FILE.safetensors of the same stem serve each backend")
    p.add_argument("--sizes", default="180x320,270x480,360x640,540x960,720x1280", help="comma list of LR HxW")
    p.add_argument("--scale", type=_scales, default=(2,), help="comma list of scales for shipped models (default 2)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per configuration (default 5)")
    p.add_argument("--steps", type=int, default=30, help="timed steps per configuration (default 30)")
    p.add_argument("--threads", type=int, help="CPU threads for onnxruntime and torch (default: library default)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two backends, models or weights files stepped in alternation; reports A/B ratios")
    p.add_argument("--no-bicubic", action="store_true", help="skip the swscale bicubic reference timing")
    p.add_argument("--json", type=Path, help="write the JSON report here, OUT.md and OUT.png beside it")
    p.set_defaults(run=run_latency)


def run_pipeline(args: argparse.Namespace) -> int:
    """``vsr-bench pipeline``: end-to-end per-stage times against decode+encode alone."""
    from benchmarks.pipeline_cmd import PipelineBenchConfig, run_pipeline_bench

    _limit_threads(args.threads)
    cfg = PipelineBenchConfig(input=args.input, backend=args.backend, model=args.model, weights=args.weights,
                              scale=args.scale, codec=args.codec, repeat=args.repeat, json_out=args.json)
    _, md = run_pipeline_bench(cfg)
    return _emit(md, args.json)


def add_pipeline(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench pipeline``."""
    p = sub.add_parser(
        "pipeline", help="end-to-end upscale: per-stage time and ratio to decode+encode alone",
        description="Upscale INPUT with the production pipeline, then run the same decode/encode with a model-free "
        "backend; report per-stage ms/frame, queue waits and the fps ratio (benchmarks/pipeline_bench.py).",
    )
    p.add_argument("input", type=Path, help="video file")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, torch or tensorrt (default auto)")
    p.add_argument("--model", help="model name (default: the shipped default for --scale)")
    p.add_argument("--weights", type=Path, help=".onnx or .safetensors file")
    p.add_argument("--scale", type=int, help="SR factor (default: from the weights, else 2)")
    p.add_argument("--codec", help="video encoder (default: the engine's choice for the container)")
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is kept (default 2)")
    p.add_argument("--threads", type=int, help="CPU threads for onnxruntime and torch")
    p.add_argument("--json", type=Path, help="write the JSON report here and OUT.md beside it")
    p.set_defaults(run=run_pipeline)


def run_hostpath(args: argparse.Namespace) -> int:
    """``vsr-bench hostpath``: host CPU per frame between decode and encode, bytes crossing to a device."""
    from benchmarks.hostpath import HostpathConfig, run_hostpath as run

    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size must be WxH, e.g. 1920x1080, got {args.size!r}") from None
    if w < 2 or h < 2 or args.scale not in (2, 3, 4) or args.frames < 1:
        raise UsageError("--size needs at least 2x2, --scale 2, 3 or 4, --frames at least 1")
    _, md = run(HostpathConfig(w, h, args.scale, args.pix_fmt, args.frames, args.json))
    return _emit(md, args.json)


def add_hostpath(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench hostpath``."""
    p = sub.add_parser(
        "hostpath", help="host CPU ms per frame between decode and encode, and bytes crossing host<->device",
        description="Run the production pre/postprocessing with the model step replaced by a stand-in of the same "
        "I/O, for the CPU path and for a CUDA backend's path (benchmarks/hostpath.py).",
    )
    p.add_argument("--size", default="1920x1080", help="input WxH (default 1920x1080)")
    p.add_argument("--scale", type=int, default=2, help="SR factor (default 2)")
    p.add_argument("--pix-fmt", default="yuv420p", help="decoded and encoded pixel format (default yuv420p)")
    p.add_argument("--frames", type=int, default=20, help="timed frames (default 20)")
    p.add_argument("--json", type=Path, help="write the JSON report here and OUT.md beside it")
    p.set_defaults(run=run_hostpath)


def run_report(args: argparse.Namespace) -> int:
    """``vsr-bench report``: regenerate the latency results section from latency JSON reports."""
    from benchmarks.report import load_reports, section, write_section

    text = section(load_reports(args.reports))
    write_section(text, args.out)
    print(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_report(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench report``."""
    p = sub.add_parser(
        "report", help="regenerate the latency section of the results (markdown) from latency JSON",
        description="Write the figures of `vsr-bench latency --json` reports, with the machine they came from, "
        "beside the published anchors (GPU) or as same-machine ratios (CPU), between markers in --out.",
    )
    p.add_argument("reports", type=Path, nargs="+", help="latency JSON reports")
    p.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS_latency.md"),
                   help="markdown file whose marked section is replaced (default benchmarks/RESULTS_latency.md)")
    p.set_defaults(run=run_report)


def run_gpu(args: argparse.Namespace) -> int:
    """``vsr-bench gpu``: the one-command device check (or its plan with --dry-run)."""
    from benchmarks.gpu import GPU_BACKENDS, GpuBenchConfig, markdown, run_gpu as run

    unknown = [b for b in args.backend if b not in GPU_BACKENDS]
    if unknown or args.budget <= 0:
        raise UsageError(f"--backend takes a comma list of {', '.join(GPU_BACKENDS)} and --budget seconds > 0")
    cfg = GpuBenchConfig(json_out=args.json, dry_run=args.dry_run, budget_s=args.budget, backends=args.backend)
    md = markdown(run(cfg, log=_log))
    if args.json is not None:
        args.json.with_suffix(".md").write_text(md + "\n")
    return _emit(md, args.json)


def add_gpu(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench gpu``."""
    p = sub.add_parser(
        "gpu", help="one-command GPU check: parity vs CPU fp32, p50/p99 latency, end-to-end run, GPU utilisation",
        description="On a CUDA machine, within --budget seconds: every GPU backend against CPU fp32 over 8 "
        "recurrent steps; step latency at 270x480 -> 1080p x4, 540x960 -> 1080p x2 and 1080p -> 4K x2 (fp16, "
        "graphs on); decode -> upscale -> encode with per-stage times and GPU utilisation. A failing stage is "
        "recorded and the next one runs. --dry-run prints the plan anywhere (docs/bench.md).",
    )
    p.add_argument("--dry-run", action="store_true", help="print (and with --json write) the plan; run nothing")
    p.add_argument("--backend", type=_csv, default=("torch-cuda", "onnxruntime-cuda", "tensorrt"),
                   help="comma list out of torch-cuda, onnxruntime-cuda, tensorrt (default all)")
    p.add_argument("--budget", type=float, default=220.0, help="wall-time budget in seconds (default 220)")
    p.add_argument("--json", type=Path, help="write the JSON report (or plan) here, rewritten after every stage")
    p.set_defaults(run=run_gpu)


def run_steady_floor(args: argparse.Namespace) -> int:
    """``vsr-bench steady-floor``: the warping error of never-flickering output against its Y-PSNR."""
    from benchmarks.steady_floor import run

    for line in run(args.dataset, args.clips, args.max_frames, args.json, tuple(args.quality)):
        print(line, flush=True)
    if args.json is not None:
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def add_steady_floor(sub: argparse._SubParsersAction) -> None:
    """Flags of ``vsr-bench steady-floor``."""
    p = sub.add_parser(
        "steady-floor", help="how much of a warping error is flicker: the floor of never-flickering output",
        description="The ground truth under a Gaussian blur of growing sigma never flickers: its warping error "
        "against its Y-PSNR is the floor a method of that PSNR would reach without flicker along the motion. With "
        "--quality, each method's excess over the floor in a vsr-bench quality report of the same clips.",
    )
    p.add_argument("--dataset", type=Path, required=True, help="folder of video files, one clip each")
    p.add_argument("--clips", type=_csv, default=(), help="comma list of clip names (default all)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per clip (default all)")
    p.add_argument("--json", type=Path, help="write the floor rows here")
    p.add_argument("--quality", type=Path, action="append", default=[], metavar="REPORT.json",
                   help="a vsr-bench quality --json report of these clips: print each method's excess over the "
                        "floor (repeatable)")
    p.set_defaults(run=run_steady_floor)


# command name -> function adding its subparser (explicit, in --help order)
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "quality": add_quality, "steady-floor": add_steady_floor, "latency": add_latency, "pipeline": add_pipeline,
    "hostpath": add_hostpath, "report": add_report, "gpu": add_gpu,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``vsr-bench`` parser with one subparser per entry of COMMANDS."""
    parser = argparse.ArgumentParser(prog="vsr-bench", description="vsr-upscale benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``vsr-bench``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except VsrError as e:
        print(f"vsr-bench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vsr-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
