"""Degradations: MATLAB-exact bicubic resize (BI) and Gaussian blur + subsample (BD); codecs are in realworld.py."""

from __future__ import annotations

import functools
import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (a = -0.5)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * (
        (ax > 1) & (ax <= 2)
    )


@functools.lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of MATLAB ``imresize(..., 'bicubic')`` along one axis.

    Antialiasing on downscale, symmetric edge handling, rows summing to one: multiplying by it
    reproduces MATLAB to float precision.
    """
    scale = n_out / n_in
    width = 4.0 / scale if scale < 1 else 4.0
    i = np.arange(1, n_out + 1, dtype=np.float64)
    u = i / scale + 0.5 * (1 - 1 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if scale < 1 else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.repeat(np.arange(n_out), taps), cols.ravel()), w.ravel())
    return mat


def imresize(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """MATLAB-style bicubic resize of an (H, W, C) or (H, W) image to ``out_hw``.

    uint8 input gives uint8 output rounded as MATLAB does; float input stays float (unclipped).
    """
    mh = resize_matrix(img.shape[0], out_hw[0])
    mw = resize_matrix(img.shape[1], out_hw[1])
    x = img.astype(np.float64)
    y = np.tensordot(mh, x, axes=(1, 0))  # (out_h, W, ...), BLAS-backed
    y = np.moveaxis(np.tensordot(mw, y, axes=(1, 1)), 0, 1)  # (out_h, out_w, ...)
    if img.dtype == np.uint8:
        return np.clip(np.round(y), 0, 255).astype(np.uint8)
    return y.astype(img.dtype)


def bicubic_down(img: np.ndarray, scale: int) -> np.ndarray:
    """BI degradation of an (H, W, C) image: MATLAB bicubic by 1/scale (H, W must divide)."""
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"image {w}x{h} is not divisible by scale {scale}; crop it first")
    return imresize(img, (h // scale, w // scale))


def gaussian_kernel(sigma: float = 1.6, size: int = 13) -> np.ndarray:
    """Normalised 2D Gaussian (the BD degradation's blur)."""
    ax = np.arange(size) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def torch_resize_mats(h: int, w: int, scale: int, device=None):
    """float32 torch matrices (mh, mw) for BI downscaling an h x w patch by ``scale``."""
    import torch

    mh = torch.as_tensor(resize_matrix(h, h // scale), dtype=torch.float32, device=device)
    mw = torch.as_tensor(resize_matrix(w, w // scale), dtype=torch.float32, device=device)
    return mh, mw


def torch_bicubic_down(hr, scale: int, quantize: bool = True):
    """BI-degrade a torch batch (..., C, H, W) in [0, 1]; rounded to 8-bit levels when ``quantize``."""
    import torch

    mh, mw = torch_resize_mats(hr.shape[-2], hr.shape[-1], scale, hr.device)
    lr = torch.matmul(torch.matmul(mh, hr), mw.T)
    if quantize:
        lr = torch.round(lr.clamp(0, 1) * 255) / 255
    return lr


def torch_blur_down(hr, scale: int, sigma: float = 1.6, quantize: bool = True):
    """BD-degrade a torch batch (..., C, H, W): Gaussian blur (reflect pad) then take every s-th pixel."""
    import torch
    import torch.nn.functional as F

    k = torch.as_tensor(gaussian_kernel(sigma), dtype=hr.dtype, device=hr.device)
    shape = hr.shape
    x = hr.reshape(-1, 1, shape[-2], shape[-1])
    pad = k.shape[0] // 2
    x = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), k[None, None])
    lr = x[..., scale // 2 :: scale, scale // 2 :: scale].reshape(*shape[:-2], shape[-2] // scale, shape[-1] // scale)
    if quantize:
        lr = torch.round(lr.clamp(0, 1) * 255) / 255
    return lr
