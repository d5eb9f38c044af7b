"""Quantizing re-parameterisable students: PTQ and QAT see the collapsed (deployed) graph."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchao", reason='torchao not installed (pip install "edgesr[quant]")')

from edgesr import quant  # noqa: E402
from edgesr.models import build_model, reparameterize  # noqa: E402

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
