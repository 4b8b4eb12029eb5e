"""Training building blocks: MATLAB resize, Haar DWT vs pywt, loss, Vid4 guard, resumable runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.degrade import bicubic_down, imresize, resize_matrix, torch_bicubic_down, torch_blur_down
from training.losses import (HAAR_KEYS, charbonnier, haar3d, haar_hf_loss, temporal_loss, truth_motion, vsr_loss,
                             warped_temporal_loss)


def test_resize_matrix_rows_sum_to_one_and_constant_is_kept() -> None:
    for n_in, n_out in [(64, 16), (17, 5), (10, 30)]:
        m = resize_matrix(n_in, n_out)
        assert np.allclose(m.sum(1), 1)
    img = np.full((24, 20, 3), 77, np.uint8)
    assert (bicubic_down(img, 4) == 77).all()


def test_matlab_resize_known_values() -> None:
    # imresize(1:8, [1 4]) by hand with MATLAB's rule: kernel 0.5*cubic(0.5*d) (a=-0.5) over taps -3..6
    # around u=1.5, mirrored at the edge -> weights +-.01172, .03516, .11328, .43359 on 3,2,1,1,2,3,4,5.
    out = imresize(np.arange(1, 9, dtype=np.float64)[None, :], (1, 4))
    assert out[0, 0] == pytest.approx(1.44921875, abs=1e-6)
    assert np.allclose(out[0] + out[0, ::-1], 9)  # symmetric input gives a symmetric result


def test_torch_and_numpy_bi_agree() -> None:
    img = np.random.default_rng(0).integers(0, 256, (32, 24, 3), dtype=np.uint8)
    ref = bicubic_down(img, 4).astype(np.float32)
    got = torch_bicubic_down(torch.from_numpy(img).permute(2, 0, 1).float() / 255, 4) * 255
    assert np.abs(got.permute(1, 2, 0).numpy() - ref).max() < 1e-3


def test_bd_shape() -> None:
    assert torch_blur_down(torch.rand(2, 5, 3, 24, 36), 4).shape == (2, 5, 3, 6, 9)


def test_haar3d_matches_pywt_dwtn() -> None:
    pywt = pytest.importorskip("pywt")
    x = np.random.default_rng(1).random((4, 6, 8))
    bands = haar3d(torch.tensor(x)[None, :, None])[0, 0]
    ref = pywt.dwtn(x, "haar")
    for i, key in enumerate(HAAR_KEYS):
        assert np.allclose(bands[i].numpy(), ref[key], atol=1e-10), key


def test_hf_loss_ignores_low_band_and_sees_detail() -> None:
    hr = torch.rand(1, 4, 3, 8, 8)
    assert float(haar_hf_loss(hr + 0.1, hr)) < 1e-3  # a constant shift lives in the LLL band only
    assert float(haar_hf_loss(hr + 0.1 * torch.randn_like(hr), hr)) > 0.01
    assert float(vsr_loss(hr, hr)) == pytest.approx(2 * np.sqrt(1e-9), rel=1e-3)
    assert float(charbonnier(torch.zeros(4), torch.ones(4))) == pytest.approx(1.0, abs=1e-6)


def test_warped_temporal_loss_tells_flicker_from_motion() -> None:
    """Content panning 2 px a frame: noise that moves with it is steady along the motion, noise drawn afresh each
    frame flickers. The warped loss tells them apart; the plain frame-difference loss sees both as change."""
    rng = np.random.default_rng(0)
    scene = torch.from_numpy(rng.random((3, 64, 200), dtype=np.float32))
    scene = torch.nn.functional.avg_pool2d(scene[None], 5, stride=1, padding=2)[0]  # smooth enough for DIS
    noise = 0.03 * torch.from_numpy(rng.standard_normal((3, 64, 200), dtype=np.float32))

    def pan(img: torch.Tensor) -> torch.Tensor:
        return torch.stack([img[..., 20 - 2 * t : 180 - 2 * t] for t in range(5)])[None]

    hr = pan(scene)
    motion = truth_motion(hr)
    grids, valid = motion
    assert grids.shape == (1, 4, 64, 160, 2) and valid.shape == (1, 4, 1, 64, 160)
    assert float(valid.mean()) > 0.9  # only the column entering at the left edge is occluded
    steady, flicker = hr + pan(noise), hr + 0.03 * torch.randn_like(hr)
    assert float(warped_temporal_loss(hr, hr, motion)) < 1e-4
    assert float(warped_temporal_loss(steady, hr, motion)) < 0.1 * float(warped_temporal_loss(flicker, hr, motion))
    assert float(temporal_loss(steady, hr)) > 0.5 * float(temporal_loss(flicker, hr))
    with_warp = vsr_loss(flicker, hr, warp_weight=1.0) - vsr_loss(flicker, hr)
    assert float(with_warp) == pytest.approx(float(warped_temporal_loss(flicker, hr, motion)), rel=1e-5)


def test_training_refuses_vid4(tmp_path: Path) -> None:
    from training.data import list_sources

    (tmp_path / "vid4" / "video").mkdir(parents=True)
    with pytest.raises(ValueError, match="Vid4"):
        list_sources(tmp_path / "vid4")


def _tiny_root(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "train"
    (root / "images" / "set").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (340, 360, 3), dtype=np.uint8)).save(root / "images" / "set" / f"{i}.png")
    return root


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    from training.data import DataConfig, build_cache
    from training.run import train_centralised
    from training.train import TrainConfig

    # Prepare: a tiny cache from synthetic stills, a run cut after 4 of 8 steps
    root = _tiny_root(tmp_path)
    build_cache(DataConfig(root=str(root), patch=128, frames=7, per_image=2), tmp_path / "cache", log=lambda *_: None)
    base = dict(model="rvsr-tiny", scale=2, batch=1, patch=32, frames=3, data_root=str(root),
                cache_dir=str(tmp_path / "cache"), checkpoint_minutes=0.0)
    out = tmp_path / "run"
    # Execute
    train_centralised(TrainConfig(steps=4, **base), out, "test", log=lambda *_: None)
    train_centralised(TrainConfig(steps=8, **base), out, "test", log=lambda *_: None)
    # Assert: the log holds steps 4 and 8 once each, and weights + card exist
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [4, 8]
    card = json.loads((out / "weights.json").read_text())
    assert card["train"]["steps"] == 8 and card["command"] == "test"
    with pytest.raises(ValueError, match="other options"):
        train_centralised(TrainConfig(steps=8, **{**base, "batch": 2}), out, "test", log=lambda *_: None)
    # --init only picks a fresh start's weights: a resume naming one goes on from the checkpoint and says so
    said: list[str] = []
    train_centralised(TrainConfig(steps=8, init=str(tmp_path / "elsewhere.safetensors"), **base), out, "test",
                      log=said.append)
    assert said[:2] == ["resumed at step 8 of 8",
                        "note: this run started from a fresh init; --init is not used on resume"]
    # a new run can start from those weights (--init); with no steps to run it hands them back unchanged
    from safetensors.torch import load_file

    logs: list[str] = []
    warm = train_centralised(TrainConfig(steps=0, init=str(out / "weights.safetensors"), **base), tmp_path / "warm",
                             "test", log=logs.append)
    trained, started = load_file(str(out / "weights.safetensors")), load_file(str(warm))
    assert logs[0] == f"started from {out / 'weights.safetensors'}"
    assert all(torch.equal(trained[k], started[k]) for k in trained)


def _moving_gradient(t: int = 7, h: int = 33, w: int = 47) -> np.ndarray:
    """uint8 (T, H, W, 3): a smooth colour pattern panning one pixel per frame (odd sides on purpose)."""
    y, x = np.mgrid[0:h, 0:w + t].astype(np.float32)
    img = np.stack([np.sin(x / 5 + y / 7), np.cos(x / 9 - y / 4), np.sin((x + y) / 6)], -1) * 0.5 + 0.5
    return np.stack([img[:, i : i + w] for i in range(t)]).__mul__(255).round().astype(np.uint8)


def test_x264_roundtrip_keeps_shape_and_loses_more_at_higher_crf() -> None:
    from training.realworld import x264_roundtrip

    # Prepare
    seq = _moving_gradient()
    # Execute
    errors = [np.abs(x264_roundtrip(seq, crf).astype(int) - seq).mean() for crf in (12, 30, 48)]
    # Assert: same shape/dtype, deterministic, error grows with CRF and is never zero (it really encoded)
    out = x264_roundtrip(seq, 30)
    assert out.shape == seq.shape and out.dtype == np.uint8
    assert np.array_equal(out, x264_roundtrip(seq, 30))
    assert 0 < errors[0] < errors[1] < errors[2]


def test_sampler_compresses_only_the_requested_share() -> None:
    from training.train import SequenceSampler, TrainConfig

    # Prepare: one cached sequence, LR through BI only, then with every sequence compressed at CRF 40
    seqs = np.repeat(_moving_gradient(7, 64, 64)[None], 2, axis=0)
    hr = SequenceSampler(seqs, TrainConfig(batch=2, patch=64), np.random.default_rng(0)).hr_batch()
    plain = SequenceSampler(seqs, TrainConfig(batch=2, patch=64), np.random.default_rng(0)).degrade(hr)
    cfg = TrainConfig(batch=2, patch=64, compress=1.0, crf_min=40, crf_max=40)
    # Execute
    squeezed = SequenceSampler(seqs, cfg, np.random.default_rng(0)).degrade(hr)
    none = SequenceSampler(seqs, TrainConfig(batch=2, patch=64, compress=0.0), np.random.default_rng(0)).degrade(hr)
    # Assert: compression changed every sequence; compress=0 leaves BI untouched
    assert squeezed.shape == plain.shape
    assert all((squeezed[i] - plain[i]).abs().mean() > 1e-3 for i in range(2))
    assert torch.equal(none, plain)


def test_patches_above_128_get_their_own_cache(tmp_path: Path) -> None:
    from training.run import load_sequences
    from training.train import TrainConfig

    # Prepare: the tiny still set, runs at patch 64, 128 and 136
    root = _tiny_root(tmp_path)
    base = dict(model="rvsr-tiny", scale=2, frames=7, data_root=str(root), cache_dir=str(tmp_path / "cache"))
    # Execute
    sides = {p: {g.shape[2:4] for g in load_sequences(TrainConfig(patch=p, **base), log=lambda *_: None).values()}
             for p in (64, 128, 136)}
    # Assert: up to 128 one cache of 128 px crops serves every patch; 136 gets 136 px crops in a second cache
    assert sides == {64: {(128, 128)}, 128: {(128, 128)}, 136: {(136, 136)}}
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
