"""Rendered dataset on disk: one folder of .npy arrays per scene, train and test scenes from disjoint seeds/textures."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engine.render_api import halton_jitter
from training.render.gbuffer import Renderer, texture_pool
from training.render.scene import make_scene

TEST_SEED_BASE = 1_000_000  # test scene i uses seed TEST_SEED_BASE + i; train scenes use seed*1000 + i
PHASES = 128  # Halton cycle: FSR2's 8 * ratio^2 at x4, also covers x2 (32)

# file -> (dtype, per-frame shape as a function of (h, w, target_scale))
ARRAYS: dict[str, str] = {
    "color": "uint8 (T, H, W, 3) display-referred colour, one sample per pixel, jittered",
    "depth": "float32 (T, H, W) device depth, 0 = near, 1 = far",
    "motion": "float32 (T, H, W, 2) current -> previous in render pixels (x right, y down)",
    "normals": "float16 (T, H, W, 3) view-space unit normals (x right, y up, z towards the camera)",
    "albedo": "uint8 (T, H, W, 3) unlit surface colour",
    "jitter": "float32 (T, 2) projection offset in render pixels (FSR2 sign)",
    "target": "uint8 (T, sH, sW, 3) supersampled colour at target_scale, unjittered",
    "cameras": "float64 (T, 2, 4, 4) unjittered view-projection of this and the previous frame",
}


@dataclass(frozen=True)
class RenderDataConfig:
    """What `vsr-train render-data` renders."""

    data_root: str = "../shared/data/train"  # texture images (train/images); never Vid4
    train_scenes: int = 40  # scenes for training
    test_scenes: int = 6  # held-out scenes (own seeds and own textures), never used in training
    frames: int = 12  # frames per scene
    height: int = 128  # render height (LR)
    width: int = 192  # render width (LR)
    target_scale: int = 4  # target = render size x this; the x2 target is its 2x2 box average
    supersample: int = 2  # samples per target pixel per axis
    jitter: str = "halton"  # "halton" (FSR2 sequence, random start per scene) or "none"
    lod_bias: float = -1.0  # texture LOD bias at render resolution (upscalers ask for a negative bias)
    seed: int = 0  # train scene i has seed seed*1000 + i


def scene_seed(cfg: RenderDataConfig, split: str, i: int) -> int:
    return TEST_SEED_BASE + i if split == "test" else cfg.seed * 1000 + i


def render_scene(renderer: Renderer, cfg: RenderDataConfig, seed: int, pool: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays of one scene (see ARRAYS) and its metadata."""
    scene = make_scene(seed, pool, cfg.frames)
    start = int(np.random.default_rng(seed).integers(0, PHASES))
    size = (cfg.height, cfg.width)
    big = (cfg.height * cfg.target_scale, cfg.width * cfg.target_scale)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    for t in range(cfg.frames):
        jit = halton_jitter(start + t, PHASES) if cfg.jitter == "halton" else (0.0, 0.0)
        g = renderer.gbuffer(scene, t, size, jit, cfg.lod_bias)
        out["color"].append(_u8(g.color))
        out["depth"].append(g.depth)
        out["motion"].append(g.motion)
        out["normals"].append(g.normals.astype(np.float16))
        out["albedo"].append(_u8(g.albedo))
        out["jitter"].append(np.asarray(g.jitter, np.float32))
        out["target"].append(_u8(renderer.target(scene, t, big, cfg.supersample)))
        out["cameras"].append(np.stack([g.view_proj, g.view_proj_prev]))
    renderer.drop_textures()
    meta = {"seed": seed, "phase_start": start, "textures": ["/".join(Path(p).parts[-2:]) for p in scene.textures]}
    return {k: np.stack(v) for k, v in out.items()}, meta


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def write_scene(folder: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write a scene folder atomically (temp folder, then rename)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, v in arrays.items():
        np.save(tmp / f"{k}.npy", v)
    (tmp / "scene.json").write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder)


def render_dataset(cfg: RenderDataConfig, out: str | Path, log: Callable[[str], None] = print) -> dict:
    """Render (or finish rendering) every scene of ``cfg`` under ``out``; returns the index written to index.json.

    Scenes already on disk are kept, so an interrupted run resumes. ``out/index.json`` records the config;
    a different config in the same folder is refused.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    if index_path.exists() and json.loads(index_path.read_text())["config"] != asdict(cfg):
        raise ValueError(f"{out} holds a dataset made with another config; use a new --out")
    t0 = time.monotonic()
    index: dict = {"config": asdict(cfg), "arrays": ARRAYS, "splits": {}, "complete": False}
    if not index_path.exists():
        index_path.write_text(json.dumps(index, indent=1))
    with Renderer() as renderer:
        for split, count in (("train", cfg.train_scenes), ("test", cfg.test_scenes)):
            pool = texture_pool(cfg.data_root, split)
            names = []
            for i in range(count):
                name, seed = f"{split}/scene_{i:04d}", scene_seed(cfg, split, i)
                names.append(name)
                if (out / name).exists():
                    continue
                ts = time.monotonic()
                arrays, meta = render_scene(renderer, cfg, seed, pool)
                write_scene(out / name, arrays, {**meta, "split": split})
                log(f"{name}: seed {seed}, {cfg.frames} frames in {time.monotonic() - ts:.1f}s")
            index["splits"][split] = names
    index["complete"] = True
    index["seconds"] = round(time.monotonic() - t0, 1)
    index["bytes"] = sum(p.stat().st_size for p in out.rglob("*.npy"))
    index_path.write_text(json.dumps(index, indent=1))
    return index


def load_scene(folder: str | Path) -> dict[str, np.ndarray]:
    """Arrays of one scene, memory-mapped (see ARRAYS)."""
    folder = Path(folder)
    return {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ARRAYS}


def scene_folders(root: str | Path, split: str) -> list[Path]:
    """Scene folders of ``split`` ("train" or "test") as listed in ``root``/index.json."""
    root = Path(root)
    index = json.loads((root / "index.json").read_text())
    return [root / name for name in index["splits"][split]]
