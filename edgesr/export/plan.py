"""What to export is a `Student`; how is `ExportOptions`; `plan_export` resolves the two into an
`ExportPlan` once (precision, upsampler variant, delegate, QAT or PTQ), refusing with the reason any
option the target cannot honour. Exporters, verification and the manifest read the plan.

`ExportRequest` is the one-call form the CLI and scripts use: a checkpoint, a target, a width, and
the options (it *is* an `ExportOptions`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from edgesr.errors import ExportError, UsageError
from edgesr.quant.backends import check_activations, default_activations, default_estimator
from edgesr.student import Student
from edgesr.targets import ESTIMATORS, PRECISIONS, TARGETS, UPSAMPLERS, TargetSpec

__all__ = [
    "DEFAULT_INPUT",
    "ExportOptions",
    "ExportPlan",
    "ExportRequest",
    "UnsupportedOptionError",
    "artifact_name",
    "check_input_shape",
    "parse_input_shape",
    "plan_export",
]

DEFAULT_INPUT: tuple[int, int, int, int] = (1, 3, 180, 320)


class UnsupportedOptionError(ExportError, ValueError):
    """An option (precision, dynamic shapes, ...) the target cannot honour, with the reason."""


def check_input_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) != 4 or s[0] != 1 or s[1] != 3 or min(s) < 1:
        raise UsageError(f"input shape must be (1, 3, H, W) with H, W >= 1, got {tuple(shape)}")
    return s  # type: ignore[return-value]


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """'1x3x180x320' -> (1, 3, 180, 320)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise UsageError(f"--input must look like 1x3xHxW (e.g. 1x3x180x320), got {text!r}") from None
    return check_input_shape(parts)


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How to export, whatever the student."""

    precision: str = "fp32"
    input_shape: tuple[int, int, int, int] = DEFAULT_INPUT  # (1, 3, H, W), LR pixels
    dynamic: bool = False  # H and W free at run time (where the target supports it)
    out_dir: str | os.PathLike[str] = "exports"
    force: bool = False  # replace an existing artifact
    upsampler: str | None = None  # one of UPSAMPLERS; None = the target's default
    delegate: str | None = None  # backend inside the artifact where a target has several (ExecuTorch)
    fully_integer: bool = False  # int8 only: int8 input/output and no float ops (NPU targets)
    weight_only: bool = False  # int8 only: int8 weights, float activations (no calibration, no QAT)
    calibration_images: int = 8  # int8 PTQ: crops used to calibrate activation ranges
    calibration: str = "builtin:train"  # int8 PTQ: where those crops come from (a data set spec or folder)
    accept_int8_loss: bool = False  # keep an int8 artifact that fails the quality gate (edgesr.quant.quality)
    # int8 PTQ: which activations stay int8 (edgesr.quant.precision); None = float-ends where the graph
    # may hold float ops (measured: 0.66 -> 0.29 dB mean loss on 14 real photos), else int8
    activations: str | None = None
    estimator: str | None = None  # int8 PTQ activation ranges: None = minmax with float-ends, else histogram
    # runtime settings the artifact is meant to run with (edgesr.targets.RuntimeOption), e.g.
    # (("spinning", "disabled"),) for ORT on a shared host; recorded in the manifest's `runtime`
    runtime_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.upsampler is not None and self.upsampler not in UPSAMPLERS:
            raise UsageError(f"upsampler must be one of {', '.join(UPSAMPLERS)}, got {self.upsampler!r}")
        if self.fully_integer and self.precision != "int8":
            raise UsageError(f"fully_integer needs precision int8, got {self.precision!r}")
        if self.weight_only and self.precision != "int8":
            raise UsageError(f"weight_only needs precision int8, got {self.precision!r}")
        if self.weight_only and self.fully_integer:
            raise UsageError("weight_only and fully_integer exclude each other")
        if self.calibration_images < 1:
            raise UsageError(f"calibration_images must be >= 1, got {self.calibration_images}")
        object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
        if self.estimator is not None and self.estimator not in ESTIMATORS:
            raise UsageError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if (self.activations or self.estimator) and (self.precision != "int8" or self.weight_only):
            raise UsageError("--activations and the range estimator apply to int8 PTQ only")

    def options(self) -> ExportOptions:
        """Just the options (an `ExportRequest` without its checkpoint, target and width)."""
        return ExportOptions(**{f.name: getattr(self, f.name) for f in fields(ExportOptions)})


@dataclass(frozen=True)
class ExportRequest(ExportOptions):
    """Export the student at `width` of `checkpoint` to `target`. `width=None`: the checkpoint's
    narrowest trained width (a materialized student: its own)."""

    checkpoint: str | os.PathLike[str]
    target: str
    width: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.width is not None and not 0.0 < float(self.width) <= 1.0:
            raise UsageError(f"width must be in (0, 1], got {self.width!r}")


@dataclass(frozen=True)
class ExportPlan:
    """Everything an exporter needs to know about one export, resolved once by `plan_export`."""

    spec: TargetSpec
    options: ExportOptions
    upsampler: str  # the variant written in the graph
    delegate: str | None  # the backend inside the artifact (None: the target has no choice)
    qat: bool  # int8 from the student's QAT state (else PTQ)
    activations: str = "int8"  # int8 PTQ: the activations policy (edgesr.quant.precision)
    estimator: str = "histogram"  # int8 PTQ: the activation range estimator (edgesr.quant.pt2e.ESTIMATORS)

    @property
    def target(self) -> str:
        return self.spec.name

    @property
    def precision(self) -> str:
        return self.options.precision

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.options.input_shape

    @property
    def dynamic(self) -> bool:
        return self.options.dynamic

    @property
    def fully_integer(self) -> bool:
        return self.options.fully_integer

    @property
    def weight_only(self) -> bool:
        return self.options.weight_only

    @property
    def int8_activations(self) -> bool:
        """int8 with quantized activations: the artifact is lowered from a q/dq graph (PTQ or QAT)."""
        return self.precision == "int8" and not self.weight_only


def plan_export(
    target: str, options: ExportOptions, *, qat: bool = False, trained_activations: str = "int8"
) -> ExportPlan:
    """Resolve `options` for `target`; `UnsupportedOptionError` with the reason for what it cannot do.

    `qat`: the student is a QAT checkpoint's fake-quant graph, exported as trained (PixelShuffle, and
    `trained_activations`, the activations policy its `quant` metadata records).
    """
    spec = TARGETS.get(target)
    try:
        spec.check_runtime_options(dict(options.runtime_options))
    except ValueError as e:
        raise UnsupportedOptionError(str(e)) from None
    if options.precision not in spec.precisions:
        raise UnsupportedOptionError(
            f"precision {options.precision!r} is not yet supported for target {spec.name!r} "
            f"(supported: {', '.join(spec.precisions)})"
        )
    if options.dynamic and not spec.dynamic_shapes:
        raise UnsupportedOptionError(f"target {spec.name!r} does not support dynamic input shapes")
    int8_activations = options.precision == "int8" and not options.weight_only
    if options.dynamic and int8_activations and not spec.dynamic_int8:
        raise UnsupportedOptionError(
            f"target {spec.name!r} int8 exports have fixed input shapes (the quantized graph is traced at "
            "the example size); export int8 without --dynamic"
        )
    if options.upsampler not in (None, "pixelshuffle") and qat:
        raise UnsupportedOptionError(
            f"this is a QAT checkpoint: its fake-quant graph was trained with PixelShuffle and cannot be "
            f"rewritten to {options.upsampler!r} after training; export it without --upsampler"
        )
    if options.upsampler:
        upsampler = options.upsampler
    elif qat:  # a QAT graph is exported as it was trained
        upsampler = "pixelshuffle"
    else:
        upsampler = spec.upsampler(options.precision, options.dynamic, options.weight_only)
    if upsampler not in spec.upsamplers:
        raise UnsupportedOptionError(
            f"upsampler {upsampler!r} is not supported for target {spec.name!r} "
            f"(supported: {', '.join(spec.upsamplers)})"
        )
    if options.delegate is not None and options.delegate not in spec.delegates:
        raise UnsupportedOptionError(
            f"delegate {options.delegate!r} is not available for target {spec.name!r}"
            + (f" (available: {', '.join(spec.delegates)})" if spec.delegates else " (it has no choice)")
        )
    if options.fully_integer and not spec.fully_integer:
        raise UnsupportedOptionError(f"target {spec.name!r} has no fully-integer int8 mode")
    if options.weight_only and not spec.weight_only:
        raise UnsupportedOptionError(f"target {spec.name!r} has no int8 weight-only mode")
    if options.precision == "int8" and not options.weight_only and spec.quant_backend is None:
        raise UnsupportedOptionError(f"target {spec.name!r} has no int8 quantization backend")
    delegate = options.delegate or (spec.delegates[0] if spec.delegates else None)
    activations = _activations(spec, options, trained_activations if qat else None)
    estimator = options.estimator or default_estimator(activations)
    return ExportPlan(spec, options.options(), upsampler, delegate, qat, activations, estimator)


def _activations(spec: TargetSpec, options: ExportOptions, trained: str | None) -> str:
    """The activations policy of the int8 graph; `trained`: a QAT checkpoint's (None for PTQ)."""
    if options.precision != "int8" or options.weight_only:
        return "int8"  # not used
    if trained is not None:  # a QAT graph is exported with the activations it was trained with
        if options.activations not in (None, trained):
            raise UnsupportedOptionError(
                f"a QAT checkpoint is exported as trained: activations {trained!r}, not "
                f"{options.activations!r} (train another QAT stage with train.quant.activations)"
            )
        return trained
    if options.activations is None:
        return default_activations(spec.quant_backend or "", options.fully_integer)
    check_activations(spec.quant_backend or "", options.activations, options.fully_integer)
    if options.activations.startswith("int16"):
        # measured with litert-torch 0.10: its TFLite file matches the 16-bit q/dq graph at 17 dB only
        raise UnsupportedOptionError(
            f"activations {options.activations!r} cannot be exported yet: litert-torch 0.10 lowers 16-bit "
            "activations wrongly (the artifact matches its q/dq graph at 17 dB); use 'float-ends'"
        )
    return options.activations


def artifact_name(student: Student, plan: ExportPlan) -> str:
    _, _, h, w = plan.input_shape
    size = "dynamic" if plan.dynamic else f"{h}x{w}"
    # int8 variants get distinct names so one never replaces another: int8w (weights only), int8fi
    precision = plan.precision + ("w" if plan.weight_only else "fi" if plan.fully_integer else "")
    return f"{student.arch['name']}_x{student.scale}_w{student.width:g}_{size}_{precision}{plan.spec.suffix}"
