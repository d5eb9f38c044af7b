"""Y-channel PSNR/SSIM pinned to hand computations and to scikit-image; self-ensemble."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from edgesr.metrics import psnr_y, rgb_to_y, self_ensemble, ssim_y


def test_rgb_to_y_known_colours() -> None:
    colours = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(colours)
    np.testing.assert_allclose(y[0], [235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    t = torch.from_numpy(colours).permute(2, 0, 1).double() / 255
    np.testing.assert_allclose(rgb_to_y(t)[0].numpy(), y[0], atol=1e-9)
    batch = t[None].repeat(2, 1, 1, 1)
    assert rgb_to_y(batch).shape == (2, 1, 5)
    with pytest.raises(ValueError):
        rgb_to_y(torch.zeros(4, 5, 5))


def test_psnr_matches_hand_computed_mse() -> None:
    hr = np.full((4, 4, 3), 100, np.uint8)
    sr = hr.copy()
    sr[1, 2] = [110, 110, 110]  # grey step of 10 -> Y differs by 10 * 219/255
    dy = 10 * (65.481 + 128.553 + 24.966) / 255
    expect = 10 * math.log10(255**2 / (dy**2 / 16))
    assert psnr_y(sr, hr, crop=0) == pytest.approx(expect, abs=1e-9)
    # crop=1 keeps the 2x2 centre, which contains the changed pixel: mse = dy^2 / 4.
    assert psnr_y(sr, hr, crop=1) == pytest.approx(10 * math.log10(255**2 / (dy**2 / 4)), abs=1e-9)
    assert psnr_y(hr, hr, crop=1) == math.inf


def test_psnr_quantises_tensors_to_uint8_first() -> None:
    hr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    t = torch.from_numpy(hr).permute(2, 0, 1).float() / 255
    noisy = t + 0.3 / 255  # rounds back to the same 8-bit image
    assert psnr_y(noisy, hr, crop=2) == math.inf
    assert psnr_y(noisy[None], t, crop=2) == math.inf
    with pytest.raises(ValueError, match="HR is"):
        psnr_y(hr[:6], hr, crop=0)


def test_ssim_matches_skimage_matlab_configuration() -> None:
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    for crop in (0, 4):
        ys, yh = rgb_to_y(sr), rgb_to_y(hr)
        if crop:
            ys, yh = ys[crop:-crop, crop:-crop], yh[crop:-crop, crop:-crop]
        # skimage filters the whole image, then averages with a 5-pixel border dropped: exactly
        # the 'valid' region of an 11x11 window.
        ref = structural_similarity(
            ys, yh, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert ssim_y(sr, hr, crop) == pytest.approx(ref, abs=1e-9)
    assert ssim_y(hr, hr, 4) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(hr[:14], hr[:14], 2)


def test_self_ensemble_of_equivariant_fn_is_fn() -> None:
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(self_ensemble(lambda t: t, x), x)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="nearest")

    torch.testing.assert_close(self_ensemble(up, x), up(x))


def test_self_ensemble_averages_non_equivariant_fn() -> None:
    x = torch.rand(1, 1, 4, 4)

    def shift_right(t: torch.Tensor) -> torch.Tensor:
        return torch.roll(t, 1, dims=-1)

    out = self_ensemble(shift_right, x)
    # Averaging a shift over the 8 symmetries gives the mean of the 4 axis-aligned rolls.
    expect = sum(torch.roll(x, s, dims=d) for s in (1, -1) for d in (-1, -2)) / 4
    torch.testing.assert_close(out, expect)
