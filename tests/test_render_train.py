"""Training on rendered data: augmentation keeps motion/normals/jitter consistent; the run resumes and ships weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.rdg import warp
from training.render.train import RenderTrainConfig, augment, to_tensors

FLIPS = [(h, v, t) for h in (False, True) for v in (False, True) for t in (False, True)]


def moving_clip(seed: int = 0) -> dict[str, np.ndarray]:
    """A textured plane sliding by (dx, dy) = (2, 1) px per frame; motion (current -> previous) = (-2, -1)."""
    rng = np.random.default_rng(seed)
    big = rng.random((40, 44, 3)).astype(np.float32)
    frames = np.stack([big[10 - t : 30 - t, 10 - 2 * t : 34 - 2 * t] for t in range(3)])  # (T, 20, 24, 3)
    t, h, w = frames.shape[:3]
    normals = np.zeros((t, h, w, 3), np.float32)
    normals[..., 0], normals[..., 2] = 0.6, 0.8  # facing right and towards the viewer
    motion = np.zeros((t, h, w, 2), np.float32)
    motion[..., 0], motion[..., 1] = -2.0, -1.0
    return {"color": (frames * 255).astype(np.uint8), "albedo": (frames * 255).astype(np.uint8), "motion": motion,
            "normals": normals, "depth": np.full((t, h, w, 1), 0.95, np.float32),
            "jitter": np.array([[0.25, -0.125]] * t, np.float32), "target": np.repeat(np.repeat((frames * 255).astype(np.uint8), 2, 1), 2, 2)}


@pytest.mark.parametrize("hflip,vflip,transpose", FLIPS)
def test_augmented_motion_still_warps_previous_onto_current(hflip: bool, vflip: bool, transpose: bool) -> None:
    # Prepare
    clip = augment(moving_clip(), hflip, vflip, transpose)
    lr, gb, _ = to_tensors([clip], 2, 2)
    # Execute
    warped = warp(lr[0, :-1], gb["motion"][0, 1:])
    # Assert: away from the border the warped previous frame equals the current one
    np.testing.assert_allclose(warped[..., 3:-3, 3:-3].numpy(), lr[0, 1:, :, 3:-3, 3:-3].numpy(), atol=1e-5)


@pytest.mark.parametrize("hflip,vflip,transpose", FLIPS)
def test_augmented_normals_and_jitter_follow_the_image_axes(hflip: bool, vflip: bool, transpose: bool) -> None:
    # Prepare: the plane faces image-right (+x); in image space (x right, y down) that is (0.6, 0)
    clip = augment(moving_clip(), hflip, vflip, transpose)
    # Execute
    n, j = clip["normals"][0, 0, 0], clip["jitter"][0]
    # Assert: image-space direction of the normal moves exactly like an image vector (motion) does
    img = np.array([0.6, 0.0]) * [(-1) ** hflip, (-1) ** vflip]
    jit = np.array([0.25, -0.125]) * [(-1) ** hflip, (-1) ** vflip]
    if transpose:
        img, jit = img[::-1], jit[::-1]
    np.testing.assert_allclose([n[0], -n[1]], img, atol=1e-6)  # view y is up = -image y
    assert n[2] == pytest.approx(0.8) and np.linalg.norm(n) == pytest.approx(1.0)
    np.testing.assert_allclose(j, jit)


def test_x2_targets_are_box_averages_of_x4_ones() -> None:
    clip = moving_clip()
    clip["target"] = np.repeat(np.repeat(clip["color"], 4, 1), 4, 2)
    _, _, hr = to_tensors([clip], 2, 4)
    assert hr.shape[-2:] == (40, 48)
    torch.testing.assert_close(hr[0, :, :, ::2, ::2], torch.from_numpy(clip["color"]).permute(0, 3, 1, 2).float() / 255)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("moderngl")
    from training.render.dataset import RenderDataConfig, render_dataset

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    if not (root / "images").exists():
        pytest.skip("../shared/data/train/images not present")
    out = tmp_path_factory.mktemp("render") / "data"
    cfg = RenderDataConfig(data_root=str(root), train_scenes=2, test_scenes=1, frames=4, height=24, width=32,
                           target_scale=4, supersample=1)
    render_dataset(cfg, out, log=lambda s: None)
    return out


@pytest.mark.parametrize("model", ["rdg-tiny", "rvsr-tiny"])
def test_training_resumes_and_writes_weights_the_api_loads(tiny_dataset: Path, tmp_path: Path, model: str) -> None:
    # Prepare
    from training.render.train import train_render

    cfg = RenderTrainConfig(data=str(tiny_dataset), model=model, scale=2, steps=2, batch=2, patch=16, frames=3,
                            checkpoint_minutes=0.0)
    # Execute: a first run, then the same command again (resumes at the end), then a changed config
    path = train_render(cfg, tmp_path, "test", log=lambda s: None)
    logs: list[str] = []
    train_render(cfg, tmp_path, "test", log=logs.append)
    # Assert
    assert logs and logs[0] == "resumed at step 2"
    card = json.loads((tmp_path / "weights.json").read_text())
    assert card["model"]["model"] == model and card["train"]["data"] == str(tiny_dataset)
    with pytest.raises(ValueError, match="another config"):
        train_render(RenderTrainConfig(**{**cfg.__dict__, "steps": 3}), tmp_path, "test", log=lambda s: None)
    if model == "rdg-tiny":
        from engine.render_api import RenderUpscaler

        with RenderUpscaler(2, model=model, weights=path) as up:
            out = up.upscale(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 0.9, np.float32), np.zeros((8, 8, 2), np.float32))
        assert out.shape == (16, 16, 3)


def test_evaluation_scores_bicubic_and_models_on_held_out_scenes(tiny_dataset: Path) -> None:
    from engine.models import build_model
    from training.render.evaluate import evaluate

    bic = evaluate(None, tiny_dataset, 4)
    net = evaluate(build_model("rdg-tiny", 4), tiny_dataset, 4)
    assert [r["scene"] for r in bic["scenes"]] == ["scene_0000"]
    assert 10 < bic["mean"]["psnr"] < 60 and 10 < net["mean"]["psnr"] < 60
    assert bic["mean"]["target_warp_mse_e3"] == net["mean"]["target_warp_mse_e3"] >= 0


def test_render_eval_compares_models_beside_bicubic(tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    # Prepare: two tiny models of one scale, and one of another scale
    from training.cli import main
    from training.render.train import train_render

    paths = {}
    for model, scale in (("rdg-tiny", 2), ("rvsr-tiny", 2), ("rvsr-tiny", 4)):
        cfg = RenderTrainConfig(data=str(tiny_dataset), model=model, scale=scale, steps=1, batch=1, patch=16,
                                frames=2, checkpoint_minutes=0.0)
        paths[model, scale] = str(train_render(cfg, tmp_path / f"{model}-{scale}", "test", log=lambda s: None))
    out = tmp_path / "cmp.json"
    # Execute
    code = main(["render-eval", "--data", str(tiny_dataset), "--weights", paths["rdg-tiny", 2],
                 paths["rvsr-tiny", 2], "--json", str(out)])
    mixed = main(["render-eval", "--data", str(tiny_dataset), "--weights", paths["rdg-tiny", 2],
                  paths["rvsr-tiny", 4]])
    # Assert: JSON + table with bicubic and both models; mixed scales refused in one line
    assert code == 0 and mixed == 2
    result = json.loads(out.read_text())
    assert [m["model"] for m in result["models"]] == ["rdg-tiny", "rvsr-tiny"] and result["scale"] == 2
    table = out.with_suffix(".md").read_text()
    assert "bicubic PSNR" in table and "rdg-tiny PSNR" in table and "| **mean** |" in table
    err = capsys.readouterr().err.strip()
    assert "different scales" in err and len(err.splitlines()) == 1
