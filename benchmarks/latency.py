"""`vsr-bench latency`: per-step latency, fps and memory of each backend x model x input size, through the
production backends (engine.backends.select.OPENERS) and the production step (engine.step.step).

Each configuration runs ``warmup`` steps, then ``steps`` timed steps on one synthetic LR frame with the hidden state
carried from step to step, as in a real stream. Timing is wall clock around the step (which returns the SR frame on
the host, so it includes the device round trip); torch on CUDA is also timed with CUDA events.
"""

from __future__ import annotations

import importlib.util
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Backend
from engine.backends.select import OPENERS, ModelChoice
from engine.errors import BackendError, ModelError, OutputError, UsageError
from engine.graph import GraphSpec
from engine.step import step

DEFAULT_SIZES = ((180, 320), (270, 480), (360, 640), (540, 960), (720, 1280))  # LR (height, width)
BACKENDS = tuple(OPENERS)  # every backend the engine can open, fastest first
SUFFIX = {"tensorrt": ".onnx", "onnxruntime-cuda": ".onnx", "onnxruntime-cpu": ".onnx",
          "torch-cuda": ".safetensors", "torch-cpu": ".safetensors"}  # weights file each backend loads


@dataclass(frozen=True)
class LatencyConfig:
    """Options of one latency run (the flags of ``vsr-bench latency``)."""

    backends: tuple[str, ...] = BACKENDS  # backend names out of BACKENDS; unavailable ones are reported, not run
    models: tuple[str, ...] = ()  # model names (shipped weights); () = the shipped default per scale
    weights: tuple[Path, ...] = ()  # weight files; the .onnx / .safetensors sibling of the same stem is used per backend
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES  # LR (height, width) per configuration
    scales: tuple[int, ...] = (2,)  # output/input size ratios, for shipped models (weights carry their own)
    warmup: int = 5  # untimed steps before timing (allocations, autotuning, caches)
    steps: int = 30  # timed steps per configuration, hidden state carried
    bicubic: bool = True  # also time swscale bicubic (PyAV reformat) at each size, for CPU ratios
    json_out: Path | None = None  # report path; OUT.md and OUT.png go beside it


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"180x320,270x480"`` -> ((180, 320), (270, 480)); heights first, as in the model zoo's tables."""
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            h, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise UsageError(f"--sizes takes HxW items like 180x320, got {item!r}") from None
        if h < 8 or w < 8:
            raise UsageError(f"--sizes: {item} is too small (8x8 at least)")
        sizes.append((h, w))
    if not sizes:
        raise UsageError("--sizes is empty")
    return tuple(sizes)


def validate(cfg: LatencyConfig) -> None:
    """UsageError/OutputError for bad options, before any slow work."""
    unknown = [b for b in cfg.backends if b not in BACKENDS]
    if unknown or not cfg.backends:
        raise UsageError(f"--backend takes a comma list of {', '.join(BACKENDS)}, got {','.join(cfg.backends)!r}")
    if cfg.warmup < 0 or cfg.steps < 1:
        raise UsageError(f"--warmup must be >= 0 and --steps >= 1, got {cfg.warmup} and {cfg.steps}")
    for w in cfg.weights:
        if not w.with_suffix(".onnx").is_file() and not w.with_suffix(".safetensors").is_file():
            raise ModelError(f"--weights {w}: neither {w.stem}.onnx nor {w.stem}.safetensors exists there")
    if cfg.json_out is not None and not cfg.json_out.parent.is_dir():
        raise OutputError(f"folder {cfg.json_out.parent} for --json does not exist; create it first")


def model_choices(cfg: LatencyConfig) -> list[ModelChoice]:
    """One ModelChoice per weights file, else per (model, scale)."""
    if cfg.weights:
        return [ModelChoice(weights=w) for w in cfg.weights]
    names = cfg.models or (None,)
    return [ModelChoice(model=m, scale=s) for m in names for s in cfg.scales]


def open_for(name: str, choice: ModelChoice) -> Backend:
    """Open backend ``name`` for ``choice``; a --weights file is swapped for its sibling of the suffix it needs."""
    if choice.weights is not None:
        path = choice.weights.with_suffix(SUFFIX[name])
        if not path.is_file():
            raise ModelError(f"no {path.name} beside --weights {choice.weights} ({name} loads {SUFFIX[name]})")
        choice = ModelChoice(model=choice.model, scale=choice.scale, weights=path)
    return OPENERS[name](choice)


def _from_torch(spec: GraphSpec, sizes: tuple[tuple[int, int], ...]) -> dict[str, Any] | None:
    """Params and GMAC per size via engine.models.count_macs; None without torch or for an unknown model."""
    if importlib.util.find_spec("torch") is None:
        return None
    from engine.models import GBUFFER_MODELS, MODELS, build_model, count_macs

    if spec.model not in MODELS and spec.model not in GBUFFER_MODELS:
        return None
    net = build_model(spec.model, spec.scale)
    params = sum(p.numel() for p in net.parameters())
    gmac = {f"{h}x{w}": count_macs(net, h, w) / 1e9 for h, w in sizes}
    return {"params": int(params), "gmac": gmac, "macs_from": "engine.models.count_macs"}


def conv_macs_per_pixel(path: Path) -> tuple[int, int]:
    """(parameters, conv multiply-accumulates per LR pixel) of an ONNX graph.

    Like count_macs, every Conv is assumed to run at the LR size (true of the RVSR family: the upscale is a
    pixel shuffle at the end), so MACs of a frame are this times H*W.
    """
    import numpy as np
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    params = sum(int(np.prod(s)) for s in shapes.values())
    per_px = 0
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
            out_c, in_per_group, kh, kw = shapes[node.input[1]]
            per_px += out_c * in_per_group * kh * kw  # = in*out*k/groups, as count_macs
    return params, per_px


def params_and_macs(spec: GraphSpec, sizes: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """``{"params", "gmac": {"HxW": GMAC per step}, "macs_from"}``; empty values when neither source can tell."""
    info = _from_torch(spec, sizes)
    if info is not None:
        return info
    path = Path(spec.weights)
    if path.suffix.lower() == ".onnx" and importlib.util.find_spec("onnx") is not None:
        params, per_px = conv_macs_per_pixel(path)
        return {"params": params, "gmac": {f"{h}x{w}": per_px * h * w / 1e9 for h, w in sizes}, "macs_from": "onnx"}
    return {"params": None, "gmac": {}, "macs_from": "unknown (no torch, no onnx)"}


def percentiles(ms: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean ms and fps (1000 / p50) of a list of step times."""
    a = np.asarray(ms, np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(a, (50, 90, 99)))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(a.mean()), "fps": 1000.0 / p50}


def rss_mb() -> tuple[float | None, float]:
    """(current, peak) resident set size of this process in MiB (peak = high-water mark since start)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        now = pages * resource.getpagesize() / 2**20
    except (OSError, IndexError, ValueError):
        now = None
    return now, peak


def _torch_cuda(backend: Backend) -> Any | None:
    """The torch module when ``backend`` runs torch on CUDA (CUDA events and allocator stats apply), else None."""
    if backend.name != "torch-cuda":
        return None
    import torch

    return torch


@contextmanager
def _gpu_peak(torch: Any | None) -> Iterator[dict[str, float | None]]:
    out: dict[str, float | None] = {"gpu_peak_mb": None}
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    yield out
    if torch is not None:
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20


def lr_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Synthetic LR frame (1, 3, h, w) float32 in [0, 1]: smooth gradients plus noise (no denormal shortcuts)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 + 0.25 * np.sin(x / 7.0)])
    return np.ascontiguousarray(np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)[None], np.float32)


def frame_feeds(h: int, w: int, dtype: str = "uint8", motion: bool = False) -> dict[str, np.ndarray]:
    """A video graph's frame inputs for the synthetic frame: BT.709 limited-range 4:2:0 planes, 8-bit samples, and
    with ``motion`` a motion plane (engine/flow.py; backends take only the inputs their graph declares)."""
    from engine import colour
    from engine.flow import synthetic_motion

    fwd = colour.from_rgb(1, colour.LIMITED, 8)
    rgb = lr_frame(h, w)[0]
    yuv = np.einsum("ij,jhw->ihw", fwd[:, :3], rgb) + fwd[:, 3, None, None]
    uv = yuv[1:, : h // 2 * 2, : w // 2 * 2].reshape(2, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    feeds = {"y": np.round(yuv[None, :1]).astype(dtype), "uv": np.round(uv[None]).astype(dtype),
             "to_rgb": colour.to_rgb(1, colour.LIMITED, 8), "from_rgb": fwd, "peak": colour.peak(8)}
    return feeds | ({"motion": synthetic_motion(h, w)} if motion else {})


def timed_steps(backend: Backend, feeds: dict[str, np.ndarray], warmup: int, steps: int) -> tuple[list[float], str]:
    """Step times in ms (hidden state carried) and the timer used."""
    torch = _torch_cuda(backend)
    hidden: dict[str, Any] = {}
    for _ in range(warmup):
        _, hidden = step(backend, feeds, hidden)
    times: list[float] = []
    for _ in range(steps):
        if torch is not None:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            _, hidden = step(backend, feeds, hidden)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            _, hidden = step(backend, feeds, hidden)
            times.append(1000.0 * (time.perf_counter() - t0))
    return times, "cuda-events" if torch is not None else "perf_counter"


def measure(backend: Backend, hw: tuple[int, int], warmup: int, steps: int) -> dict[str, Any]:
    """One configuration: latency percentiles, fps, memory, output size."""
    h, w = hw
    scale = backend.io_spec().scale
    with _gpu_peak(_torch_cuda(backend)) as gpu:
        spec = backend.io_spec()
        times, timer = timed_steps(backend, frame_feeds(h, w, spec.frame_dtype, spec.motion), warmup, steps)
    now, peak = rss_mb()
    return {"size": [h, w], "out_size": [h * scale, w * scale], "out_pixels": h * w * scale * scale,
            **percentiles(times), "timer": timer, "rss_mb": now, "rss_peak_mb": peak, **gpu, "steps_ms": times}


def bicubic_ms(hw: tuple[int, int], scale: int, steps: int) -> float:
    """Median ms of swscale bicubic RGB upscaling (PyAV ``frame.reformat``) of one ``hw`` frame by ``scale``."""
    import av

    h, w = hw
    frame = av.VideoFrame.from_ndarray((lr_frame(h, w)[0].transpose(1, 2, 0) * 255).astype(np.uint8), format="rgb24")
    frame.reformat(width=w * scale, height=h * scale, interpolation="BICUBIC")  # first call builds the context
    times = []
    for _ in range(max(steps, 3)):
        t0 = time.perf_counter()
        frame.reformat(width=w * scale, height=h * scale, interpolation="BICUBIC")
        times.append(1000.0 * (time.perf_counter() - t0))
    return float(np.median(times))


def run_backend(name: str, choice: ModelChoice, cfg: LatencyConfig,
                log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every size on backend ``name``: (entry with the model's info, result rows) or BackendError/ModelError."""
    with open_for(name, choice) as backend:
        spec = backend.io_spec()
        entry = {"backend": backend.name, "model": spec.model, "scale": spec.scale, "weights": spec.weights,
                 **params_and_macs(spec, cfg.sizes)}
        rows = []
        for hw in cfg.sizes:
            log(f"{backend.name} {spec.model} x{spec.scale} {hw[0]}x{hw[1]}")
            rows.append(measure(backend, hw, cfg.warmup, cfg.steps))
    return entry, rows


def run_latency(cfg: LatencyConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every backend x model x size; unavailable backends land in ``unavailable`` with their reason."""
    from benchmarks.machine import machine_info

    validate(cfg)
    results: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    scales: set[int] = set()
    for choice in model_choices(cfg):
        for name in cfg.backends:
            try:
                entry, rows = run_backend(name, choice, cfg, log)
            except (BackendError, ModelError) as e:
                label = str(choice.weights or choice.model or f"default x{choice.scale or 2}")
                unavailable.append({"backend": name, "model": label, "reason": str(e)})
                continue
            scales.add(entry["scale"])
            results += [{**entry, **row} for row in rows]
    bicubic = [{"size": list(hw), "scale": s, "ms": bicubic_ms(hw, s, cfg.steps)}
               for s in sorted(scales) for hw in cfg.sizes] if cfg.bicubic else []
    return {"kind": "latency", "config": {"warmup": cfg.warmup, "steps": cfg.steps, "sizes": [list(s) for s in cfg.sizes]},
            "results": results, "unavailable": unavailable, "bicubic": bicubic, "machine": machine_info(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
