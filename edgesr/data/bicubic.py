"""MATLAB-exact bicubic resizing: the degradation every SR benchmark number is measured under.

PyTorch's bicubic (a = -0.75, no antialiasing) and PIL's bicubic make a different LR image, and
models trained or evaluated on those lose up to ~0.7 dB against published tables. This module
re-implements MATLAB's `imresize(A, s, 'bicubic')` step by step:

- Keys cubic kernel with a = -0.5, support 4 input pixels;
- when shrinking (scale < 1) the kernel is stretched by 1/scale and scaled by `scale`
  (MATLAB's antialiasing), so the support becomes 4/scale input pixels;
- output pixel x (1-based) samples input coordinate u = x/scale + 0.5 * (1 - 1/scale);
- taps outside the image are mirrored (symmetric padding: ... 2 1 | 1 2 3 ... n | n n-1 ...);
- the tap weights of each output pixel are normalised to sum to 1;
- the image is resized one dimension at a time, the dimension with the smaller scale first;
- for uint8 input each pass's result is rounded (half away from zero) and saturated to uint8,
  because MATLAB's `imresizemex` returns the input's class after every pass.
"""

from __future__ import annotations

import math

import numpy as np

from edgesr.errors import DataError

__all__ = ["cubic", "contributions", "imresize", "modcrop", "degrade"]

KERNEL_WIDTH = 4.0  # support of the Keys cubic, in input pixels, before antialias stretching


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's `cubic`), evaluated element-wise."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
    ) * ((absx > 1) & (absx <= 2))


def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based input indices of every output pixel along one dimension.

    Returns `(weights, indices)`, both of shape (out_length, P) with P = ceil(kernel width) + 2;
    each row of `weights` sums to 1 and `indices` are already mirrored into [0, in_length).
    """
    if scale < 1:
        # Antialiasing: a wider, lower kernel low-pass filters while it interpolates.
        kernel_width = KERNEL_WIDTH / scale

        def h(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)
    else:
        kernel_width = KERNEL_WIDTH
        h = cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)  # MATLAB's 1-based output coordinates
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based, may fall outside
    weights = h(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: index sequence 1..n, n..1 repeated, exactly as MATLAB's `aux` vector.
    aux = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = aux[np.mod(idx.astype(np.int64) - 1, aux.size)]
    return weights, indices


def _round_uint8(x: np.ndarray) -> np.ndarray:
    # MATLAB saturates then rounds half away from zero; after clipping x >= 0, so floor(x + .5).
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float) -> np.ndarray:
    weights, indices = contributions(img.shape[axis], out_length, scale)
    src = np.moveaxis(img, axis, 0)
    # Loop over the few taps instead of gathering all of them at once: memory stays at one
    # output-sized buffer even for a 16+2-tap x4 shrink of a 2K image.
    out = np.zeros((out_length, *src.shape[1:]), dtype=np.float64)
    bshape = (out_length,) + (1,) * (src.ndim - 1)
    for p in range(weights.shape[1]):
        out += weights[:, p].reshape(bshape) * src[indices[:, p]]
    out = np.moveaxis(out, 0, axis)
    if img.dtype == np.uint8:
        return _round_uint8(out)
    return out


def _output_length(in_length: int, scale: float) -> int:
    # MATLAB uses ceil(scale * in); the 1e-9 guard keeps 300 * (1/3) from becoming 101 when
    # floating-point error lands just above an integer.
    return max(1, math.ceil(in_length * scale - 1e-9))


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize like MATLAB's `imresize(img, scale, 'bicubic')` (or `imresize(img, [h w], ...)`).

    Args:
        img: HxW or HxWxC array, uint8 (0..255) or float (any range).
        scale: one factor for both dimensions (0.25 shrinks x4); output size is ceil(scale * size).
        output_shape: (out_h, out_w) instead of `scale`; per-dimension scale = out / in.

    Returns:
        The resized array, out_h x out_w (x C). uint8 input gives uint8 output (rounded and
        saturated after each 1-D pass as MATLAB does); float input gives float64 output.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of `scale` or `output_shape`")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: expected an HxW or HxWxC array, got shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"imresize: expected uint8 or float input, got {img.dtype}")
    in_h, in_w = img.shape[:2]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = (_output_length(in_h, scale), _output_length(in_w, scale))
    else:
        assert output_shape is not None
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        if min(out_shape) < 1:
            raise ValueError(f"imresize: output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_h, out_shape[1] / in_w)
    out = img if img.dtype == np.uint8 else img.astype(np.float64)
    # MATLAB: `[~, order] = sort(scale)` -- a stable sort, so rows go first on a tie.
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        out = _resize_axis(out, axis, out_shape[axis], scales[axis])
    return out


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that H and W are multiples of `scale` (HxW or HxWxC)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The benchmark LR of an HR image: MATLAB bicubic shrink by `scale` of the modcropped HR.

    hr: uint8 HxWx3 (or HxW); returns uint8 (H//scale) x (W//scale) (x3).
    """
    if hr.dtype != np.uint8:
        raise TypeError(f"degrade: expected a uint8 image, got {hr.dtype}")
    hr = modcrop(hr, scale)
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise DataError(f"degrade: image {w}x{h} is smaller than the scale x{scale}")
    # Passing the size (not 1/scale) avoids ceil() landing one pixel off for scale 3.
    return imresize(hr, output_shape=(h // scale, w // scale))
