"""Training on rendered data: clip sampler with G-buffer-aware augmentation, and a resumable run (as training/run.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from training.losses import vsr_loss
from training.render.dataset import load_scene, scene_folders


@dataclass(frozen=True)
class RenderTrainConfig:
    """One training run on a rendered dataset (G-buffer model, or an RGB-only model for comparison)."""

    data: str = ""  # dataset folder made by render-data (train split only is read)
    model: str = "rdg-s"  # engine.models name: GBUFFER_MODELS get G-buffers, MODELS get colour only
    scale: int = 2  # output/input size ratio (2 or 4)
    steps: int = 6000  # optimiser steps in total
    batch: int = 8  # clips per step
    patch: int = 40  # LR patch side (render pixels); HR side = patch * scale
    frames: int = 6  # frames per clip (truncated BPTT length)
    lr: float = 5e-4  # Adam learning rate at the start of the cosine schedule
    min_lr: float = 1e-5  # learning rate at the end of the schedule
    hf_weight: float = 1.0  # weight of the 3D Haar high-frequency loss
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0  # sampling and init seed
    checkpoint_minutes: float = 5.0  # wall-clock interval between checkpoints


Clip = dict[str, np.ndarray]  # name -> (T, H, W, C) arrays of one crop; "jitter" is (T, 2)


def augment(clip: Clip, hflip: bool, vflip: bool, transpose: bool) -> Clip:
    """Flip/transpose a clip, keeping every vector G-buffer consistent with the new image axes.

    Motion and jitter are (x right, y down) image vectors; normals are view space (x right, y up, z to the viewer).
    Time is never reversed: motion vectors point to the previous frame only.
    """
    c = {k: v.astype(np.float32) if k in ("motion", "normals", "jitter") else v for k, v in clip.items()}
    if hflip:
        c = {k: v if k == "jitter" else v[:, :, ::-1] for k, v in c.items()}
        for k in ("motion", "normals", "jitter"):
            c[k] = c[k] * np.array([-1, 1] + [1] * (c[k].shape[-1] - 2), np.float32)
    if vflip:
        c = {k: v if k == "jitter" else v[:, ::-1] for k, v in c.items()}
        for k in ("motion", "normals", "jitter"):
            c[k] = c[k] * np.array([1, -1] + [1] * (c[k].shape[-1] - 2), np.float32)
    if transpose:
        c = {k: v if k == "jitter" else v.transpose(0, 2, 1, 3) for k, v in c.items()}
        c["motion"], c["jitter"] = c["motion"][..., ::-1], c["jitter"][..., ::-1]
        n = c["normals"]  # image-space (nx, -ny) swaps axes; back in view space x' = -ny, y' = -nx
        c["normals"] = np.stack([-n[..., 1], -n[..., 0], n[..., 2]], axis=-1)
    return {k: np.ascontiguousarray(v) for k, v in c.items()}


def to_tensors(clips: list[Clip], scale: int, target_scale: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Stack clips into (lr (N, T, 3, H, W), G-buffers (N, T, C, H, W) / jitter (N, T, 2), hr (N, T, 3, sH, sW))."""
    def nt(key: str, div: float = 1.0) -> torch.Tensor:
        a = np.stack([c[key] if c[key].ndim == 4 else c[key][..., None] for c in clips])
        return torch.from_numpy(a.astype(np.float32) / div).permute(0, 1, 4, 2, 3)

    hr = nt("target", 255.0)
    if target_scale != scale:  # the x2 target is the 2x2 box average of the supersampled x4 one
        k = target_scale // scale
        n, t, c, h, w = hr.shape
        hr = hr.reshape(n, t, c, h // k, k, w // k, k).mean(dim=(4, 6))
    gb = {"depth": nt("depth"), "motion": nt("motion"), "normals": nt("normals"), "albedo": nt("albedo", 255.0),
          "jitter": torch.from_numpy(np.stack([c["jitter"] for c in clips]).astype(np.float32))}
    return nt("color", 255.0), gb, hr


class RenderClipSampler:
    """Random augmented clips of training scenes; all randomness comes from one numpy Generator (checkpointed)."""

    def __init__(self, root: str | Path, cfg: RenderTrainConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.scenes = [load_scene(f) for f in scene_folders(root, "train")]
        index = json.loads((Path(root) / "index.json").read_text())
        self.target_scale = int(index["config"]["target_scale"])
        if self.target_scale % cfg.scale:
            raise ValueError(f"dataset targets are x{self.target_scale}; cannot train x{cfg.scale}")
        t, h, w = self.scenes[0]["color"].shape[:3]
        if cfg.frames > t or cfg.patch > min(h, w):
            raise ValueError(f"clips of {cfg.frames} frames x {cfg.patch} px do not fit scenes of {t} x {h}x{w}")

    def clip(self) -> Clip:
        cfg, rng = self.cfg, self.rng
        s = self.scenes[int(rng.integers(len(self.scenes)))]
        t, h, w = s["color"].shape[:3]
        t0, y, x = int(rng.integers(t - cfg.frames + 1)), int(rng.integers(h - cfg.patch + 1)), int(rng.integers(w - cfg.patch + 1))
        k, p = self.target_scale, cfg.patch
        clip = {key: np.asarray(s[key][t0 : t0 + cfg.frames, y : y + p, x : x + p])
                for key in ("color", "depth", "motion", "normals", "albedo")}
        clip["depth"] = clip["depth"][..., None]
        clip["target"] = np.asarray(s["target"][t0 : t0 + cfg.frames, y * k : (y + p) * k, x * k : (x + p) * k])
        clip["jitter"] = np.asarray(s["jitter"][t0 : t0 + cfg.frames])
        return augment(clip, *(bool(b) for b in rng.random(3) < 0.5))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]:
        while True:
            yield to_tensors([self.clip() for _ in range(self.cfg.batch)], self.cfg.scale, self.target_scale)


def run_model(model: torch.nn.Module, lr: torch.Tensor, gb: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unroll a clip; G-buffer models get their G-buffers, RGB-only models only the colour."""
    from engine.models.rdg import RDG, GBufferBatch

    if isinstance(model, RDG):
        return model.unroll(lr, GBufferBatch(**gb))
    return model.unroll(lr)


def train_steps(model: torch.nn.Module, batches: Iterator, steps: int, opt: torch.optim.Optimizer,
                cfg: RenderTrainConfig, lr_at: Callable[[int], float], device: str = "cpu") -> float:
    """``steps`` optimiser steps (the sibling of training.train.local_train for G-buffer clips); mean loss."""
    model.train()
    total = 0.0
    for i in range(steps):
        lr_img, gb, hr = next(batches)
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        sr = run_model(model, lr_img.to(device), {k: v.to(device) for k, v in gb.items()})
        loss = vsr_loss(sr, hr.to(device), cfg.hf_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total += float(loss.detach())
    return total / max(steps, 1)


def train_render(cfg: RenderTrainConfig, out: Path, command: str, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) into ``out``: checkpoint.safetensors every few minutes, log.jsonl, then weights + card."""
    from training.run import checkpointed_loop, start_or_resume, write_weights
    from training.train import cosine_lr

    model, opt, rng, step, device = start_or_resume(cfg, out, log, may_change=())
    batches = iter(RenderClipSampler(cfg.data, cfg, rng))
    schedule = cosine_lr(cfg)  # type: ignore[arg-type]  # needs only lr, min_lr, steps

    def run_chunk(at: int, n: int) -> float:
        return train_steps(model, batches, n, opt, cfg, lambda i: schedule(at + i), device)

    checkpointed_loop(cfg, out, command, model, opt, rng, step, run_chunk, schedule, chunk=25, log=log)
    return write_weights(model, cfg, out, command)  # type: ignore[arg-type]  # same fields as TrainConfig uses
