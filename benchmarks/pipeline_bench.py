"""Pipeline benchmark: per-stage time and end-to-end fps vs decode+encode alone, on the production pipeline.

    python -m benchmarks.pipeline_bench [CLIP] [--weights FILE.onnx] [--backend auto] [--codec libx264]

The baseline runs the same engine.pipeline.run with a model-free backend (nearest-neighbour x scale), so it
decodes, converts and encodes exactly the same frames at the same output size; the ratio is what the model costs.
Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.graph import VIDEO, GraphSpec
from engine.backends.select import ModelChoice, open_backend
from engine.encode import EncodeOptions
from engine.pipeline import STAGES, PipelineOptions, Summary, run

DEFAULT_CLIP = Path(__file__).resolve().parents[1] / "samples" / "dog_320x180.mp4"


class NearestBackend(Backend):
    """No model: each pixel repeated scale x scale times (cheap), so only the I/O path is measured."""

    name = "none (nearest)"

    def __init__(self, scale: int) -> None:
        self._spec = GraphSpec(kind=VIDEO, model="none", scale=scale, hidden=(), weights="-")

    def io_spec(self) -> GraphSpec:
        return self._spec

    def run(self, feeds: Arrays) -> dict[str, np.ndarray]:
        s = self._spec.scale
        return {"y_out": feeds["y"].repeat(s, axis=2).repeat(s, axis=3),
                "uv_out": feeds["uv"].repeat(s, axis=2).repeat(s, axis=3)}

    def close(self) -> None:
        pass


def _once(clip: Path, backend: Backend, enc: EncodeOptions, out_dir: Path) -> Summary:
    out = out_dir / f"bench{clip.suffix}"
    opts = PipelineOptions(input=clip, output=out, encode=enc)
    return run(opts, backend=backend)


def _best(clip: Path, backend: Backend, enc: EncodeOptions, repeat: int) -> Summary:
    with tempfile.TemporaryDirectory() as d:
        runs = [_once(clip, backend, enc, Path(d)) for _ in range(repeat)]
    return min(runs, key=lambda s: s.wall_s)


def table(full: Summary, base: Summary) -> str:
    """Markdown table: per-stage wall (and own-thread CPU) ms/frame, end-to-end fps of both runs, and their ratio."""
    head = " | ".join(f"{k} ms/f" for k in STAGES)
    rows = [f"| run | {head} | wall s | fps |", "|---" * (len(STAGES) + 3) + "|"]
    for label, s in ((f"full ({full.backend}, {full.model} x{full.scale})", full), ("decode+encode only", base)):
        n = max(s.frames_in, 1)
        per = " | ".join(f"{1000 * s.stage_s[k] / n:.1f} ({1000 * s.stage_cpu_s[k] / n:.1f})" for k in STAGES)
        rows.append(f"| {label} | {per} | {s.wall_s:.2f} | {s.fps:.1f} |")
    rows.append("\nms/f = wall time per frame, (own-thread CPU time): a large gap means the stage waited for a CPU.")
    rows.append(f"full / decode+encode fps ratio: **{full.fps / base.fps:.2f}**")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pipeline_bench", description=__doc__.splitlines()[0])
    p.add_argument("clip", nargs="?", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--weights", type=Path, help="ONNX/safetensors (default: the shipped model for --scale)")
    p.add_argument("--scale", type=int, default=None)
    p.add_argument("--backend", default="auto")
    p.add_argument("--codec", default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is reported")
    a = p.parse_args(argv)
    enc = EncodeOptions(codec=a.codec, preset=a.preset, overwrite=True)
    opened = open_backend(a.backend, ModelChoice(scale=a.scale, weights=a.weights))
    with opened.backend as backend:
        full = _best(a.clip, backend, enc, a.repeat)
    base = _best(a.clip, NearestBackend(full.scale), enc, a.repeat)
    print(f"clip {a.clip.name}: {full.frames_in} frames {full.size_in[0]}x{full.size_in[1]} -> "
          f"{full.size_out[0]}x{full.size_out[1]}, {full.codec} {full.pix_fmt}; {platform.processor() or platform.machine()}\n")
    print(table(full, base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
