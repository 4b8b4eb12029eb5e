"""Losses: Charbonnier and FedVSR's 3D Haar high-frequency loss (shared by local and federated training)."""

from __future__ import annotations

import functools
import itertools

import torch


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


def vsr_loss(sr: torch.Tensor, hr: torch.Tensor, hf_weight: float = 1.0, temporal_weight: float = 0.0) -> torch.Tensor:
    """Charbonnier + ``hf_weight`` x Haar high-frequency loss (+ ``temporal_weight`` x temporal loss) on clips
    (N, T, C, H, W)."""
    loss = charbonnier(sr, hr)
    if hf_weight:
        loss = loss + hf_weight * haar_hf_loss(sr, hr)
    if temporal_weight:
        loss = loss + temporal_weight * temporal_loss(sr, hr)
    return loss
