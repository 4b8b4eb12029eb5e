"""RDG: a G-buffer-guided online recurrent upscaler for rendered frames (after RDG, CVPR 2025).

Per frame: the recurrent state is warped to the current frame with the renderer's motion vectors (dilated towards
the nearest depth), disocclusions are found by comparing warped and current depth, a shift-MLP encoder (fixed
per-channel shifts + 1x1 convs, no deformable conv) mixes colour, G-buffers and the warped state, a high-frequency
booster gates the features with normals + albedo, and a pixel-shuffle head gives a residual and a per-pixel
blend weight for the warped previous output. Only conv, pad, slice, gather, grid_sample and pixel (un)shuffle are
used: the graph exports to ONNX opset >= 16 (GridSample). Conventions of the inputs: docs/render.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.motion import pixel_grid, warp

# Fixed shift per channel group (dy, dx), in units of the block's shift distance.
SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))
LOG_DEPTH_FLOOR = 1e-5  # 1 - depth is clamped here before the log (depth 1 = far plane / empty)


@dataclass(frozen=True)
class RDGConfig:
    """Shape of one RDG model."""

    scale: int = 2  # output/input size ratio (2 or 4)
    channels: int = 32  # feature width of the shift-MLP body
    blocks: int = 4  # shift-MLP blocks (shift distance alternates 1, 2 pixels)
    expand: int = 2  # MLP width inside a block = channels * expand
    hidden: int = 16  # channels of the recurrent feature state at render size
    guide: int = 16  # width of the normal+albedo branch of the high-frequency booster


@dataclass(frozen=True)
class GBufferBatch:
    """G-buffers of one frame (or of a clip, with a T axis after N), all at render size, fp32."""

    depth: torch.Tensor  # (N, 1, H, W) device depth in [0, 1], 0 = near (not inverted)
    motion: torch.Tensor  # (N, 2, H, W) current -> previous in render pixels, (x right, y down)
    normals: torch.Tensor  # (N, 3, H, W) view-space unit normals
    albedo: torch.Tensor  # (N, 3, H, W) unlit surface colour in [0, 1]
    jitter: torch.Tensor  # (N, 2) projection offset in render pixels (FSR2 sign: content moved by +jitter)

    def frame(self, t: int) -> GBufferBatch:
        """Frame ``t`` of a clip batch (tensors shaped (N, T, ...))."""
        return GBufferBatch(self.depth[:, t], self.motion[:, t], self.normals[:, t], self.albedo[:, t], self.jitter[:, t])


def shift(x: torch.Tensor, dist: int) -> torch.Tensor:
    """Channel group g of ``x`` (contiguous, about C/9 channels) moves by SHIFTS[g] * dist pixels, edges replicated.

    Groups are split at floor(g * C / 9), so small C still spreads its channels over several directions.
    """
    c = x.shape[1]
    xp = F.pad(x, (dist, dist, dist, dist), mode="replicate")
    bounds = [g * c // len(SHIFTS) for g in range(len(SHIFTS) + 1)]
    parts = []
    for g, (dy, dx) in enumerate(SHIFTS):
        if bounds[g] == bounds[g + 1]:
            continue
        y0, x0 = dist - dy * dist, dist - dx * dist
        y1, x1 = y0 - 2 * dist, x0 - 2 * dist
        parts.append(xp[:, bounds[g] : bounds[g + 1], y0 : (y1 if y1 else None), x0 : (x1 if x1 else None)])
    return torch.cat(parts, dim=1)


def dilate_motion(motion: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Each pixel takes the motion of the nearest-depth pixel in its 3x3 neighbourhood (FSR2's dilation), so
    thin foreground edges move with the foreground."""
    h, w = depth.shape[-2:]
    dp = F.pad(depth, (1, 1, 1, 1), mode="replicate")
    mp = F.pad(motion, (1, 1, 1, 1), mode="replicate")
    ds = torch.cat([dp[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SHIFTS], dim=1)
    ms = torch.stack([mp[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SHIFTS], dim=1)
    idx = torch.argmin(ds, dim=1, keepdim=True)  # (N, 1, H, W)
    return torch.gather(ms, 1, idx.unsqueeze(2).expand(-1, 1, 2, -1, -1)).squeeze(1)


class ShiftMLP(nn.Module):
    """x + W2 act(W1 shift(x)): spatial mixing from fixed shifts, channel mixing from 1x1 convs."""

    def __init__(self, channels: int, expand: int, dist: int) -> None:
        super().__init__()
        self.dist = dist
        self.fc1 = nn.Conv2d(channels, channels * expand, 1)
        self.fc2 = nn.Conv2d(channels * expand, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.leaky_relu(self.fc1(shift(x, self.dist)), 0.1))


class Booster(nn.Module):
    """High-frequency booster: features gated by a branch that sees only normals, albedo and depth."""

    def __init__(self, channels: int, guide: int) -> None:
        super().__init__()
        self.guide = nn.Conv2d(7, guide, 1)
        self.gate = nn.Conv2d(guide, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, guide_in: torch.Tensor) -> torch.Tensor:
        g = F.leaky_relu(self.guide(shift(guide_in, 1)), 0.1)
        return x + self.proj(x * torch.sigmoid(self.gate(shift(g, 1))))


class RDG(nn.Module):
    """Online step (lr, hidden, gbuffer) -> (sr, hidden); hidden = (features, previous output, previous depth)."""

    def __init__(self, cfg: RDGConfig) -> None:
        super().__init__()
        if cfg.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {cfg.scale}")
        self.cfg = cfg
        s2 = cfg.scale * cfg.scale
        c_in = 3 + 1 + 2 + 3 + 3 + 2 + 1 + cfg.hidden + 3 * s2  # colour, G-buffers, jitter, disocclusion, state
        self.inp = nn.Conv2d(c_in, cfg.channels, 1)
        self.body = nn.ModuleList(ShiftMLP(cfg.channels, cfg.expand, 1 + i % 2) for i in range(cfg.blocks))
        self.booster = Booster(cfg.channels, cfg.guide)
        self.head = nn.Conv2d(cfg.channels, 4 * s2, 1)  # per output pixel: RGB residual + blend logit
        self.to_hidden = nn.Conv2d(cfg.channels, cfg.hidden, 1)
        nn.init.zeros_(self.head.bias)
        self.head.weight.data.mul_(0.1)
        self.head.bias.data.view(4, s2)[3].fill_(-2.0)  # start by trusting the history little

    def hidden_spec(self) -> list[tuple[int, int]]:
        """(channels, spatial factor vs the LR frame) of each hidden tensor, in order."""
        return [(self.cfg.hidden, 1), (3, self.cfg.scale), (1, 1)]

    def init_hidden(self, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero state for a batch shaped like ``lr``; depth 0 (the near plane) marks all history as disoccluded."""
        n, _, h, w = lr.shape
        return tuple(lr.new_zeros(n, c, h * f, w * f) for c, f in self.hidden_spec())

    def base(self, lr: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling that undoes the jitter: output pixel X reads LR position (X + 0.5) / s + jitter."""
        n, _, h, w = lr.shape
        s = self.cfg.scale
        hr_offset = (jitter * s).view(n, 2, 1, 1).expand(n, 2, h * s, w * s)  # in output pixels
        return F.grid_sample(lr, pixel_grid(hr_offset), mode="bicubic", padding_mode="border", align_corners=False)

    def step(self, lr: torch.Tensor, hidden: tuple[torch.Tensor, ...] | None = None,
             gbuffer: GBufferBatch | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One frame: colour (N, 3, H, W) in [0, 1] and its G-buffers -> (N, 3, sH, sW) and the new state."""
        if gbuffer is None:
            raise ValueError("RDG needs G-buffers (depth, motion, normals, albedo, jitter) every step")
        if hidden is None:
            hidden = self.init_hidden(lr)
        feat, prev_sr, prev_depth = hidden
        s = self.cfg.scale
        g = gbuffer
        n, _, h, w = lr.shape
        mv = dilate_motion(g.motion, g.depth)
        inv = 1.0 - g.depth  # proportional to 1 / view distance for far >> near
        inv_prev = 1.0 - warp(prev_depth, mv, padding="zeros")  # outside the previous frame -> disoccluded
        disocc = ((inv - inv_prev).abs() / torch.maximum(inv, inv_prev).clamp(min=1e-4)).clamp(max=1.0)
        feat_w = warp(feat, mv)
        sr_w = warp(prev_sr, F.interpolate(mv, scale_factor=s, mode="nearest") * s)
        log_depth = torch.log(inv.clamp(min=LOG_DEPTH_FLOOR)) * 0.125 + 1.0
        jit = g.jitter.view(n, 2, 1, 1).expand(n, 2, h, w)
        x = torch.cat([lr, log_depth, g.motion * 0.125, g.normals, g.albedo, jit, disocc, feat_w,
                       F.pixel_unshuffle(sr_w, s)], dim=1)
        y = F.leaky_relu(self.inp(shift(x, 1)), 0.1)
        for block in self.body:
            y = block(y)
        y = self.booster(y, torch.cat([g.normals, g.albedo, log_depth], dim=1))
        out = F.pixel_shuffle(self.head(shift(y, 1)), s)
        alpha = torch.sigmoid(out[:, 3:4])
        sr = alpha * sr_w + (1.0 - alpha) * self.base(lr, g.jitter) + out[:, :3]
        return sr, (torch.relu(self.to_hidden(y)), sr, g.depth)

    def forward(self, lr: torch.Tensor, depth: torch.Tensor, motion: torch.Tensor, normals: torch.Tensor,
                albedo: torch.Tensor, jitter: torch.Tensor, *hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Flat signature for export: (lr, depth, motion, normals, albedo, jitter, hidden_in*) -> (sr, hidden_out*)."""
        sr, new_hidden = self.step(lr, tuple(hidden) if hidden else None, GBufferBatch(depth, motion, normals, albedo, jitter))
        return (sr, *new_hidden)

    def unroll(self, frames: torch.Tensor, gbuffers: GBufferBatch) -> torch.Tensor:
        """Run a clip (N, T, 3, H, W) with G-buffers shaped (N, T, ...) from a zero state -> (N, T, 3, sH, sW)."""
        hidden = None
        outs = []
        for t in range(frames.shape[1]):
            sr, hidden = self.step(frames[:, t], hidden, gbuffers.frame(t))
            outs.append(sr)
        return torch.stack(outs, dim=1)
