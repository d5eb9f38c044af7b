"""Float, PTQ and QAT PSNR of one student, side by side (`edgesr eval CKPT --quant`, the benchmark).

The three rows are measured on the same images with the same protocol as `edgesr.evaluate`:
- float: the student checkpoint (materialized at its width);
- int8 PTQ: that student quantized post-training for the backend on built-in *train* crops;
- int8 QAT: the QAT checkpoint converted to its int8 q/dq graph (what the exporters lower).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from edgesr.errors import CheckpointError, UsageError
from edgesr.evaluate import EvalRow, evaluate
from edgesr.quant.backends import check_backend, default_activations, default_estimator
from edgesr.quant.pt2e import CALIBRATION_SOURCE, ptq
from edgesr.quant.pt2e import calibration_images as crops
from edgesr.quant.quality import Int8Loss, measure_int8_loss
from edgesr.quant.state import quantized_student
from edgesr.recipe import load_recipe
from edgesr.student import load_student
from edgesr.train.checkpoint import resolve_checkpoint

__all__ = ["Int8Student", "QuantComparison", "compare_quantized", "qat_student_source"]


class Int8Student(nn.Module):
    """A converted int8 graph with the attributes `edgesr.evaluate` reads (runs as it is, no width)."""

    def __init__(self, graph: nn.Module, width: float) -> None:
        super().__init__()
        self.graph = graph
        self.materialized_width = width

    def train(self, mode: bool = True) -> Int8Student:
        self.training = mode  # an exported graph refuses .train(); int8 inference has no modes
        return self

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, 3, sH, sW)
        return self.graph(x)


@dataclass(frozen=True)
class QuantComparison:
    backend: str
    width: float
    rows: list[EvalRow]  # float, int8 PTQ, and int8 QAT when a QAT checkpoint was given
    losses: dict[str, Int8Loss]  # per int8 row: the loss against float, image by image, all data sets


def qat_student_source(qat_checkpoint: str | os.PathLike[str]) -> str:
    """The float student a QAT run started from (`train.student_from` of its run's recipe.yaml)."""
    weights = resolve_checkpoint(qat_checkpoint)
    for folder in [Path(qat_checkpoint), *weights.parents]:
        if (folder / "recipe.yaml").is_file():
            source = load_recipe(folder / "recipe.yaml").train.student_from
            if source:
                return source
    raise CheckpointError(
        f"{qat_checkpoint}: no recipe.yaml with train.student_from next to it; pass the float student"
    )


def compare_quantized(
    student: str | os.PathLike[str],
    datasets: Mapping[str, Sequence[dict]],
    *,
    qat: str | os.PathLike[str] | None = None,
    backend: str | None = None,
    calibration_images: int = 8,
    calibration_size: int = 64,
    calibration: str = CALIBRATION_SOURCE,
    with_ssim: bool = True,
) -> QuantComparison:
    """Rows for `student` in float and int8 PTQ, plus `qat` (a QAT checkpoint of that student) in int8.

    `backend` defaults to the QAT checkpoint's, else xnnpack. PSNR in dB on the Y channel.
    """
    qmeta = None
    int8_qat = None
    if qat is not None:
        int8_qat, qmeta = quantized_student(load_student(qat))
        if backend is not None and backend != qmeta.backend:
            raise UsageError(f"{qat} was QAT-trained for backend {qmeta.backend!r}, not {backend!r}")
    backend = check_backend(backend or (qmeta.backend if qmeta else "xnnpack"))
    source = load_student(student, qmeta.width if qmeta and qmeta.width else None, any_width=True)
    if source.is_qat:
        raise UsageError(f"{student} is a QAT checkpoint; compare_quantized needs the float student")
    model, width, scale = source.net, source.width, source.scale
    fully_integer = bool(qmeta.fully_integer) if qmeta else False
    images = crops(scale, n=calibration_images, size=calibration_size, source=calibration)
    # the PTQ row is what `edgesr export --precision int8` builds for this backend by default
    activations = default_activations(backend, fully_integer)
    int8_ptq = ptq(
        model, backend, images[0], images, fully_integer=fully_integer, activations=activations,
        estimator=default_estimator(activations),
    )  # fmt: skip
    tag = f"{backend}{', fully integer' if fully_integer else ''}"

    def label(kind: str, policy: str) -> str:
        return f"int8 {kind} ({tag}{', float ends' if policy == 'float-ends' else ''})"

    candidates = [("float", model), (label("PTQ", activations), Int8Student(int8_ptq, width))]
    if int8_qat is not None and qmeta is not None:
        candidates.append((label("QAT", qmeta.activations), Int8Student(int8_qat, width)))
    rows = []
    with torch.no_grad():
        for method, m in candidates:
            for r in evaluate(m, datasets, scale, [width], with_ssim=with_ssim):
                rows.append(EvalRow(r.dataset, f"{method} w={width:g}", r.width, r.psnr, r.ssim, r.images))
    every = [item for items in datasets.values() for item in items]
    losses = {method: measure_int8_loss(model, m, every, scale) for method, m in candidates[1:]}
    return QuantComparison(backend, width, rows, losses)
