"""Renderer: determinism by seed, and G-buffer sanity (unit normals, motion vectors = depth reprojection)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

moderngl = pytest.importorskip("moderngl")

from training.render.gbuffer import Renderer, jitter_matrix  # noqa: E402
from training.render.scene import Scene, SceneObject, make_scene  # noqa: E402

SIZE = (48, 72)  # render (H, W): small keeps the CPU rasteriser fast


@pytest.fixture(scope="module")
def textures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three noise textures made in code (no stored media)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("tex")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = folder / f"t{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def renderer():
    try:
        r = Renderer()
    except Exception as e:  # no EGL driver on this machine
        pytest.skip(f"headless EGL context not available: {e}")
    with r:
        yield r


def _reproject(depth: np.ndarray, jitter: tuple[float, float], vp: np.ndarray, vp_prev: np.ndarray) -> np.ndarray:
    """Expected motion (current -> previous, render pixels, y down) by unprojecting depth with this camera."""
    h, w = depth.shape
    y, x = np.mgrid[0:h, 0:w] + 0.5
    ndc = np.stack([2 * x / w - 1, 1 - 2 * y / h, 2 * depth.astype(np.float64) - 1, np.ones_like(x)], -1)
    world = ndc @ np.linalg.inv(jitter_matrix(jitter, w, h) @ vp).T
    world /= world[..., 3:]

    def to_pixels(m: np.ndarray) -> np.ndarray:
        c = world @ m.T
        return np.stack([(c[..., 0] / c[..., 3] + 1) * w / 2, (1 - c[..., 1] / c[..., 3]) * h / 2], -1)

    return to_pixels(vp_prev) - to_pixels(vp)


def test_same_seed_renders_identical_frames(renderer: Renderer, textures: list[str]) -> None:
    # Prepare
    scene_a, scene_b = make_scene(7, textures, 4), make_scene(7, textures, 4)
    # Execute
    a = renderer.gbuffer(scene_a, 2, SIZE, (0.25, -0.125))
    with Renderer() as other:
        b = other.gbuffer(scene_b, 2, SIZE, (0.25, -0.125))
    c = renderer.gbuffer(make_scene(8, textures, 4), 2, SIZE, (0.25, -0.125))
    # Assert
    assert scene_a == scene_b
    for field in ("color", "depth", "motion", "normals", "albedo"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert not np.array_equal(a.color, c.color)


def test_normals_are_unit_and_face_the_camera(renderer: Renderer, textures: list[str]) -> None:
    # Prepare
    scene = make_scene(3, textures, 4)
    # Execute
    g = renderer.gbuffer(scene, 1, SIZE)
    # Assert
    np.testing.assert_allclose(np.linalg.norm(g.normals, axis=-1), 1.0, atol=1e-4)
    assert np.mean(g.normals[..., 2] > -0.05) > 0.97  # view space: +z points at the viewer
    assert 0.0 < g.depth.min() and g.depth.max() < 1.0  # the sky dome covers the background


def test_camera_motion_vectors_match_depth_reprojection(renderer: Renderer, textures: list[str]) -> None:
    # Prepare: freeze every object and drop the sky, so only the camera moves and the background is empty
    scene = make_scene(5, textures, 6)
    still = tuple(dataclasses.replace(o, velocity=(0.0, 0.0, 0.0), spin=0.0) for o in scene.objects if not o.unlit)
    scene = dataclasses.replace(scene, objects=still)
    jitter = (0.3, -0.2)
    # Execute
    g = renderer.gbuffer(scene, 3, SIZE, jitter)
    expected = _reproject(g.depth, jitter, g.view_proj, g.view_proj_prev)
    # Assert
    hit = g.depth < 1.0
    assert hit.mean() > 0.5 and np.abs(g.motion[hit]).max() > 0.2  # there is geometry and it moves
    err = np.abs(g.motion - expected)[hit]
    assert err.max() < 0.02, f"max |mv - reprojection| = {err.max():.4f} px"


def test_object_motion_vectors_follow_the_object(renderer: Renderer, textures: list[str]) -> None:
    # Prepare: a static camera and one spinning, moving box in front of it
    base = make_scene(5, textures, 6)
    cam = dataclasses.replace(base.camera, eye=(0.0, 1.0, 4.0), eye_velocity=(0.0, 0.0, 0.0), target=(0.0, 1.0, 0.0),
                              target_velocity=(0.0, 0.0, 0.0), sway=0.0)
    box = SceneObject("box", 1, (0.0, 1.0, 0.0), (0.05, 0.02, 0.0), (1.5, 1.5, 1.5), (0.3, 1.0, 0.2), 0.08, 0.4,
                      1.0, 32.0, 0.5)
    scene = Scene(seed=0, textures=base.textures, objects=(box,), camera=cam, lights=base.lights, ambient=0.3, frames=6)
    # Execute
    g = renderer.gbuffer(scene, 2, SIZE)
    # Assert: object -> world at t, back through the box's own motion to t-1, then through the camera
    hit = g.depth < 1.0
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w] + 0.5
    ndc = np.stack([2 * x / w - 1, 1 - 2 * y / h, 2 * g.depth.astype(np.float64) - 1, np.ones_like(x)], -1)
    world = ndc @ np.linalg.inv(g.view_proj).T
    world /= world[..., 3:]
    prev_world = world @ (box.model(1.0) @ np.linalg.inv(box.model(2.0))).T
    c = prev_world @ g.view_proj_prev.T
    prev = np.stack([(c[..., 0] / c[..., 3] + 1) * w / 2, (1 - c[..., 1] / c[..., 3]) * h / 2], -1)
    expected = prev - np.stack([x, y], -1)
    assert hit.mean() > 0.1
    assert np.abs(g.motion - expected)[hit].max() < 0.02


def test_render_data_is_deterministic_and_keeps_test_textures_apart(tmp_path: Path) -> None:
    # Prepare
    from training.render.dataset import RenderDataConfig, render_dataset, scene_folders

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    if not (root / "images").exists():
        pytest.skip("../shared/data/train/images not present")
    cfg = RenderDataConfig(data_root=str(root), train_scenes=1, test_scenes=1, frames=2, height=24, width=32,
                           target_scale=2, supersample=1)
    # Execute
    render_dataset(cfg, tmp_path / "a", log=lambda s: None)
    render_dataset(cfg, tmp_path / "b", log=lambda s: None)
    # Assert
    for name in ("train/scene_0000", "test/scene_0000"):
        for f in sorted((tmp_path / "a" / name).glob("*.npy")):
            np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b" / name / f.name), err_msg=str(f))
    train_tex = set(json.loads((scene_folders(tmp_path / "a", "train")[0] / "scene.json").read_text())["textures"])
    test_tex = set(json.loads((scene_folders(tmp_path / "a", "test")[0] / "scene.json").read_text())["textures"])
    assert not train_tex & test_tex
    target = np.load(tmp_path / "a" / "train/scene_0000/target.npy")
    assert target.shape == (2, 48, 64, 3) and target.dtype == np.uint8
