"""Training options: a torch-free module, so `vsr-train --help` and option checks stay fast."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """One training run (centralised) or one client's local training (federated)."""

    model: str = "rvsr-s"  # name in engine.models.MODELS
    scale: int = 2  # output/input size ratio
    steps: int = 4000  # optimiser steps in total
    batch: int = 8  # sequences per step
    patch: int = 128  # HR patch side (LR side = patch / scale)
    frames: int = 7  # frames per BPTT window (truncated BPTT length)
    windows: int = 1  # windows per sequence: the state is carried (detached) from one window into the next, so a
    # sequence is frames x windows long and every window is one optimiser step
    lr: float = 5e-4  # Adam learning rate at the start of the cosine schedule
    min_lr: float = 1e-5  # learning rate at the end of the schedule
    degradation: str = "bi"  # "bi" (MATLAB bicubic), "bd" (Gaussian sigma 1.6 + subsample) or "real" (per-sequence
    # blur, resize, noise and x264/x265/AV1 round trips: training.realworld.RealWorldRecipe)
    noise: float = 0.0  # max std of Gaussian noise added to LR (0 = off)
    compress: float = 0.0  # share of LR sequences passed through x264 at a random CRF (0 = off)
    crf_min: int = 18  # CRF range of that compression (inclusive)
    crf_max: int = 35
    hf_weight: float = 1.0  # weight of the 3D Haar high-frequency loss
    temporal_weight: float = 0.0  # weight of the Charbonnier loss on frame-to-frame differences (flicker)
    warp_weight: float = 0.0  # weight of the Charbonnier loss on frame-to-frame differences along the truth's motion
    # (DIS flow on the HR frames, occlusions masked: flicker on moving content, as the warping error measures it)
    reset_weight: float = 0.0  # extra weight of the temporal loss on the first transition after a zero state (the jump
    # a viewer sees after a reset or scene cut)
    clean_share: float = 0.0  # with degradation "real": share of sequences left clean (bicubic only), so the model
    # keeps clean-input detail
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0  # sampling seed
    checkpoint_minutes: float = 5.0  # wall-clock interval between checkpoints
    data_root: str = "../shared/data/train"  # training material (never Vid4)
    cache_dir: str = "cache"  # where sequence caches live
    init: str = ""  # weights (safetensors) a new run starts from (training.checkpoint.warm_start); "" = fresh
