"""Markdown table and PNG plot of a `vsr-bench latency` (or `--compare`) report; files beside ``--json OUT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
