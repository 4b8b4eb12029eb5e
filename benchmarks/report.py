"""`vsr-bench report`: regenerate the latency section of our results from `vsr-bench latency` JSON reports.

    vsr-bench report runs/latency.json [more.json ...] --out benchmarks/RESULTS_latency.md

The section sits between BEGIN/END markers; an existing file keeps everything outside them, so the lead can
include the file or paste the section into benchmarks/RESULTS.md and regenerate it in place. On a machine with a
GPU it lists absolute ms/fps beside the published anchors; on a CPU-only machine absolute times say nothing about
the anchors' GPUs, so it quotes ratios measured on the same machine: ours vs swscale bicubic, onnxruntime vs torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InputError, OutputError

BEGIN = "<!-- vsr-bench report: latency BEGIN (generated; edit benchmarks/report.py, not this) -->"
END = "<!-- vsr-bench report: latency END -->"
GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "torch-cuda")  # results on these are absolute GPU times


@dataclass(frozen=True)
class Anchor:
    """A published speed figure we place our numbers beside."""

    method: str  # method and variant
    lr: tuple[int, int]  # LR (height, width)
    scale: int  # output/input size ratio
    ms: float  # published ms per frame
    gpu: str  # GPU it was measured on
    source: str  # where the figure comes from


ANCHORS = (
    Anchor("RDG-s", (270, 480), 4, 7.93, "RTX 3090", "RDG paper, 270x480 -> 1080p"),
    Anchor("DAP-128", (180, 320), 4, 38.0, "RTX 2080 Ti", "DAP paper, 180x320 -> 720p"),
    Anchor("vs-mlrt compact x2", (480, 720), 2, 1000.0 / 73, "RTX 4090", "vs-mlrt benchmarks, 73 fps at 720x480"),
)


def load_reports(paths: list[Path]) -> list[dict[str, Any]]:
    """Latency reports from JSON files; InputError for a missing file or a report of another kind."""
    reports = []
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read latency report {p}: {e}") from None
        if not isinstance(data, dict) or data.get("kind") != "latency":
            raise InputError(f"{p} is not a `vsr-bench latency --json` report (kind {data.get('kind')!r})")
        reports.append(data)
    return reports


def _machine(m: dict[str, Any]) -> str:
    gpu = f", {m['gpu']} (driver {m.get('nvidia_driver', '?')}, CUDA {m.get('cuda', '?')})" if "gpu" in m else ""
    return f"{m['cpu']} ({m['cpu_count']} cores){gpu}, {m['platform']}"


def _gpu_rows(rep: dict[str, Any]) -> list[str]:
    """Absolute rows beside each anchor: our GPU results at the anchor's LR size and scale."""
    rows = ["| anchor | published | ours (same LR, scale) | ours fps |", "|---|---|---|---:|"]
    for a in ANCHORS:
        ours = [r for r in rep["results"] if r["backend"] in GPU_BACKENDS and tuple(r["size"]) == a.lr
                and r["scale"] == a.scale]
        pub = f"{a.method}: {a.ms:.2f} ms on {a.gpu} ({a.source})"
        if not ours:
            rows.append(f"| {a.lr[0]}x{a.lr[1]} x{a.scale} | {pub} | not measured | - |")
        for r in ours:
            rows.append(f"| {a.lr[0]}x{a.lr[1]} x{a.scale} | {pub} | {r['backend']} {r['model']}: "
                        f"{r['p50_ms']:.2f} ms | {r['fps']:.1f} |")
    return rows


def _cpu_rows(rep: dict[str, Any]) -> list[str]:
    """Same-machine ratios per model and size: ours / bicubic, onnxruntime-cpu / torch-cpu."""
    bic = {(tuple(b["size"]), b["scale"]): b["ms"] for b in rep.get("bicubic", [])}
    by: dict[tuple[str, int, tuple[int, int]], dict[str, float]] = {}
    for r in rep["results"]:
        by.setdefault((r["model"], r["scale"], tuple(r["size"])), {})[r["backend"]] = r["p50_ms"]
    rows = ["| model | LR | ours / bicubic (onnxruntime-cpu) | ours / bicubic (torch-cpu) | onnxruntime / torch |",
            "|---|---|---:|---:|---:|"]
    for (model, scale, hw), ms in by.items():
        b = bic.get((hw, scale))
        ort, pt = ms.get("onnxruntime-cpu"), ms.get("torch-cpu")
        cells = [f"{x / b:.1f}x" if x is not None and b else "-" for x in (ort, pt)]
        cells.append(f"{ort / pt:.2f}" if ort is not None and pt else "-")
        rows.append(f"| {model} x{scale} | {hw[0]}x{hw[1]} | " + " | ".join(cells) + " |")
    return rows


def section(reports: list[dict[str, Any]]) -> str:
    """The markdown section for ``reports`` (one block per report), between BEGIN and END."""
    out = [BEGIN, "", "### Latency", ""]
    for rep in reports:
        has_gpu = any(r["backend"] in GPU_BACKENDS for r in rep["results"])
        out += [f"Measured {rep['created']} on {_machine(rep['machine'])}; "
                f"{rep['config']['steps']} timed steps after {rep['config']['warmup']} warm-up, hidden state carried.", ""]
        if has_gpu:
            out += _gpu_rows(rep)
        else:
            out += ["No GPU on this machine: absolute CPU times are not comparable with the GPU anchors "
                    "(" + "; ".join(f"{a.method} {a.ms:.2f} ms {a.lr[0]}x{a.lr[1]} x{a.scale} on {a.gpu}"
                                    for a in ANCHORS) + "), so we quote same-machine ratios (p50 step time; "
                    "bicubic = swscale via PyAV `reformat`).", ""]
            out += _cpu_rows(rep)
        if rep["unavailable"]:
            out += ["", "Not measured: " + "; ".join(f"{u['backend']} ({u['reason']})" for u in rep["unavailable"])]
        out.append("")
    return "\n".join(out + [END]) + "\n"


def write_section(text: str, out: Path) -> None:
    """Replace the marked section of ``out`` (or create the file); text outside the markers is kept."""
    if not out.parent.is_dir():
        raise OutputError(f"folder {out.parent} for --out does not exist; create it first")
    old = out.read_text() if out.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        text = head + text.rstrip("\n") + rest.split(END, 1)[1]
    elif old:
        text = old.rstrip("\n") + "\n\n" + text
    out.write_text(text)
