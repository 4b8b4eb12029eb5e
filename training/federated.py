"""In-process federated simulation (the default runner): K clients train in turn, a Strategy aggregates.

No Ray and no network: one process, deterministic in the seed. The pieces a Flower deployment needs
(`initial_params`, `client_round`, `round_record`) live here too, so the ServerApp/ClientApp in
training/flower_app.py compute exactly what this runner computes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from training.partition import ClientData
from training.strategies import Aggregate, ClientUpdate, Params, build_strategy
from training.train import SequenceSampler, TrainConfig, local_train, pick_device


@dataclass(frozen=True)
class FedConfig:
    """A federated run; the local training options come from `TrainConfig` (seed included)."""

    strategy: str = "fedvsr"  # name in training.strategies.STRATEGIES
    clients: int = 4  # K: clients, one data partition each
    rounds: int = 20  # T: communication rounds
    partition: str = "content"  # how the cache is split: iid | content | quantity
    local_epochs: float = 1.0  # passes over the client's sequences per round: ceil(epochs * n / batch) steps
    local_steps: int = 0  # cap on optimiser steps per round (0 = no cap); for smoke runs
    prox_mu: float = 1e-3  # FedProx proximal coefficient (ignored by the other strategies)
    size_weighted: bool = False  # FedVSR: fold example counts into its weights (off in the paper)
    eval_frames: int = 0  # Vid4 frames per clip scored after each round (0 = no evaluation)
    eval_dir: str = "../shared/data/vid4"  # the quality harness's Vid4 folder


def check_configs(cfg: TrainConfig, fed: FedConfig) -> None:
    """Refuse option values that would fail later, with a message naming the option."""
    from engine.models import MODELS
    from training.partition import SCHEMES
    from training.strategies import STRATEGIES

    problems = []
    if cfg.model not in MODELS:
        problems.append(f"--model {cfg.model!r} is not one of {', '.join(sorted(MODELS))}")
    if fed.strategy not in STRATEGIES:
        problems.append(f"--strategy {fed.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if fed.partition not in SCHEMES:
        problems.append(f"--partition {fed.partition!r} is not one of {', '.join(SCHEMES)}")
    if cfg.windows != 1:
        problems.append("--windows is for centralised runs; federated clients train on single windows")
    if fed.clients < 1 or fed.rounds < 1:
        problems.append(f"--clients and --rounds must be >= 1 (got {fed.clients}, {fed.rounds})")
    if fed.local_epochs <= 0 or fed.local_steps < 0 or fed.eval_frames < 0 or fed.prox_mu < 0:
        problems.append("--local-epochs must be > 0; --local-steps, --eval-frames and --prox-mu >= 0")
    if cfg.patch % cfg.scale or cfg.batch < 1:
        problems.append(f"--patch {cfg.patch} must be a multiple of --scale {cfg.scale}; --batch >= 1")
    if problems:
        raise ValueError("; ".join(problems))


def local_steps(num_seqs: int, cfg: TrainConfig, fed: FedConfig) -> int:
    """Optimiser steps of one local round: ``local_epochs`` passes over the data, capped by ``local_steps``."""
    steps = max(1, math.ceil(fed.local_epochs * num_seqs / cfg.batch))
    return min(steps, fed.local_steps) if fed.local_steps else steps


def round_lr(cfg: TrainConfig, server_round: int, num_rounds: int) -> float:
    """Learning rate of round t (1-based): cosine from cfg.lr in round 1 towards cfg.min_lr after round T."""
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * (server_round - 1) / num_rounds))


def to_numpy(model: torch.nn.Module) -> Params:
    """state_dict as float32 numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def initial_params(cfg: TrainConfig) -> Params:
    """The round-0 global model: ``cfg.model`` initialised under ``torch.manual_seed(cfg.seed)``."""
    from engine.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return to_numpy(build_model(cfg.model, cfg.scale))


def client_round(
    params: Params, data: ClientData, cfg: TrainConfig, fed: FedConfig, server_round: int, mu: float = 0.0,
    device: str | None = None,
) -> ClientUpdate:
    """One stateless local round: load the global weights, train with a fresh Adam, report.

    The batch sampler is seeded by (seed, round, client), so any runner (in-process or a SuperNode)
    that holds the same partition produces the same update. ``mu`` > 0 adds FedProx's proximal term.
    """
    from engine.models import build_model

    if data.seqs.ndim != 5 or data.seqs.shape[1] < cfg.frames or min(data.seqs.shape[2:4]) < cfg.patch:
        raise ValueError(f"client {data.client}: sequences {data.seqs.shape} are smaller than "
                         f"--frames {cfg.frames} x --patch {cfg.patch}")
    device = device or pick_device()
    model = build_model(cfg.model, cfg.scale)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}, strict=True)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=round_lr(cfg, server_round, fed.rounds), betas=(0.9, 0.99))
    batches = iter(SequenceSampler(data.seqs, cfg, np.random.default_rng([cfg.seed, server_round, data.client])))
    prox = ([p.detach().clone() for p in model.parameters()], mu) if mu > 0 else None
    loss = local_train(model, batches, local_steps(len(data.seqs), cfg, fed), opt, cfg, prox=prox, device=device)
    if not math.isfinite(loss):
        raise FloatingPointError(f"client {data.client} diverged in round {server_round} (loss {loss})")
    return ClientUpdate(data.client, to_numpy(model), len(data.seqs), float(loss))


def round_record(server_round: int, updates: Sequence[ClientUpdate], agg: Aggregate, evaluation: dict | None,
                 seconds: float, train_sec: float | None = None, agg_sec: float | None = None) -> dict:
    """One entry of history.json's "rounds" (clients in id order, like the strategy's weights).

    ``seconds`` is the whole round; ``train_sec`` the clients' local training and ``agg_sec`` the server's
    aggregation, where the runner can time them apart (in-process runner).
    """
    ups = sorted(updates, key=lambda u: u.client)
    ev = evaluation or {}
    return {"round": server_round, "clients": [u.client for u in ups],
            "client_losses": [round(u.loss, 6) for u in ups], "num_examples": [u.num_examples for u in ups],
            "weights": None if agg.weights is None else [round(w, 6) for w in agg.weights],
            "beta": agg.beta, "hellinger": agg.hellinger,
            "eval_psnr": ev.get("y_psnr"), "eval_ssim": ev.get("y_ssim"), "sec": round(seconds, 1),
            "train_sec": None if train_sec is None else round(train_sec, 3),
            "agg_sec": None if agg_sec is None else round(agg_sec, 5)}


def new_history(cfg: TrainConfig, fed: FedConfig, runner: str, clients: Sequence[dict], command: str) -> dict:
    """history.json's header; rounds are appended as they finish."""
    strategy = build_strategy(fed.strategy, fed.prox_mu, fed.size_weighted)
    return {"runner": runner, "command": command, "train": asdict(cfg), "fed": asdict(fed),
            "strategy": strategy.describe(), "clients": list(clients), "rounds": []}


def run_federated(
    clients: Sequence[ClientData], cfg: TrainConfig, fed: FedConfig, out: Path | None = None,
    command: str = "", log: Callable[[str], None] = print,
    evaluate: Callable[[Params], dict] | None = None,
) -> tuple[Params, dict]:
    """Train ``fed.rounds`` rounds over ``clients``; returns the global weights and the history.

    With ``out`` set, writes global.safetensors, history.json (after every round) and history.png.
    ``evaluate`` (global weights -> {"y_psnr", "y_ssim"}) is called after each round when given.
    """
    from training.fed_report import write_history, write_outputs

    check_configs(cfg, fed)
    if len(clients) != fed.clients:
        raise ValueError(f"{len(clients)} client partitions given but --clients is {fed.clients}")
    strategy = build_strategy(fed.strategy, fed.prox_mu, fed.size_weighted)
    history = new_history(cfg, fed, "in-process", [c.summary() for c in clients], command)
    params = initial_params(cfg)
    for t in range(1, fed.rounds + 1):
        t0 = time.monotonic()
        updates = [client_round(params, c, cfg, fed, t, strategy.prox_mu) for c in clients]
        t1 = time.monotonic()
        agg = strategy.aggregate(updates, t, fed.rounds)
        params = agg.params
        t2 = time.monotonic()
        rec = round_record(t, updates, agg, evaluate(params) if evaluate else None, time.monotonic() - t0,
                           train_sec=t1 - t0, agg_sec=t2 - t1)
        history["rounds"].append(rec)
        log(json.dumps(rec))
        if out is not None:
            write_history(out, history)
    if out is not None:
        write_outputs(out, params, cfg, history)
    return params, history
