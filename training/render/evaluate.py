"""Quality on held-out rendered scenes: PSNR and warping error (with the renderer's motion), for any model or bicubic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.rdg import warp
from training.render.dataset import load_scene, scene_folders
from training.render.train import run_model, to_tensors

DISOCCLUSION = 0.02  # relative inverse-depth change above which a pixel has no valid history


def history_mask(depth: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """(T-1, 1, H, W) True where frame t's pixel was visible in frame t-1 (depth agrees after warping)."""
    inv = 1.0 - depth
    inv_prev = 1.0 - warp(depth[:-1], motion[1:], padding="zeros", mode="nearest")
    rel = (inv[1:] - inv_prev).abs() / torch.maximum(inv[1:], inv_prev).clamp(min=1e-6)
    return rel < DISOCCLUSION


def warping_error(frames: torch.Tensor, motion: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared difference between each frame (T, 3, sH, sW) and the previous one warped onto it, over ``mask``.

    ``motion`` (T, 2, H, W) is in render pixels; it is upsampled (nearest) and scaled to output pixels.
    """
    s = frames.shape[-1] // motion.shape[-1]
    mv = F.interpolate(motion[1:], scale_factor=s, mode="nearest") * s
    m = F.interpolate(mask.float(), scale_factor=s, mode="nearest")
    diff = (frames[1:] - warp(frames[:-1], mv)) ** 2
    return float((diff * m).sum() / (m.sum() * 3).clamp(min=1))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(model: torch.nn.Module | None, root: str | Path, scale: int, split: str = "test") -> dict:
    """Per-scene and mean PSNR (dB) and warping error (MSE x 1e3) of ``model`` (None = bicubic) on ``split``.

    The first frame of each clip is scored too (the model starts from a zero state, as after a camera cut).
    """
    index = json.loads((Path(root) / "index.json").read_text())
    target_scale = int(index["config"]["target_scale"])
    if model is not None:
        model.eval()
    rows = []
    for folder in scene_folders(root, split):
        s = load_scene(folder)
        clip = {k: np.asarray(s[k]) for k in ("color", "depth", "motion", "normals", "albedo", "target", "jitter")}
        clip["depth"] = clip["depth"][..., None]
        lr, gb, hr = to_tensors([clip], scale, target_scale)
        if model is None:
            sr = F.interpolate(lr[0], scale_factor=scale, mode="bicubic", align_corners=False)[None]
        else:
            sr = run_model(model, lr, gb)
        sr = sr.clamp(0, 1)[0]
        hr = hr[0]
        mask = history_mask(gb["depth"][0], gb["motion"][0])
        rows.append({"scene": folder.name, "psnr": float(np.mean([psnr(a, b) for a, b in zip(sr, hr)])),
                     "warp_mse_e3": 1e3 * warping_error(sr, gb["motion"][0], mask),
                     "target_warp_mse_e3": 1e3 * warping_error(hr, gb["motion"][0], mask)})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "warp_mse_e3", "target_warp_mse_e3")}
    return {"split": split, "scale": scale, "scenes": rows, "mean": mean}


def evaluate_weights(weights: str | Path, root: str | Path, split: str = "test") -> dict:
    """Load shipped-format weights (safetensors with model/scale metadata) and evaluate them."""
    from safetensors import safe_open

    from engine.models import build_model, load_weights

    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    if "model" not in meta or "scale" not in meta:
        raise ValueError(f"{weights} has no model/scale metadata; was it written by training?")
    model = load_weights(build_model(meta["model"], int(meta["scale"])), weights)
    return {"model": meta["model"], **evaluate(model, root, int(meta["scale"]), split)}


def compare(weights: list[str | Path], root: str | Path, split: str = "test") -> dict:
    """Bicubic and every weights file on ``split``; all must share one scale."""
    results = [evaluate_weights(w, root, split) | {"weights": str(w)} for w in weights]
    scales = {r["scale"] for r in results}
    if len(scales) != 1:
        raise ValueError(f"the weights files have different scales {sorted(scales)}: compare one scale at a time")
    return {"split": split, "scale": scales.pop(), "bicubic": evaluate(None, root, results[0]["scale"], split),
            "models": results}


def markdown(result: dict) -> str:
    """Per-scene PSNR / warping error table of `compare`'s result, bicubic first, the mean last."""
    runs = [("bicubic", result["bicubic"])] + [(r["model"], r) for r in result["models"]]
    head = " | ".join(f"{name} PSNR | {name} warp" for name, _ in runs)
    lines = [f"Held-out rendered scenes ({result['split']}), x{result['scale']}: PSNR (dB, RGB, every frame) and "
             "warping error (MSE x 1e3 on pixels visible in the previous frame; lower is steadier).", "",
             f"| scene | {head} | target warp |", "|---" * (2 * len(runs) + 2) + "|"]
    for i, scene in enumerate(result["bicubic"]["scenes"]):
        cells = " | ".join(f"{r['scenes'][i]['psnr']:.2f} | {r['scenes'][i]['warp_mse_e3']:.3f}" for _, r in runs)
        lines.append(f"| {scene['scene']} | {cells} | {scene['target_warp_mse_e3']:.3f} |")
    cells = " | ".join(f"**{r['mean']['psnr']:.2f}** | **{r['mean']['warp_mse_e3']:.3f}**" for _, r in runs)
    lines.append(f"| **mean** | {cells} | {result['bicubic']['mean']['target_warp_mse_e3']:.3f} |")
    return "\n".join(lines) + "\n"
