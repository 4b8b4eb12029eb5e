"""RenderUpscaler: helpers (Halton jitter, presets), input containers, conventions, errors, backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import ModelError, UsageError
from engine.render_api import (PRESETS, RenderUpscaler, halton, halton_jitter, jitter_matrix, jitter_phase_count,
                               render_size)

H, W = 12, 16  # render size of the test frames


@pytest.fixture(scope="module")
def weights(rdg_tiny_weights: Path) -> Path:
    return rdg_tiny_weights  # conftest.py


def frames(n: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Synthetic render frames, channels last, in the documented conventions."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        nrm = rng.normal(size=(H, W, 3)).astype(np.float32)
        nrm[..., 2] = np.abs(nrm[..., 2])
        out.append({"color": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                    "depth": rng.uniform(0.9, 0.999, (H, W)).astype(np.float32),
                    "motion": rng.normal(0, 1.5, (H, W, 2)).astype(np.float32),
                    "normals": nrm / np.linalg.norm(nrm, axis=-1, keepdims=True),
                    "albedo": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                    "jitter": tuple(rng.uniform(-0.5, 0.5, 2))})
    return out


def run(up: RenderUpscaler, clip: list[dict], **change) -> list:
    return [up.upscale(**{**f, **{k: v(f) for k, v in change.items()}}) for f in clip]


# ---------------------------------------------------------------- helpers


def test_halton_jitter_follows_fsr2() -> None:
    # Assert: radical inverses, FSR2's phase count, values centred on the pixel, and the cycle
    assert [halton(i, 2) for i in (1, 2, 3)] == [0.5, 0.25, 0.75]
    assert halton(1, 3) == pytest.approx(1 / 3) and halton(2, 3) == pytest.approx(2 / 3)
    assert jitter_phase_count(1280, 1920) == 18 and jitter_phase_count(960, 1920) == 32
    seq = [halton_jitter(i, 8) for i in range(16)]
    assert seq[0] == (0.0, pytest.approx(-1 / 6)) and seq[:8] == seq[8:]
    assert all(-0.5 <= c < 0.5 for j in seq for c in j)


def test_presets_give_fsr2_render_sizes() -> None:
    assert PRESETS == {"quality": 1.5, "balanced": 1.7, "performance": 2.0, "ultra_performance": 3.0}
    assert render_size(1920, 1080, "quality") == (1280, 720)
    assert render_size(1920, 1080, "balanced") == (1129, 635)
    assert render_size(3840, 2160, "performance") == (1920, 1080)
    assert render_size(1920, 1080, "ultra_performance") == (640, 360)
    with pytest.raises(UsageError, match="quality"):
        render_size(1920, 1080, "ultra")
    with pytest.raises(ValueError, match=">= 1"):
        render_size(1920, 1080, 0.5)


def test_jitter_matrix_is_the_one_the_renderer_uses() -> None:
    pytest.importorskip("moderngl")
    from training.render.gbuffer import jitter_matrix as renderer_matrix

    np.testing.assert_allclose(jitter_matrix((0.3, -0.2), 192, 128), renderer_matrix((0.3, -0.2), 192, 128))


# ---------------------------------------------------------------- conventions and containers


def test_output_follows_the_input_container_and_dtype(weights: Path) -> None:
    # Prepare
    f = frames(1)[0]
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        # Execute
        as_u8 = up.upscale(**f, reset=True)
        as_f32 = up.upscale(**{**f, "color": f["color"].astype(np.float32) / 255}, reset=True)
        as_torch = up.upscale(**{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in f.items()}, reset=True)
    # Assert
    assert as_u8.shape == (2 * H, 2 * W, 3) and as_u8.dtype == np.uint8
    assert isinstance(as_f32, np.ndarray) and as_f32.dtype == np.float32 and 0 <= as_f32.min() and as_f32.max() <= 1
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.uint8
    np.testing.assert_array_equal(as_u8, np.round(as_f32 * 255).astype(np.uint8))
    np.testing.assert_array_equal(as_u8, as_torch.numpy())


class DLPackOnly:
    """A foreign array that only speaks DLPack (like a CuPy or JAX array)."""

    def __init__(self, a: np.ndarray) -> None:
        self._t = torch.from_numpy(np.ascontiguousarray(a))

    def __dlpack__(self, **kw):
        return self._t.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_dlpack_and_channels_first_inputs_give_the_same_frames(weights: Path) -> None:
    # Prepare
    clip = frames(3)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        ref = run(up, clip)
    # Execute
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        via_dlpack = run(up, clip, color=lambda f: DLPackOnly(f["color"]), motion=lambda f: DLPackOnly(f["motion"]))
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, layout="chw") as up:
        chw = run(up, clip, **{k: (lambda f, k=k: f[k].transpose(2, 0, 1)) for k in ("color", "motion", "normals", "albedo")})
    # Assert
    for r, d, c in zip(ref, via_dlpack, chw):
        assert isinstance(d, torch.Tensor)
        np.testing.assert_array_equal(r, d.numpy())
        np.testing.assert_array_equal(r, c.transpose(1, 2, 0))


def test_api_streaming_equals_the_model_unroll(weights: Path) -> None:
    # Prepare
    from engine.models import build_model, load_weights
    from engine.models.rdg import GBufferBatch

    clip = frames(4)
    model = load_weights(build_model("rdg-tiny", 2), weights).eval()

    def nt(key: str, div: float = 1.0) -> torch.Tensor:
        a = np.stack([f[key] if f[key].ndim == 3 else f[key][..., None] for f in clip]).astype(np.float32) / div
        return torch.from_numpy(a).permute(0, 3, 1, 2)[None]

    gb = GBufferBatch(nt("depth"), nt("motion"), nt("normals"), nt("albedo", 255),
                      torch.tensor([[f["jitter"] for f in clip]], dtype=torch.float32))
    # Execute
    with torch.no_grad():
        expected = model.unroll(nt("color", 255), gb).clamp(0, 1)[0].permute(0, 2, 3, 1).numpy()
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        got = run(up, [{**f, "color": f["color"].astype(np.float32) / 255} for f in clip])
    # Assert
    np.testing.assert_allclose(np.stack(got), expected, atol=1e-5)


def test_inverted_depth_and_uv_motion_options_convert_to_the_same_inputs(weights: Path) -> None:
    # Prepare
    clip = frames(3)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        ref = run(up, clip)
    # Execute: reverse-Z depth, and motion in UV units with y pointing up
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, depth_inverted=True, motion_scale=(W, -H)) as up:
        got = run(up, clip, depth=lambda f: 1.0 - f["depth"], motion=lambda f: f["motion"] / [W, -H])
    # Assert
    for r, g in zip(ref, got):
        assert np.abs(r.astype(int) - g.astype(int)).max() <= 1


def test_reset_forgets_history_and_output_size_resizes(weights: Path) -> None:
    # Prepare
    a, b = frames(2)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, output_size=(24, 18)) as up:
        # Execute
        fresh = up.upscale(**b)
        up.upscale(**a, reset=True)
        after_cut = up.upscale(**b, reset=True)
        with_history = up.upscale(**b)
    # Assert
    assert fresh.shape == (18, 24, 3)
    np.testing.assert_array_equal(fresh, after_cut)
    assert not np.array_equal(fresh, with_history)


def test_missing_normals_albedo_and_hdr_exposure(weights: Path) -> None:
    # Prepare
    f = frames(1)[0]
    hdr = f["color"].astype(np.float32) / 255 * 8.0  # linear radiance well above 1
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        # Execute
        plain = up.upscale(f["color"], f["depth"], f["motion"])
        lit = up.upscale(hdr, f["depth"], f["motion"], reset=True, exposure=0.125)
    # Assert
    assert plain.shape == (2 * H, 2 * W, 3)
    assert np.isfinite(lit).all() and lit.max() > 1.5  # back in the caller's HDR range


def test_onnxruntime_backend_matches_torch(weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    # Prepare: the same weights exported by the one exporter
    from engine.backends.torch import load_net
    from export.onnx import export_onnx

    onnx_path = export_onnx(load_net(weights)[2], tmp_path / "rdg-tiny.onnx", "rdg-tiny")
    clip = [{**f, "color": f["color"].astype(np.float32) / 255} for f in frames(3)]
    # Execute
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch") as up:
        ref = run(up, clip)
    with RenderUpscaler(2, model="rdg-tiny", weights=onnx_path, backend="onnxruntime") as up:
        got = run(up, clip)
    # Assert
    for r, g in zip(ref, got):
        np.testing.assert_allclose(r, g, atol=1e-4)


# ---------------------------------------------------------------- errors


BAD_INPUTS = [
    ({"depth": np.zeros((H // 2, W // 2), np.float32)}, "render size"),
    ({"motion": np.zeros((H, W, 2), np.int16)}, "dtype"),
    ({"motion": np.zeros((2, H, W), np.float32)}, "layout"),
    ({"color": np.zeros((1, H, W, 3), np.uint8)}, "no batch"),
    ({"color": np.full((H, W, 3), 2.0, np.float32)}, "exposure"),
    ({"depth": np.full((H, W), 12.5, np.float32)}, "device depth"),
    ({"motion": np.full((H, W, 2), 400.0, np.float32)}, "motion_scale"),
    ({"normals": np.full((H, W, 3), 0.5, np.float32)}, "n \\* 2 - 1"),
    ({"albedo": np.full((H, W, 3), 3.0, np.float32)}, "albedo"),
    ({"depth": np.full((H, W), np.nan, np.float32)}, "NaN"),
    ({"jitter": (0.0, 1.5)}, "render pixels"),
    ({"jitter": "centre"}, "two numbers"),
    ({"color": [[0, 0, 0]]}, "numpy array"),
    ({"exposure": -1.0}, "positive"),
]


@pytest.mark.parametrize("change,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_get_a_clear_error(weights: Path, change: dict, message: str) -> None:
    f = frames(1)[0]
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        with pytest.raises(UsageError, match=message) as info:
            up.upscale(**{**f, **change})
    assert isinstance(info.value, ValueError)  # the builtin callers may catch instead


def test_size_change_needs_a_reset(weights: Path) -> None:
    small = {k: (v[: H // 2, : W // 2] if isinstance(v, np.ndarray) else v) for k, v in frames(1)[0].items()}
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        up.upscale(**frames(1)[0])
        with pytest.raises(UsageError, match="reset=True"):
            up.upscale(**small)
        assert up.upscale(**small, reset=True).shape == (H, W, 3)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"backend": "vulkan"}, UsageError, "unknown backend"),
    ({"layout": "nhwc"}, UsageError, "layout"),
    ({"model": "rvsr-s"}, ModelError, "not 'rvsr-s'"),
    ({"scale": 4}, ModelError, "x2 model"),
    ({"scale": 5}, UsageError, "scale must be one of 2, 3, 4"),
    ({"weights": "missing.safetensors"}, ModelError, "not found"),
])
def test_bad_construction_gets_a_clear_error(weights: Path, kwargs: dict, error: type, message: str) -> None:
    args = {"scale": 2, "model": "rdg-tiny", "weights": weights, **kwargs}
    with pytest.raises(error, match=message):
        RenderUpscaler(**args)


def test_no_shipped_weights_says_how_to_get_them() -> None:
    with pytest.raises(ModelError, match="train"):
        RenderUpscaler(3, model="rdg-s")


def test_a_video_model_is_not_a_renderer_model(tiny_model) -> None:
    with pytest.raises(ModelError, match="not a G-buffer model"):
        RenderUpscaler(2, model="rvsr-tiny", weights=tiny_model[2][0], backend="onnxruntime")


def test_empty_frames_and_closed_upscalers_get_clear_errors(weights: Path) -> None:
    # Prepare
    from engine.errors import BackendError

    f = frames(1)[0]
    empty = {**f, **{k: v[:0, :0] for k, v in f.items() if isinstance(v, np.ndarray)}}
    up = RenderUpscaler(2, model="rdg-tiny", weights=weights)
    # Execute / Assert
    with pytest.raises(UsageError, match="0x0"):
        up.upscale(**empty)
    up.close()
    up.close()  # twice is fine
    with pytest.raises(BackendError, match="closed"):
        up.upscale(**f)


@pytest.mark.parametrize("scale", [2, 4])
def test_shipped_models_run_on_onnxruntime_without_torch(scale: int) -> None:
    # Prepare: a fresh interpreter where importing torch, safetensors or onnx fails
    import subprocess
    import sys

    from conftest import ROOT

    code = f"""
import sys, numpy as np
sys.modules.update({{m: None for m in ("torch", "safetensors", "onnx")}})
from engine.render_api import RenderUpscaler
rng = np.random.default_rng(0)
h, w = 18, 32
f = dict(color=rng.integers(0, 256, (h, w, 3), dtype=np.uint8), depth=np.full((h, w), 0.9, np.float32),
         motion=np.zeros((h, w, 2), np.float32))
with RenderUpscaler({scale}, backend="onnxruntime") as up:
    outs = [up.upscale(**f, jitter=(0.25 * i - 0.3, 0.1)) for i in range(3)]
print(outs[-1].shape, outs[-1].dtype, abs(float(outs[-1].mean()) - float(f["color"].mean())) < 8)
"""
    # Execute
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    # Assert
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [f"({18 * scale},", f"{32 * scale},", "3)", "uint8", "True"]
