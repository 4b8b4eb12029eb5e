"""Tests of benchmarks/metrics.py: BT.601 Y, PSNR, SSIM (BasicSR convention) and the warping error."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from benchmarks.metrics import flow_warp, frame_metrics, grey, make_flow_estimator, psnr, rgb_to_y, ssim, warping_error


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture (uint8) that optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = rng.random((h, w, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    lo, hi = blurred.min(), blurred.max()
    return np.round((blurred - lo) / (hi - lo) * 255).astype(np.uint8)


def ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Direct float64 SSIM: explicit Gaussian weights over every fully inside 11x11 window."""
    ax = np.arange(11) - 5.0
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    wa, wb = sliding_window_view(a, (11, 11)), sliding_window_view(b, (11, 11))
    mu_a, mu_b = (wa * win).sum(axis=(2, 3)), (wb * win).sum(axis=(2, 3))
    var_a = (((wa - mu_a[..., None, None]) ** 2) * win).sum(axis=(2, 3))
    var_b = (((wb - mu_b[..., None, None]) ** 2) * win).sum(axis=(2, 3))
    cov = ((wa - mu_a[..., None, None]) * (wb - mu_b[..., None, None]) * win).sum(axis=(2, 3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(m.mean())


def test_psnr_of_known_arrays() -> None:
    # Prepare: an error of 10 everywhere -> MSE 100
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.full((4, 5, 3), 10, np.uint8)
    # Execute / Assert
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, a) == math.inf
    assert psnr(np.zeros((2, 2)), np.array([[0.0, 0.0], [0.0, 2.0]])) == pytest.approx(10 * math.log10(255**2))


def test_psnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_y_matches_matlab_rgb2ycbcr() -> None:
    # Prepare: primaries, extremes and random pixels
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    img[0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 0]]
    # Execute
    y = rgb_to_y(img)
    # Assert: MATLAB's formula with RGB in [0, 1]; white is 235, black 16, not rounded
    r, g, b = (img[..., c] / 255.0 for c in range(3))
    np.testing.assert_allclose(y, 16 + 65.481 * r + 128.553 * g + 24.966 * b, atol=1e-10)
    assert y[0, 0] == pytest.approx(16.0)
    assert y[0, 1] == pytest.approx(235.0)
    assert y[0, 2] == pytest.approx(81.481)
    assert y.dtype == np.float64


def test_ssim_of_identical_images_is_one() -> None:
    img = texture(24, 30).astype(np.float64)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ssim(texture(24, 30), texture(24, 30)) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_direct_float64_implementation() -> None:
    # Prepare: a tiny image and a noisy, darkened copy
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (19, 23)).astype(np.float64)
    b = np.clip(0.8 * a + rng.normal(0, 20, a.shape), 0, 255)
    # Execute
    value = ssim(a, b)
    # Assert
    assert value == pytest.approx(ssim_reference(a, b), abs=1e-9)
    assert 0.0 < value < 0.99


def test_ssim_of_colour_image_is_channel_mean_and_checks_size() -> None:
    a, b = texture(16, 16, 3), texture(16, 16, 4)
    expected = np.mean([ssim(a[..., c], b[..., c]) for c in range(3)])
    assert ssim(a, b) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))


def test_frame_metrics_keys_and_values() -> None:
    gt = texture(32, 40)
    sr = np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8)
    m = frame_metrics(sr, gt)
    assert set(m) == {"y_psnr", "y_ssim", "rgb_psnr"}
    assert m["rgb_psnr"] == pytest.approx(psnr(sr, gt))
    assert m["y_psnr"] == pytest.approx(psnr(rgb_to_y(sr), rgb_to_y(gt)))


def translated_clip(n: int = 4, h: int = 72, w: int = 96, dx: int = 2, dy: int = 1) -> list[np.ndarray]:
    """Frames of a window sliding over a fixed texture by (dx, dy) px per frame."""
    big = texture(h + n * dy + 8, w + n * dx + 8, seed=5)
    return [big[t * dy : t * dy + h, t * dx : t * dx + w] for t in range(n)]


def test_warping_error_is_small_for_gt_on_translation_and_large_when_shuffled() -> None:
    # Prepare
    clip = translated_clip()
    dis = make_flow_estimator()
    warps = [flow_warp(grey(clip[t - 1]), grey(clip[t]), dis) for t in range(1, len(clip))]
    shuffled = [clip[i] for i in (2, 0, 3, 1)]
    # Execute
    good = [warping_error(clip[t - 1], clip[t], warps[t - 1]) for t in range(1, len(clip))]
    bad = [warping_error(shuffled[t - 1], shuffled[t], warps[t - 1]) for t in range(1, len(clip))]
    # Assert
    assert max(good) < 1.0
    assert min(bad) > 5 * max(good)


def test_flow_warp_masks_pixels_coming_from_outside() -> None:
    # Prepare: content moves 2 px left per frame, so frame t's right edge was never seen at t-1
    clip = translated_clip(n=2, dx=2, dy=0)
    # Execute
    fw = flow_warp(grey(clip[0]), grey(clip[1]), make_flow_estimator())
    # Assert
    assert not fw.valid[:, -1].any()
    assert fw.valid.mean() > 0.8
    np.testing.assert_allclose(np.median(fw.map_x - np.arange(96)[None, :]), 2.0, atol=0.1)


def test_steady_floor_falls_with_blur_and_sits_below_flickering_output() -> None:
    # Prepare
    from benchmarks.steady_floor import blur, floor_at, floor_curve

    big = texture(90, 120, seed=5)  # panned by (1.5, 0.5) px a frame: sub-pixel, as real motion is
    clip = [cv2.warpAffine(big, np.float32([[1, 0, 1.5 * t], [0, 1, 0.5 * t]]), (120, 90), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)[8:80, 8:104] for t in range(5)]
    rng = np.random.default_rng(3)
    flickering = [np.clip(blur(f, 0.9) + rng.normal(0, 4, f.shape), 0, 255).astype(np.uint8) for f in clip]
    dis = make_flow_estimator()
    warps = [flow_warp(grey(clip[t - 1]), grey(clip[t]), dis) for t in range(1, len(clip))]
    # Execute
    rows = floor_curve(clip, sigmas=(0.0, 0.6, 1.2, 2.0))
    flicker_psnr = float(np.mean([frame_metrics(o, g)["y_psnr"] for o, g in zip(flickering, clip)]))
    flicker_warp = float(np.mean([warping_error(flickering[t - 1], flickering[t], warps[t - 1])
                                  for t in range(1, len(clip))]))
    # Assert: blur lowers PSNR and the warping error together; noise that changes every frame sits above the floor
    assert rows[0]["y_psnr"] is None
    assert [r["y_psnr"] for r in rows[1:]] == sorted((r["y_psnr"] for r in rows[1:]), reverse=True)
    assert [r["warp_error"] for r in rows] == sorted((r["warp_error"] for r in rows), reverse=True)
    assert flicker_warp > 1.5 * floor_at(rows, flicker_psnr)


def test_steady_floor_excess_reads_a_quality_report() -> None:
    # Prepare: a floor falling from 4.0 at 30 dB to 2.0 at 34 dB, and a report of two clips, one without a floor
    from benchmarks.steady_floor import excess

    floors = {"a": [{"sigma": 1.0, "y_psnr": 34.0, "warp_error": 2.0},
                    {"sigma": 2.0, "y_psnr": 30.0, "warp_error": 4.0}]}
    report = {"runs": {"x264:28": {"clips": {
        "a": {"methods": {"m": {"y_psnr": 32.0, "warp_error": 3.5}, "n": {"y_psnr": None, "warp_error": 1.0}}},
        "b": {"methods": {"m": {"y_psnr": 30.0, "warp_error": 9.0}}}}}}}
    # Execute
    out = excess(report, floors)
    # Assert: the floor at 32 dB is 3.0; clip b has no floor and method n no PSNR, so neither counts
    assert out == {"x264:28": {"m": {"a": pytest.approx(0.5), "mean": pytest.approx(0.5)}}}


def test_steady_floor_command_refuses_a_bad_report_in_one_line(tmp_path, capsys) -> None:
    # Prepare: a JSON file that is not a quality report
    from benchmarks.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    # Execute: refused before any clip is read (the dataset folder does not even exist)
    code = main(["steady-floor", "--dataset", str(tmp_path / "none"), "--quality", str(bad)])
    # Assert
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "not a vsr-bench quality --json report" in err
