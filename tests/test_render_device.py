"""RenderUpscaler on device arrays: DLPack producers, fp16 G-buffers, value checks off the steady state, CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gbuffer_frames

from engine.errors import UsageError
from engine.render_api import RenderUpscaler
from engine.render_inputs import checks_values

H, W = 12, 16  # render size of the test frames
ARRAYS = ("color", "depth", "motion", "normals", "albedo")  # the image inputs of a frame


@pytest.fixture(scope="module")
def weights(rdg_tiny_weights: Path) -> Path:
    return rdg_tiny_weights  # conftest.py


def frames(n: int = 3, seed: int = 0) -> list[dict]:
    return gbuffer_frames(H, W, n, seed)  # conftest.py


def run(up: RenderUpscaler, clip: list[dict], convert=lambda a: a) -> list:
    return [up.upscale(**{k: convert(v) for k, v in f.items() if k in ARRAYS}, jitter=f["jitter"], reset=f["reset"])
            for f in clip]


class HostDLPack:
    """A foreign CPU array that speaks only DLPack, produced by numpy itself (no torch in between)."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = np.ascontiguousarray(a)

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


# ---------------------------------------------------------------- CPU producers and fp16


def test_cpu_dlpack_producers_and_fp16_gbuffers_give_the_numpy_frames(weights: Path) -> None:
    # Prepare
    clip = frames()
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        ref = run(up, clip)
    # Execute: numpy's own DLPack export, torch CPU tensors, and fp16 G-buffers (colour kept fp32)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        via_numpy = run(up, clip, HostDLPack)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        via_torch = run(up, clip, torch.from_numpy)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, depth_inverted=True) as up:
        # fp16 depth as reverse-Z: fp16 near 1 steps by 2^-11, coarse next to the model's 1 - depth (docs/render.md)
        half = [up.upscale(f["color"], (1.0 - f["depth"]).astype(np.float16),
                           *(f[k].astype(np.float16) for k in ("motion", "normals", "albedo")),
                           jitter=f["jitter"], reset=f["reset"]) for f in clip]
    # Assert
    for r, n, t, h in zip(ref, via_numpy, via_torch, half):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
        np.testing.assert_array_equal(r, np.asarray(n))
        np.testing.assert_array_equal(r, t.numpy())
        np.testing.assert_allclose(r, h, atol=1e-2)  # fp16 inputs: ~1e-3 per value, through 3 recurrent steps


def test_fp16_colour_comes_back_fp16(weights: Path) -> None:
    # Prepare
    f = frames(1)[0]
    with RenderUpscaler(2, model="rdg-tiny", weights=weights) as up:
        ref = up.upscale(**{k: f[k] for k in ARRAYS})
        # Execute
        got = up.upscale(**{k: torch.from_numpy(f[k]).half() for k in ARRAYS}, reset=True)
    # Assert
    assert got.dtype == torch.float16 and got.shape == (2 * H, 2 * W, 3)
    np.testing.assert_allclose(got.float().numpy(), ref, atol=1e-2)


# ---------------------------------------------------------------- value checks and the steady state


def test_value_checks_run_every_frame_on_the_host_and_first_frame_on_a_device() -> None:
    # Assert: (mode, arrays on a device, first frame of a history) -> values checked
    assert [checks_values(True, False, f) for f in (True, False)] == [True, True]
    assert [checks_values(True, True, f) for f in (True, False)] == [True, False]
    assert [checks_values("first", d, False) for d in (False, True)] == [False, False]
    assert [checks_values("every", d, False) for d in (False, True)] == [True, True]
    assert [checks_values(False, d, True) for d in (False, True)] == [False, False]


def test_first_frame_checks_values_then_only_shapes(weights: Path) -> None:
    # Prepare: frame 2 carries a NaN depth, frame 3 a wrong size
    a, b, c = ({k: f[k] for k in ARRAYS} for f in frames(3))
    bad = {**b, "depth": np.full((H, W), np.nan, np.float32)}
    small = {k: v[: H // 2, : W // 2] for k, v in c.items()}
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, validate="first") as up:
        # Execute / Assert: the NaN passes in the steady state (no read-back), shapes are still checked
        up.upscale(**a)
        up.upscale(**bad)
        with pytest.raises(UsageError, match="reset=True"):
            up.upscale(**small)
        with pytest.raises(UsageError, match="NaN"):  # a new history checks values again
            up.upscale(**bad, reset=True)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, validate="every") as up:
        up.upscale(**a)
        with pytest.raises(UsageError, match="NaN"):
            up.upscale(**bad)
    with pytest.raises(UsageError, match="validate must be"):
        RenderUpscaler(2, model="rdg-tiny", weights=weights, validate="sometimes")


# ---------------------------------------------------------------- CUDA


def cuda_or_skip() -> None:
    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA device (torch {torch.__version__})")


class CudaArrayInterfaceOnly:
    """A device array that speaks only __cuda_array_interface__ (like a Numba device array)."""

    def __init__(self, t: torch.Tensor) -> None:
        self._t = t.contiguous()
        self.__cuda_array_interface__ = self._t.__cuda_array_interface__


def test_cuda_tensors_stay_on_the_device_without_host_syncs(weights: Path) -> None:
    cuda_or_skip()
    # Prepare
    clip = frames(4)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch") as up:
        ref = run(up, clip)
    cuda = [{k: torch.from_numpy(f[k]).cuda() for k in ARRAYS} for f in clip]
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch", device="cuda") as up:
        # Execute: the first frame checks values (one read-back); the steady state must not sync at all
        got = [up.upscale(**cuda[0], jitter=clip[0]["jitter"], reset=True)]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got += [up.upscale(**c, jitter=f["jitter"]) for c, f in zip(cuda[1:], clip[1:])]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # Assert
    assert all(g.is_cuda and g.dtype == torch.float32 for g in got)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(r, g.cpu().numpy(), atol=1e-4)


def test_cuda_dlpack_and_array_interface_producers_and_fp16(weights: Path) -> None:
    cuda_or_skip()
    # Prepare
    clip = frames(2)
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch", device="cuda") as up:
        ref = run(up, clip, lambda a: torch.from_numpy(a).cuda())
    # Execute
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch", device="cuda") as up:
        via_cai = run(up, clip, lambda a: CudaArrayInterfaceOnly(torch.from_numpy(a).cuda()))
    with RenderUpscaler(2, model="rdg-tiny", weights=weights, backend="torch", device="cuda") as up:
        half = run(up, clip, lambda a: torch.from_numpy(a).cuda().half())
    # Assert
    for r, c, h in zip(ref, via_cai, half):
        assert c.is_cuda and h.is_cuda and h.dtype == torch.float16
        torch.testing.assert_close(c, r)
        torch.testing.assert_close(h.float(), r, atol=2e-2, rtol=0)
