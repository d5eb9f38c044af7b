"""SR metrics under the published protocol: PSNR/SSIM on MATLAB BT.601 Y, border crop, self-ensemble.

Inputs are either torch float tensors in [0, 1] (CxHxW or 1xCxHxW, RGB) or numpy uint8 HxWx3 RGB
arrays. Tensors are first quantised to uint8 (x * 255, rounded, clamped), because published
numbers are measured on the saved 8-bit images. Y is then computed in float64 without rounding
it back to uint8 (BasicSR's convention; MATLAB's `rgb2ycbcr` on uint8 rounds Y, which moves PSNR
by about 0.01 dB).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from edgesr.data.images import to_uint8

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "self_ensemble"]

# ITU-R BT.601 luma as MATLAB's rgb2ycbcr computes it, for R, G, B in [0, 1] -> Y in [16, 235].
_Y_WEIGHTS = (65.481, 128.553, 24.966)

Image = torch.Tensor | np.ndarray


def rgb_to_y(img: Image) -> Image:
    """MATLAB BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]).

    Accepts a torch float tensor ...x3xHxW in [0, 1] (returns ...xHxW, same dtype), a numpy
    uint8 ...xHxWx3 array in 0..255, or a numpy float ...xHxWx3 array in [0, 1] (both return
    float64 ...xHxW). Output Y is on the 0..255 scale, in [16, 235].
    """
    r, g, b = _Y_WEIGHTS
    if isinstance(img, torch.Tensor):
        if img.shape[-3] != 3:
            raise ValueError(f"rgb_to_y: expected ...x3xHxW, got shape {tuple(img.shape)}")
        return 16.0 + r * img[..., 0, :, :] + g * img[..., 1, :, :] + b * img[..., 2, :, :]
    if img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected ...xHxWx3, got shape {img.shape}")
    x = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    return 16.0 + r * x[..., 0] + g * x[..., 1] + b * x[..., 2]


def _y_uint8_quantised(img: Image) -> np.ndarray:
    # Quantise to the 8-bit image that would be saved, then take float64 Y (HxW, 16..235).
    if isinstance(img, torch.Tensor):
        img = to_uint8(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a float tensor or a uint8 HxWx3 array, got {img.dtype} {img.shape}")
    return rgb_to_y(img)  # type: ignore[return-value]


def _cropped_y_pair(sr: Image, hr: Image, crop: int) -> tuple[np.ndarray, np.ndarray]:
    ys, yh = _y_uint8_quantised(sr), _y_uint8_quantised(hr)
    if ys.shape != yh.shape:
        raise ValueError(f"SR is {ys.shape[1]}x{ys.shape[0]} but HR is {yh.shape[1]}x{yh.shape[0]}")
    if crop < 0 or 2 * crop >= min(ys.shape):
        raise ValueError(f"crop {crop} leaves nothing of a {ys.shape[1]}x{ys.shape[0]} image")
    if crop:
        ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
    return ys, yh


def psnr_y(sr: Image, hr: Image, crop: int) -> float:
    """PSNR in dB on Y (data range 255) after cropping `crop` pixels from every border.

    Both images are quantised to uint8 first (see module docstring). Identical images -> inf.
    """
    ys, yh = _cropped_y_pair(sr, hr, crop)
    mse = float(np.mean((ys - yh) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    # Separable 'valid' correlation: MATLAB's filter2(window, img, 'valid') for a symmetric window.
    k = g.size
    h, w = img.shape
    rows = sum(g[i] * img[i : h - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j : w - k + 1 + j] for j in range(k))


def ssim_y(sr: Image, hr: Image, crop: int) -> float:
    """SSIM on Y (0..255, float64) after cropping `crop` border pixels, MATLAB-compatible.

    Wang et al.'s reference: 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
    L = 255, statistics over the 'valid' region only (no padding), mean of the SSIM map.
    """
    ys, yh = _cropped_y_pair(sr, hr, crop)
    if min(ys.shape) < 11:
        raise ValueError(f"ssim_y: need at least 11x11 pixels after cropping, got {ys.shape}")
    g = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _filter_valid(ys, g), _filter_valid(yh, g)
    sxx = _filter_valid(ys * ys, g) - mu_x**2
    syy = _filter_valid(yh * yh, g) - mu_y**2
    sxy = _filter_valid(ys * yh, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def _dihedral(x: torch.Tensor, t: int) -> torch.Tensor:
    # bit0 flips W, bit1 flips H, bit2 transposes H and W (applied last).
    if t & 1:
        x = x.flip(-1)
    if t & 2:
        x = x.flip(-2)
    if t & 4:
        x = x.transpose(-1, -2)
    return x


def _dihedral_inverse(x: torch.Tensor, t: int) -> torch.Tensor:
    if t & 4:
        x = x.transpose(-1, -2)
    if t & 2:
        x = x.flip(-2)
    if t & 1:
        x = x.flip(-1)
    return x


def self_ensemble(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The "+" of EDSR+: mean over the 8 flips/transposes of `fn(T(x))`, each mapped back by T^-1.

    x: ...xCxHxW; `fn` must map spatial layouts consistently (e.g. an SR net: HxW -> sHxsW).
    """
    out = _dihedral_inverse(fn(_dihedral(x, 0)), 0)
    for t in range(1, 8):
        out = out + _dihedral_inverse(fn(_dihedral(x, t)), t)
    return out / 8
