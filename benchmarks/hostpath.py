"""`vsr-bench hostpath`: host CPU per frame between decode and encode, and bytes crossing host <-> device.

Runs the production Preprocessor, Stepper and Postprocessor on a synthetic decoded frame with the model step
replaced by a stand-in that has the graph's I/O (engine/graph.py) and does no work: what is left is the host
work every frame pays whatever the accelerator. The CPU path hands the planes to onnxruntime in host memory
(nothing crosses); a CUDA backend uploads the integer planes and downloads the output planes, the hidden state
staying on the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Arrays, Backend
from engine.graph import VIDEO, GraphSpec


@dataclass(frozen=True)
class HostpathConfig:
    """One hostpath measurement."""

    width: int  # input frame width in pixels
    height: int  # input frame height in pixels
    scale: int = 2  # output/input size ratio
    pix_fmt: str = "yuv420p"  # decoded (and encoded) pixel format
    frames: int = 20  # timed frames (after 3 warm-up frames)
    json_out: Path | None = None  # write the JSON report here and OUT.md beside it


class StandIn(Backend):
    """The device step replaced by a host stand-in with the same I/O: output planes of the right shape and dtype
    (preallocated, as a backend's pinned staging buffers are) and an opaque device-resident state."""

    name = "stand-in"

    def __init__(self, scale: int, frame_dtype: str, hidden: tuple[tuple[int, int], ...] = ((16, 1), (3, 2))) -> None:
        self._spec = GraphSpec(kind=VIDEO, model="stand-in", scale=scale, hidden=hidden, frame_dtype=frame_dtype)
        self._out: dict[str, np.ndarray] = {}

    def io_spec(self) -> GraphSpec:
        return self._spec

    def run(self, feeds: Arrays) -> dict[str, Any]:
        s = self._spec.scale
        for k, src in (("y_out", feeds["y"]), ("uv_out", feeds["uv"])):
            shape = (*src.shape[:2], src.shape[2] * s, src.shape[3] * s)
            if k not in self._out or self._out[k].shape != shape:
                self._out[k] = np.full(shape, 128, src.dtype)
        return {**self._out, **{f"hidden_out{i}": ("device", i) for i in range(len(self._spec.hidden))}}

    def close(self) -> None:
        self._out = {}


def synthetic_frame(width: int, height: int, pix_fmt: str) -> Any:
    """A decoded-looking frame: smooth gradients plus noise, converted once by swscale into ``pix_fmt``."""
    import av

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), 128 + 60 * np.sin(x / 9.0)], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)


def _nbytes(arrays: Arrays, names: list[str]) -> int:
    return int(sum(np.asarray(arrays[k]).nbytes for k in names))


def measure(cfg: HostpathConfig) -> dict[str, Any]:
    """Per-frame host CPU/wall ms by stage and bytes crossing, for the CPU and the CUDA path."""
    from engine.decode import VideoInfo
    from engine.pipeline import colour_constants
    from engine.postprocess import OutputFormat, Postprocessor
    from engine.preprocess import Preprocessor, layout_of
    from engine.step import Stepper

    frame = synthetic_frame(cfg.width, cfg.height, cfg.pix_fmt)
    _, sub, bits = layout_of(cfg.pix_fmt)
    info = VideoInfo(cfg.width, cfg.height, None, None, 0, 0, cfg.pix_fmt, bits, False, 1, 1, 1, 1, 0, "synthetic")  # type: ignore[arg-type]
    fmt = OutputFormat(cfg.width * cfg.scale, cfg.height * cfg.scale, cfg.pix_fmt, 1, 1, 1, 1)
    dtype = "uint16" if bits > 8 else "uint8"
    pre, post = Preprocessor(info, dtype, sub), Postprocessor(fmt, sub)
    stepper = Stepper(StandIn(cfg.scale, dtype), colour_constants(info, pre.bits, fmt))
    cpu = {"preprocess": 0.0, "step": 0.0, "postprocess": 0.0}
    wall = dict(cpu)
    for i in range(cfg.frames + 3):
        marks = [(time.perf_counter(), time.thread_time())]
        planes = pre(frame)
        marks.append((time.perf_counter(), time.thread_time()))
        out = stepper(planes)
        marks.append((time.perf_counter(), time.thread_time()))
        post(out)
        marks.append((time.perf_counter(), time.thread_time()))
        if i >= 3:
            for k, a, b in zip(cpu, marks, marks[1:]):
                wall[k] += 1000 * (b[0] - a[0]) / cfg.frames
                cpu[k] += 1000 * (b[1] - a[1]) / cfg.frames
    spec = stepper.spec
    up = _nbytes({**planes, **stepper.constants}, spec.frame_inputs)
    down = _nbytes(out, spec.frame_outputs)
    host = {"cpu_ms": sum(cpu.values()), "wall_ms": sum(wall.values()), "stage_cpu_ms": cpu, "stage_wall_ms": wall}
    return {"size": [cfg.width, cfg.height], "out_size": [fmt.width, fmt.height], "scale": cfg.scale,
            "pix_fmt": cfg.pix_fmt, "frames": cfg.frames,
            "paths": {"cpu": {**host, "bytes_to_device": 0, "bytes_from_device": 0, "bytes_per_frame": 0},
                      "cuda": {**host, "bytes_to_device": up, "bytes_from_device": down, "bytes_per_frame": up + down}}}


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per path."""
    w, h = report["size"]
    ow, oh = report["out_size"]
    rows = [f"hostpath {w}x{h} -> {ow}x{oh} {report['pix_fmt']} ({report['frames']} frames)", "",
            "| path | host CPU ms/frame | pre ms | step (stand-in) ms | post ms | MB crossing/frame |",
            "|---|---|---|---|---|---|"]
    for name, p in report["paths"].items():
        c = p["stage_cpu_ms"]
        rows.append(f"| {name} | {p['cpu_ms']:.2f} | {c['preprocess']:.2f} | {c['step']:.2f} | {c['postprocess']:.2f} "
                    f"| {p['bytes_per_frame'] / 1e6:.2f} |")
    return "\n".join(rows)


def run_hostpath(cfg: HostpathConfig) -> tuple[dict[str, Any], str]:
    """Measure, write the JSON and markdown when asked, return both."""
    import json

    from benchmarks.machine import machine_info

    report = {**measure(cfg), "machine": machine_info(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    md = table(report)
    if cfg.json_out is not None:
        cfg.json_out.write_text(json.dumps(report, indent=1))
        cfg.json_out.with_suffix(".md").write_text(md + "\n")
    return report, md
