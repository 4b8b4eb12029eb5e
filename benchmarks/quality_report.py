"""One `vsr-bench quality` run: resolve the methods, evaluate, write the JSON, markdown table and PNG crops.

Outputs beside ``--json OUT``: ``OUT`` (report), ``OUT`` with suffix ``.md`` (the table printed to
stdout) and ``<OUT stem>_crops.png`` (one row per clip: a crop of the middle frame as bicubic |
frame-by-frame | recurrent | GT, the most detailed square of the GT, same place in every column).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import machine_info
from benchmarks.lr_protocol import Degrade, parse_degrades
from benchmarks.methods import LoadedModel, StepperFactory, bicubic_factory, lanczos_factory, load_model
from benchmarks.quality import METHODS, evaluate
from engine.errors import OutputError, UsageError
from engine.registry import default_model

SCALES = (2, 3, 4)  # scales the RVSR models are built for
LABELS = {"bicubic": "bicubic", "lanczos": "lanczos", "framewise": "frame-by-frame", "recurrent": "recurrent",
          "gt": "GT"}
BASELINES = {"bicubic": bicubic_factory, "lanczos": lanczos_factory}  # methods that need no model


@dataclass(frozen=True)
class QualityConfig:
    """Options of one quality run (the CLI flags of ``vsr-bench quality``)."""

    dataset: Path  # folder of video files, one clip each
    scale: int  # SR factor; the LR is the MATLAB bicubic downscale of the GT by it
    model: str | None = None  # model name; None = the weights' metadata, or the shipped default for the scale
    weights: Path | None = None  # .safetensors or .onnx file; None = the shipped weights of the model
    methods: tuple[str, ...] = METHODS  # which of bicubic, lanczos, framewise, recurrent to run
    degrades: tuple[str, ...] = ("bi",)  # LR recipes (benchmarks.lr_protocol): bi, x264:CRF, x265:CRF, av1:CRF
    downscale: str = "bicubic"  # bicubic (MATLAB) or lanczos (FFmpeg) downscale before any codec
    vmaf: bool = False  # also score VMAF (benchmarks.vmaf)
    compare: tuple[Path, ...] = ()  # more weights run recurrently in the same pass, labelled "recurrent:<file stem>"
    max_frames: int | None = None  # frames per clip; None = all
    clips: tuple[str, ...] | None = None  # clip file stems to run; None = all
    json_out: Path | None = None  # JSON report; the .md table and _crops.png go beside it; None = print only
    crop_side: int = 192  # HR side of each crop in the PNG (px)


def output_paths(json_out: Path) -> tuple[Path, Path, Path]:
    """(JSON, markdown, crops PNG) paths for ``--json OUT``."""
    return json_out, json_out.with_suffix(".md"), json_out.with_name(json_out.stem + "_crops.png")


def _validate(cfg: QualityConfig) -> None:
    """UsageError/OutputError for bad options, before any slow work."""
    if cfg.scale not in SCALES:
        raise UsageError(f"--scale must be one of {', '.join(map(str, SCALES))}, got {cfg.scale}")
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise UsageError(f"--methods takes a comma list of {', '.join(METHODS)}, got {','.join(cfg.methods)!r}")
    if cfg.max_frames is not None and cfg.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {cfg.max_frames}")
    parse_degrades(cfg.degrades, cfg.downscale)
    if cfg.vmaf:
        from benchmarks.vmaf import available

        reason = available()
        if reason:
            raise UsageError(f"--vmaf: {reason}")
    if cfg.json_out is not None and not cfg.json_out.parent.is_dir():
        raise OutputError(f"folder {cfg.json_out.parent} for --json does not exist; create it first")


def _factories(cfg: QualityConfig, degrade: Degrade) -> tuple[dict[str, StepperFactory], LoadedModel | None]:
    """Method name -> stepper factory in report order; the model is loaded only when a method needs it. Without
    --model/--weights the model is the one `vsr-upscale` picks by default: for LR that went through no codec the
    BI-trained weights (engine/registry.py CLEAN_MODEL), else the real-world one."""
    model = cfg.model
    if model is None and cfg.weights is None:
        model = default_model(cfg.scale, clean=degrade.codec is None)
    loaded = load_model(cfg.scale, model, cfg.weights) if set(cfg.methods) - set(BASELINES) else None
    factories: dict[str, StepperFactory] = {}
    for name in METHODS:
        if name not in cfg.methods:
            continue
        if name in BASELINES:
            factories[name] = BASELINES[name](cfg.scale)
        else:
            assert loaded is not None
            factories[name] = loaded.make(name == "recurrent")
    for path in cfg.compare:
        factories[f"recurrent:{path.stem}"] = load_model(cfg.scale, None, path).make(True)
    return factories, loaded


def run_quality(cfg: QualityConfig) -> tuple[dict[str, Any], str]:
    """Run the harness as configured; write the outputs when ``cfg.json_out`` is set.

    Returns
    -------
    tuple[dict, str]
        The JSON report and its markdown table.
    """
    _validate(cfg)
    start = time.perf_counter()
    runs, crops, models = {}, {}, {}
    for degrade in parse_degrades(cfg.degrades, cfg.downscale):
        factories, loaded = _factories(cfg, degrade)
        if loaded is not None:
            models[loaded.name] = loaded
        result = evaluate(factories, cfg.dataset, cfg.scale, cfg.max_frames, cfg.clips,
                          crop_side=cfg.crop_side if cfg.json_out else None, degrade=degrade, vmaf=cfg.vmaf)
        crops.update({f"{clip} {degrade.name}": tiles for clip, tiles in result.pop("crops", {}).items()})
        runs[degrade.name] = {k: result[k] for k in ("clips", "mean", "reference_warp_error")}
        runs[degrade.name]["model"] = loaded.name if loaded else None
    report = {
        "dataset": str(cfg.dataset), "scale": cfg.scale, "max_frames": cfg.max_frames, "methods": list(factories),
        "degrades": list(runs), "runs": runs,
        "model": ", ".join(models) or None,  # one per LR kind when the default differs (see _factories)
        "weights": ", ".join(str(m.weights) for m in models.values()) or None,
        "weights_sha256": ", ".join(m.sha256 for m in models.values()) or None,
        "config": json.loads(json.dumps(asdict(cfg), default=str)),  # paths as strings
        "machine": machine_info(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": time.perf_counter() - start,
    }
    table = markdown_table(report)
    if cfg.json_out is not None:
        json_path, md_path, png_path = output_paths(cfg.json_out)
        json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        md_path.write_text(table)
        save_crops(crops, png_path, list(factories))
    return report, table


def _fmt(value: float | None, digits: int) -> str:
    """Table cell: fixed digits, or a dash when undefined."""
    return "-" if value is None else f"{value:.{digits}f}"


def _row(label: str, method: str, s: dict[str, Any]) -> str:
    """One markdown table row of a method's scores."""
    ms = 1000.0 * s["seconds"] / s["frames"] if s["frames"] else None
    cells = [label, method, _fmt(s["y_psnr"], 2), _fmt(s["y_ssim"], 4), _fmt(s["rgb_psnr"], 2),
             _fmt(s["warp_error"], 3), _fmt(s["static_flicker"], 3), _fmt(s["reset_jump"], 3), _fmt(s["vmaf"], 2),
             str(s["frames"]), _fmt(ms, 1)]
    return "| " + " | ".join(cells) + " |"


def markdown_table(report: dict[str, Any]) -> str:
    """Markdown summary of a report: per degradation, per clip and mean rows for every method."""
    model = report["model"] or "none (baselines only)"
    sha = f" (sha256 {report['weights_sha256']})" if report["weights_sha256"] else ""
    lines = [f"Quality on {report['dataset']} x{report['scale']}, model {model}{sha}", ""]
    per_lr = len({run.get("model") for run in report["runs"].values()}) > 1  # the default differs by LR kind
    for name, run in report["runs"].items():
        lines += [
            f"LR: {name}" + (f" (model {run['model']})" if per_lr else ""), "",
            "| clip | method | Y-PSNR (dB) | Y-SSIM | RGB-PSNR (dB) | warp err | static flicker | reset jump | VMAF "
            "| frames | ms/frame |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for clip, c in run["clips"].items():
            lines += [_row(clip, LABELS.get(m, m), c["methods"][m]) for m in report["methods"]]
        lines += [_row("**mean**", LABELS.get(m, m), run["mean"][m]) for m in report["methods"]]
        lines += ["", f"Warping error of the GT itself: {_fmt(run['reference_warp_error'], 3)} (blurry output "
                  "scores below it).", ""]
    lines += ["Y on BT.601 16-235, no border crop, frame means per clip then clip means. Static flicker and reset "
              "jump in Y levels (benchmarks/metrics.py).", ""]
    return "\n".join(lines)


def save_crops(crops: dict[str, dict[str, np.ndarray]], path: Path, methods: list[str]) -> None:
    """PNG grid: one row per clip, one column per method then GT, labelled."""
    from PIL import Image, ImageDraw

    if not crops:
        return
    cols = [*methods, "gt"]
    side = max(max(a.shape[:2]) for tiles in crops.values() for a in tiles.values())
    pad, head = 4, 16  # px between tiles; px of the header row
    canvas = Image.new("RGB", (pad + len(cols) * (side + pad), head + pad + len(crops) * (side + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, col in enumerate(cols):
        draw.text((pad + j * (side + pad), 2), LABELS.get(col, col), fill="black")
    for i, (clip, tiles) in enumerate(crops.items()):
        top = head + pad + i * (side + pad)
        for j, col in enumerate(cols):
            canvas.paste(Image.fromarray(tiles[col]), (pad + j * (side + pad), top))
        box = draw.textbbox((pad + 2, top + 2), clip)
        draw.rectangle(box, fill="black")
        draw.text((pad + 2, top + 2), clip, fill="white")
    canvas.save(path)
