"""Outputs of a federated run (global.safetensors, history.json, history.png) and per-round Vid4 scoring.

Shared by the in-process runner and the Flower ServerApp, so both write the same files.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.strategies import Params
from training.train import TrainConfig


def write_history(out: Path, history: dict) -> Path:
    """history.json, replaced atomically so a reader never sees half a file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "history.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(history, indent=1))
    tmp.replace(path)
    return path


def write_global(out: Path, params: Params, cfg: TrainConfig, history: dict) -> Path:
    """global.safetensors with {"model", "scale"} metadata (what vsr-export and --weights read) plus a card."""
    import torch
    from safetensors.torch import save_file

    from engine.models import model_config

    out.mkdir(parents=True, exist_ok=True)
    path = out / "global.safetensors"
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    save_file(state, str(path), metadata={"model": cfg.model, "scale": str(cfg.scale)})
    card = {"model": model_config(cfg.model, cfg.scale), "train": history.get("train"), "fed": history.get("fed"),
            "strategy": history.get("strategy"), "runner": history.get("runner"), "command": history.get("command"),
            "torch": torch.__version__, "python": sys.version.split()[0]}
    (out / "global.json").write_text(json.dumps(card, indent=1))
    return path


def load_params(path: Path) -> Params:
    """Weights written by `write_global` as numpy arrays."""
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def plot_history(out: Path, history: dict) -> Path:
    """history.png: client losses, mixing weights (and FedVSR's beta), Vid4 PSNR per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = history["rounds"]
    t = [r["round"] for r in rounds]
    ids = rounds[0]["clients"] if rounds else []
    psnr = [(r["round"], r["eval_psnr"]) for r in rounds if r.get("eval_psnr") is not None]
    fig, axes = plt.subplots(1, 3 if psnr else 2, figsize=(13 if psnr else 9, 3.6), constrained_layout=True)
    for i, c in enumerate(ids):
        axes[0].plot(t, [r["client_losses"][i] for r in rounds], marker=".", label=f"client {c}")
        if all(r["weights"] is not None for r in rounds):
            axes[1].plot(t, [r["weights"][i] for r in rounds], marker=".", label=f"client {c}")
    if rounds and all(r["beta"] is not None for r in rounds):
        axes[1].plot(t, [r["beta"] for r in rounds], "k--", label="beta")
    axes[0].set(title="mean local loss", xlabel="round", yscale="log")
    axes[1].set(title="aggregation weights" + ("" if rounds and rounds[0]["weights"] else " (median: none)"),
                xlabel="round")
    if psnr:
        axes[2].plot(*zip(*psnr), marker="o")
        axes[2].set(title="Vid4 Y-PSNR of the global model (dB)", xlabel="round")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].ticklabel_format(axis="y", useOffset=False)
    for ax in axes[:2]:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"{history['strategy']['strategy']}  K={len(ids)}  partition={history['fed']['partition']}")
    path = out / "history.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(out: Path, params: Params, cfg: TrainConfig, history: dict) -> dict[str, Path]:
    """All three outputs of a finished run."""
    return {"weights": write_global(out, params, cfg, history), "history": write_history(out, history),
            "plot": plot_history(out, history)}


def vid4_evaluator(cfg: TrainConfig, eval_frames: int, eval_dir: str) -> Callable[[Params], dict] | None:
    """global weights -> {"y_psnr", "y_ssim"} on Vid4 through training.validate (None when eval_frames is 0)."""
    if eval_frames <= 0:
        return None
    if not Path(eval_dir).is_dir():
        raise FileNotFoundError(f"Vid4 folder {eval_dir} not found; pass --eval-dir or --eval-frames 0")

    def evaluate(params: Params) -> dict:
        import torch

        from engine.models import build_model
        from training.validate import validate

        model = build_model(cfg.model, cfg.scale)
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()})
        model.eval()
        with torch.no_grad():
            res = validate(model, eval_dir, cfg.scale, max_frames=eval_frames)
        return {"y_psnr": float(res["y_psnr"]), "y_ssim": float(res["y_ssim"])}

    return evaluate


def cache_path(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """The sequence cache file for ``cfg`` (built on first use), as training/run.py's load_sequences uses."""
    from training.data import build_cache, data_config

    return build_cache(data_config(cfg), cfg.cache_dir, log=log)


def load_groups(cfg: TrainConfig, data: str | Path | None = None, log: Callable[[str], None] = print) -> dict:
    """Training sequences by group: from ``data`` (an .npz of uint8 (N, T, H, W, 3) arrays, e.g. a cache
    file) or, when None, the data cache of ``cfg``."""
    from training.data import load_cache

    if data is None:
        data = cache_path(cfg, log)
    if not Path(data).is_file():
        raise FileNotFoundError(f"training data {data} not found; give an .npz of uint8 (N,T,H,W,3) arrays")
    return load_cache(data)
