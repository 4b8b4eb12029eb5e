"""Latency reports: the table/plot beside `vsr-bench latency --json OUT`, and `vsr-bench report`, which regenerates
the latency section of our results from those JSON reports.

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
        out += [f"Measured {rep['created']}. {_machine_line(rep['machine'])}, {rep['machine']['platform']}; "
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


# ---- files beside --json OUT of `vsr-bench latency` ----


def output_paths(json_out: Path) -> tuple[Path, Path, Path]:
    """(JSON, markdown, PNG plot) paths for ``--json OUT``."""
    return json_out, json_out.with_suffix(".md"), json_out.with_suffix(".png")


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _machine_line(m: dict[str, Any]) -> str:
    gpu = f"; GPU {m['gpu']} (driver {m.get('nvidia_driver', '?')}, CUDA {m.get('cuda', '?')})" if "gpu" in m else ""
    trt = f"; {m['tensorrt']}" if "tensorrt" in m else ""
    return f"Machine: {m['cpu']}, {m['cpu_count']} cores ({m.get('cpu_affinity', '?')} usable){gpu}{trt}"


def latency_markdown(report: dict[str, Any]) -> str:
    """Per backend x model x size: p50/p90/p99 ms, fps, memory, GMAC; then unavailable backends with the reason."""
    lines = [_machine_line(report["machine"]), "",
             "| backend | model | LR | out | p50 ms | p90 ms | p99 ms | fps | GMAC | params | RSS MiB (peak) | GPU MiB |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        h, w = r["size"]
        gmac = r["gmac"].get(f"{h}x{w}")
        cells = [r["backend"], f"{r['model']} x{r['scale']}", f"{h}x{w}", "x".join(map(str, r["out_size"])),
                 f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['fps']:.1f}",
                 "-" if gmac is None else f"{gmac:.2f}", str(r["params"] or "-"),
                 f"{_mb(r['rss_mb'])} ({r['rss_peak_mb']:.0f})", _mb(r["gpu_peak_mb"])]
        lines.append("| " + " | ".join(cells) + " |")
    if report.get("bicubic"):
        lines += ["", "swscale bicubic (PyAV reformat, RGB24) for reference: " + ", ".join(
            f"{b['size'][0]}x{b['size'][1]} x{b['scale']} {b['ms']:.2f} ms" for b in report["bicubic"])]
    if report["unavailable"]:
        lines += ["", "Not measured:"] + [f"- {u['backend']} ({u['model']}): {u['reason']}" for u in report["unavailable"]]
    cfg = report["config"]
    lines += ["", f"{cfg['warmup']} warm-up + {cfg['steps']} timed steps per row, hidden state carried; RSS peak is "
              "the process high-water mark so far (rows run in table order).", ""]
    return "\n".join(lines)


def compare_markdown(report: dict[str, Any]) -> str:
    """Per size: A and B median ms and the A/B ratio with its spread over interleaved pairs."""
    a, b = report["a"], report["b"]
    lines = [_machine_line(report["machine"]), "", f"A = {a}, B = {b} (interleaved ABBA steps)", "",
             "| LR | A p50 ms | B p50 ms | A/B median | A/B p10–p90 | pairs |", "|---|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        h, w = r["size"]
        lines.append(f"| {h}x{w} | {r['a_p50_ms']:.2f} | {r['b_p50_ms']:.2f} | {r['ratio_median']:.3f} | "
                     f"{r['ratio_p10']:.3f}–{r['ratio_p90']:.3f} | {r['pairs']} |")
    lines += ["", "Ratio < 1: A is faster. Each pair times A and B back to back, so machine-wide slowdowns cancel.", ""]
    return "\n".join(lines)


def save_plot(report: dict[str, Any], path: Path) -> None:
    """PNG: p50 ms against output megapixels, one line per backend (and model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in report["results"]:
        lines.setdefault(f"{r['backend']} {r['model']} x{r['scale']}", []).append((r["out_pixels"] / 1e6, r["p50_ms"]))
    for label, pts in lines.items():
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("output megapixels per frame")
    ax.set_ylabel("p50 ms per step")
    ax.set_title(report["machine"]["cpu"][:60], fontsize=9)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(report: dict[str, Any], json_out: Path) -> tuple[Path, ...]:
    """Write the JSON, markdown and (for latency runs) the plot; returns the paths written."""
    json_path, md_path, png_path = output_paths(json_out)
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    if report["kind"] == "compare":
        md_path.write_text(compare_markdown(report))
        return json_path, md_path
    md_path.write_text(latency_markdown(report))
    save_plot(report, png_path)
    return json_path, md_path, png_path
