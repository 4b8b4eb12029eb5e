"""Centralised training run: cache -> resumable loop with timed checkpoints -> shipped weights."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from training.checkpoint import load_checkpoint, save_checkpoint, warm_start
from training.data import build_cache, data_config, load_cache
from training.train import SequenceSampler, TrainConfig, cosine_lr, local_train, pick_device


def load_sequences(cfg: TrainConfig, log=print) -> dict[str, np.ndarray]:
    """All cached training sequences for ``cfg`` by group (built on first use)."""
    return load_cache(build_cache(data_config(cfg), cfg.cache_dir, log=log))


def start_or_resume(cfg, out: Path, log=print, may_change: tuple[str, ...] = ("steps",), init: str = ""):
    """Model, Adam, sampler RNG, step and device for ``cfg``, restored from out/checkpoint.safetensors if there,
    else started from the weights file ``init`` when given (see training.checkpoint.warm_start).

    Only the options named in ``may_change`` may differ from the checkpoint's (by default the step budget:
    the schedule follows it); any other difference is refused. ``init`` is not compared: it only picks the weights
    of a fresh start, so a resume whose --init names another copy (or none) goes on, saying so.
    """
    from engine.models import build_model

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = pick_device()
    model = build_model(cfg.model, cfg.scale).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(cfg.seed)
    ckpt, step = out / "checkpoint.safetensors", 0
    if ckpt.exists():
        meta = load_checkpoint(ckpt, model, opt, rng)
        now = json.loads(json.dumps(asdict(cfg)))
        # options added since the checkpoint was written count as their defaults
        saved = {**json.loads(json.dumps(asdict(type(cfg)()))), **meta["config"]}
        for key in (*may_change, "init"):
            saved.pop(key, None), now.pop(key, None)
        if saved != now:
            diff = ", ".join(sorted(k for k in now if saved.get(k) != now[k]))
            raise ValueError(f"{ckpt} was made with another config (other options: {diff}); "
                             "use a new --out or the same options")
        step = meta["step"]
        log(f"resumed at step {step}" + (f" of {cfg.steps}" if "steps" in may_change else ""))
        started = meta["config"].get("init", "")
        if init != started:
            log(f"note: this run started from {started or 'a fresh init'}; --init is not used on resume")
    elif init:
        fresh = warm_start(model, init)
        log(f"started from {init}" + (f"; new: {', '.join(fresh)}" if fresh else ""))
    return model, opt, rng, step, device


def train_centralised(cfg: TrainConfig, out: Path, command: str, log=print) -> Path:
    """Train (or resume) into ``out``; returns the path of the final weights."""
    model, opt, rng, step, device = start_or_resume(cfg, out, log, init=cfg.init)
    seqs = np.concatenate(list(load_sequences(cfg, log).values()))
    batches = iter(SequenceSampler(seqs, cfg, rng))
    schedule = cosine_lr(cfg)

    def run_chunk(at: int, n: int) -> float:
        return local_train(model, batches, n, opt, cfg, lambda i: schedule(at + i), device=device)

    checkpointed_loop(cfg, out, command, model, opt, rng, step, run_chunk, schedule, chunk=50, log=log)
    return write_weights(model, cfg, out, command)


def checkpointed_loop(cfg, out: Path, command: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                      rng: np.random.Generator, step: int, run_chunk: Callable[[int, int], float],
                      schedule: Callable[[int], float], chunk: int = 50, log=print) -> int:
    """Run ``run_chunk(step, n)`` until ``cfg.steps``, logging each chunk to out/log.jsonl and saving a
    checkpoint every ``cfg.checkpoint_minutes`` and at the end; returns the final step."""
    t0 = last_ckpt = time.monotonic()
    with (out / "log.jsonl").open("a") as logf:
        while step < cfg.steps:
            n = min(chunk, cfg.steps - step)
            loss = run_chunk(step, n)
            step += n
            rec = {"step": step, "loss": round(loss, 6), "lr": schedule(step), "sec": round(time.monotonic() - t0, 1)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log(json.dumps(rec))
            if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60 or step >= cfg.steps:
                save_checkpoint(out / "checkpoint.safetensors", model, opt,
                                {"step": step, "config": asdict(cfg), "command": command}, rng)
                last_ckpt = time.monotonic()
    return step


def write_weights(model: torch.nn.Module, cfg: TrainConfig, out: Path, command: str) -> Path:
    """Final weights (safetensors) plus a card with the exact command and config."""
    from safetensors.torch import save_file

    from engine.models import model_config

    path = out / "weights.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"model": cfg.model, "scale": str(cfg.scale)})
    card = {"model": model_config(cfg.model, cfg.scale), "train": asdict(cfg), "command": command,
            "torch": torch.__version__, "python": sys.version.split()[0]}
    (out / "weights.json").write_text(json.dumps(card, indent=1))
    return path
