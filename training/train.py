"""Local (single-site) training: the loop every client runs, and resumable centralised training."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from training.config import TrainConfig
from training.degrade import torch_bicubic_down, torch_blur_down
from training.realworld import x264_roundtrip
from training.losses import temporal_loss, vsr_loss


class SequenceSampler:
    """Random augmented (LR, HR) batches from cached uint8 sequences; state is a numpy Generator."""

    def __init__(self, seqs: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.seqs, self.cfg, self.rng = seqs, cfg, rng

    def hr_batch(self) -> torch.Tensor:
        cfg, rng = self.cfg, self.rng
        idx = rng.integers(0, len(self.seqs), size=cfg.batch)
        side = self.seqs.shape[2]
        out = []
        for i in idx:
            y, x = rng.integers(0, side - cfg.patch + 1, size=2)
            s = self.seqs[i, : cfg.frames * cfg.windows, y : y + cfg.patch, x : x + cfg.patch]
            if rng.random() < 0.5:
                s = s[:, :, ::-1]
            if rng.random() < 0.5:
                s = s[:, ::-1]
            if rng.random() < 0.5:
                s = s.transpose(0, 2, 1, 3)
            if rng.random() < 0.5:
                s = s[::-1]  # temporal reversal
            out.append(np.ascontiguousarray(s))
        hr = torch.from_numpy(np.stack(out)).permute(0, 1, 4, 2, 3).float() / 255
        return hr  # (N, T, 3, H, W)

    def degrade(self, hr: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.degradation == "real":
            return self.real_world(hr)
        lr = torch_bicubic_down(hr, cfg.scale) if cfg.degradation == "bi" else torch_blur_down(hr, cfg.scale)
        if cfg.noise > 0:
            std = torch.as_tensor(self.rng.uniform(0, cfg.noise, size=(hr.shape[0], 1, 1, 1, 1)), dtype=lr.dtype)
            noise = torch.from_numpy(self.rng.standard_normal(lr.shape).astype(np.float32))
            lr = torch.round((lr + std * noise).clamp(0, 1) * 255) / 255
        if cfg.compress > 0:
            lr = self.compress(lr)
        return lr

    def real_world(self, hr: torch.Tensor) -> torch.Tensor:
        """training.realworld's degradation, drawn once per sequence (temporally consistent artefacts)."""
        from training.realworld import RealWorldRecipe, draw, real_world_lr

        recipe = RealWorldRecipe(clean_p=self.cfg.clean_share)
        return torch.stack([real_world_lr(s, self.cfg.scale, draw(recipe, self.cfg.scale, self.rng), self.rng)
                            for s in hr])

    def compress(self, lr: torch.Tensor) -> torch.Tensor:
        """x264 round trip of each LR sequence with probability cfg.compress, at a CRF in [crf_min, crf_max]."""
        cfg, out = self.cfg, lr.clone()
        for i in range(lr.shape[0]):
            if self.rng.random() < cfg.compress:
                crf = int(self.rng.integers(cfg.crf_min, cfg.crf_max + 1))
                frames = torch.round(lr[i].clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
                out[i] = torch.from_numpy(x264_roundtrip(frames, crf)).permute(0, 3, 1, 2).float() / 255
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """(LR, HR, carry) windows: ``carry`` says the window continues the previous one's sequence."""
        f = self.cfg.frames
        while True:
            hr = self.hr_batch()
            lr = self.degrade(hr)  # whole sequences: codec artefacts stay consistent across windows
            for w in range(self.cfg.windows):
                yield lr[:, w * f : (w + 1) * f], hr[:, w * f : (w + 1) * f], w > 0


def local_train(
    model: torch.nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    lr_at: Callable[[int], float] = lambda i: float("nan"),
    prox: tuple[list[torch.Tensor], float] | None = None,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Run ``steps`` optimiser steps; returns the mean total loss (the FedVSR client report).

    ``prox`` = (global parameters, mu) adds FedProx's mu/2 * ||w - w_global||^2.
    ``lr_at(i)`` sets the learning rate of step i (NaN keeps the optimiser's own).
    """
    model.train()
    total = 0.0
    hidden = None
    for i in range(steps):
        lr_img, hr, carry = next(batches)
        lr_img, hr = lr_img.to(device), hr.to(device)
        rate = lr_at(i)
        if not math.isnan(rate):
            for g in opt.param_groups:
                g["lr"] = rate
        sr, hidden = model.unroll(lr_img, [h.detach() for h in hidden] if carry and hidden else None,
                                  return_state=True)
        loss = vsr_loss(sr, hr, cfg.hf_weight, cfg.temporal_weight, cfg.warp_weight)
        if cfg.reset_weight and not carry:
            loss = loss + cfg.reset_weight * temporal_loss(sr[:, :2], hr[:, :2])
        if prox is not None:
            ref, mu = prox
            loss = loss + 0.5 * mu * sum(((p - r) ** 2).sum() for p, r in zip(model.parameters(), ref))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        total += float(loss.detach())
        if on_step is not None:
            on_step(i, float(loss.detach()))
    return total / max(steps, 1)


def cosine_lr(cfg: TrainConfig) -> Callable[[int], float]:
    """Cosine decay from cfg.lr to cfg.min_lr over cfg.steps."""
    return lambda i: cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(i, cfg.steps) / cfg.steps))


def pick_device() -> str:
    """CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"
