"""QAT checkpoints: a fake-quant student saved with the ordinary checkpoint machinery, and read back.

A QAT checkpoint is an edgesr checkpoint whose metadata has a `quant` entry
(`{"backend", "fully_integer", "activations", "example"}`) and whose weights are the state of the prepared
(fake-quant) graph: the student's parameters plus every fake-quant buffer (scales, zero points,
observed ranges, observer on/off flags). `load_model` rebuilds it by materializing the student,
preparing it for QAT exactly as training did, and loading that state; `load_quantized` then
converts it to the int8 q/dq graph the exporters lower.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from edgesr.errors import CheckpointError
from edgesr.quant.backends import WEIGHT_MAX, check_activations, check_backend, default_activations
from edgesr.quant.pt2e import convert, prepare
from edgesr.student import Student, load_student
from edgesr.train.checkpoint import read_meta, register_qat_rebuild

__all__ = [
    "QAT_EXAMPLE",
    "QuantMeta",
    "fake_quant_model",
    "is_qat_checkpoint",
    "load_quantized",
    "quant_entry",
    "trained_activations",
    "float_reference",
    "quantized_student",
]

# The example a QAT graph is exported with; batch, H and W are free, so only its rank matters.
QAT_EXAMPLE: tuple[int, int, int, int] = (2, 3, 32, 32)


@dataclass(frozen=True)
class QuantMeta:
    """What a QAT checkpoint was trained for."""

    backend: str  # one of edgesr.quant.BACKENDS
    fully_integer: bool
    activations: str  # edgesr.quant.precision policy the graph was trained with
    width: float | None  # the student's materialized width
    scale: int
    arch: dict[str, Any]
    step: int


def trained_activations(quant: dict[str, Any]) -> str:
    """The activations policy a QAT checkpoint's `quant` entry was trained with (checkpoints written
    before the key existed were all int8)."""
    return quant.get("activations", "int8")


def quant_entry(backend: str, fully_integer: bool, activations: str | None = None) -> dict[str, Any]:
    """The `quant` metadata entry of a QAT checkpoint; `activations` None = the backend's default."""
    activations = activations or default_activations(backend, fully_integer)
    return {
        "backend": check_backend(backend),
        "fully_integer": bool(fully_integer),
        "activations": check_activations(backend, activations, fully_integer),
        "example": list(QAT_EXAMPLE),
        "weight_max": WEIGHT_MAX.get(backend, 127),  # 63: 7-bit weights (edgesr.quant.backends)
    }


def fake_quant_model(model: nn.Module, quant: dict[str, Any]) -> GraphModule:
    """`model` (a materialized student) prepared for QAT as the `quant` entry says, in train mode.

    The graph keeps the student's `arch`, `scale`, `width_multiple` and `materialized_width`, so
    validation, checkpoints and `edgesr eval` treat it like the float student.
    """
    example = torch.zeros(*quant.get("example", QAT_EXAMPLE))
    if quant.get("weight_max", 127) != WEIGHT_MAX.get(quant["backend"], 127):
        raise CheckpointError(
            f"this {quant['backend']} QAT checkpoint was trained with int8 weights in "
            f"[-{quant.get('weight_max', 127)}, {quant.get('weight_max', 127)}], but edgesr now quantizes "
            f"{quant['backend']} weights to [-{WEIGHT_MAX.get(quant['backend'], 127)}, "
            f"{WEIGHT_MAX.get(quant['backend'], 127)}] (docs/export.md, ONNX int8): run its QAT stage again"
        )
    fq = prepare(
        model, quant["backend"], example, qat=True, fully_integer=bool(quant["fully_integer"]),
        activations=trained_activations(quant),
    )  # fmt: skip
    for attr in ("arch", "scale", "width_multiple", "materialized_width"):
        if hasattr(model, attr):
            setattr(fq, attr, getattr(model, attr))
    return fq


register_qat_rebuild(fake_quant_model)  # so that load_model / load_student rebuild QAT checkpoints


def is_qat_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (a run dir, checkpoint dir or .safetensors) is a QAT checkpoint (header only)."""
    try:
        return read_meta(path).quant is not None
    except CheckpointError:
        return False


def quant_meta(student: Student) -> QuantMeta:
    """What a QAT student was trained for; CheckpointError for a float one."""
    if student.quant is None:
        where = student.path or "this student"
        raise CheckpointError(f"{where}: not a QAT checkpoint (no `quant` metadata); quantize it with ptq()")
    return QuantMeta(
        backend=student.quant["backend"],
        fully_integer=bool(student.quant["fully_integer"]),
        activations=trained_activations(student.quant),
        width=student.meta.materialized_width,
        scale=student.scale,
        arch=student.arch,
        step=student.meta.step,
    )


def quantized_student(student: Student, *, example: Tensor | None = None) -> tuple[GraphModule, QuantMeta]:
    """A QAT student's converted int8 q/dq graph (eval mode), and what it was trained for.

    The conversion works on a copy: `student.net` stays the fake-quant graph. `example` (1, 3, H, W),
    when given, is run once so that a shape the graph cannot take fails here.
    """
    qmeta = quant_meta(student)
    converted = convert(copy.deepcopy(student.net), qmeta.backend)
    if example is not None:
        with torch.no_grad():
            converted(example)
    return converted, qmeta


def float_reference(student: Student) -> nn.Module:
    """A QAT student's own weights in float: a copy of its fake-quant graph with every fake quant off
    (what its int8 loss is measured against)."""
    from torchao.quantization.pt2e import FakeQuantizeBase  # a QAT graph exists only with torchao

    quant_meta(student)  # a CheckpointError for a float student
    ref = copy.deepcopy(student.net)
    for m in ref.modules():
        if isinstance(m, FakeQuantizeBase):
            m.disable_fake_quant()
    return ref.eval()


def load_quantized(
    path: str | os.PathLike[str], *, example: Tensor | None = None
) -> tuple[GraphModule, QuantMeta]:
    """A QAT checkpoint as its converted int8 q/dq graph (eval mode), and what it was trained for."""
    return quantized_student(load_student(path), example=example)
