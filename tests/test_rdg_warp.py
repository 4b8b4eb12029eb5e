"""Motion-vector convention of the RDG warp: synthetic shifts, depth-guided dilation, and Sintel's ground-truth flow."""

from __future__ import annotations

import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models.rdg import dilate_motion, shift, warp

SINTEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "sintel"


def read_flo_xz(path: Path) -> np.ndarray:
    """Middlebury .flo (xz-compressed) -> (H, W, 2) float32 flow (x right, y down)."""
    raw = lzma.decompress(path.read_bytes())
    tag = np.frombuffer(raw[:4], "<f4")[0]
    assert tag == 202021.25, f"{path} is not a .flo file"
    w, h = np.frombuffer(raw[4:12], "<i4")
    return np.frombuffer(raw[12:], "<f4").reshape(h, w, 2).copy()


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def test_warp_brings_the_previous_frame_onto_the_current_one() -> None:
    # Prepare: the scene moved right by 3 px and down by 2 px, so a current pixel was at (-3, -2) before
    rng = np.random.default_rng(0)
    prev = rng.random((1, 3, 40, 50)).astype(np.float32)
    cur = np.zeros_like(prev)
    cur[:, :, 2:, 3:] = prev[:, :, :-2, :-3]
    motion = np.zeros((1, 2, 40, 50), np.float32)
    motion[:, 0], motion[:, 1] = -3.0, -2.0  # current -> previous, render pixels
    # Execute
    out = warp(torch.from_numpy(prev), torch.from_numpy(motion)).numpy()
    # Assert
    np.testing.assert_allclose(out[:, :, 2:, 3:], cur[:, :, 2:, 3:], atol=1e-5)  # grid normalisation rounding


def test_dilation_gives_edge_pixels_the_foreground_motion() -> None:
    # Prepare: a one-pixel-wide near column moving by +4 px over a far background that stays still
    depth = torch.full((1, 1, 8, 9), 0.99)
    depth[..., 4] = 0.5
    motion = torch.zeros(1, 2, 8, 9)
    motion[:, 0, :, 4] = 4.0
    # Execute
    out = dilate_motion(motion, depth)
    # Assert
    assert torch.all(out[:, 0, :, 3:6] == 4.0)
    assert torch.all(out[:, 0, :, :3] == 0.0) and torch.all(out[:, 0, :, 6:] == 0.0)


def test_shift_moves_each_channel_by_its_fixed_offset() -> None:
    # Prepare: 9 channels holding the same ramp
    ramp = torch.arange(36.0).view(1, 1, 6, 6).repeat(1, 9, 1, 1)
    # Execute
    out = shift(ramp, 1)
    # Assert: with 9 channels, channel g has SHIFTS[g]: 1 is (dy, dx) = (0, 1) -> reads its left neighbour,
    # 3 is (1, 0) -> reads the pixel above
    assert torch.equal(out[0, 0], ramp[0, 0])
    assert torch.equal(out[0, 1, :, 1:], ramp[0, 1, :, :-1])
    assert torch.equal(out[0, 3, 1:], ramp[0, 3, :-1])


@pytest.mark.parametrize("scene", ["alley_1", "cave_2", "market_5"])
def test_sintel_forward_flow_warps_frame3_onto_frame2(scene: str) -> None:
    # Prepare: GT flow 2 -> 3 is "current -> other" motion with frame 2 as the current frame
    folder = SINTEL / scene
    if not folder.exists():
        pytest.skip("../shared/data/sintel not present")
    from PIL import Image

    def load(name: str) -> np.ndarray:
        return np.asarray(Image.open(folder / name).convert("RGB"), np.float32) / 255.0

    flow = read_flo_xz(folder / "flow_0002.flo.xz")
    f2, f3 = load("clean/frame_0002.webp"), load("clean/frame_0003.webp")
    valid = (np.asarray(Image.open(folder / "occlusions_0002.png")) < 128) & (np.asarray(Image.open(folder / "invalid_0002.png")) < 128)
    # Execute
    warped = warp(_chw(f3), _chw(flow))[0].permute(1, 2, 0).numpy()
    flipped = warp(_chw(f3), _chw(-flow))[0].permute(1, 2, 0).numpy()
    # Assert: the right convention removes most of the difference; the opposite sign makes it worse
    err, err_none, err_flip = (float(np.abs(x - f2)[valid].mean()) for x in (warped, f3, flipped))
    assert err < 0.4 * err_none, (err, err_none)
    assert err_flip > err_none > err
