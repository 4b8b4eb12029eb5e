"""`vsr-bench pipeline INPUT`: end-to-end upscale with per-stage times and queue waits, against decode+encode alone.

Runs benchmarks.pipeline_bench (the production engine.pipeline.run, once with the model and once with its
model-free nearest-neighbour backend) and writes its numbers as JSON and markdown.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.pipeline_bench import NearestBackend, _best, table
from engine.backends.select import ModelChoice, open_backend
from engine.encode import EncodeOptions
from engine.errors import InputError, OutputError, UsageError
from engine.pipeline import STAGES, Summary

# pipeline threads -> the stages each one times; the rest of its wall time it waits on a queue (or the GIL)
THREADS = {"decode": ("decode", "preprocess"), "step": ("step",), "encode": ("postprocess", "encode")}


@dataclass(frozen=True)
class PipelineBenchConfig:
    """Options of ``vsr-bench pipeline``."""

    input: Path  # clip to upscale
    backend: str = "auto"  # engine backend choice (auto, onnxruntime, torch, tensorrt)
    model: str | None = None  # model name; None = shipped default for the scale
    weights: Path | None = None  # weights file; None = shipped
    scale: int | None = None  # output/input size ratio; None = from the weights, else 2
    codec: str | None = None  # encoder; None = the engine's default for the container
    repeat: int = 2  # runs per configuration; the fastest is kept
    json_out: Path | None = None  # report path; OUT.md beside it


def stage_report(s: Summary) -> dict[str, Any]:
    """Per-frame wall/CPU ms of each stage, per-thread queue wait ms/frame, fps."""
    n = max(s.frames_in, 1)
    waits = {t: 1000.0 * max(s.wall_s - sum(s.stage_s[k] for k in stages), 0.0) / n for t, stages in THREADS.items()}
    return {"backend": s.backend, "model": s.model, "scale": s.scale, "frames": s.frames_in, "wall_s": s.wall_s,
            "fps": s.fps, "stage_ms": {k: 1000.0 * s.stage_s[k] / n for k in STAGES},
            "stage_cpu_ms": {k: 1000.0 * s.stage_cpu_s[k] / n for k in STAGES}, "queue_wait_ms": waits}


def _validate(cfg: PipelineBenchConfig) -> None:
    if not cfg.input.is_file():
        raise InputError(f"input {cfg.input} not found; pass a video file")
    if cfg.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {cfg.repeat}")
    if cfg.json_out is not None and not cfg.json_out.parent.is_dir():
        raise OutputError(f"folder {cfg.json_out.parent} for --json does not exist; create it first")


def run_pipeline_bench(cfg: PipelineBenchConfig) -> tuple[dict[str, Any], str]:
    """Full run and decode+encode-only run; returns the report and its markdown (written beside json_out)."""
    from benchmarks.machine import machine_info

    _validate(cfg)
    enc = EncodeOptions(codec=cfg.codec, overwrite=True)
    opened = open_backend(cfg.backend, ModelChoice(model=cfg.model, scale=cfg.scale, weights=cfg.weights))
    with opened.backend as backend:
        full = _best(cfg.input, backend, enc, cfg.repeat)
    base = _best(cfg.input, NearestBackend(full.scale), enc, cfg.repeat)
    report = {"kind": "pipeline", "input": str(cfg.input), "size_in": list(full.size_in),
              "size_out": list(full.size_out), "codec": full.codec, "pix_fmt": full.pix_fmt,
              "backend_notes": list(opened.notes), "full": stage_report(full), "decode_encode_only": stage_report(base),
              "fps_ratio": full.fps / base.fps if base.fps else None, "machine": machine_info(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    waits = ", ".join(f"{t} thread {v:.1f}" for t, v in report["full"]["queue_wait_ms"].items())
    md = (f"{cfg.input.name}: {full.frames_in} frames {full.size_in[0]}x{full.size_in[1]} -> "
          f"{full.size_out[0]}x{full.size_out[1]}, {full.codec}; {report['machine']['cpu']}\n\n"
          f"{table(full, base)}\n\nqueue waits of the full run (ms/frame, wall minus busy): {waits}\n")
    if cfg.json_out is not None:
        cfg.json_out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        cfg.json_out.with_suffix(".md").write_text(md)
    return report, md
