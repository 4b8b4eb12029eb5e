"""Integer frame planes around a model step: colour conversion, normalisation, rounding, clipping (engine/graph.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.graph import MOTION_UNIT


def affine(m: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """(K, 4) affine ``m`` applied per pixel to three (N, 1, H, W) channels: ``m[:, :3] @ (c0, c1, c2) + m[:, 3]``,
    K output channels (broadcast ops only, so every runtime fuses it; no Concat, Einsum or MatMul layout juggling)."""
    k = m.shape[0]
    out = m[:, 3].view(1, k, 1, 1) + m[:, 0].view(1, k, 1, 1) * c0
    return out + m[:, 1].view(1, k, 1, 1) * c1 + m[:, 2].view(1, k, 1, 1) * c2


def planes_to_rgb(y: torch.Tensor, uv: torch.Tensor, to_rgb: torch.Tensor) -> torch.Tensor:
    """Integer planes (N, 1, H, W) and (N, 2, Hc, Wc) -> float RGB in [0, 1] (not clipped) at the luma size: chroma
    upsampled bilinearly, centre-sited, then the (3, 4) affine ``to_rgb`` (engine/colour.py). What every video graph
    does first, and what training's codec round trip decodes with (training/realworld.py)."""
    chroma = F.interpolate(uv.float(), size=(y.shape[2], y.shape[3]), mode="bilinear", align_corners=False)
    return affine(to_rgb, y.float(), chroma[:, 0:1], chroma[:, 1:2])


class VideoStep(nn.Module):
    """A video model's step behind the graph contract: ``(y, uv, to_rgb, from_rgb, peak, [motion,] *hidden)`` ->
    ``(y_out, uv_out, *hidden)`` with integer planes in ``frame_dtype``; hidden state as the model keeps it. The int32
    ``motion`` plane comes first in ``rest`` for models with ``motion_blend`` (engine/graph.py VIDEO_MOTION)."""

    def __init__(self, net: nn.Module, frame_dtype: torch.dtype = torch.uint8) -> None:
        super().__init__()
        self.net, self.frame_dtype = net, frame_dtype
        self.cfg = net.cfg  # scale and sizes, as the wrapped model's
        self.motion = bool(getattr(net.cfg, "motion_blend", 0.0))  # takes the motion input

    def hidden_spec(self) -> list[tuple[int, int]]:
        """The wrapped model's hidden layout."""
        return self.net.hidden_spec()

    def to_rgb(self, y: torch.Tensor, uv: torch.Tensor, to_rgb: torch.Tensor) -> torch.Tensor:
        """Planes -> float RGB in [0, 1] (chroma upsampled bilinearly, centre-sited) at the luma size."""
        return planes_to_rgb(y, uv, to_rgb)

    def to_planes(self, sr: torch.Tensor, uv: torch.Tensor, from_rgb: torch.Tensor,
                  peak: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float RGB -> rounded, clipped integer planes; chroma box-averaged to scale x the input chroma size.

        The affine map commutes with the (linear, weights summing to 1) chroma averaging, so RGB is averaged first
        and the chroma rows of the matrix run at the chroma size: full-size work is luma only.
        """
        s = self.cfg.scale
        rgb = sr.clamp(0.0, 1.0)
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        # 4:2:0 -> a 2x2 box average (bilinear at half-pixel centres); 4:4:4 -> the identity
        small = F.interpolate(rgb, size=(uv.shape[2] * s, uv.shape[3] * s), mode="bilinear", align_corners=False)
        hi = peak.view(1, 1, 1, 1)
        y_out = torch.minimum(torch.round(affine(from_rgb[0:1], r, g, b)).clamp(min=0.0), hi)
        chroma = affine(from_rgb[1:3], small[:, 0:1], small[:, 1:2], small[:, 2:3])
        uv_out = torch.minimum(torch.round(chroma).clamp(min=0.0), hi)
        return y_out.to(self.frame_dtype), uv_out.to(self.frame_dtype)

    def forward(self, y: torch.Tensor, uv: torch.Tensor, to_rgb: torch.Tensor, from_rgb: torch.Tensor,
                peak: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rgb = self.to_rgb(y, uv, to_rgb)
        compute = next(self.net.parameters()).dtype  # fp16 when a GPU backend cast the model; colour maths stay fp32
        if rgb.dtype != compute:  # a Python-level test: an fp32 export traces no cast
            rgb = rgb.to(compute)
        motion, hidden = None, rest
        if self.motion:  # int32 1/64 pixels -> pixels; fp32 first, so large motions keep their sub-pixel part
            motion, hidden = (rest[0].float() * (1.0 / MOTION_UNIT)).to(compute), rest[1:]
        sr, new_hidden = self.net.step(rgb, tuple(hidden) if hidden else None, motion=motion)
        if sr.dtype != torch.float32:
            sr = sr.float()
        return (*self.to_planes(sr, uv, from_rgb, peak), *new_hidden)
