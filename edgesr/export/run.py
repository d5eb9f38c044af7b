"""Student -> verified artifact + manifest: `export_student`, `export_checkpoint`, `export_all`.

One export: resolve the plan (edgesr/export/plan.py), trace the student with a real image crop,
write the artifact under a staging name, run it on the target's real runtime and compare with
PyTorch, and only then move it into place and write `<artifact>.json` next to it. The checkpoint is
read once (`edgesr.student.load_student`), whatever the target and precision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from edgesr import quant
from edgesr.data import eval_sets
from edgesr.errors import ExportError, OutputExistsError
from edgesr.export.base import VerificationError, get_exporter, staged
from edgesr.export.graphs import rewrite_upsampler
from edgesr.export.manifest import build_manifest, manifest_path, write_manifest
from edgesr.export.plan import (
    ExportOptions,
    ExportPlan,
    ExportRequest,
    UnsupportedOptionError,
    artifact_name,
    plan_export,
)
from edgesr.export.verify import Verification, verification_input, verify
from edgesr.models import reparameterize
from edgesr.quant.quality import GATE_IMAGES, MAX_MEAN_DROP_DB, MAX_WORST_DROP_DB, Int8Loss, measure_int8_loss
from edgesr.quant.state import trained_activations
from edgesr.sdk import MissingSDKError
from edgesr.student import Student, load_student
from edgesr.targets import TARGETS

__all__ = [
    "ExportReport", "ExportResult", "Int8LossError", "deployable", "export_all", "export_checkpoint",
    "export_student", "int8_gate", "quantized_graph",
]  # fmt: skip

REMEDIES = {  # what to try when the gate refuses, by how the int8 graph was made
    "PTQ": "QAT on diverse crops (recipes/quickstart_qat.yaml; docs/quantization.md), a calibration closer "
    "to your images (--calibration DIR), or another backend",
    "QAT": "more QAT steps or more smooth patches (data.smooth_patches), PTQ of the float student "
    "(export it instead; docs/quantization.md compares both per backend), or another backend",
}


class Int8LossError(ExportError):
    """The int8 graph loses more Y-PSNR against float than the gate allows; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    target: str
    precision: str
    artifact: Path
    manifest_path: Path
    verification: Verification
    manifest: dict[str, Any]
    export_s: float  # conversion time (without verification), seconds


@dataclass
class ExportReport:
    """`export_all`: one result per exported target, and why the others were skipped."""

    results: list[ExportResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def export_checkpoint(request: ExportRequest) -> ExportResult:
    """Export the student at `request.width` of `request.checkpoint` to `request.target`."""
    # an unknown target or a missing SDK fails before the checkpoint is read
    get_exporter(request.target).sdk_versions()
    return export_student(load_student(request.checkpoint, request.width), request.target, request.options())


def plan_for(student: Student, target: str, options: ExportOptions) -> ExportPlan:
    """`plan_export` for this student: a QAT checkpoint is planned as it was trained."""
    trained = trained_activations(student.quant) if student.quant else "int8"
    return plan_export(target, options, qat=student.is_qat, trained_activations=trained)


def export_student(student: Student, target: str, options: ExportOptions) -> ExportResult:
    """Export one student to one target, verify it on the target's runtime, write its manifest.

    Raises MissingSDKError, UnsupportedOptionError, UnsupportedOpError, VerificationError,
    OutputExistsError (existing artifact without `force`); on any error no artifact is left behind.
    """
    exporter = get_exporter(target)
    plan = plan_for(student, target, options)
    final = Path(options.out_dir) / artifact_name(student, plan)
    if final.exists() and not options.force:  # fail before the SDK imports and the slow conversion
        raise OutputExistsError(f"{final} exists; pass --force (force=True) to replace it")
    sdk = exporter.sdk_versions()
    x, source = verification_input(plan.input_shape, student.scale)
    example = torch.from_numpy(x)
    model = deployable(student.net, plan.upsampler)
    with staged(final, options.force) as tmp:
        t0 = time.perf_counter()
        # int8: the converted q/dq graph the target lowers, and the reference its artifact must match
        quantized = quantized_graph(student, model, example, plan)
        t_gate = time.perf_counter()
        int8_loss = int8_gate(student, model, quantized, plan)  # before the slow conversion
        gate_s = time.perf_counter() - t_gate
        with torch.no_grad():
            exporter.export(quantized if quantized is not None else model, example, tmp, plan)
        export_s = time.perf_counter() - t0 - gate_s
        result = verify(model, exporter, tmp, x, source, plan, quantized)
        if not result.passed:
            raise VerificationError(
                f"{target} {plan.precision} artifact failed verification: {result.summary()}; "
                "nothing was written"
            )
        delegation = exporter.delegation(tmp)
        # built from the staged artifact (same file name), so a failure here leaves nothing behind
        manifest = build_manifest(student, plan, model, tmp, result, delegation, sdk, exporter, export_s)
        if int8_loss is not None:
            manifest["quantization"]["quality"] = {
                **int8_loss.to_json(),
                "limits": {"mean_drop_db": MAX_MEAN_DROP_DB, "worst_drop_db": MAX_WORST_DROP_DB},
                "passed": int8_loss.check(MAX_MEAN_DROP_DB, MAX_WORST_DROP_DB) is None,
                "accepted_by_flag": plan.options.accept_int8_loss,
                "measured_on": list(GATE_IMAGES),
                "reference": "the converted q/dq graph in PyTorch vs the float student (the artifact matches "
                "the graph; see verification)",
            }
    write_manifest(final, manifest)
    return ExportResult(target, plan.precision, final, manifest_path(final), result, manifest, export_s)


def deployable(model: nn.Module, upsampler: str) -> nn.Module:
    """`model` as it is deployed, numerically the same function: re-parameterisable blocks collapsed
    into single 3x3 convs (edgesr.models.reparam), the upsampler written as `upsampler`."""
    model = reparameterize(model)
    if upsampler == "pixelshuffle":
        return model
    return rewrite_upsampler(model, upsampler).eval()


def quantized_graph(student: Student, model: nn.Module, example: Tensor, plan: ExportPlan) -> Any:
    """For int8 activations: the converted PT2E graph (q/dq ops) the target lowers, from the student's
    QAT state when it has one (for this target's backend), else post-training quantized on built-in
    train crops. None for float precisions and weight-only int8.
    """
    if not plan.int8_activations:
        return None
    backend = plan.spec.quant_backend
    if student.is_qat:
        converted, qmeta = quant.quantized_student(student, example=example)
        where = student.path or "this student"
        if qmeta.backend != backend:
            raise UnsupportedOptionError(
                f"{where} was quantization-aware trained for backend {qmeta.backend!r}; "
                f"target {plan.target!r} needs backend {backend!r} (train a QAT stage for it, or export "
                f"to the target of {qmeta.backend!r})"
            )
        if bool(qmeta.fully_integer) != plan.fully_integer:
            raise UnsupportedOptionError(
                f"{where} was QAT-trained with fully_integer={qmeta.fully_integer}; "
                f"the request asks for fully_integer={plan.fully_integer}"
            )
        return converted
    return ptq_graph(model, student.scale, example, plan)


def ptq_graph(model: nn.Module, scale: int, example: Tensor, plan: ExportPlan) -> Any:
    """`model` post-training quantized for `plan`'s target as every edgesr export does it: calibrated
    on `plan.options.calibration_images` crops (at most 64 px, within the input) of
    `plan.options.calibration`, with the plan's activations policy and range estimator."""
    _, _, h, w = plan.input_shape
    o = plan.options
    images = quant.calibration_images(scale, n=o.calibration_images, size=min(h, w, 64), source=o.calibration)
    return quant.ptq(
        model, plan.spec.quant_backend or "", example, images, fully_integer=plan.fully_integer,
        activations=plan.activations, estimator=plan.estimator,
    )  # fmt: skip


def int8_gate(student: Student, model: nn.Module, quantized: Any, plan: ExportPlan) -> Int8Loss | None:
    """int8 Y-PSNR loss against float, image by image, on the gate images (textured and smooth built-in
    photos); raises `Int8LossError` naming the worst image when it passes the limits, unless the
    options accept it. None for float exports."""
    if quantized is None:
        return None
    reference = quant.float_reference(student) if student.is_qat else model
    images = [item for items in eval_sets(GATE_IMAGES, student.scale).values() for item in items]
    loss = measure_int8_loss(reference, quantized, images, student.scale)
    problem = loss.check(MAX_MEAN_DROP_DB, MAX_WORST_DROP_DB)
    if problem is not None and not plan.options.accept_int8_loss:
        method = "QAT" if student.is_qat else "PTQ"
        raise Int8LossError(
            f"{plan.target} int8 ({plan.spec.quant_backend} {method}) refused: {problem}; nothing was "
            f"written. Remedies: {REMEDIES[method]}; or keep it with --accept-int8-loss"
        )
    return loss


def export_all(
    student: Student,
    options: ExportOptions,
    targets: list[str] | None = None,
    *,
    target_defaults: bool = False,
) -> ExportReport:
    """Export `student` to every target (or `targets`) whose SDK is installed and that supports the
    options; the rest are reported in `skipped` with the reason (e.g. the pip extra).
    `target_defaults=True` exports each target at its own default precision instead of the options'.
    An int8 artifact the quality gate refuses is a skip too (with the gate's reason), so the other
    targets are still exported. Conversion (unsupported op) and verification errors are not swallowed.
    """
    report = ExportReport()
    for name in targets or TARGETS.names():
        one = replace(options, precision=TARGETS.get(name).default_precision) if target_defaults else options
        try:  # options a target refuses (some only while converting) and missing SDKs are skips
            plan_for(student, name, one)
            get_exporter(name).sdk_versions()
            report.results.append(export_student(student, name, one))
        except (MissingSDKError, UnsupportedOptionError, Int8LossError) as e:
            report.skipped[name] = str(e)
    return report
