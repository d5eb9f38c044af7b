"""Tiled upscaling equals a whole-image forward when the overlap covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgesr.models import build_model
from edgesr.upscale import tile_count, upscale_image, upscale_tiled


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("edsr", scale=2, n_resblocks=1, n_feats=16).eval()


@pytest.mark.parametrize("hw", [(37, 53), (16, 16), (9, 40)])
def test_tiled_equals_whole_image(model, hw):
    lr = torch.rand(1, 3, *hw)
    with torch.no_grad():
        whole = model(lr)
    tiled = upscale_tiled(model, lr, scale=2, tile=8, overlap=8)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_without_overlap_tiles_show_seams(model):
    """The equality above is not vacuous: too little context changes the output near tile edges."""
    lr = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        whole = model(lr)
    assert not torch.allclose(upscale_tiled(model, lr, scale=2, tile=8, overlap=0), whole, atol=1e-4)


def test_memory_is_bounded_by_the_tile(model):
    seen = []

    def fn(x):
        seen.append(tuple(x.shape[-2:]))
        return model(x)

    upscale_tiled(fn, torch.rand(1, 3, 50, 70), scale=2, tile=16, overlap=4)
    assert max(h for h, _ in seen) <= 16 + 2 * 4 and max(w for _, w in seen) <= 16 + 2 * 4
    assert len(seen) == tile_count(50, 70, 16) == 4 * 5


def test_upscale_image_uint8_in_and_out(model):
    img = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    out = upscale_image(model, img, scale=2, tile=8, overlap=8, progress=False)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)


def test_bad_tile_arguments(model):
    with pytest.raises(ValueError, match="tile"):
        upscale_tiled(model, torch.rand(1, 3, 8, 8), scale=2, tile=0)
