"""Quantizing re-parameterisable students: PTQ and QAT see the collapsed (deployed) graph."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao", reason='torchao not installed (pip install "edgesr[quant]")')

from edgesr import quant  # noqa: E402
from edgesr.models import build_model, reparameterize  # noqa: E402
from edgesr.quant.precision import end_roles  # noqa: E402
from edgesr.quant.pt2e import export_graph  # noqa: E402

ARGS = {"scale": 2, "n_convs": 3, "n_feats": 16}


def _convs(graph: torch.fx.GraphModule) -> int:
    conv = torch.ops.aten.conv2d.default
    return sum(n.op == "call_function" and n.target == conv for n in graph.graph.nodes)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("ecbsr", **ARGS).eval()


def test_prepare_collapses_unless_told_not_to() -> None:
    example = torch.rand(1, 3, 12, 12)
    assert _convs(quant.prepare(_model(), "xnnpack", example)) == 3 + 1  # blocks + the nearest conv
    # the multi-branch graph: per block 3x3, 1x1 + 3x3 expansion, 3 x (1x1 + fixed edge filter)
    assert _convs(quant.prepare(_model(), "xnnpack", example, collapse=False)) == 3 * 9 + 1


def test_ptq_of_the_student_is_ptq_of_its_collapsed_form() -> None:
    model, example = _model(), torch.rand(1, 3, 12, 12)
    crops = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    a = quant.ptq(model, "xnnpack", example, crops)
    b = quant.ptq(reparameterize(model), "xnnpack", example, crops)
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_multi_branch_qat_graph_calibrates_with_its_edge_filters_as_weights() -> None:
    """Quantized before collapsing, a block's fixed edge filters are computed weights (not get_attr):
    their per-channel fake quants are weights, not activations to calibrate."""
    fq = quant.prepare(_model(), "xnnpack", torch.rand(2, 3, 16, 16), qat=True, collapse=False)
    acts = quant.activation_fake_quants(fq)
    assert acts and all(m.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric) for m in acts)
    assert quant.calibrate_ranges(fq, [torch.rand(1, 3, 16, 16)]) == len(acts)


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        # a plain net: its first conv (head, and `in`) and the nearest conv read the image; the tail
        # is the last 3x3
        ("plain", {"n_convs": 3, "n_feats": 8}, {"in": 2, "tail": 1, "out": 1}),
        # XLSR: the head and the skip conv both read the image
        ("xlsr", {"n_feats": 8, "n_gblocks": 1}, {"in": 2, "tail": 1, "out": 1}),
        # EDSR: the mean shift alone reads the image; the global skip add
        ("edsr", {"n_resblocks": 1, "n_feats": 8}, {"in": 1, "head": 1, "skip": 1, "tail": 1, "out": 1}),
        # anchored EDSR: the mean shift and the nearest 1x1 conv read the image (the 1x1 conv comes
        # after the tail in the graph); the returned op is the add of the two branches
        (
            "edsr",
            {"n_resblocks": 1, "n_feats": 8, "anchor": True},
            {"in": 2, "head": 1, "skip": 1, "tail": 1, "out": 1},
        ),
    ],
)
def test_end_roles_name_every_op_on_the_input_and_the_real_tail(name, args, expected) -> None:
    model = build_model(name, scale=2, **args).eval()
    for dynamic in (False, True):
        graph = export_graph(model, torch.rand(1, 3, 12, 12), dynamic=dynamic)
        roles = end_roles(graph)
        counts = {r: list(roles.values()).count(r) for r in ("in", "head", "skip", "tail", "out")}
        assert {k: v for k, v in counts.items() if v} == expected, roles
        tail = next(n for n, r in roles.items() if r == "tail")
        placeholder = next(n for n in graph.graph.nodes if n.op == "placeholder")
        assert placeholder not in tail.args  # never the nearest / skip conv on the image
        assert all(n.target != torch.ops.aten.sym_size.int for n in roles)


@pytest.mark.parametrize(
    ("name", "args", "ups", "shuffles"),
    [
        # anchored EDSR x4: two conv + shuffle(2) stages, and the anchor's shuffle(4)
        ("edsr", {"n_resblocks": 1, "n_feats": 8, "anchor": True}, 2, 3),
        # a plain net: the last 3x3 conv is the tail, the nearest conv `in`; their add feeds the one
        # shuffle (`up`), which the graph returns (`out`)
        ("plain", {"n_convs": 3, "n_feats": 8}, 1, 0),
    ],
)
def test_quant_photos_roles_keep_edgesr_end_roles_and_name_the_upsampler(name, args, ups, shuffles) -> None:
    """The quant-photos benchmark's roles are edgesr's end roles (a nearest conv on the image is
    `in`, never `tail`) plus the upsampler convs and shuffles."""
    from benchmarks.quant_photos import roles

    model = build_model(name, scale=4, **args).eval()
    graph = export_graph(model, torch.rand(1, 3, 12, 12), dynamic=False)
    by_name = roles(graph)
    assert {n.name: r for n, r in end_roles(graph).items()}.items() <= by_name.items()
    convs = [n for n in graph.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    nearest = convs[-1]  # the anchor's / plain net's nearest 1x1 conv, after the tail
    assert by_name[nearest.name] == "in" and by_name[convs[-2].name] == "tail"
    assert list(by_name.values()).count("up") == ups
    assert list(by_name.values()).count("shuffle") == shuffles
