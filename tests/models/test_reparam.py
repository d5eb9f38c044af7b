"""Re-parameterisable blocks: the collapse is exact, and slicing commutes with collapsing."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from edgesr.models import (
    PlainSR,
    build_model,
    count_macs,
    count_rep_blocks,
    materialize,
    reparameterize,
    students_at,
)
from edgesr.models.reparam import EDGE_FILTERS, RepBlock
from edgesr.models.slim import Fixed, SlimConv2d, Split, width_scope

# every block configuration: (expand, edge, identity)
CONFIGS = list(itertools.product([0, 1, 2], [False, True], [False, True]))
# the three places a block sits: RGB in, F -> F, sub-pixel out (scale 3: 27 channels)
PLACES = {"first": (Fixed(3), Split(16)), "body": (Split(16), Split(16)), "last": (Split(16), Fixed(27))}
WIDTHS = [1.0, 0.5, 0.25]


def trained_like(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-trivial weights in every branch (an untrained branch could hide a wrong formula)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.copy_(torch.randn_like(p) * 0.1)
    return module.eval()


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(("expand", "edge", "identity"), CONFIGS)
def test_block_collapse_is_exact(place, expand, edge, identity):
    in_spec, out_spec = PLACES[place]
    block = trained_like(RepBlock(in_spec, out_spec, expand=expand, edge=edge, identity=identity))
    conv = reparameterize(nn.Sequential(block))[0]
    assert type(conv) is SlimConv2d and count_rep_blocks(conv) == 0
    for w in WIDTHS:
        with width_scope(w, 8):
            x = torch.rand(2, in_spec.active(w, 8), 13, 10)
            with torch.no_grad():
                diff = (conv(x) - block(x)).abs().max().item()
        assert diff < 1e-5, (w, diff)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("expand", "edge", "identity"), CONFIGS)
def test_model_collapse_is_exact_and_plain(scale, expand, edge, identity):
    model = build_model("ecbsr", scale=scale, n_convs=4, n_feats=16, expand=expand, edge=edge,
                        identity=identity).eval()  # fmt: skip
    deployed = reparameterize(model)
    assert count_rep_blocks(model) == 4 and count_rep_blocks(deployed) == 0 and deployed.reparameterized == 4
    kinds = {type(m) for m in deployed.modules() if not list(m.children())}
    assert kinds == {SlimConv2d, nn.Conv2d, nn.ReLU, nn.PixelShuffle}  # nearest conv is the nn.Conv2d
    x = torch.rand(2, 3, 12, 9)
    for w in WIDTHS:
        with torch.no_grad():
            diff = (deployed(x, width=w) - model(x, width=w)).abs().max().item()
        assert diff < 1e-5, (w, diff)
    # float64 with random weights everywhere: the formula itself, not just float32 luck
    model64 = trained_like(model.double())
    with torch.no_grad():
        ref, got = model64(x.double(), width=0.5), reparameterize(model64)(x.double(), width=0.5)
    assert (ref - got).abs().max().item() < 1e-12


@pytest.mark.parametrize("width", [0.5, 0.25])
@pytest.mark.parametrize(("expand", "edge", "identity"), CONFIGS)
def test_slicing_commutes_with_collapsing(width, expand, edge, identity):
    """collapse(slice_w(model)) == slice_w(collapse(model)), conv by conv, at the blocks' outer channels."""
    model = trained_like(build_model("ecbsr", scale=2, n_convs=3, n_feats=32, expand=expand, edge=edge,
                                     identity=identity))  # fmt: skip
    a = reparameterize(materialize(model, width))
    b = materialize(reparameterize(model), width)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=1e-6, msg=key)


def test_deployed_student_is_a_plain_net():
    """Collapsed and materialized, an ecbsr student loads into PlainSR of the same shape and matches."""
    model = trained_like(build_model("ecbsr", scale=3, n_convs=5, n_feats=32, clamp=True))
    student = reparameterize(materialize(model, 0.5))
    plain = materialize(PlainSR(scale=3, n_convs=5, n_feats=32, clamp=True), 0.5)
    plain.load_state_dict(student.state_dict())
    x = torch.rand(1, 3, 10, 11)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), student(x), rtol=0, atol=1e-6)
    assert student.arch == model.arch and student.materialized_width == 0.5  # provenance kept
    assert count_macs(student, (8, 8)) == count_macs(plain, (8, 8))


def test_a_model_without_blocks_is_returned_as_it_is():
    plain = build_model("plain", scale=2)
    assert reparameterize(plain) is plain


def test_identity_only_where_shapes_allow():
    assert not RepBlock(Fixed(3), Split(16), identity=True).identity
    assert not RepBlock(Split(16), Fixed(12), identity=True).identity
    assert RepBlock(Split(16), Split(16), identity=True).identity


def test_edge_filters_are_buffers_not_state():
    block = RepBlock(Split(8), Split(8))
    assert not any("filter_" in k for k in block.state_dict())
    assert set(EDGE_FILTERS) == set(block.edges)
    for name in EDGE_FILTERS:  # zero-sum: each edge branch ignores a constant input
        assert block.edge_filter(name).sum().item() == 0.0


@pytest.mark.parametrize("width", [1.0, 0.25])
def test_gradient_reaches_every_branch(width):
    model = build_model("ecbsr", scale=2, n_convs=3, n_feats=16)
    model(torch.rand(2, 3, 8, 8), width=width).square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_macs_are_the_deployed_networks_also_on_meta():
    with torch.device("meta"):
        model = build_model("ecbsr", scale=2, n_convs=4, n_feats=32)
        plain = build_model("plain", scale=2, n_convs=4, n_feats=32)
    for w in (1.0, 0.25):
        assert count_macs(model, (180, 320), width=w) == count_macs(plain, (180, 320), width=w)


@pytest.mark.parametrize("name", ["ecbsr", "quicksrnet_small", "xlsr"])
def test_students_at_gives_the_deployed_student_of_every_new_family(name):
    """What profile sweep and select-width measure and tabulate: the collapsed, materialized net."""
    torch.manual_seed(0)
    full = build_model(name, scale=2).eval()
    x = torch.rand(1, 3, 10, 12)
    for w, student in students_at(full, [0.5, 1.0]):
        assert count_rep_blocks(student) == 0
        with torch.no_grad():
            torch.testing.assert_close(student(x), full(x, width=w), rtol=0, atol=1e-5)
        assert count_macs(student, (8, 8)) == count_macs(full, (8, 8), width=w)
