"""Channel splitting: every registered model's sliced forward is a real, exportable sub-network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models import MODELS, build_model, materialize, model_signature, snap_channels
from edgesr.models.edsr import DIV2K_RGB_MEAN
from edgesr.models.slim import (
    Cat,
    Fixed,
    SlimConv2d,
    Split,
    active_index,
    current_width,
    width_scope,
)

# Shrinks any registered model to test size; only the arguments a builder accepts are passed.
TINY = {"n_feats": 32, "n_resblocks": 2, "n_resgroups": 2, "n_convs": 4, "reduction": 4, "n_intermediate": 2,
        "n_gblocks": 2}  # fmt: skip
WIDTHS = [1.0, 0.75, 0.5, 0.25, 0.3]  # 0.3 needs snapping (32 * 0.3 = 9.6 channels)


def tiny_model(name: str, **override: int | float | bool) -> nn.Module:
    params = model_signature(name).parameters
    args = {k: v for k, v in TINY.items() if k in params} | override
    torch.manual_seed(0)
    return build_model(name, **args)


def lr_image(n: int = 2, hw: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, hw, hw, generator=torch.Generator().manual_seed(1))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------------------
# snap_channels and width validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "width", "multiple", "expected"),
    [
        (64, 0.25, 8, 16),
        (256, 0.25, 8, 64),
        (32, 0.25, 8, 8),
        (64, 1.0, 8, 64),
        (20, 1.0, 8, 20),  # full width is always the full count, even off the multiple
        (64, 0.3, 8, 16),  # 2.4 groups -> 2
        (256, 0.3, 8, 80),  # 9.6 groups -> 10
        (40, 0.5, 8, 24),  # 2.5 groups -> 3: half-up, not banker's rounding
        (64, 0.01, 8, 8),  # at least one multiple
        (4, 0.5, 8, 4),  # ... but never more than the layer has
        (64, 0.3, 1, 19),
        (10, 0.25, 1, 3),
        (3, 0.1, 1, 1),
    ],
)
def test_snap_channels(features: int, width: float, multiple: int, expected: int) -> None:
    assert snap_channels(features, width, multiple) == expected


@pytest.mark.parametrize("width", [0, 0.0, 1.5, -0.25, math.nan])
def test_bad_width_raises_naming_it(width: float) -> None:
    match = "nan" if width != width else str(width).replace(".", r"\.")
    with pytest.raises(ValueError, match=match):
        snap_channels(64, width)
    with pytest.raises(ValueError, match=match), width_scope(width):
        pass
    m = tiny_model("edsr", scale=2)
    with pytest.raises(ValueError, match=match):
        m(lr_image(), width=width)
    with pytest.raises(ValueError, match=match):
        materialize(m, width)


def test_width_scope_is_reentrant_and_restores() -> None:
    assert current_width() == (1.0, 8)
    with width_scope(0.5, 4):
        with width_scope(0.25, 1):
            assert current_width() == (0.25, 1)
        assert current_width() == (0.5, 4)
    assert current_width() == (1.0, 8)
    m = tiny_model("edsr", scale=2)
    m(lr_image(), width=0.25)
    assert current_width() == (1.0, 8)


# --------------------------------------------------------------------------------------------
# The key property: sliced forward == stand-alone materialized student, for every model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multiple", [8, 1])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", MODELS.names())
def test_materialize_matches_sliced_forward(name: str, scale: int, width: float, multiple: int) -> None:
    if name == "xlsr" and multiple == 1:
        multiple = 4  # XLSR's 4 groups and half-width skip need a multiple of 4 (its constructor says so)
    model = tiny_model(name, scale=scale, width_multiple=multiple).eval()
    narrow = materialize(model, width)
    x = lr_image()
    with torch.no_grad():
        sliced = model(x, width=width)
        standalone = narrow(x)
    assert standalone.shape == (2, 3, 16 * scale, 16 * scale)
    torch.testing.assert_close(standalone, sliced, atol=1e-5, rtol=0)
    assert narrow.materialized_width == width
    assert narrow.arch == model.arch
    assert not any(isinstance(m, SlimConv2d) for m in narrow.modules())
    if width < 1.0:
        assert n_params(narrow) < n_params(model)
    else:
        assert n_params(narrow) == n_params(model)
    # Every conv of the student has exactly the active channel counts of its spec.
    for conv_name, conv in model.named_modules():
        if isinstance(conv, SlimConv2d):
            plain = narrow.get_submodule(conv_name)
            assert type(plain) is nn.Conv2d
            assert plain.in_channels == conv.in_spec.active(width, multiple), conv_name
            assert plain.out_channels == conv.out_spec.active(width, multiple), conv_name


@pytest.mark.parametrize("width", [0.75, 0.5, 0.3])
def test_materialized_edsr_channels_are_snapped(width: float) -> None:
    model = tiny_model("edsr", scale=4)
    narrow = materialize(model, width)
    f = snap_channels(32, width, 8)
    assert (narrow.head.in_channels, narrow.head.out_channels) == (3, f)
    for block in narrow.body:
        assert (block.conv1.in_channels, block.conv1.out_channels) == (f, f)
        assert (block.conv2.in_channels, block.conv2.out_channels) == (f, f)
    ups = [m for m in narrow.upsample if isinstance(m, nn.Conv2d)]
    assert len(ups) == 2 and all((c.in_channels, c.out_channels) == (f, 4 * f) for c in ups)
    assert (narrow.tail.in_channels, narrow.tail.out_channels) == (f, 3)


def test_materialized_rcan_attention_is_sliced() -> None:
    narrow = materialize(tiny_model("rcan", scale=2, n_feats=64, reduction=16), 0.25)
    ca = narrow.body[0].blocks[0].attention
    assert (ca.squeeze.in_channels, ca.squeeze.out_channels) == (16, 1)
    assert (ca.excite.in_channels, ca.excite.out_channels) == (1, 16)


def test_materialize_copies_and_keeps_frozen() -> None:
    model = tiny_model("plain", scale=2)
    model.body[0].weight.requires_grad_(False)
    narrow = materialize(model, 0.5)
    assert not narrow.nearest.weight.requires_grad
    assert not narrow.body[0].weight.requires_grad
    assert narrow.body[2].weight.requires_grad
    before = model.body[2].weight.detach().clone()
    with torch.no_grad():
        narrow.body[2].weight.add_(1.0)
    torch.testing.assert_close(model.body[2].weight, before)  # copies, not views
    assert isinstance(model.body[2], SlimConv2d)  # the original is untouched
    with pytest.raises(ValueError, match="already materialized"):
        materialize(narrow, 0.5)


# --------------------------------------------------------------------------------------------
# Independent checks of the slicing rules
# --------------------------------------------------------------------------------------------


def manual_edsr_student(model: nn.Module, x: torch.Tensor, f: int) -> torch.Tensor:
    """EDSR forward written with explicit leading slices W[:out, :in], b[:out] (CSD's rule)."""

    def conv(layer: nn.Conv2d, n_in: int, n_out: int, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, layer.weight[:n_out, :n_in], layer.bias[:n_out], padding=1)

    mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1)
    res_scale = model.arch["args"]["res_scale"]
    h = conv(model.head, 3, f, x - mean)
    y = h
    for block in model.body:
        y = y + res_scale * conv(block.conv2, f, f, F.relu(conv(block.conv1, f, f, y)))
    h = h + conv(model.body_end, f, f, y)
    for layer in model.upsample:
        if isinstance(layer, nn.Conv2d):
            r = math.isqrt(layer.out_channels // layer.in_channels)
            h = F.pixel_shuffle(conv(layer, f, r * r * f, h), r)
    return conv(model.tail, f, 3, h) + mean


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("width", [0.5, 0.25])
def test_edsr_student_equals_manual_slicing(scale: int, width: float) -> None:
    model = tiny_model("edsr", scale=scale, n_resblocks=1, res_scale=0.5)
    x = lr_image()
    with torch.no_grad():
        expected = manual_edsr_student(model, x, snap_channels(32, width))
        torch.testing.assert_close(model(x, width=width), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pixel_shuffle_keeps_leading_features(scale: int) -> None:
    """Each student upsampling stage (conv, shuffle) gives the teacher's first f features when the
    teacher's other input features are zero: the leading r*r*f conv channels shuffle into exactly
    the first f channels."""
    up = tiny_model("edsr", scale=scale).upsample
    r = 3 if scale == 3 else 2
    f = snap_channels(32, 0.25)
    y = torch.randn(1, f, 8, 8)
    for i in range(0, len(up), 2):
        stage = up[i : i + 2]  # conv F -> r*r*F, PixelShuffle(r)
        with torch.no_grad():
            teacher = stage(torch.cat([y, torch.zeros(1, 32 - f, 8, 8)], dim=1))
            with width_scope(0.25):
                student = stage(y)
        assert student.shape == (1, f, 8 * r, 8 * r)
        torch.testing.assert_close(student, teacher[:, :f], atol=1e-5, rtol=0)


class TwoBranchFuse(nn.Module):
    """Tiny dense-style module: features a and b = conv(a) are concatenated, then fused by a 1x1."""

    def __init__(self, n_feats: int = 16) -> None:
        super().__init__()
        self.width_multiple = 8
        self.a = SlimConv2d(Fixed(3), Split(n_feats), 3)
        self.b = SlimConv2d(Split(n_feats), Split(n_feats), 3)
        self.fuse = SlimConv2d(Cat((Split(n_feats), Split(n_feats))), Split(n_feats), 1)
        self.out = SlimConv2d(Split(n_feats), Fixed(3), 3)

    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        with width_scope(width, self.width_multiple):
            a = self.a(x)  # (N, f, H, W)
            b = self.b(a)  # (N, f, H, W)
            return self.out(self.fuse(torch.cat([a, b], dim=1)))  # (N, 2f, H, W) -> (N, 3, H, W)


def test_cat_index_takes_each_parts_leading_channels() -> None:
    spec = Cat((Split(16), Split(16)))
    idx = active_index(spec, 0.5, 8)
    assert isinstance(idx, torch.Tensor)
    assert idx.tolist() == list(range(8)) + list(range(16, 24))
    assert active_index(spec, 1.0, 8) == slice(0, 32)
    assert active_index(Cat((Fixed(3), Split(16))), 0.5, 8) == slice(0, 11)  # contiguous -> slice
    assert active_index(Cat([Split(16), Fixed(3), Split(16)]), 0.5, 8).tolist() == (
        list(range(8)) + [16, 17, 18] + list(range(19, 27))
    )
    assert spec.full == 32 and spec.active(0.5, 8) == 16


def test_cat_module_slices_each_part() -> None:
    torch.manual_seed(0)
    model = TwoBranchFuse()
    x = lr_image()
    with torch.no_grad():
        sliced = model(x, width=0.5)
        narrow = materialize(model, 0.5)
        torch.testing.assert_close(narrow(x), sliced, atol=1e-5, rtol=0)
    own = list(range(8)) + list(range(16, 24))
    torch.testing.assert_close(narrow.fuse.weight, model.fuse.weight[:8, own])
    # The CARN bug would take the first 16 columns of the whole concatenation instead.
    assert not torch.allclose(narrow.fuse.weight, model.fuse.weight[:8, :16])
    with torch.no_grad():  # and the student of the whole module is the manual sub-network
        a = F.conv2d(x, model.a.weight[:8], model.a.bias[:8], padding=1)
        b = F.conv2d(a, model.b.weight[:8, :8], model.b.bias[:8], padding=1)
        fused = F.conv2d(torch.cat([a, b], 1), model.fuse.weight[:8, own], model.fuse.bias[:8])
        manual = F.conv2d(fused, model.out.weight[:, :8], model.out.bias, padding=1)
    torch.testing.assert_close(sliced, manual, atol=1e-5, rtol=0)


def test_wrong_input_channels_raise() -> None:
    conv = SlimConv2d(Split(16), Split(16), 3)
    with pytest.raises(ValueError, match="expected 8"), width_scope(0.5):
        conv(torch.zeros(1, 16, 4, 4))


# --------------------------------------------------------------------------------------------
# Training the student updates the shared teacher weights, leading slices only
# --------------------------------------------------------------------------------------------


def test_student_gradient_reaches_only_leading_slices() -> None:
    model = tiny_model("edsr", scale=2)
    x = lr_image()
    (model(x, width=0.25) - F.interpolate(x, scale_factor=2)).abs().mean().backward()
    f = snap_channels(32, 0.25)  # 8

    def check(w: torch.Tensor, rows: int, cols: int) -> None:
        grad = w.grad
        assert grad is not None
        assert grad[:rows, :cols].abs().sum() > 0
        assert torch.count_nonzero(grad[rows:]) == 0
        assert torch.count_nonzero(grad[:, cols:]) == 0

    check(model.head.weight, f, 3)
    for block in model.body:
        check(block.conv1.weight, f, f)
        check(block.conv2.weight, f, f)
    check(model.body_end.weight, f, f)
    check(model.upsample[0].weight, 4 * f, f)
    check(model.tail.weight, 3, f)
    assert torch.count_nonzero(model.head.bias.grad[f:]) == 0
    assert model.head.bias.grad[:f].abs().sum() > 0


@pytest.mark.parametrize("width", [1.0, 0.5, 0.25])
def test_grouped_conv_keeps_each_groups_leading_channels(width: float) -> None:
    """A 4-group conv at width w equals, group by group, the dense conv of that group's leading slices."""
    torch.manual_seed(0)
    g, f = 4, 16
    spec = Cat((Split(f),) * g)
    conv = SlimConv2d(spec, spec, 3, groups=g)
    a = Split(f).active(width, 4)
    x = torch.rand(2, g * a, 9, 7)
    with torch.no_grad(), width_scope(width, 4):
        y = conv(x)
    for j in range(g):
        rows = slice(j * f, j * f + a)
        expected = F.conv2d(x[:, j * a : (j + 1) * a], conv.weight[rows, :a], conv.bias[rows], padding=1)
        torch.testing.assert_close(y[:, j * a : (j + 1) * a], expected)
    narrow = materialize(conv, width, multiple=4)
    assert isinstance(narrow, nn.Conv2d) and narrow.groups == g and narrow.in_channels == g * a
    with torch.no_grad():
        torch.testing.assert_close(narrow(x), y)


def test_grouped_conv_needs_one_part_per_group() -> None:
    with pytest.raises(ValueError, match=r"in_spec must be Cat\(\(part,\) \* 4\)"):
        SlimConv2d(Split(16), Cat((Split(4),) * 4), 3, groups=4)
