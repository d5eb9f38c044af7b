"""MATLAB-bicubic resize against an independent per-pixel reference and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgesr.data.bicubic import degrade, imresize, modcrop


# ---------------------------------------------------------------- independent reference (loops)
def ref_cubic(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def ref_mirror(i: int, n: int) -> int:
    """1-based index i reflected into 1..n the way MATLAB's aux = [1:n, n:-1:1] does."""
    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    return aux[(i - 1) % (2 * n)]


def ref_taps(out_x: int, in_len: int, scale: float) -> list[tuple[int, float]]:
    """(0-based input index, weight) pairs of 1-based output pixel out_x."""
    width = 4.0 / scale if scale < 1 else 4.0
    u = out_x / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    taps = []
    for k in range(math.ceil(width) + 2):
        idx = left + k
        w = scale * ref_cubic(scale * (u - idx)) if scale < 1 else ref_cubic(u - idx)
        taps.append((ref_mirror(idx, in_len) - 1, w))
    total = sum(w for _, w in taps)
    return [(i, w / total) for i, w in taps]


def ref_resize_rows(img: np.ndarray, out_h: int, scale: float, to_uint8: bool) -> np.ndarray:
    h, w, c = img.shape
    out = np.zeros((out_h, w, c))
    for y in range(out_h):
        taps = ref_taps(y + 1, h, scale)
        for x in range(w):
            for ch in range(c):
                v = sum(wt * float(img[i, x, ch]) for i, wt in taps)
                out[y, x, ch] = math.floor(min(max(v, 0), 255) + 0.5) if to_uint8 else v
    return out.astype(np.uint8) if to_uint8 else out


def ref_imresize(img: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float]) -> np.ndarray:
    """Separable passes, the smaller scale first, uint8 rounding after each pass (MATLAB)."""
    is_u8 = img.dtype == np.uint8
    out = img
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        if axis == 0:
            out = ref_resize_rows(out, out_hw[0], scales[0], is_u8)
        else:
            out = ref_resize_rows(out.transpose(1, 0, 2), out_hw[1], scales[1], is_u8).transpose(1, 0, 2)
    return out


def ref_imresize_2d_float(
    img: np.ndarray, out_hw: tuple[int, int], scales: tuple[float, float]
) -> np.ndarray:
    """Non-separable per-pixel double sum (valid for float input, where MATLAB does not round)."""
    h, w, c = img.shape
    out = np.zeros((*out_hw, c))
    for y in range(out_hw[0]):
        ty = ref_taps(y + 1, h, scales[0])
        for x in range(out_hw[1]):
            tx = ref_taps(x + 1, w, scales[1])
            for i, wy in ty:
                for j, wx in tx:
                    out[y, x] += wy * wx * img[i, j]
    return out


@pytest.fixture
def texture() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(12, 14, 3), dtype=np.uint8)


# ---------------------------------------------------------------- tests
@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.37, 2.0, 3.0, 1.5])
def test_uint8_matches_reference(texture: np.ndarray, scale: float) -> None:
    out = imresize(texture, scale)
    out_hw = (math.ceil(12 * scale - 1e-9), math.ceil(14 * scale - 1e-9))
    assert out.dtype == np.uint8 and out.shape == (*out_hw, 3)
    np.testing.assert_array_equal(out, ref_imresize(texture, out_hw, (scale, scale)))


@pytest.mark.parametrize("out_hw", [(5, 23), (30, 6), (12, 7)])
def test_output_shape_per_dimension_scales(texture: np.ndarray, out_hw: tuple[int, int]) -> None:
    scales = (out_hw[0] / 12, out_hw[1] / 14)
    out = imresize(texture, output_shape=out_hw)
    np.testing.assert_array_equal(out, ref_imresize(texture, out_hw, scales))
    outf = imresize(texture.astype(np.float64), output_shape=out_hw)
    np.testing.assert_allclose(
        outf, ref_imresize_2d_float(texture.astype(np.float64), out_hw, scales), atol=1e-9
    )


def test_float_matches_2d_reference(texture: np.ndarray) -> None:
    img = texture.astype(np.float32) / 255
    out = imresize(img, 1 / 3)
    assert out.dtype == np.float64
    np.testing.assert_allclose(
        out, ref_imresize_2d_float(img.astype(np.float64), (4, 5), (1 / 3, 1 / 3)), atol=1e-9
    )


def test_hand_computed_upscale_values() -> None:
    # x2 along W, rows untouched (scale 1 is an exact identity). For output pixel 1,
    # u = 0.75 and the taps at input (1-based) -1, 0, 1, 2 with distances 1.75, 0.75, 0.25, 1.25
    # weigh -0.0234375, 0.2265625, 0.8671875, -0.0703125; -1 and 0 mirror to 2 and 1, so
    # out[1] = 1.09375 a - 0.09375 b. Output pixel 2: u = 1.25, out = 0.796875 a + 0.2265625 b
    # - 0.0234375 c. Interior pixels of a linear ramp are the exact linear interpolation.
    row = np.array([[0.0, 64.0, 128.0, 192.0, 256.0, 320.0]])
    out = imresize(row, output_shape=(1, 12))
    assert out[0, 0] == pytest.approx(-6.0, abs=1e-12)
    assert out[0, 1] == pytest.approx(11.5, abs=1e-12)
    assert out[0, 4] == pytest.approx(64 * 1.75, abs=1e-12)  # u = 2.75 -> 1.75 steps along the ramp
    assert out[0, 5] == pytest.approx(64 * 2.25, abs=1e-12)


def test_uint8_rounds_half_away_from_zero() -> None:
    # out[2] = 0.2265625 * 8 - 0.0234375 * 56 = 0.5 exactly: MATLAB gives 1, banker's rounding 0.
    row = np.array([[0, 8, 56, 56, 56]], dtype=np.uint8)
    assert imresize(row.astype(np.float64), output_shape=(1, 10))[0, 1] == pytest.approx(0.5, abs=1e-12)
    assert imresize(row, output_shape=(1, 10))[0, 1] == 1


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 1 / 2, 2.0, 4.0])
def test_constant_image_stays_constant(scale: float) -> None:
    img = np.full((13, 17, 3), 77, dtype=np.uint8)
    assert np.all(imresize(img, scale) == 77)
    np.testing.assert_allclose(imresize(img.astype(np.float64) / 255, scale), 77 / 255, atol=1e-12)


def test_downscale_x2_of_gradient_is_pixel_pair_average() -> None:
    # A symmetric kernel centred between pixels 2k and 2k+1 reproduces a linear ramp exactly
    # away from the borders, and stays close on a smooth (quadratic) gradient.
    yy, xx = np.mgrid[0:40, 0:48].astype(np.float64)
    ramp = 2.0 * xx + 3.0 * yy
    out = imresize(ramp, 0.5)
    expect = 0.25 * (ramp[0::2, 0::2] + ramp[1::2, 0::2] + ramp[0::2, 1::2] + ramp[1::2, 1::2])
    np.testing.assert_allclose(out[4:-4, 4:-4], expect[4:-4, 4:-4], atol=1e-9)
    smooth = (xx / 48) ** 2 + np.sin(yy / 20)
    out = imresize(smooth, 0.5)
    expect = 0.25 * (smooth[0::2, 0::2] + smooth[1::2, 0::2] + smooth[0::2, 1::2] + smooth[1::2, 1::2])
    np.testing.assert_allclose(out[4:-4, 4:-4], expect[4:-4, 4:-4], atol=2e-3)


def test_differs_from_torch_bicubic(texture: np.ndarray) -> None:
    img = texture.astype(np.float64) / 255
    t = torch.from_numpy(img).permute(2, 0, 1)[None]
    ours_up = imresize(img, 2.0)
    torch_up = (
        F.interpolate(t, scale_factor=2, mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    )
    assert ours_up.shape == torch_up.shape
    assert np.abs(ours_up - torch_up).max() > 1e-2  # a = -0.5 vs torch's a = -0.75
    big = np.random.default_rng(1).random((32, 32, 3))
    ours_down = imresize(big, 0.25)
    tb = torch.from_numpy(big).permute(2, 0, 1)[None]
    for antialias in (False, True):
        torch_down = F.interpolate(tb, scale_factor=0.25, mode="bicubic", antialias=antialias)
        assert not np.allclose(ours_down, torch_down[0].permute(1, 2, 0).numpy(), atol=1e-3)


def test_grey_2d_input_and_bad_arguments() -> None:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = imresize(img, 0.5)
    assert out.shape == (4, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, imresize(np.dstack([img] * 3), 0.5)[:, :, 0])
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(img, 0.5, output_shape=(4, 4))
    with pytest.raises(TypeError):
        imresize(img.astype(np.int32), 0.5)


def test_modcrop_and_degrade_shapes() -> None:
    hr = np.random.default_rng(2).integers(0, 256, size=(50, 37, 3), dtype=np.uint8)
    assert modcrop(hr, 4).shape == (48, 36, 3)
    assert modcrop(hr, 3).shape == (48, 36, 3)
    lr = degrade(hr, 3)
    assert lr.shape == (16, 12, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, imresize(modcrop(hr, 3), 1 / 3))
    # 1/3 * 300 is not exactly 100 in floating point; the size must still come out right.
    assert imresize(np.zeros((300, 6), np.uint8), 1 / 3).shape == (100, 2)
    with pytest.raises(TypeError):
        degrade(hr.astype(np.float32), 2)
