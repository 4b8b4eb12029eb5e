"""`vsr-bench latency --compare A B`: two backends or two models stepped in alternation, reported as ratios.

A and B are each a backend name (run with the first model of the run) or a model name / weights file (run on the
first backend of the run). Steps are interleaved ABBA ABBA... with each side carrying its own hidden state, so a
machine-wide slowdown hits both sides of a pair; the A/B ratio of each pair is summarised by its median and its
10th-90th percentile spread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency import BACKENDS, LatencyConfig, frame_feeds, model_choices, open_for, validate
from engine.backends.base import Backend
from engine.backends.select import ModelChoice
from engine.errors import UsageError
from engine.step import step


def resolve(item: str, cfg: LatencyConfig) -> tuple[str, ModelChoice]:
    """``item`` -> (backend name, model choice): a backend name, a weights file or a model name."""
    base_backend = cfg.backends[0]
    base_choice = model_choices(cfg)[0]
    if item in BACKENDS:
        return item, base_choice
    if len(cfg.backends) != 1:
        raise UsageError(f"--compare {item}: a model or weights file needs exactly one --backend to run on, "
                         "e.g. --backend onnxruntime-cpu")
    path = Path(item)
    if path.suffix.lower() in (".onnx", ".safetensors"):
        if not path.is_file():
            raise UsageError(f"--compare: weights file {path} not found")
        return base_backend, ModelChoice(weights=path)
    return base_backend, replace(base_choice, model=item)


State = dict[str, Any]  # a backend's hidden_in* feeds


def _timed(backend: Backend, lr: dict[str, np.ndarray], hidden: State) -> tuple[float, State]:
    t0 = time.perf_counter()
    _, hidden = step(backend, lr, hidden)
    return 1000.0 * (time.perf_counter() - t0), hidden


def alternate(time_a: Callable[[], float], time_b: Callable[[], float], pairs: int) -> tuple[list[float], list[float]]:
    """Times of A and B over ``pairs`` pairs run A B, B A, A B, ... (order effects cancel over pairs, and a
    machine-wide slowdown hits both halves of a pair)."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(pairs):
        if i % 2 == 0:
            ta.append(time_a())
            tb.append(time_b())
        else:
            tb.append(time_b())
            ta.append(time_a())
    return ta, tb


def interleaved(a: Backend, b: Backend, lr: dict[str, np.ndarray], warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Per-step ms of A and B, stepped ABBA ABBA..., each side carrying its own hidden state."""
    hidden: dict[str, State] = {"a": {}, "b": {}}
    for _ in range(warmup):
        _, hidden["a"] = step(a, lr, hidden["a"])
        _, hidden["b"] = step(b, lr, hidden["b"])

    def timed(side: str, backend: Backend) -> float:
        ms, hidden[side] = _timed(backend, lr, hidden[side])
        return ms

    return alternate(lambda: timed("a", a), lambda: timed("b", b), steps)


def ratio_stats(ta: list[float], tb: list[float]) -> dict[str, Any]:
    """Median and p10/p90 of the pairwise A/B ratios, plus each side's median ms."""
    r = np.asarray(ta) / np.asarray(tb)
    p10, p50, p90 = (float(v) for v in np.percentile(r, (10, 50, 90)))
    return {"a_p50_ms": float(np.median(ta)), "b_p50_ms": float(np.median(tb)), "ratio_median": p50,
            "ratio_p10": p10, "ratio_p90": p90, "pairs": len(r)}


def run_compare(cfg: LatencyConfig, a: str, b: str, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Interleave A and B at every size of ``cfg``; BackendError/ModelError when either cannot open."""
    from benchmarks.machine import machine_info

    validate(cfg)
    sides = [resolve(a, cfg), resolve(b, cfg)]
    results = []
    with ExitStack() as stack:
        ba, bb = (stack.enter_context(open_for(name, choice)) for name, choice in sides)
        labels = [f"{x.name} {x.io_spec().model} x{x.io_spec().scale}" for x in (ba, bb)]
        for hw in cfg.sizes:
            log(f"compare {labels[0]} vs {labels[1]} at {hw[0]}x{hw[1]}")
            motion = ba.io_spec().motion or bb.io_spec().motion  # a graph ignores what it does not declare
            ta, tb = interleaved(ba, bb, frame_feeds(*hw, ba.io_spec().frame_dtype, motion), cfg.warmup, cfg.steps)
            results.append({"size": list(hw), **ratio_stats(ta, tb), "a_ms": ta, "b_ms": tb})
    return {"kind": "compare", "a": labels[0], "b": labels[1], "results": results, "machine": machine_info(),
            "config": {"warmup": cfg.warmup, "steps": cfg.steps, "sizes": [list(s) for s in cfg.sizes]},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
