"""Activation precision at the image-facing ends of an SR graph (issue 12: int8 fails on real photos).

Measured on 14 real photos (benchmarks/quant_photos.py, docs/quantization.md): with every
activation in int8, smooth, dark and high-contrast photos lose 0.4-2.2 dB against float, textured
ones < 0.1 dB. Per-tensor sensitivity puts the loss at the two ends of the network, where tensors
are in image units and an int8 step (range / 255 over ranges of 1.1-1.5) is coarser than one 8-bit
image level: the input mean shift (re-rounds the input), the head conv and the global skip (also
clipped by the histogram range on high-contrast photos), the last conv and the output. The body
(residual blocks, upsampler) costs little.

Policies (`activations=`), applied after the backend quantizer has annotated the graph:

| policy | what | deploys on |
|---|---|---|
| `int8` | every activation int8 (the backends' own annotation; the old behaviour) | all |
| `float-ends` | input shift, head conv, global skip, last conv and output float | XNNPACK, Core ML, LiteRT |
| `int16-ends` | the same ops with 16-bit activations (int8 weights: "16x8") | LiteRT / TFLite 16x8 kernels |
| `int16` | every activation 16-bit, weights int8 (TFLite's 16x8 mode) | LiteRT / TFLite 16x8 kernels |

XNNPACK (ExecuTorch) and Core ML have no 16-bit activation kernels; a float op there runs as fp32
(XNNPACK) or fp16 (Core ML) between dequantize / quantize ops, and the int8 body stays int8.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from edgesr.errors import UsageError
from edgesr.targets import ACTIVATIONS

__all__ = ["ACTIVATIONS", "END_ROLES", "annotate_activations", "end_roles", "int16_act_spec"]

END_ROLES = ("in", "head", "skip", "tail", "out")
ANNOTATION = "quantization_annotation"


def end_roles(gm: GraphModule) -> dict[Node, str]:
    """The image-facing ops of an exported SR graph, by position (no module names needed):

    `in`: every op on the graph input (EDSR's mean shift; a plain net's first conv and its nearest
    conv; XLSR's head and skip convs: the input is an image, and XNNPACK cannot take one graph
    input as float for one op and int8 for another, measured on XLSR: the delegate fails to load);
    `head`: the first conv; `skip`: the last add that takes the head's output (the global
    residual); `tail`: the last conv not on the input (a plain net's nearest conv comes later in the
    graph, and is `in`); `out`: the
    op whose value the graph returns (EDSR's add-mean, else the tail conv or the clamp / shuffle).
    """
    aten = torch.ops.aten
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    convs = [n for n in nodes if n.target == aten.conv2d.default]
    roles: dict[Node, str] = {}
    sym_size = (aten.sym_size.int,)  # shape reads of dynamic graphs: not image ops
    reads_input = {
        n for n in nodes
        if n.target not in sym_size and any(isinstance(a, Node) and a.op == "placeholder" for a in n.args)
    }  # fmt: skip
    for n in reads_input:
        roles[n] = "in"
    if convs:
        head = convs[0]
        roles.setdefault(head, "head")
        # the last conv that is not on the input: a plain net's nearest 1x1 conv comes after its tail
        tails = [c for c in convs if c not in reads_input]
        if tails:
            roles[tails[-1]] = "tail"
        adds = [n for n in nodes if n.target in (aten.add.Tensor, aten.add_.Tensor) and head in n.args]
        if adds:
            roles[adds[-1]] = "skip"
    out = gm.graph.output_node().args[0]
    out = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(out, Node) and out.op == "call_function":
        roles[out] = "out"
    return roles


def int16_act_spec(qat: bool):
    """Per-tensor symmetric int16 activations; min/max ranges (a 16-bit grid is fine enough that a
    histogram's clipping search buys nothing); eps small enough not to floor the scale."""
    from torchao.quantization.pt2e import (
        FusedMovingAvgObsFakeQuantize,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    eps = torch.finfo(torch.float32).eps
    if qat:
        ctr = FusedMovingAvgObsFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, eps=eps)
    else:
        ctr = MinMaxObserver.with_args(eps=eps)
    # symmetric (zero point 0): TFLite's 16x8 kernels refuse any other int16 zero point
    return QuantizationSpec(dtype=torch.int16, quant_min=-32767, quant_max=32767,
                            qscheme=torch.per_tensor_symmetric, observer_or_fake_quant_ctr=ctr)  # fmt: skip


def _act(spec) -> bool:
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    per_tensor = (torch.per_tensor_affine, torch.per_tensor_symmetric)
    return isinstance(spec, QuantizationSpec) and spec.dtype in (torch.int8, torch.uint8) and (
        spec.qscheme in per_tensor
    )


def _activation_input(k: Node) -> bool:
    return k.op != "get_attr"


def annotate_activations(model: GraphModule, activations: str, qat: bool = False) -> GraphModule:
    """Rewrite the annotations a backend quantizer wrote on `model` to the `activations` policy."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    if activations not in ACTIVATIONS:
        raise UsageError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if activations == "int8":
        return model
    roles = end_roles(model)
    every = activations == "int16"
    picked = [n for n in model.graph.nodes if n.op == "call_function" and (every or n in roles)]
    if activations == "float-ends":
        for n in picked:
            n.meta.pop(ANNOTATION, None)
            for u in n.users:  # an op sharing this node's qparams would share nothing now
                ua = u.meta.get(ANNOTATION)
                if ua is not None and isinstance(ua.output_qspec, SharedQuantizationSpec):
                    u.meta.pop(ANNOTATION, None)
        return model
    a16 = int16_act_spec(qat)

    def retype_edge(n: Node) -> None:  # n's output and every consumer's input spec for it
        a = n.meta.get(ANNOTATION)
        if a is not None and _act(a.output_qspec):
            a.output_qspec = a16
        for u in n.users:
            ua = u.meta.get(ANNOTATION)
            if ua is not None and _act(ua.input_qspec_map.get(n)):
                ua.input_qspec_map[n] = a16

    for n in picked:
        a = n.meta.get(ANNOTATION)
        if a is None:
            continue
        retype_edge(n)
        for k in list(a.input_qspec_map):
            if _activation_input(k) and _act(a.input_qspec_map[k]):
                a.input_qspec_map[k] = a16
                if k.op == "call_function":
                    retype_edge(k)
    return model
