"""QAT checkpoints: a fake-quant student saved with the ordinary checkpoint machinery, and read back.

A QAT checkpoint is an edgesr checkpoint whose metadata has a `quant` entry
(`{"backend", "fully_integer", "example"}`) and whose weights are the state of the prepared
(fake-quant) graph: the student's parameters plus every fake-quant buffer (scales, zero points,
observed ranges, observer on/off flags). `load_model` rebuilds it by materializing the student,
preparing it for QAT exactly as training did, and loading that state; `load_quantized` then
converts it to the int8 q/dq graph the exporters lower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from edgesr.quant.backends import check_backend
from edgesr.quant.pt2e import convert, prepare

__all__ = [
    "QAT_EXAMPLE",
    "QuantMeta",
    "fake_quant_model",
    "is_qat_checkpoint",
    "load_quantized",
    "quant_entry",
]

# The example a QAT graph is exported with; batch, H and W are free, so only its rank matters.
QAT_EXAMPLE: tuple[int, int, int, int] = (2, 3, 32, 32)


@dataclass(frozen=True)
class QuantMeta:
    """What a QAT checkpoint was trained for."""

    backend: str  # one of edgesr.quant.BACKENDS
    fully_integer: bool
    width: float | None  # the student's materialized width
    scale: int
    arch: dict[str, Any]
    step: int


def quant_entry(backend: str, fully_integer: bool) -> dict[str, Any]:
    """The `quant` metadata entry of a QAT checkpoint."""
    return {
        "backend": check_backend(backend),
        "fully_integer": bool(fully_integer),
        "example": list(QAT_EXAMPLE),
    }


def fake_quant_model(model: nn.Module, quant: dict[str, Any]) -> GraphModule:
    """`model` (a materialized student) prepared for QAT as the `quant` entry says, in train mode.

    The graph keeps the student's `arch`, `scale`, `width_multiple` and `materialized_width`, so
    validation, checkpoints and `edgesr eval` treat it like the float student.
    """
    example = torch.zeros(*quant.get("example", QAT_EXAMPLE))
    fq = prepare(model, quant["backend"], example, qat=True, fully_integer=bool(quant["fully_integer"]))
    for attr in ("arch", "scale", "width_multiple", "materialized_width"):
        if hasattr(model, attr):
            setattr(fq, attr, getattr(model, attr))
    return fq


def is_qat_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (a run dir, checkpoint dir or .safetensors) is a QAT checkpoint."""
    from edgesr.train.checkpoint import CheckpointError, read_meta

    try:
        return read_meta(path).quant is not None
    except CheckpointError:
        return False


def load_quantized(
    path: str | os.PathLike[str], *, example: Tensor | None = None
) -> tuple[GraphModule, QuantMeta]:
    """A QAT checkpoint as its converted int8 q/dq graph (eval mode), and what it was trained for.

    `example` (1, 3, H, W), when given, is run once so that a shape the graph cannot take fails here.
    """
    from edgesr.train.checkpoint import CheckpointError, load_model

    fq, meta = load_model(path)
    if meta.quant is None:
        raise CheckpointError(f"{path}: not a QAT checkpoint (no `quant` metadata); quantize it with ptq()")
    qmeta = QuantMeta(
        backend=meta.quant["backend"],
        fully_integer=bool(meta.quant["fully_integer"]),
        width=meta.materialized_width,
        scale=meta.scale,
        arch=meta.arch,
        step=meta.step,
    )
    converted = convert(fq, qmeta.backend)
    if example is not None:
        with torch.no_grad():
            converted(example)
    return converted, qmeta
