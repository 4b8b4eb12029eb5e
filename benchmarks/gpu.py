"""`vsr-bench gpu`: the one-command device check: parity of every GPU backend against CPU fp32, step latency at the
target sizes, and an end-to-end pipeline run with per-stage times and GPU utilisation, inside a time budget.

Every stage runs in its own try/except: a failure is recorded in the JSON (``error``) and the next stage runs, so
one broken backend never loses the other figures. Stages past the budget are recorded as ``skipped``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import colour
from engine.errors import BackendError, OutputError

GPU_BACKENDS = ("torch-cuda", "onnxruntime-cuda", "tensorrt")  # engine.backends.select.OPENERS names
PARITY_HW = (144, 256)  # LR size of the parity runs (the CPU fp32 reference must stay quick)
E2E_HW = (540, 960)  # LR size of the end-to-end clip (x2 -> 1080p)


@dataclass(frozen=True)
class Case:
    """One latency configuration: a shipped model at one LR size."""

    label: str  # what the row says, e.g. "270x480 -> 1080p x4"
    model: str  # shipped model name
    scale: int  # output/input size ratio
    hw: tuple[int, int]  # LR (height, width)


CASES = (Case("270x480 -> 1080p x4", "rvsr-m-real", 4, (270, 480)),
         Case("540x960 -> 1080p x2", "rvsr-s-real", 2, (540, 960)),
         Case("1080p -> 4K x2", "rvsr-s-real", 2, (1080, 1920)))
PARITY_MODELS = (("rvsr-m-real", 4), ("rvsr-s-real", 2))  # every GPU backend against torch-cpu fp32, each


@dataclass(frozen=True)
class GpuBenchConfig:
    """Options of ``vsr-bench gpu``."""

    json_out: Path | None = None  # report (or, with dry_run, the plan) as JSON
    dry_run: bool = False  # print and write the plan; run nothing (works without a GPU)
    budget_s: float = 220.0  # wall-time budget of the whole run; later stages are skipped past it
    backends: tuple[str, ...] = GPU_BACKENDS  # GPU backends to measure
    parity_steps: int = 8  # recurrent steps of each parity run
    warmup: int = 10  # untimed steps per latency case (graph capture, autotuning)
    steps: int = 100  # timed steps per latency case
    e2e_frames: int = 90  # frames of the synthetic end-to-end clip
    cases: tuple[Case, ...] = CASES  # latency configurations
    parity_hw: tuple[int, int] = PARITY_HW  # LR size of the parity runs
    e2e_hw: tuple[int, int] = E2E_HW  # LR size of the end-to-end clip


def plan(cfg: GpuBenchConfig) -> dict[str, Any]:
    """What a run does, stage by stage (printed and written by --dry-run; embedded in every report)."""
    return {"budget_s": cfg.budget_s, "backends": list(cfg.backends), "stages": [
        {"stage": "machine", "what": "GPU, driver, CUDA, library versions (benchmarks/machine.py)"},
        {"stage": "parity", "what": f"each backend vs torch-cpu fp32, {cfg.parity_steps} recurrent steps at "
         f"{cfg.parity_hw[0]}x{cfg.parity_hw[1]}, max/mean code-value difference",
         "models": [f"{m} x{s}" for m, s in PARITY_MODELS]},
        {"stage": "latency", "what": f"{cfg.warmup} warm-up + {cfg.steps} timed steps, state carried, planes on the "
         "device (model step) and on the host (with copies); p50/p99 ms", "cases": [asdict(c) for c in cfg.cases]},
        {"stage": "e2e", "what": f"decode -> upscale -> encode of a {cfg.e2e_frames}-frame {cfg.e2e_hw[0]}x{cfg.e2e_hw[1]} "
         "H.264 clip (x2), per-stage ms/frame, fps vs decode+encode alone, GPU utilisation (pynvml or nvidia-smi)"},
    ]}


class Budget:
    """Wall-clock budget shared by all stages."""

    def __init__(self, seconds: float) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        """Seconds left (negative when over)."""
        return self.seconds - (time.perf_counter() - self.t0)


def guarded(fn: Callable[[], Any], budget: Budget, need_s: float = 1.0) -> Any:
    """``fn()``'s result, or ``{"error": ...}`` when it raised, or ``{"skipped": ...}`` past the budget."""
    if budget.left() < need_s:
        return {"skipped": f"time budget spent ({budget.seconds:.0f} s)"}
    try:
        return fn()
    except Exception as e:  # any failure is a figure lost, not the run: record it and go on
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def planes(hw: tuple[int, int], seed: int, device: str = "cpu", motion: bool = False) -> dict[str, Any]:
    """Limited-range 4:2:0 8-bit planes of an ``hw`` frame, plus BT.709 constants; torch CUDA tensors on 'cuda'.
    ``motion``: also a ``motion`` plane (graphs whose history blend follows the motion, engine/flow.py)."""
    from engine.flow import synthetic_motion

    g = np.random.default_rng(seed)
    h, w = hw
    out: dict[str, Any] = {"y": g.integers(16, 236, (1, 1, h, w), dtype=np.uint8),
                           "uv": g.integers(16, 241, (1, 2, h // 2, w // 2), dtype=np.uint8)}
    if motion:
        out["motion"] = synthetic_motion(h, w, seed)
    if device == "cuda":
        import torch

        out = {k: torch.from_numpy(v).cuda() for k, v in out.items()}
    return out | {"to_rgb": colour.to_rgb(1, colour.LIMITED, 8), "from_rgb": colour.from_rgb(1, colour.LIMITED, 8),
                  "peak": colour.peak(8)}


def open_named(name: str, model: str, scale: int, hw: tuple[int, int] | None = None) -> Any:
    """The engine's own opener for backend ``name``; TensorRT engines are built before the first frame."""
    from engine.backends.select import OPENERS, ModelChoice

    backend = OPENERS[name](ModelChoice(model=model, scale=scale))
    if hw is not None:
        backend.prepare(*hw)
    return backend


def _host(x: Any) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def parity(name: str, model: str, scale: int, steps: int, hw: tuple[int, int] = PARITY_HW) -> dict[str, Any]:
    """Backend ``name`` vs torch-cpu fp32 over ``steps`` recurrent steps, each carrying its own state."""
    ref, dut = open_named("torch-cpu", model, scale), open_named(name, model, scale, hw)
    worst, total, n = 0, 0.0, 0
    with ref, dut:
        sr: dict[str, Any] = {}
        sd: dict[str, Any] = {}
        for i in range(steps):
            f = planes(hw, i, motion=ref.io_spec().motion)
            a, b = ref.run(f | sr), dut.run(f | sd)
            sr, sd = ref.io_spec().next_state(a), dut.io_spec().next_state(b)
            for k in ("y_out", "uv_out"):
                d = np.abs(_host(a[k]).astype(np.int32) - _host(b[k]).astype(np.int32))
                worst, total, n = max(worst, int(d.max())), total + float(d.sum()), n + d.size
    return {"backend": name, "model": f"{model} x{scale}", "steps": steps, "max_code_diff": worst,
            "mean_code_diff": total / n, "pass": worst <= 3}


def latency(name: str, case: Case, warmup: int, steps: int, budget: Budget) -> dict[str, Any]:
    """p50/p99 ms of one step with planes on the device (the model step) and on the host (with copies)."""
    import torch

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    backend = open_named(name, case.model, case.scale, case.hw)
    row: dict[str, Any] = {"backend": backend.name, "case": case.label}
    with backend:
        for where in ("cuda", "cpu") if cuda else ("cpu",):
            feeds, times = planes(case.hw, 0, where, backend.io_spec().motion), []
            state: dict[str, Any] = {}
            for i in range(warmup + steps):
                if budget.left() < 5:
                    row[f"{where}_note"] = "cut short by the time budget"
                    break
                sync()
                t0 = time.perf_counter()
                out = backend.run(feeds | state)
                sync()
                if i >= warmup:
                    times.append(1000.0 * (time.perf_counter() - t0))
                state = backend.io_spec().next_state(out)
            key = "device_io" if where == "cuda" else "host_io"
            row[key] = {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
                        "steps": len(times)} if times else {"error": "no timed step"}
    return row


def gpu_busy_sampler() -> tuple[Callable[[], None], Callable[[], dict[str, Any]]]:
    """(start, stop) of a GPU-utilisation sampler: pynvml when importable, else ``nvidia-smi -lms``."""
    import subprocess
    import threading

    samples: list[float] = []
    stop_flag = threading.Event()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)

        def loop() -> None:
            while not stop_flag.wait(0.05):
                samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        worker = threading.Thread(target=loop, daemon=True)
        source = "pynvml"
    except Exception:  # no pynvml (or no NVML): nvidia-smi, which ships with the driver
        worker, source = None, "nvidia-smi"
    proc: list[Any] = []

    missing: list[str] = []

    def start() -> None:
        if worker is not None:
            worker.start()
            return
        try:
            proc.append(subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "100"], stdout=subprocess.PIPE, text=True))
        except OSError as e:  # no driver tools on this machine: the figure is unavailable, the run goes on
            missing.append(f"unavailable: neither pynvml nor nvidia-smi ({e.strerror})")

    def stop() -> dict[str, Any]:
        stop_flag.set()
        if missing:
            return {"source": None, "error": missing[0]}
        if proc:
            proc[0].terminate()
            out, _ = proc[0].communicate(timeout=5)
            samples.extend(float(v) for v in out.split() if v.strip().replace(".", "").isdigit())
        if not samples:
            return {"source": source, "error": "no utilisation samples"}
        return {"source": source, "mean_pct": float(np.mean(samples)), "samples": len(samples)}

    return start, stop


def end_to_end(name: str, frames: int, tmp: Path, hw: tuple[int, int] = E2E_HW) -> dict[str, Any]:
    """decode -> upscale -> encode of a synthetic clip on backend ``name``, and decode+encode alone."""
    import av

    from benchmarks.pipeline_bench import NearestBackend, _best
    from benchmarks.pipeline_cmd import stage_report
    from engine.encode import EncodeOptions

    clip = tmp / f"e2e_{name}.mp4"
    h, w = hw
    y, x = np.mgrid[0:h, 0:w]
    with av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):  # smooth moving content: what a video looks like to the encoder, unlike noise
            rgb = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y) // 2 % 256], -1).astype(np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(s.encode())
    enc = EncodeOptions(overwrite=True)
    start, stop = gpu_busy_sampler()
    with open_named(name, "rvsr-s-real", 2, hw) as backend:
        start()
        try:
            full = _best(clip, backend, enc, 1)
        finally:
            busy = stop()
    base = _best(clip, NearestBackend(2), enc, 1)
    return {"backend": name, "full": stage_report(full), "decode_encode_only": stage_report(base),
            "fps_ratio": full.fps / base.fps if base.fps else None, "codec": full.codec, "gpu_busy": busy}


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed (the GPU machine needs torch with CUDA)"
    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def run_gpu(cfg: GpuBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """The whole check (or only the plan with ``dry_run``); writes ``cfg.json_out`` after every stage, so a run cut
    short still leaves the figures it got."""
    import tempfile

    from benchmarks.machine import machine_info

    if cfg.json_out is not None and not cfg.json_out.parent.is_dir():
        raise OutputError(f"folder {cfg.json_out.parent} for --json does not exist; create it first")
    report: dict[str, Any] = {"kind": "gpu", "dry_run": cfg.dry_run, "plan": plan(cfg),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    save = (lambda: cfg.json_out.write_text(json.dumps(report, indent=2) + "\n")) if cfg.json_out else (lambda: None)
    if cfg.dry_run:
        save()
        return report
    reason = _cuda_reason() if set(cfg.backends) <= set(GPU_BACKENDS) else None  # a CPU backend: harness check
    if reason:
        raise BackendError(f"vsr-bench gpu needs a CUDA device: {reason}; --dry-run prints the plan")
    budget = Budget(cfg.budget_s)
    report["machine"] = guarded(machine_info, budget)
    report["parity"], report["latency"], report["e2e"] = [], [], []
    for name in cfg.backends:
        for model, scale in PARITY_MODELS:
            log(f"parity {name} {model} x{scale}")
            report["parity"].append(guarded(lambda: parity(name, model, scale, cfg.parity_steps, cfg.parity_hw), budget) |
                                    {"backend": name, "model": f"{model} x{scale}"})
            save()
    for case in cfg.cases:
        for name in cfg.backends:
            log(f"latency {name} {case.label}")
            report["latency"].append(guarded(lambda: latency(name, case, cfg.warmup, cfg.steps, budget), budget, 10)
                                     | {"case": case.label, "backend": name})
            save()
    with tempfile.TemporaryDirectory(prefix="vsr-bench-gpu-") as tmp:
        for name in cfg.backends:
            log(f"end to end {name}")
            report["e2e"].append(guarded(lambda: end_to_end(name, cfg.e2e_frames, Path(tmp), cfg.e2e_hw), budget, 20)
                                 | {"backend": name})
            save()
    report["wall_s"] = cfg.budget_s - budget.left()
    save()
    return report


def markdown(report: dict[str, Any]) -> str:
    """Short human summary: the plan (dry run) or one line per figure."""
    if report["dry_run"]:
        lines = [f"vsr-bench gpu plan (budget {report['plan']['budget_s']:.0f} s, backends "
                 f"{', '.join(report['plan']['backends'])}):"]
        for st in report["plan"]["stages"]:
            extra = st.get("models") or [c["label"] for c in st.get("cases", [])]
            lines.append(f"- {st['stage']}: {st['what']}" + (f" [{'; '.join(extra)}]" if extra else ""))
        return "\n".join(lines)
    rows = report.get("parity", [])
    passed = sum(1 for r in rows if r.get("pass") is True)
    lines = [f"parity: {passed} of {len(rows)} runs within 3 code values of CPU fp32 "
             f"({sum(1 for r in rows if 'error' in r)} could not run)"]
    lines += [f"{k}: {json.dumps(v)}" for k in ("parity", "latency", "e2e") for v in report.get(k, [])]
    return "\n".join(lines)
