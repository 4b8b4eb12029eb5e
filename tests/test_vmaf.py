"""Tests of benchmarks/vmaf.py: VMAF (vmaf_v0.6.1) of tiny clips made in code, through FFmpeg's libvmaf."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import vmaf
from engine.errors import BackendError, UsageError

REASON = vmaf.available()
needs_vmaf = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def moving_texture(h: int = 90, w: int = 160, frames: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB texture panning 3 px right and 2 px down per frame (uint8)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((h + 2 * frames, w + 3 * frames, 3)).astype(np.float32), (0, 0), 2.0)
    big = (big - big.min()) / (big.max() - big.min()) * 255
    return [np.round(big[2 * i:2 * i + h, 3 * i:3 * i + w]).astype(np.uint8) for i in range(frames)]


def blurred(clip: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    """Gaussian blur of every frame."""
    return [cv2.GaussianBlur(f, (0, 0), sigma) for f in clip]


def noised(clip: list[np.ndarray], sigma: float, seed: int = 1) -> list[np.ndarray]:
    """Additive Gaussian noise of every frame, clipped to uint8."""
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0.0, sigma, f.shape), 0, 255).astype(np.uint8) for f in clip]


@pytest.fixture()
def ref() -> list[np.ndarray]:
    return moving_texture()


@needs_vmaf
def test_identical_clips_score_near_100(ref: list[np.ndarray]) -> None:
    # Execute
    score = vmaf.vmaf_clip(ref, [f.copy() for f in ref])
    # Assert: vmaf_v0.6.1 gives 97-100 for identical input (its motion feature keeps it off exactly 100)
    assert 97.0 <= score <= 100.0


@needs_vmaf
def test_blur_scores_clearly_below_light_noise_and_falls_with_strength(ref: list[np.ndarray]) -> None:
    # Execute
    light_noise = vmaf.vmaf_clip(ref, noised(ref, 2.0))
    soft, softer = vmaf.vmaf_clip(ref, blurred(ref, 1.5)), vmaf.vmaf_clip(ref, blurred(ref, 3.0))
    # Assert
    assert light_noise > 90.0
    assert soft < light_noise - 20.0  # measured: noise 99.2, blur 1.5 px 60.4, blur 3 px 6.1
    assert softer < soft - 20.0


@needs_vmaf
def test_reference_and_distorted_are_not_swapped(ref: list[np.ndarray]) -> None:
    # Prepare: VMAF is asymmetric; a sharp clip judged against a blurred reference scores far higher
    soft = blurred(ref, 1.5)
    # Execute
    right, swapped = vmaf.vmaf_clip(ref, soft), vmaf.vmaf_clip(soft, ref)
    # Assert
    assert right < swapped - 15.0


@needs_vmaf
def test_score_is_the_mean_over_frames(ref: list[np.ndarray]) -> None:
    # Prepare: the same distortion on every frame vs on none; half and half lies in between
    soft = blurred(ref, 1.5)
    half = soft[:2] + ref[2:]
    # Execute
    low, mid, high = vmaf.vmaf_clip(ref, soft), vmaf.vmaf_clip(ref, half), vmaf.vmaf_clip(ref, ref)
    # Assert
    assert low + 5.0 < mid < high - 5.0


@needs_vmaf
def test_temporary_files_are_removed(ref: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Execute
    vmaf.vmaf_clip(ref, noised(ref, 4.0))
    with pytest.raises(UsageError):
        vmaf.vmaf_clip(ref, ref[:-1])
    # Assert
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dist, words", [
    (lambda r: r[:-1], "equally long"),
    (lambda r: [f.astype(np.float32) for f in r], "distorted frame 0"),
    (lambda r: [f[:, :-2] for f in r], "distorted frame 0"),
    (lambda r: [f[..., 0] for f in r], "distorted frame 0"),
])
def test_bad_clips_raise_usage_error(ref: list[np.ndarray], dist, words: str) -> None:  # type: ignore[no-untyped-def]
    # Execute / Assert: checked before FFmpeg is looked for, so this runs everywhere
    with pytest.raises(UsageError, match=words):
        vmaf.vmaf_clip(ref, dist(ref))


def test_tiny_frames_raise_usage_error() -> None:
    # Prepare: libvmaf crashes on frames under 17 px a side
    tiny = moving_texture(h=16, w=16, frames=2)
    # Execute / Assert
    with pytest.raises(UsageError, match="at least 32x32"):
        vmaf.vmaf_clip(tiny, tiny)


@pytest.fixture()
def no_libvmaf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only an FFmpeg path that does not exist is offered; the probe cache is reset around the test."""
    monkeypatch.setattr(vmaf, "_candidates", lambda: iter([str(tmp_path / "ffmpeg")]))
    vmaf._find_ffmpeg.cache_clear()
    yield
    vmaf._find_ffmpeg.cache_clear()


def test_missing_libvmaf_is_reported_not_raised_by_available(no_libvmaf: None, ref: list[np.ndarray]) -> None:
    # Execute
    reason = vmaf.available()
    # Assert: one line naming what is missing and how to get it; scoring raises it as a BackendError
    assert reason is not None and "libvmaf" in reason and "\n" not in reason and "imageio-ffmpeg" in reason
    with pytest.raises(BackendError, match="libvmaf"):
        vmaf.vmaf_clip(ref, ref)
