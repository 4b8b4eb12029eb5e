"""Losses: Charbonnier and FedVSR's 3D Haar high-frequency loss (shared by local and federated training)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
import torch.nn.functional as F

from training.scores import flow_warp, grey, make_flow_estimator


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Mean of sqrt((x - y)^2 + eps): a smooth L1."""
    return torch.sqrt((x - y) ** 2 + eps).mean()


@functools.lru_cache(maxsize=8)
def haar3d_filters(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(8, 1, 2, 2, 2) one-level orthonormal 3D Haar analysis filters, band order as pywt.dwtn keys.

    Band k has key ``'a'/'d'`` per axis (T, H, W) in itertools.product order: aaa, aad, ..., ddd.
    The 1D filters come from pywt's Haar filter bank (reversed: pywt convolves, conv3d correlates).
    """
    import pywt

    wav = pywt.Wavelet("haar")
    lo = torch.tensor(wav.dec_lo[::-1], dtype=torch.float64)
    hi = torch.tensor(wav.dec_hi[::-1], dtype=torch.float64)
    bank = []
    for key in itertools.product("ad", repeat=3):
        f = [lo if c == "a" else hi for c in key]
        bank.append(torch.einsum("i,j,k->ijk", *f))
    return torch.stack(bank)[:, None].to(dtype)


HAAR_KEYS = ["".join(k) for k in itertools.product("ad", repeat=3)]  # band order of haar3d, as pywt.dwtn keys


def haar3d(x: torch.Tensor) -> torch.Tensor:
    """One-level 3D Haar DWT over (T, H, W) of (N, T, C, H, W) -> (N, C, 8, T/2, H/2, W/2).

    Odd T, H or W are cut to even (the last frame/row/column is dropped).
    """
    n, t, c, h, w = x.shape
    x = x[:, : t - t % 2, :, : h - h % 2, : w - w % 2]
    v = x.permute(0, 2, 1, 3, 4).reshape(n * c, 1, *x.shape[1:2], *x.shape[3:])
    bands = torch.nn.functional.conv3d(v, haar3d_filters(x.dtype).to(x.device), stride=2)
    return bands.reshape(n, c, 8, *bands.shape[2:])


def haar_hf_loss(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """FedVSR's high-frequency loss: Charbonnier over the 7 non-LLL bands of a 3D Haar DWT."""
    return charbonnier(haar3d(sr)[:, :, 1:], haar3d(hr)[:, :, 1:], eps)



def temporal_loss(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Charbonnier on frame-to-frame differences of clips (N, T, C, H, W): output change should follow the truth's."""
    return charbonnier(sr[:, 1:] - sr[:, :-1], hr[:, 1:] - hr[:, :-1], eps)


def truth_motion(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ground truth's motion as the warping error measures it (training.scores.flow_warp: DIS on grey, the
    forward-backward occlusion test), for clips (N, T, 3, H, W) in [0, 1]: ``grid_sample`` grids (N, T-1, H, W, 2)
    (align_corners=True) that pull frame t-1 onto frame t, and masks (N, T-1, 1, H, W), 1 where the flow is
    trustworthy. Computed on the CPU with OpenCV; no gradient."""
    n, t, _, h, w = hr.shape
    frames = (hr.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    grids = np.empty((n, t - 1, h, w, 2), np.float32)
    valid = np.empty((n, t - 1, 1, h, w), np.float32)
    dis = make_flow_estimator()
    for i in range(n):
        greys = [grey(f) for f in frames[i]]
        for k in range(1, t):
            fw = flow_warp(greys[k - 1], greys[k], dis)
            grids[i, k - 1, ..., 0] = fw.map_x * (2.0 / (w - 1)) - 1.0  # cv2.remap's pixel centres, align_corners
            grids[i, k - 1, ..., 1] = fw.map_y * (2.0 / (h - 1)) - 1.0
            valid[i, k - 1, 0] = fw.valid
    return torch.from_numpy(grids).to(hr.device), torch.from_numpy(valid).to(hr.device)


def warped_temporal_loss(sr: torch.Tensor, hr: torch.Tensor, motion: tuple[torch.Tensor, torch.Tensor],
                         eps: float = 1e-9) -> torch.Tensor:
    """Charbonnier on motion-compensated frame-to-frame changes of clips (N, T, C, H, W) over the trustworthy
    pixels of ``motion`` (``truth_motion(hr)``): the output's change along the truth's motion should follow the
    truth's. ``temporal_loss`` is its zero-motion case; this one also sees flicker on moving content, where the
    warping error of the benchmarks looks."""
    grids, valid = motion
    n, t, c, h, w = sr.shape

    def change(x: torch.Tensor) -> torch.Tensor:
        prev = F.grid_sample(x[:, :-1].reshape(-1, c, h, w), grids.reshape(-1, h, w, 2), mode="bilinear",
                             padding_mode="border", align_corners=True)
        return x[:, 1:] - prev.reshape(n, t - 1, c, h, w)

    err = torch.sqrt((change(sr) - change(hr)) ** 2 + eps) * valid
    return err.sum() / (valid.sum() * c).clamp_min(1.0)


def vsr_loss(sr: torch.Tensor, hr: torch.Tensor, hf_weight: float = 1.0, temporal_weight: float = 0.0,
             warp_weight: float = 0.0) -> torch.Tensor:
    """Charbonnier + ``hf_weight`` x Haar high-frequency loss (+ ``temporal_weight`` x temporal loss
    + ``warp_weight`` x warped temporal loss) on clips (N, T, C, H, W)."""
    loss = charbonnier(sr, hr)
    if hf_weight:
        loss = loss + hf_weight * haar_hf_loss(sr, hr)
    if temporal_weight:
        loss = loss + temporal_weight * temporal_loss(sr, hr)
    if warp_weight:
        loss = loss + warp_weight * warped_temporal_loss(sr, hr, truth_motion(hr))
    return loss
