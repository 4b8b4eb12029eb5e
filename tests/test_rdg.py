"""RDG model: state contract, streaming = unrolled, jitter-aware base, torch <-> ONNX Runtime parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import GBUFFER_MODELS, build_model, count_macs, model_config
from engine.models.rdg import RDG, GBufferBatch


def _clip(n: int, t: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, GBufferBatch]:
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(n, t, 3, h, w, generator=g), dim=2)
    gb = GBufferBatch(depth=0.9 + 0.1 * torch.rand(n, t, 1, h, w, generator=g),
                      motion=torch.randn(n, t, 2, h, w, generator=g), normals=normals,
                      albedo=torch.rand(n, t, 3, h, w, generator=g), jitter=torch.rand(n, t, 2, generator=g) - 0.5)
    return torch.rand(n, t, 3, h, w, generator=g), gb


def _perturbed(name: str, scale: int) -> RDG:
    """A model whose blend and residual paths are both active (fresh init is close to plain bicubic)."""
    torch.manual_seed(0)
    model = build_model(name, scale)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_registry_builds_gbuffer_models_beside_rgb_ones() -> None:
    # Execute
    rdg, rvsr = build_model("rdg-s", 2), build_model("rvsr-s", 2)
    # Assert: similar cost per render pixel, the G-buffer model is not the more expensive one
    assert isinstance(rdg, RDG) and "rdg-s" in GBUFFER_MODELS
    assert count_macs(rdg, 1, 1) <= 1.05 * count_macs(rvsr, 1, 1)
    assert model_config("rdg-s", 4)["scale"] == 4
    with pytest.raises(KeyError, match="rdg-s"):
        build_model("nope", 2)


@pytest.mark.parametrize("scale", [2, 4])
def test_streaming_steps_equal_the_unrolled_clip(scale: int) -> None:
    # Prepare
    model = _perturbed("rdg-tiny", scale)
    frames, gb = _clip(2, 5, 12, 14)
    # Execute
    with torch.no_grad():
        whole = model.unroll(frames, gb)
        hidden, steps = None, []
        for t in range(5):
            sr, hidden = model.step(frames[:, t], hidden, gb.frame(t))
            steps.append(sr)
    # Assert
    assert whole.shape == (2, 5, 3, 12 * scale, 14 * scale)
    assert [tuple(h.shape[1:]) for h in hidden] == [(c, 12 * f, 14 * f) for c, f in model.hidden_spec()]
    torch.testing.assert_close(torch.stack(steps, 1), whole)


def test_state_carries_information_between_frames() -> None:
    # Prepare
    model = _perturbed("rdg-tiny", 2)
    frames, gb = _clip(1, 2, 10, 10)
    # Execute
    with torch.no_grad():
        _, h1 = model.step(frames[:, 0], None, gb.frame(0))
        from_state, _ = model.step(frames[:, 1], h1, gb.frame(1))
        from_zero, _ = model.step(frames[:, 1], None, gb.frame(1))
    # Assert
    assert (from_state - from_zero).abs().max() > 1e-3


def test_missing_gbuffers_are_refused() -> None:
    model = build_model("rdg-tiny", 2)
    with pytest.raises(ValueError, match="G-buffers"):
        model.step(torch.rand(1, 3, 8, 8))


def test_fresh_model_undoes_the_jitter_in_its_base_upsampling() -> None:
    # Prepare: a horizontal ramp rendered with the content moved right by +0.5 px (FSR2 sign)
    model = build_model("rdg-tiny", 2)
    x = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 3, 8, 16) / 16
    jitter = torch.tensor([[0.5, 0.0]])
    # Execute: render pixel i shows the unjittered image at i + 0.5 - 0.5 = i, not at its centre i + 0.5
    base = model.base(x, jitter)
    plain = model.base(x, torch.zeros(1, 2))
    # Assert: reading pixels at their centres (plain) would move the content right by 1 output pixel
    torch.testing.assert_close(base[..., 4:-4], plain[..., 5:-3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,scale", [("rdg-tiny", 2), ("rdg-tiny", 4)])
def test_onnx_matches_torch_over_eight_recurrent_steps(tmp_path: Path, name: str, scale: int) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from export.onnx import export_onnx, parity, symbolic_dims

    # Prepare
    model = _perturbed(name, scale)
    # Execute
    path = export_onnx(model, tmp_path / f"{name}.onnx", name)
    err = parity(model, path, steps=8, hw=(19, 26))
    # Assert
    dims = symbolic_dims(path)
    assert list(dims)[:6] == ["lr", "depth", "motion", "normals", "albedo", "jitter"]
    assert dims["hidden_in1"] == [1, 3, f"h{scale}", f"w{scale}"] and dims["depth"] == [1, 1, "h", "w"]
    assert "hidden_out2" in dims and "sr" in dims
    assert err < 1e-4, f"torch vs onnxruntime max abs error {err:.2e}"


def test_onnx_export_refuses_opsets_without_gridsample(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from engine.errors import ModelError
    from export.onnx import export_onnx

    with pytest.raises(ModelError, match="opset"):
        export_onnx(build_model("rdg-tiny", 2), tmp_path / "m.onnx", "rdg-tiny", opset=15)


def test_gradients_reach_every_parameter_through_time() -> None:
    # Prepare
    model = build_model("rdg-tiny", 2)
    frames, gb = _clip(1, 3, 8, 8)
    # Execute
    model.unroll(frames, gb).mean().backward()
    # Assert
    missing = [n for n, p in model.named_parameters() if p.grad is None or not np.isfinite(p.grad.numpy()).all()]
    assert not missing
