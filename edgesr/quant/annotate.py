"""SDK-free PT2E annotation: a W8A8 quantizer and the "fully integer" pass that closes float islands.

Two pieces the backend quantizers in `edgesr.quant.backends` are built from:

- `W8A8Quantizer`: int8 weights per output channel (symmetric), int8 activations per tensor
  (affine), on conv (+ ReLU), add and mul. Used for Core ML (coremltools' own PT2E
  `CoreMLQuantizer` imports `torch.ao.quantization.quantizer`, which torch 2.13 no longer has), and
  as the reference configuration the backends share.
- `annotate_float_islands`: after a backend quantizer has annotated what it knows, every op left
  between quantized tensors (PixelShuffle / depth-to-space, its reshape/permute decomposition,
  clamp, the residual add with a constant, the graph output) gets a quantization spec too, so the
  converted graph has no float compute between the int8 input and the int8 output.

Activations are observed with moving-average min/max (QAT: fused fake-quant) and weights with
per-channel min/max; all qparams are int8 in [-128, 127] (weights [-127, 127], symmetric).
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e import (
    FusedMovingAvgObsFakeQuantize,
    HistogramObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from torchao.quantization.pt2e.quantizer import (
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
)

from edgesr.quant.precision import annotate_activations

__all__ = [
    "ANNOTATION",
    "ActivationsQuantizer",
    "FloatIslandsQuantizer",
    "W8A8Quantizer",
    "act_spec",
    "annotate_float_islands",
    "weight_spec",
]

ANNOTATION = "quantization_annotation"
aten = torch.ops.aten
CONV = {aten.conv2d.default, aten.conv1d.default}
RELU = {aten.relu.default, aten.relu_.default}
BINARY = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor, operator.add, operator.mul}
# Ops that only move or clip values: their output reuses their input's scale and zero point.
SHARED = {
    aten.pixel_shuffle.default, aten.pixel_unshuffle.default, aten.clamp.default, aten.clamp_.default,
    aten.hardtanh.default, aten.hardtanh_.default, aten.permute.default, aten.view.default,
    aten.reshape.default, aten.contiguous.default, aten.clone.default, aten.relu.default,
    aten.relu_.default,
}  # fmt: skip


def act_spec(qat: bool) -> QuantizationSpec:
    """Per-tensor affine int8 activations; QAT uses fused moving-average fake quantization."""
    ctr = FusedMovingAvgObsFakeQuantize if qat else HistogramObserver
    args = {"observer": MovingAverageMinMaxObserver} if qat else {}
    return QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=ctr.with_args(eps=2**-12, **args),
    )  # fmt: skip


def weight_spec(qat: bool, max_int: int = 127) -> QuantizationSpec:
    """Per-output-channel symmetric int8 weights (axis 0 of an OIHW conv weight) in
    [-max_int, max_int] (63: 7-bit weights, edgesr.quant.backends.WEIGHT_MAX)."""
    if qat:
        ctr = FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=2**-12
        )
    else:
        ctr = PerChannelMinMaxObserver.with_args(eps=2**-12)
    return QuantizationSpec(
        dtype=torch.int8, quant_min=-max_int, quant_max=max_int, qscheme=torch.per_channel_symmetric,
        ch_axis=0, observer_or_fake_quant_ctr=ctr,
    )  # fmt: skip


def _annotated(n: Node) -> bool:
    a = n.meta.get(ANNOTATION)
    return a is not None and a._annotated


def _mark(n: Node, inputs: dict[Node, QuantizationSpec | SharedQuantizationSpec | None], output) -> None:
    n.meta[ANNOTATION] = QuantizationAnnotation(input_qspec_map=inputs, output_qspec=output, _annotated=True)


def _tensor_args(n: Node) -> list[Node]:
    return [a for a in n.args if isinstance(a, Node) and isinstance(a.meta.get("val"), torch.Tensor)]


class W8A8Quantizer(Quantizer):
    """Static (or QAT) int8: per-channel weights, per-tensor activations on conv(+relu), add, mul."""

    def __init__(self, qat: bool = False, weight_max: int = 127) -> None:
        super().__init__()
        self.qat = qat
        self.act, self.weight = act_spec(qat), weight_spec(qat, weight_max)

    def annotate(self, model: GraphModule) -> GraphModule:
        for n in model.graph.nodes:
            if n.op != "call_function" or _annotated(n):
                continue
            if n.target in CONV:
                x, w = n.args[0], n.args[1]
                inputs = {x: self.act, w: self.weight}
                users = list(n.users)
                if len(users) == 1 and users[0].target in RELU and not _annotated(users[0]):
                    _mark(n, inputs, None)  # conv + relu is one fused int8 kernel
                    _mark(users[0], {}, self.act)
                else:
                    _mark(n, inputs, self.act)
            elif n.target in BINARY and _tensor_args(n):
                _mark(n, {a: self.act for a in _tensor_args(n)}, self.act)
        return model

    def validate(self, model: GraphModule) -> None:
        pass


def _output_spec(n: Node):
    """The spec a node's output is quantized with, or None when it stays float."""
    a = n.meta.get(ANNOTATION)
    return None if a is None else a.output_qspec


def annotate_float_islands(model: GraphModule, qat: bool) -> GraphModule:
    """Quantize what a backend quantizer left float between int8 tensors (see module docstring).

    - move/clip ops (pixel shuffle, reshape, permute, clamp, relu) share their input's qparams;
    - add/mul still unannotated (e.g. with a constant operand) get int8 inputs and output;
    - the graph input is quantized (int8 I/O), and so is the value the graph returns.
    """
    act = act_spec(qat)
    for n in model.graph.nodes:
        if n.op != "call_function" or _annotated(n):
            continue
        args = _tensor_args(n)
        if n.target in SHARED and args:
            src = args[0]
            if _output_spec(src) is None and not _annotated(src):
                _mark(n, {src: act}, SharedQuantizationSpec((src, n)))
            else:
                _mark(n, {src: SharedQuantizationSpec(src)}, SharedQuantizationSpec(src))
        elif n.target in BINARY and args:
            _mark(n, {a: act for a in args}, act)
    for out in model.graph.output_node().args[0]:
        if isinstance(out, Node) and _output_spec(out) is None and out.op == "call_function":
            a = out.meta.get(ANNOTATION)
            inputs = a.input_qspec_map if a is not None else {}
            _mark(out, inputs, act)
    return model


class FloatIslandsQuantizer(Quantizer):
    """Runs after a backend quantizer in a ComposableQuantizer: annotates what it left float."""

    def __init__(self, qat: bool) -> None:
        super().__init__()
        self.qat = qat

    def annotate(self, model: GraphModule) -> GraphModule:
        return annotate_float_islands(model, self.qat)

    def validate(self, model: GraphModule) -> None:
        pass


class ActivationsQuantizer(Quantizer):
    """`base`'s annotation, then `edgesr.quant.precision.annotate_activations` (float or 16-bit ends).

    A wrapper, not a ComposableQuantizer member: ComposableQuantizer refuses a member that removes
    an annotation, and leaving an op float is exactly that."""

    def __init__(self, base: Quantizer, activations: str, qat: bool) -> None:
        super().__init__()
        self.base, self.activations, self.qat = base, activations, qat

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return self.base.transform_for_annotation(model)

    def annotate(self, model: GraphModule) -> GraphModule:
        return annotate_activations(self.base.annotate(model), self.activations, self.qat)

    def validate(self, model: GraphModule) -> None:
        self.base.validate(model)
