"""Centralised training run: cache -> resumable loop with timed checkpoints -> shipped weights."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import DataConfig, build_cache, load_cache
from training.train import SequenceSampler, TrainConfig, cosine_lr, local_train, pick_device


def load_sequences(cfg: TrainConfig, log=print) -> dict[str, np.ndarray]:
    """All cached training sequences for ``cfg`` by group (built on first use)."""
    dcfg = DataConfig(root=cfg.data_root, frames=max(cfg.frames, 7), seed=0)
    return load_cache(build_cache(dcfg, cfg.cache_dir, log=log))


def train_centralised(cfg: TrainConfig, out: Path, command: str, log=print) -> Path:
    """Train (or resume) into ``out``; returns the path of the final weights."""
    from engine.models import build_model, model_config

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = pick_device()
    model = build_model(cfg.model, cfg.scale).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(cfg.seed)
    ckpt = out / "checkpoint.safetensors"
    step = 0
    if ckpt.exists():
        meta = load_checkpoint(ckpt, model, opt, rng)
        saved, now = dict(meta["config"]), json.loads(json.dumps(asdict(cfg)))
        saved.pop("steps"), now.pop("steps")  # the budget may change on resume; the schedule follows it
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise ValueError(f"{ckpt} was made with other options ({', '.join(diff)}); use a new --out or the same options")
        step = meta["step"]
        log(f"resumed at step {step} of {cfg.steps}")
    seqs = np.concatenate(list(load_sequences(cfg, log).values()))
    batches = iter(SequenceSampler(seqs, cfg, rng))
    schedule = cosine_lr(cfg)
    logf = (out / "log.jsonl").open("a")
    last_ckpt = time.monotonic()
    t0 = time.monotonic()
    while step < cfg.steps:
        chunk = min(50, cfg.steps - step)
        loss = local_train(model, batches, chunk, opt, cfg, lambda i: schedule(step + i), device=device)
        step += chunk
        rec = {"step": step, "loss": round(loss, 6), "lr": schedule(step), "sec": round(time.monotonic() - t0, 1)}
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        log(json.dumps(rec))
        if time.monotonic() - last_ckpt > cfg.checkpoint_minutes * 60 or step >= cfg.steps:
            save_checkpoint(ckpt, model, opt, {"step": step, "config": asdict(cfg), "command": command}, rng)
            last_ckpt = time.monotonic()
    return write_weights(model, cfg, out, command)


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
