"""Motion helpers shared by the models: bilinear backward warping and a parameter-free block matcher.

Conventions: a motion field is (N, 2, H, W) in pixels of the tensor it applies to, x right then y down, and
points from the current frame to the previous one, so ``warp(prev, motion)`` lays the previous frame onto the
current. Everything here exports to ONNX (opset >= 16: Pad, Slice, AveragePool, Softmax, Resize, GridSample).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)  # BT.601 weights: matching runs on luma


def pixel_grid(motion: torch.Tensor) -> torch.Tensor:
    """grid_sample grid (N, H, W, 2) reading each pixel's centre moved by ``motion`` (N, 2, H, W) pixels."""
    n, _, h, w = motion.shape
    ys = torch.arange(h, dtype=motion.dtype, device=motion.device) + 0.5
    xs = torch.arange(w, dtype=motion.dtype, device=motion.device) + 0.5
    gx = (xs.view(1, 1, w) + motion[:, 0]) * (2.0 / w) - 1.0
    gy = (ys.view(1, h, 1) + motion[:, 1]) * (2.0 / h) - 1.0
    return torch.stack([gx, gy], dim=-1)


def warp(x: torch.Tensor, motion: torch.Tensor, padding: str = "border", mode: str = "bilinear") -> torch.Tensor:
    """Sample ``x`` (N, C, H, W) at p + motion(p): with current -> previous motion this brings the previous frame
    onto the current one. ``motion`` is (N, 2, H, W) in pixels of ``x``, x right, y down."""
    return F.grid_sample(x, pixel_grid(motion), mode=mode, padding_mode=padding, align_corners=False)


def resize_motion(motion: torch.Tensor, like: torch.Tensor, factor: float) -> torch.Tensor:
    """``motion`` resized (bilinear) to the spatial size of ``like`` and its vectors multiplied by ``factor``."""
    return F.interpolate(motion, size=like.shape[-2:], mode="bilinear", align_corners=False) * factor


def displacements(radius: int) -> torch.Tensor:
    """(K, 2) candidate displacements (dx, dy) of ``block_match``, row-major over dy then dx, K = (2r+1)^2."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)


def offsets_kernel(radius: int) -> torch.Tensor:
    """(2, K, 1, 1) conv weights turning ``block_match``'s K candidate weights into the expected (dx, dy)."""
    return displacements(radius).t()[:, :, None, None].contiguous()


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (N, 1, H, W) of RGB (N, 3, H, W); Python-scalar weights, so no constant tensor per call."""
    return LUMA[0] * rgb[:, 0:1] + LUMA[1] * rgb[:, 1:2] + LUMA[2] * rgb[:, 2:3]


def block_match(cur: torch.Tensor, prev: torch.Tensor, radius: int, temperature: torch.Tensor,
                window: int = 5, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Soft block matching of two RGB frames; returns current -> previous motion in their pixels.

    For every displacement d with |dx|, |dy| <= ``radius`` the squared luma difference cur(p) - prev(p + d) is
    box-filtered over ``window`` x ``window``; a softmax of -cost / ``temperature`` over the candidates weights
    the displacements (soft argmax), so the result is sub-pixel and a flat, ambiguous region averages to about
    zero motion. No learned filters: only the temperature (a scalar tensor) may be trained. Cost per pixel:
    (2r+1)^2 differences and box filters. ``offsets`` is ``offsets_kernel(radius)`` already on the frames' device
    and dtype (a caller stepping every frame keeps it as a buffer); None builds it here.
    """
    a, b = luma(cur), luma(prev)
    h, w = a.shape[-2:]
    r = radius
    b = F.pad(b, (r, r, r, r), mode="replicate")
    costs = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            diff = a - b[:, :, r + dy : r + dy + h, r + dx : r + dx + w]
            costs.append(diff * diff)
    cost = F.avg_pool2d(torch.cat(costs, dim=1), window, stride=1, padding=window // 2, count_include_pad=False)
    weight = torch.softmax(-cost / temperature, dim=1)  # (N, K, H, W)
    if offsets is None:
        offsets = offsets_kernel(r).to(dtype=cur.dtype, device=cur.device)
    return F.conv2d(weight, offsets)  # expected displacement (N, 2, H, W)
