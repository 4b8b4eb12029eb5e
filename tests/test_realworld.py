"""Tests of the real-world degradations (training/realworld.py) and the temporal metrics of the quality harness."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.lr_protocol import Degrade, make_lr, parse_degrades
from benchmarks.metrics import mean_change, static_flicker, static_mask
from engine.errors import UsageError
from engine.models import build_model
from training.config import TrainConfig
from training.realworld import CODECS, RealWorldRecipe, SequenceDegradation, codec_roundtrip, draw, real_world_lr
from training.train import SequenceSampler, local_train

ROOT = Path(__file__).resolve().parents[1]


def texture(t: int = 5, side: int = 64, seed: int = 0, shift: int = 0) -> np.ndarray:
    """(t, side, side, 3) uint8 smooth random texture, panned ``shift`` px per frame."""
    rng = np.random.default_rng(seed)
    big = np.kron(rng.integers(0, 256, (side // 4 + t, side // 4 + t, 3)), np.ones((4, 4, 1)))
    return np.stack([big[i * shift : i * shift + side, : side] for i in range(t)]).astype(np.uint8)


@pytest.mark.parametrize("codec", list(CODECS))
def test_codec_roundtrip_is_deterministic_and_loses_more_at_higher_crf(codec: str) -> None:
    # Prepare: a moving clip of odd size (the codec pads to even and crops back)
    clip = texture(shift=1)[:, :63, :61]
    lo, hi = {"av1": (20, 60)}.get(codec, (15, 45))
    # Execute
    fine, coarse = codec_roundtrip(clip, codec, lo, "ultrafast" if codec != "av1" else "12"), \
        codec_roundtrip(clip, codec, hi, "ultrafast" if codec != "av1" else "12")
    # Assert
    assert fine.shape == clip.shape and fine.dtype == np.uint8
    err = [np.abs(x.astype(int) - clip).mean() for x in (fine, coarse)]
    assert 0 < err[0] < err[1]
    np.testing.assert_array_equal(fine, codec_roundtrip(clip, codec, lo, "ultrafast" if codec != "av1" else "12"))


def test_codec_roundtrip_decodes_as_the_engine_does_without_a_colour_bias() -> None:
    # Prepare: textured frames (swscale's fast YUV->RGB path read them 1.1-1.4 levels dark per channel)
    rng = np.random.default_rng(0)
    frames = np.stack([np.clip(rng.normal(128, 50, (48, 64, 3)), 0, 255).astype(np.uint8)] * 3)
    # Execute
    out = codec_roundtrip(frames, "x264", 18, "ultrafast").astype(np.float64)
    # Assert: no channel comes back shifted by more than a fraction of a level on average
    bias = (out - frames).reshape(-1, 3).mean(axis=0)
    assert np.abs(bias).max() < 0.4, bias


def test_a_static_clip_stays_static_through_the_degradation() -> None:
    # Prepare: one frame repeated; blur, bilinear resize and x264, no noise (noise is per frame, as in cameras)
    hr = torch.from_numpy(np.repeat(texture(1), 6, axis=0)).permute(0, 3, 1, 2).float() / 255
    d = SequenceDegradation(blur=(1.0, 0.5, 0.3), resize="bilinear", noise=None, codec=("x264", 30, "veryfast"),
                            second=None)
    # Execute
    lr = real_world_lr(hr, 2, d, np.random.default_rng(0))
    # Assert: the parameters are drawn per sequence, so the frames degrade alike (no flicker is taught)
    assert lr.shape == (6, 3, 32, 32)
    assert torch.all(torch.round(lr * 255) == lr * 255)  # 8-bit levels
    assert (lr[1:] - lr[:1]).abs().mean() * 255 < 1.0
    assert (lr[0] - torch.nn.functional.avg_pool2d(hr[:1], 2)[0]).abs().mean() * 255 > 1.0


def test_draws_follow_the_recipe() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    recipe = RealWorldRecipe()
    # Execute
    draws = [draw(recipe, 4, rng) for _ in range(400)]
    # Assert: shares near the recipe's, CRFs inside their codec's range
    assert abs(np.mean([d.codec is not None for d in draws]) - recipe.codec_p) < 0.07
    assert abs(np.mean([d.blur is not None for d in draws]) - recipe.blur_p) < 0.05
    ranges = {n: (lo, hi) for n, lo, hi in recipe.crf}
    assert all(ranges[d.codec[0]][0] <= d.codec[1] <= ranges[d.codec[0]][1] for d in draws if d.codec)
    assert {d.codec[0] for d in draws if d.codec} == set(CODECS)
    assert all(recipe.blur_sigma[0] * 4 <= min(d.blur[:2]) and max(d.blur[:2]) <= recipe.blur_sigma[1] * 4
               for d in draws if d.blur)


def test_x265_survives_the_small_frames_it_used_to_crash_on() -> None:
    # Prepare: 40x40 and 48x48 (a x2 LR patch of 96) through x265 ultrafast aborted the process (heap corruption)
    code = ("import numpy as np; from training.realworld import codec_roundtrip; rng = np.random.default_rng(0)\n"
            "for side in (40, 48, 40, 48):\n"
            "    for crf in (22, 30, 38):\n"
            "        f = rng.integers(0, 256, (7, side, side, 3), dtype=np.uint8)\n"
            "        assert codec_roundtrip(f, 'x265', crf, 'ultrafast').shape == f.shape\n")
    # Execute: in a child, so a crash fails the test instead of the test run
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    # Assert
    assert r.returncode == 0, r.stderr[-2000:]


def test_clean_share_leaves_that_share_of_sequences_bicubic_only() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    recipe = RealWorldRecipe(clean_p=0.3)
    # Execute
    draws = [draw(recipe, 2, rng) for _ in range(500)]
    # Assert: clean draws have nothing but a bicubic resize; the rest follow the recipe
    clean = [d for d in draws if d == SequenceDegradation(None, "bicubic", None, None, None)]
    assert abs(len(clean) / len(draws) - (0.3 + 0.7 * (1 - recipe.blur_p) * 4 / 6 * (1 - recipe.noise_p) * (1 - recipe.codec_p)
                                          * (1 - recipe.second_p))) < 0.06
    assert abs(np.mean([d.codec is not None for d in draws]) - 0.7 * recipe.codec_p) < 0.07


def test_reset_weight_adds_a_loss_on_the_first_change_after_a_zero_state() -> None:
    # Prepare: one step of the same model, batch and seed, with and without the reset term
    seqs = np.stack([texture(7, 64, seed=i, shift=1) for i in range(2)])
    losses = []
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        cfg = TrainConfig(batch=2, patch=32, frames=3, scale=2, reset_weight=weight)
        model = build_model(cfg.model, cfg.scale)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        batches = iter(SequenceSampler(seqs, cfg, np.random.default_rng(0)))
        # Execute
        losses.append(local_train(model, batches, 1, opt, cfg))
    # Assert: the term is there and positive (an untrained model does not follow the truth's change)
    assert losses[1] > losses[0] > 0


def test_sampler_real_mode_gives_lr_batches() -> None:
    # Prepare
    seqs = np.stack([texture(7, 64, seed=i, shift=1) for i in range(3)])
    cfg = TrainConfig(batch=3, patch=64, frames=7, degradation="real", scale=2)
    sampler = SequenceSampler(seqs, cfg, np.random.default_rng(0))
    # Execute
    lr, hr, carry = next(iter(sampler))
    # Assert
    assert hr.shape == (3, 7, 3, 64, 64) and lr.shape == (3, 7, 3, 32, 32) and not carry


def test_windows_cut_one_sequence_and_carry_the_state() -> None:
    # Prepare: 2 windows of 3 frames from 6-frame sequences whose frames are flat, at level 8 x (6 i + k)
    seqs = np.zeros((2, 6, 64, 64, 3), np.uint8)
    for i in range(2):
        for k in range(6):
            seqs[i, k] = 8 * (6 * i + k)
    cfg = TrainConfig(batch=2, patch=64, frames=3, windows=2, scale=2)
    batches = iter(SequenceSampler(seqs, cfg, np.random.default_rng(0)))
    # Execute
    (lr0, hr0, c0), (lr1, hr1, c1), (_, _, c2) = next(batches), next(batches), next(batches)
    # Assert: the second window continues the first one's sequences (in either time direction); the third is new
    assert (c0, c1, c2) == (False, True, False) and lr0.shape == lr1.shape == (2, 3, 3, 32, 32)
    levels = np.round(torch.cat([hr0, hr1], dim=1)[:, :, 0, 0, 0].numpy() * 255 / 8)  # (batch, 6)
    steps = np.diff(levels, axis=1)
    assert np.all((steps == 1).all(axis=1) | (steps == -1).all(axis=1))


def test_lr_protocol_parses_and_compresses_the_whole_clip() -> None:
    # Prepare
    gt = list(texture(4, 64, shift=1))
    # Execute
    bi, x264 = (make_lr(gt, 2, d) for d in parse_degrades(["bi", "x264:35"]))
    # Assert
    assert bi.shape == x264.shape == (4, 32, 32, 3)
    assert np.abs(bi.astype(int) - x264).mean() > 0.5
    assert Degrade("av1", 45).name == "av1:45" and Degrade(downscale="lanczos").name == "lanczos/bi"
    for bad in (["x264"], ["vp9:30"], ["x264:60"], []):
        with pytest.raises(UsageError):
            parse_degrades(bad)


def test_static_flicker_counts_change_where_the_truth_does_not_move() -> None:
    # Prepare: a still GT; one output equal to it, one with fresh noise every frame
    rng = np.random.default_rng(0)
    gt = texture(1)[0]
    noisy = [np.clip(gt + rng.normal(0, 3, gt.shape), 0, 255).astype(np.uint8) for _ in range(2)]
    mask = static_mask(gt, gt)
    # Execute
    steady = static_flicker(gt, gt, mask, mean_change(gt, gt, mask))
    flicker = static_flicker(noisy[0], noisy[1], mask, mean_change(gt, gt, mask))
    # Assert
    assert mask.all() and steady == 0.0 and flicker > 1.0
    moved = np.roll(gt, 8, axis=1)  # everything moves: no static pixel, no figure
    assert math.isnan(static_flicker(gt, moved, static_mask(gt, moved), 0.0))
