"""Training sequences from ../shared/data: real clips and stills moved along synthetic camera paths.

Sequences are cut once into a uint8 cache (N, T, H, W, 3) so that training spends its two cores on
the model; degradation (BI/BD, noise) is applied on the fly per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from training.config import TrainConfig

# Vid4 is the test set: its folder name is refused here so it can never enter training.
FORBIDDEN = ("vid4",)
# Clips left out of training: toflow's frames may be Vimeo-90K content (non-commercial), see MANIFEST.
EXCLUDED_CLIPS = ("toflow_baseball_1280x720.mkv",)
VIDEO_EXTS = (".mp4", ".mkv", ".mpg", ".mov", ".webm")
IMAGE_EXTS = (".webp", ".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class DataConfig:
    """What goes into a sequence cache."""

    root: str = "../shared/data/train"  # folder with video/ and images/
    patch: int = 128  # HR patch side in pixels
    frames: int = 7  # frames per sequence
    per_clip: int = 48  # sequences cut from each video clip
    per_image: int = 6  # synthetic sequences made from each still
    video_downscale: int = 2  # clips are area-downscaled by this first (they are soft at full size)
    seed: int = 0  # everything below is deterministic in this seed

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def data_config(cfg: TrainConfig) -> DataConfig:
    """The sequence cache a training run (centralised or federated) reads: sequences of frames x windows (at
    least 7), crops of 128 px unless the patch is larger, so every run at <= 128 px shares one cache."""
    return DataConfig(root=cfg.data_root, frames=max(cfg.frames * cfg.windows, 7),
                      patch=max(cfg.patch, DataConfig.patch), seed=0)


def _check_not_test(path: Path) -> None:
    if any(part.lower() in FORBIDDEN for part in path.resolve().parts):
        raise ValueError(f"{path} is inside the Vid4 test set; training must never read it")


def list_sources(root: str | Path) -> dict[str, list[Path]]:
    """Source files by group name ('video' or an images/ subfolder), sorted."""
    from engine.errors import InputError

    root = Path(root)
    _check_not_test(root)
    if not root.is_dir():
        raise InputError(f"data root {root} does not exist; pass --data-root (a folder with video/ and images/)")
    groups: dict[str, list[Path]] = {}
    vids = sorted(p for p in (root / "video").glob("*") if p.suffix.lower() in VIDEO_EXTS)
    groups["video"] = [p for p in vids if p.name not in EXCLUDED_CLIPS]
    for sub in sorted(p for p in (root / "images").glob("*") if p.is_dir()):
        groups[sub.name] = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise InputError(f"no training material in {root}: expected video/*{'|'.join(VIDEO_EXTS)} or "
                         f"images/<set>/*{'|'.join(IMAGE_EXTS)}")
    return groups


def _read_clip(path: Path, downscale: int) -> np.ndarray:
    import av
    import cv2

    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for f in c.decode(stream):
            a = f.to_ndarray(format="rgb24")
            if downscale > 1:
                a = cv2.resize(a, (a.shape[1] // downscale, a.shape[0] // downscale), interpolation=cv2.INTER_AREA)
            frames.append(a)
    return np.stack(frames)


def clip_sequences(path: Path, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """Random crops of consecutive frames (time stride 1 or 2) from one real clip."""
    v = _read_clip(path, cfg.video_downscale)
    t, h, w = v.shape[:3]
    if t < cfg.frames or min(h, w) < cfg.patch:  # too short for one sequence (raft_sintel_demo has 10 frames) or
        # too small for one patch (after the downscale)
        return np.zeros((0, cfg.frames, cfg.patch, cfg.patch, 3), np.uint8)
    out = []
    for _ in range(cfg.per_clip):
        stride = int(rng.integers(1, 3)) if t >= 2 * cfg.frames else 1
        t0 = int(rng.integers(0, t - stride * (cfg.frames - 1)))
        y, x = int(rng.integers(0, h - cfg.patch + 1)), int(rng.integers(0, w - cfg.patch + 1))
        out.append(v[t0 : t0 + stride * cfg.frames : stride, y : y + cfg.patch, x : x + cfg.patch])
    return np.stack(out)


def _affine(cx: float, cy: float, zoom: float, angle: float, px: float) -> np.ndarray:
    """2x3 map from output patch pixels to source pixels: centre (cx, cy), zoom, rotation."""
    c, s = np.cos(angle) * zoom, np.sin(angle) * zoom
    half = (px - 1) / 2
    return np.array([[c, -s, cx - c * half + s * half], [s, c, cy - s * half - c * half]])


def camera_sequence(img: np.ndarray, fg: np.ndarray | None, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """One synthetic clip: a camera pans/zooms/rotates over ``img``; ``fg`` (if given) is a
    foreground layer moving with its own velocity, giving parallax and occlusion."""
    import cv2

    h, w = img.shape[:2]
    p, n = cfg.patch, cfg.frames
    zoom0 = float(rng.uniform(1.0, min(2.0, 0.8 * min(h, w) / p)))  # source px per output px
    margin = p * zoom0 * 0.75 + 8 * n
    if min(h, w) <= 2 * margin:
        zoom0, margin = 1.0, p * 0.75 + 8 * n
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    vel = rng.normal(0, 2.5, size=2)  # source px per frame
    dzoom = float(rng.uniform(-0.01, 0.01))
    dang = float(rng.normal(0, 0.004))
    flags = cv2.INTER_AREA if zoom0 > 1.3 else cv2.INTER_CUBIC
    frames = []
    fg_state = None
    if fg is not None:
        fh, fw = fg.shape[:2]
        size = int(rng.integers(p // 3, p // 2))
        fy, fx = int(rng.integers(0, fh - size)), int(rng.integers(0, fw - size))
        patch = fg[fy : fy + size, fx : fx + size]
        yy, xx = np.mgrid[:size, :size]
        mask = (((yy - size / 2) / (size / 2)) ** 2 + ((xx - size / 2) / (size / 2)) ** 2 <= 1).astype(np.float32)
        pos = rng.uniform(0, p - size, size=2)
        fvel = rng.normal(0, 3.0, size=2)
        fg_state = (patch, mask, pos, fvel, size)
    for i in range(n):
        m = _affine(cx + vel[0] * i, cy + vel[1] * i, zoom0 * (1 + dzoom * i), dang * i, p)
        f = cv2.warpAffine(img, m, (p, p), flags=flags | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        if fg_state is not None:
            patch, mask, pos, fvel, size = fg_state
            mt = np.array([[1, 0, pos[0] + fvel[0] * i], [0, 1, pos[1] + fvel[1] * i]], dtype=np.float64)
            layer = cv2.warpAffine(patch, mt, (p, p), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
            alpha = cv2.warpAffine(mask, mt, (p, p), flags=cv2.INTER_LINEAR)[..., None]
            f = (f * (1 - alpha) + layer * alpha).round().clip(0, 255).astype(np.uint8)
        frames.append(f)
    return np.stack(frames)


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def image_sequences(paths: list[Path], cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """``per_image`` synthetic sequences from each still (half of them with a foreground layer)."""
    out = []
    for path in paths:
        img = _load_image(path)
        if min(img.shape[:2]) < cfg.patch * 1.6 + 16 * cfg.frames:
            continue  # too small for a moving crop (most of T91)
        for k in range(cfg.per_image):
            fg = _load_image(paths[int(rng.integers(0, len(paths)))]) if k % 2 else None
            if fg is not None and min(fg.shape[:2]) <= cfg.patch // 2:
                fg = None
            out.append(camera_sequence(img, fg, cfg, rng))
    return np.stack(out) if out else np.zeros((0, cfg.frames, cfg.patch, cfg.patch, 3), np.uint8)


def build_cache(cfg: DataConfig, cache_dir: str | Path, log=print) -> Path:
    """Make (or reuse) the cache file for ``cfg``; returns its path (an .npz with arrays per group)."""
    cache_dir = Path(cache_dir)
    path = cache_dir / f"seq-{cfg.key()}.npz"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    arrays: dict[str, np.ndarray] = {}
    for group, files in list_sources(cfg.root).items():
        if group == "video":
            for f in files:
                arrays[f"video/{f.stem}"] = clip_sequences(f, cfg, rng)
                log(f"cache: {f.name}: {len(arrays[f'video/{f.stem}'])} sequences")
        else:
            arrays[f"images/{group}"] = image_sequences(files, cfg, rng)
            log(f"cache: images/{group}: {len(arrays[f'images/{group}'])} sequences")
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # per process: two runs may build the same cache at once
    np.savez(tmp, **arrays)
    tmp.replace(path)
    (cache_dir / f"seq-{cfg.key()}.json").write_text(json.dumps(asdict(cfg), indent=1))
    return path


def load_cache(path: str | Path) -> dict[str, np.ndarray]:
    """Groups of uint8 sequences (N, T, H, W, 3) keyed by source ('video/<clip>' or 'images/<set>')."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
