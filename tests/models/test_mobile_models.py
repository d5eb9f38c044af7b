"""The shipped mobile architectures (QuickSRNet small/medium/large, XLSR): published parameter
counts, the nearest-upsampling start, shapes, presets that rebuild from arch, XLSR's grouped slices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models import build_model, count_macs, count_params, materialize, snap_channels
from edgesr.models.slim import SlimConv2d

MOBILE = ["quicksrnet_small", "quicksrnet_medium", "quicksrnet_large", "xlsr"]


def meta_model(name: str, **args: int | float | bool) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **args)


# Published counts: Qualcomm AI Hub model cards (quic/ai-hub-models, qai_hub_models/models/*/info.yaml)
# list 33.3K / 61.0K / 436K / 28.0K, which are the x4 networks; the XLSR paper (arXiv:2105.10288)
# gives ~22K for its x3 challenge model. The exact figures are the reference layer shapes summed by
# hand (QuickSRNet-Large's anchor here is the frozen 3x48 1x1 conv without bias: 144 parameters).
@pytest.mark.parametrize(
    ("name", "scale", "published", "exact"),
    [
        ("quicksrnet_small", 4, 33.3e3, 896 + 2 * 9248 + 13872),
        ("quicksrnet_medium", 4, 61.0e3, 896 + 5 * 9248 + 13872),
        ("quicksrnet_large", 4, 436e3, 1792 + 11 * 36928 + 27696 + 144),
        ("xlsr", 4, 28.0e3, 28016),
        ("xlsr", 3, 22e3, 448 + 896 + 1056 + 3 * (2336 + 1056) + 1568 + 7803),
    ],
)
def test_parameter_counts_match_published(name: str, scale: int, published: float, exact: int) -> None:
    model = meta_model(name, scale=scale)
    assert count_params(model) == exact
    assert count_params(model) == pytest.approx(published, rel=0.01)


def test_only_the_large_preset_has_the_anchor() -> None:
    small, large = meta_model("quicksrnet_small", scale=2), meta_model("quicksrnet_large", scale=2)
    assert small.nearest is None
    assert not large.nearest.weight.requires_grad
    assert count_params(large, trainable_only=True) == count_params(large) - 3 * 4 * 3


def identity_only(model: nn.Module) -> nn.Module:
    """`model` with every learned deviation removed: each conv keeps only its initial identity /
    nearest-upsampling taps (weights rounded to the nearest integer: the default init is below 0.5)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SlimConv2d):
                m.weight.copy_(m.weight.round())
                m.bias.zero_()
    return model


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["quicksrnet_small", "quicksrnet_medium"])
def test_quicksrnet_starts_as_nearest_upsampling_without_an_anchor(name: str, scale: int) -> None:
    """No anchor: the identity-initialised convs alone are nearest upsampling, at every width."""
    torch.manual_seed(0)
    model = identity_only(build_model(name, scale=scale, n_feats=16))
    x = torch.rand(2, 3, 12, 10)
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x, width=0.5), expected)
        torch.testing.assert_close(materialize(model, 0.5)(x), expected)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_quicksrnet_anchor_makes_a_zero_residual_nearest_upsampling(scale: int) -> None:
    model = build_model("quicksrnet_large", scale=scale, n_feats=16, n_intermediate=2)
    with torch.no_grad():
        model.last.weight.zero_()
        model.last.bias.zero_()
    x = torch.rand(2, 3, 12, 10)
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x, width=0.25), expected)


def test_clamp_is_on_by_default_and_can_be_turned_off() -> None:
    x = torch.rand(1, 3, 8, 8)
    for name in MOBILE:
        tight = build_model(name, scale=2, n_feats=16)
        loose = build_model(name, scale=2, n_feats=16, clamp=False)
        with torch.no_grad():
            for m in (tight, loose):
                m.last.bias.fill_(2.0)
            assert loose(x).max() > 1.0, name
            y = tight(x)
        assert y.min() >= 0.0 and y.max() <= 1.0, name


@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", MOBILE)
def test_output_shapes(name: str, scale: int, width: float) -> None:
    model = build_model(name, scale=scale, n_feats=16 if name != "quicksrnet_large" else 32)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 9, 14), width=width)
    assert y.shape == (1, 3, 9 * scale, 14 * scale) and torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("quicksrnet_small", dict(n_feats=32, n_intermediate=2, anchor=False)),
        ("quicksrnet_medium", dict(n_feats=32, n_intermediate=5, anchor=False)),
        ("quicksrnet_large", dict(n_feats=64, n_intermediate=11, anchor=True)),
    ],
)
def test_presets_rebuild_as_quicksrnet(name: str, args: dict) -> None:
    preset = build_model(name, scale=3)
    assert preset.arch == {
        "name": "quicksrnet", "args": dict(scale=3, **args, clamp=True, width_multiple=8),
    }  # fmt: skip
    rebuilt = build_model(preset.arch["name"], **preset.arch["args"])
    rebuilt.load_state_dict(preset.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, width=0.5), preset(x, width=0.5))


def test_xlsr_arch() -> None:
    args = dict(scale=3, n_feats=32, n_gblocks=3, groups=4, clamp=True, width_multiple=8)
    assert meta_model("xlsr", scale=3).arch == {"name": "xlsr", "args": args}


@pytest.mark.parametrize("width", [0.75, 0.5, 0.25])
def test_xlsr_student_keeps_each_groups_leading_channels(width: float) -> None:
    torch.manual_seed(0)
    model = build_model("xlsr", scale=2)
    narrow = materialize(model, width)
    f = snap_channels(32, width)  # main features of the student; f/4 per group
    a = f // 4
    own = torch.cat([torch.arange(a) + 8 * j for j in range(4)])  # each group's leading a channels
    for i in range(3):
        full, conv = model.gblocks[i].grouped, narrow.gblocks[i].grouped
        assert (conv.groups, conv.in_channels, conv.out_channels) == (4, f, f)
        torch.testing.assert_close(conv.weight, full.weight[own, :a])
        mix = narrow.gblocks[i].mix
        torch.testing.assert_close(mix.weight, model.gblocks[i].mix.weight[own][:, own])
    assert narrow.head[0].out_channels == f and narrow.skip.out_channels == f // 2
    assert (narrow.fuse[0].in_channels, narrow.fuse[0].out_channels) == (f + f // 2, f)
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(narrow(x), model(x, width=width), atol=1e-5, rtol=0)


def test_xlsr_rejects_features_that_do_not_split_into_groups() -> None:
    with pytest.raises(ValueError, match="multiple of groups"):
        build_model("xlsr", n_feats=30)


def test_xlsr_macs_are_analytic() -> None:
    h, w, r2 = 6, 5, 9
    per_pixel = 3 * 32 * 9 + 32 * 32 + 3 * (8 * 32 * 9 + 32 * 32) + 3 * 16 * 9 + 48 * 32 + 32 * 3 * r2 * 9
    assert count_macs(meta_model("xlsr", scale=3), (h, w)) == h * w * per_pixel


def test_xlsr_refuses_a_width_multiple_its_groups_cannot_follow() -> None:
    with pytest.raises(ValueError, match=r"width_multiple \(2\) must be a multiple of 4"):
        build_model("xlsr", scale=2, width_multiple=2)
