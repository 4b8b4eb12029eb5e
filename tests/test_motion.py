"""Block matching and warping (engine/models/motion.py): the alignment of RVSR's recurrent state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from engine.models.motion import block_match, displacements, warp

TEMPERATURE = torch.tensor(1e-4)


def _texture(seed: int = 0, side: int = 96) -> torch.Tensor:
    """Smooth random RGB texture (bicubic-upsampled noise), values in about [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, side // 4, side // 4, generator=g), size=(side, side), mode="bicubic",
                         align_corners=False).clamp(0, 1)


def test_displacements_are_row_major_dx_dy():
    d = displacements(1)
    assert d.shape == (9, 2)
    assert d[0].tolist() == [-1, -1] and d[1].tolist() == [0, -1] and d[4].tolist() == [0, 0]


@pytest.mark.parametrize("dx,dy", [(2, -1), (0, 0), (-3, 1)])
def test_block_match_finds_a_translation(dx, dy):
    # Prepare: cur(p) = prev(p + (dx, dy)), so the current -> previous motion is (dx, dy) everywhere
    img = _texture()
    prev = img[:, :, 10:74, 10:74]
    cur = img[:, :, 10 + dy : 74 + dy, 10 + dx : 74 + dx]
    # Execute
    motion = block_match(cur, prev, 3, TEMPERATURE)
    # Assert: inside the border (edges are replicated there) the field is the shift within 0.25 px
    inner = motion[0, :, 6:-6, 6:-6]
    assert motion.shape == (1, 2, 64, 64)
    assert (inner[0] - dx).abs().median() < 0.25 and (inner[1] - dy).abs().median() < 0.25
    # and warping the previous frame with it lays it onto the current one
    err_warped = (warp(prev, motion) - cur)[..., 6:-6, 6:-6].abs().mean()
    err_still = (prev - cur)[..., 6:-6, 6:-6].abs().mean()
    assert err_warped < 0.2 * err_still if (dx, dy) != (0, 0) else err_warped < 1e-3


def test_block_match_is_about_still_on_a_flat_frame():
    flat = torch.full((1, 3, 20, 24), 0.5)
    motion = block_match(flat, flat, 3, TEMPERATURE)
    assert motion.abs().max() < 1e-5


def test_warp_by_zero_motion_is_identity():
    x = torch.rand(2, 5, 7, 9)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 7, 9)), x, atol=1e-6)
