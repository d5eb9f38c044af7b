"""Registered SR networks: shapes, paper parameter counts, rebuild from arch, the plain net's residual."""

from __future__ import annotations

import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.models import (
    MODELS,
    build_model,
    count_macs,
    count_params,
    materialize,
    model_signature,
)
from edgesr.recipe import Recipe, RecipeError, from_dict
from edgesr.schema import bound_errors

TINY = {"n_feats": 32, "n_resblocks": 2, "n_resgroups": 2, "n_convs": 4, "reduction": 4, "n_intermediate": 2,
        "n_gblocks": 2}  # fmt: skip


def tiny_model(name: str, **override: int | float | bool) -> nn.Module:
    params = model_signature(name).parameters
    args = {k: v for k, v in TINY.items() if k in params} | override
    torch.manual_seed(0)
    return build_model(name, **args)


def meta_model(name: str, **args: int | float | bool) -> nn.Module:
    """Full-size model without allocating or initialising weights: parameter counting is free."""
    with torch.device("meta"):
        return build_model(name, **args)


@pytest.mark.parametrize("width", [1.0, 0.25])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", MODELS.names())
def test_output_shape_and_attributes(name: str, scale: int, width: float) -> None:
    model = tiny_model(name, scale=scale)
    with torch.no_grad():
        y = model(torch.rand(2, 3, 16, 12), width=width)
    assert y.shape == (2, 3, 16 * scale, 12 * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert model.scale == scale
    assert model.width_multiple == 8
    assert model.arch["name"] in MODELS
    # every argument, but EDSR's anchor only when on: profiles and checkpoints from before it keep
    # matching the arch a recipe builds (edgesr/models/edsr.py)
    optional = {"anchor"} if model.arch["name"] == "edsr" else set()
    assert set(model.arch["args"]) | optional == set(model_signature(model.arch["name"]).parameters)


@pytest.mark.parametrize("name", MODELS.names())
def test_signature_is_typed_with_defaults(name: str) -> None:
    # The recipe validator reads these: every argument needs a default and a scalar type (counts
    # may carry a lower bound: Annotated[int, AtLeast(n)]), and the default meets its bound.
    for param in model_signature(name).parameters.values():
        assert param.default is not param.empty, param.name
        kind = param.annotation
        if hasattr(kind, "__metadata__"):  # Annotated[int, AtLeast(1)]
            kind = typing.get_args(kind)[0]
        assert kind in (int, float, bool), param.name
        assert type(param.default) is kind, param.name
    assert not bound_errors(model_signature(name), {}), name


@pytest.mark.parametrize(
    ("name", "arg"),
    [("edsr", "n_feats"), ("edsr", "n_resblocks"), ("rcan", "n_resgroups"), ("rcan", "reduction"),
     ("plain", "n_convs"), ("plain", "scale")],
)  # fmt: skip
def test_counts_below_their_bound_are_refused_by_build_model_and_recipes(name: str, arg: str) -> None:
    """Before: `n_feats: 0` passed validation and failed inside torch; `n_resblocks: -1` was accepted."""
    with pytest.raises(ValueError, match=f"{arg} must be at least"):
        build_model(name, **{arg: 0})
    if arg == "scale":
        return  # a recipe sets the scale at its top level
    cfg = {
        "name": "x",
        "scale": 2,
        "model": {"name": name, "args": {arg: 0}},
        "data": {"train": "builtin:train"},
        "train": {"mode": "single", "widths": [1.0], "steps": 1},
    }
    with pytest.raises(RecipeError, match=f"model.args.{arg}: must be at least"):
        from_dict(Recipe, cfg)


@pytest.mark.parametrize("name", MODELS.names())
def test_arch_round_trip_rebuilds_the_same_model(name: str) -> None:
    model = tiny_model(name, scale=3, width_multiple=4)
    rebuilt = build_model(model.arch["name"], **model.arch["args"])
    assert type(rebuilt) is type(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, width=0.5), model(x, width=0.5))
    assert rebuilt.arch == model.arch


def test_named_variants_rebuild_as_edsr() -> None:
    full = meta_model("edsr_full", scale=2)
    assert full.arch == {
        "name": "edsr",
        "args": dict(scale=2, n_resblocks=32, n_feats=256, res_scale=0.1, rgb_range=1.0, width_multiple=8),
    }
    assert meta_model("edsr_baseline").arch["args"]["n_feats"] == 64


def test_materialized_checkpoint_reloads() -> None:
    model = tiny_model("rcan", scale=2)
    narrow = materialize(model, 0.5)
    again = materialize(build_model(narrow.arch["name"], **narrow.arch["args"]), narrow.materialized_width)
    again.load_state_dict(narrow.state_dict())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), narrow(x))


def test_unknown_model_and_argument_errors() -> None:
    with pytest.raises(KeyError, match="edsr_baseline.*plain.*rcan"):
        build_model("edsr_tiny")
    with pytest.raises(TypeError, match="n_feat.*valid: scale"):
        build_model("edsr", n_feat=32)
    with pytest.raises(ValueError, match="scale"):
        build_model("edsr", scale=5)


# Paper figures (EDSR paper table 1; RCAN paper; CSD paper for the width-split students), x4.
@pytest.mark.parametrize(
    ("name", "args", "width", "paper"),
    [
        ("edsr_baseline", {}, 1.0, 1.52e6),
        ("edsr_full", {}, 1.0, 43.1e6),
        ("edsr_full", {}, 0.5, 10.8e6),
        ("edsr_full", {}, 0.25, 2.7e6),
        ("rcan", {}, 1.0, 15.6e6),
    ],
)
def test_parameter_counts_match_papers(name: str, args: dict, width: float, paper: float) -> None:
    model = meta_model(name, scale=4, **args)
    if width < 1.0:
        model = materialize(model, width)
    assert count_params(model) == pytest.approx(paper, rel=0.01)


def test_count_macs_plain_is_analytic_and_width_consistent() -> None:
    model = tiny_model("plain", scale=3, n_convs=5, n_feats=32)
    h, w = 10, 12
    f, r2 = 32, 9
    expected = h * w * (3 * f * 9 + 3 * f * f * 9 + f * 3 * r2 * 9 + 3 * 3 * r2)
    assert count_macs(model, (h, w)) == expected
    f = 16
    expected_half = h * w * (3 * f * 9 + 3 * f * f * 9 + f * 3 * r2 * 9 + 3 * 3 * r2)
    assert count_macs(model, (h, w), width=0.5) == expected_half
    assert count_macs(materialize(model, 0.5), (h, w)) == expected_half


def test_count_macs_full_edsr_on_meta() -> None:
    model = meta_model("edsr_full", scale=4)
    assert count_macs(model, (8, 8), width=0.25) == count_macs(materialize(model, 0.25), (8, 8))
    assert count_macs(model, (8, 8)) > 15 * count_macs(model, (8, 8), width=0.25)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_plain_residual_is_nearest_upsampling(scale: int) -> None:
    model = tiny_model("plain", scale=scale)
    with torch.no_grad():
        model.last.weight.zero_()
        model.last.bias.zero_()
    x = torch.rand(2, 3, 16, 16)
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x, width=0.25), expected)
    assert not model.nearest.weight.requires_grad
    assert count_params(model, trainable_only=True) == count_params(model) - 9 * scale * scale


def test_plain_clamp_option() -> None:
    x = torch.rand(1, 3, 16, 16)
    loose = tiny_model("plain", scale=2)
    tight = tiny_model("plain", scale=2, clamp=True)
    with torch.no_grad():
        loose.last.bias.fill_(2.0)
        tight.last.bias.fill_(2.0)
        assert loose(x).max() > 1.0  # training forward is never clamped
        y = tight(x)
    assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("scale", [2, 4])
def test_edsr_anchor_adds_nearest_upsampling_at_every_width(scale: int) -> None:
    model = tiny_model("edsr", scale=scale, anchor=True)
    assert model.arch["args"]["anchor"] is True
    assert "anchor" not in tiny_model("edsr", scale=scale).arch["args"]  # old checkpoints keep their arch
    for preset in ("edsr_baseline", "edsr_full"):  # the presets pass it through
        assert tiny_model(preset, scale=scale, anchor=True).arch["args"]["anchor"] is True
    with torch.no_grad():
        model.tail.weight.zero_()
        model.tail.bias.zero_()
    x = torch.rand(2, 3, 12, 12)
    expected = F.interpolate(x, scale_factor=scale, mode="nearest")
    with torch.no_grad():  # a zero residual is exactly nearest upsampling: no mean shift on the output
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x, width=0.25), expected)
        narrow = materialize(model, 0.25)
        torch.testing.assert_close(narrow(x), expected)
    assert count_params(model, trainable_only=True) == count_params(model) - 9 * scale * scale
    again = build_model("edsr", **model.arch["args"])
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
