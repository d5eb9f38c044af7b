"""The exporter protocol, its registry, and `export_checkpoint`: checkpoint -> verified artifact + manifest.

Every target (onnx now; coreml, tflite, executorch next) is one small object that satisfies
`Exporter` and registers itself in `EXPORTERS`. Its SDK is imported only inside its methods, so
`import edgesr.export` never needs an export SDK (the training machines have none of them).

`export_checkpoint` is the one orchestrator: load the student, trace it with a real image crop,
write the artifact under a staging name, run it on the target's real runtime and compare with
PyTorch, and only then move it into place and write `<artifact>.json` next to it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from edgesr.registry import Registry, unknown_name_message

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# How the last stage's sub-pixel upsampling is written in the exported graph (edgesr/export/graphs.py):
# nn.PixelShuffle, a depth-to-space with reordered conv channels, or a fixed-weight ConvTranspose2d.
UPSAMPLERS: tuple[str, ...] = ("pixelshuffle", "depth_to_space", "transposed_conv")
DEFAULT_INPUT: tuple[int, int, int, int] = (1, 3, 180, 320)


class MissingSDKError(ImportError, RuntimeError):
    """A target's SDK is not installed; the message is the exact `pip install` that fixes it.

    Also a RuntimeError so that callers handling "this cannot run here" errors catch it too.
    """


class UnsupportedOptionError(ValueError):
    """An option (precision, dynamic shapes, ...) the target cannot honour, with the reason."""


class UnsupportedOpError(RuntimeError):
    """The model uses an op the target's converter cannot lower."""

    def __init__(self, target: str, op: str, detail: str) -> None:
        self.target, self.op = target, op
        super().__init__(
            f"target {target!r} cannot convert op {op!r}: {detail}. "
            "Replace the op in the model or export to another target."
        )


class VerificationError(RuntimeError):
    """The artifact's runtime output disagrees with PyTorch beyond the bar; nothing was written."""


class ImageOnly(nn.Module):
    """`forward(x)` only, so an export traces the image input and nothing else: our models' defaulted
    `width=1.0` argument would otherwise be traced as a tensor (TorchScript) or an extra input."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:  # (1, 3, H, W) -> (1, 3, sH, sW)
        return self.model(x)


def import_sdk(target: str, label: str, extra: str, *modules: str) -> list[ModuleType]:
    """Import a target's SDK modules, or raise `MissingSDKError` naming the pip extra."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise MissingSDKError(
            f'target {target!r} needs the {label} SDK: pip install "edgesr[{extra}]"'
        ) from e


@dataclass(frozen=True)
class ExportRequest:
    """What to export. `width=None` means the checkpoint's narrowest trained width."""

    checkpoint: str | os.PathLike[str]
    target: str
    width: float | None = None
    precision: str = "fp32"
    input_shape: tuple[int, int, int, int] = DEFAULT_INPUT  # (1, 3, H, W), LR pixels
    dynamic: bool = False  # H and W free at run time (where the target supports it)
    out_dir: str | os.PathLike[str] = "exports"
    force: bool = False  # replace an existing artifact
    upsampler: str | None = None  # one of UPSAMPLERS; None = the target's default
    delegate: str | None = None  # backend inside the artifact where a target has several (ExecuTorch)
    fully_integer: bool = False  # int8 only: int8 input/output and no float ops (NPU targets)
    weight_only: bool = False  # int8 only: int8 weights, float activations (no calibration, no QAT)
    calibration_images: int = 8  # int8 PTQ: built-in train crops used to calibrate activations

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.upsampler is not None and self.upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {', '.join(UPSAMPLERS)}, got {self.upsampler!r}")
        if self.fully_integer and self.precision != "int8":
            raise ValueError(f"fully_integer needs precision int8, got {self.precision!r}")
        if self.weight_only and self.precision != "int8":
            raise ValueError(f"weight_only needs precision int8, got {self.precision!r}")
        if self.weight_only and self.fully_integer:
            raise ValueError("weight_only and fully_integer exclude each other")
        if self.calibration_images < 1:
            raise ValueError(f"calibration_images must be >= 1, got {self.calibration_images}")
        object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
        if self.width is not None and not 0.0 < float(self.width) <= 1.0:
            raise ValueError(f"width must be in (0, 1], got {self.width!r}")


def check_input_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int, int, int]:
    s = tuple(int(v) for v in shape)
    if len(s) != 4 or s[0] != 1 or s[1] != 3 or min(s) < 1:
        raise ValueError(f"input shape must be (1, 3, H, W) with H, W >= 1, got {tuple(shape)}")
    return s  # type: ignore[return-value]


def parse_input_shape(text: str) -> tuple[int, int, int, int]:
    """'1x3x180x320' -> (1, 3, 180, 320)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise ValueError(f"--input must look like 1x3xHxW (e.g. 1x3x180x320), got {text!r}") from None
    return check_input_shape(parts)


@runtime_checkable
class Exporter(Protocol):
    """One export target. Stateless; every SDK import happens inside the methods."""

    name: str  # registry name, e.g. "onnx"
    suffix: str  # artifact file suffix, e.g. ".onnx"
    sdk_extra: str  # pip extra that installs the SDK: pip install "edgesr[<sdk_extra>]"
    precisions: tuple[str, ...]  # precisions this exporter implements
    dynamic_shapes: bool  # whether `request.dynamic` is honoured
    runtime: str  # what runs the artifact here, e.g. "onnxruntime CPUExecutionProvider"

    def sdk_versions(self) -> dict[str, str]:
        """Import the SDK (MissingSDKError when absent); return {package: version}."""
        ...

    def export(self, model: nn.Module, example: Tensor, path: Path, request: ExportRequest) -> None:
        """Convert `model` (eval mode, traced with `example`, 1x3xHxW in [0,1]) and write `path`."""
        ...

    def load(self, path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """A callable running the artifact on its real runtime: float32 NCHW in -> float32 NCHW out."""
        ...

    def run(self, path: Path, x: np.ndarray) -> np.ndarray:
        """One-off `load(path)(x)`."""
        ...

    def delegation(self, path: Path) -> dict[str, Any]:
        """Op histogram of the artifact and which runtime backend runs which ops."""
        ...


# Optional members of an exporter, read with `getattr` and these defaults:
#   default_upsampler: str = "pixelshuffle"       the UPSAMPLERS variant used when the request names none
#   def upsampler_default(self, request) -> str   the same, when it depends on the request (precision...)
#   upsamplers: tuple[str, ...] = UPSAMPLERS      variants the target converts
#   delegates: tuple[str, ...] = ()               values `request.delegate` may take (first = default)
#   fully_integer: bool = False                    whether `request.fully_integer` is honoured
#   weight_only: bool = False                      whether `request.weight_only` is honoured; the exporter
#                                                 then gets the float model and quantizes weights itself
#   default_precision: str = "fp32"               what the CLI uses when --precision is not given
#   def runs_here(self, path) -> str | None       None, or why the artifact cannot run on this machine
#                                                 (Core ML on Linux); verification is then structural
#   def validate(self, path, request) -> dict     structural checks: {"checks": {name: ok}, "passed": bool}
#   def io_spec(self, path) -> dict               {"input": {...}, "output": {...}} overriding float32 NCHW
def _qat(request: ExportRequest) -> bool:
    from edgesr.quant.state import is_qat_checkpoint

    return is_qat_checkpoint(request.checkpoint)


def upsampler_for(exporter: Exporter, request: ExportRequest) -> str:
    if request.upsampler:
        return request.upsampler
    if _qat(request):  # a QAT graph is exported as it was trained
        return "pixelshuffle"
    by_request = getattr(exporter, "upsampler_default", None)
    return by_request(request) if by_request else getattr(exporter, "default_upsampler", "pixelshuffle")


EXPORTERS: Registry[Exporter] = Registry("exporter")


def get_exporter(target: str) -> Exporter:
    if target not in EXPORTERS:
        raise KeyError(unknown_name_message("target", target, EXPORTERS.names()))
    return EXPORTERS.get(target)


def check_options(exporter: Exporter, request: ExportRequest) -> None:
    """Raise `UnsupportedOptionError` with the reason for options the target cannot honour."""
    if request.precision not in exporter.precisions:
        raise UnsupportedOptionError(
            f"precision {request.precision!r} is not yet supported for target {exporter.name!r} "
            f"(supported: {', '.join(exporter.precisions)})"
        )
    if request.dynamic and not exporter.dynamic_shapes:
        raise UnsupportedOptionError(f"target {exporter.name!r} does not support dynamic input shapes")
    if request.upsampler not in (None, "pixelshuffle") and _qat(request):
        raise UnsupportedOptionError(
            f"{request.checkpoint} is a QAT checkpoint: its fake-quant graph was trained with PixelShuffle "
            f"and cannot be rewritten to {request.upsampler!r} after training; export it without --upsampler"
        )
    variants = getattr(exporter, "upsamplers", UPSAMPLERS)
    if upsampler_for(exporter, request) not in variants:
        raise UnsupportedOptionError(
            f"upsampler {upsampler_for(exporter, request)!r} is not supported for target {exporter.name!r} "
            f"(supported: {', '.join(variants)})"
        )
    delegates = getattr(exporter, "delegates", ())
    if request.delegate is not None and request.delegate not in delegates:
        raise UnsupportedOptionError(
            f"delegate {request.delegate!r} is not available for target {exporter.name!r}"
            + (f" (available: {', '.join(delegates)})" if delegates else " (it has no delegate choice)")
        )
    if request.fully_integer and not getattr(exporter, "fully_integer", False):
        raise UnsupportedOptionError(f"target {exporter.name!r} has no fully-integer int8 mode")
    if request.weight_only and not getattr(exporter, "weight_only", False):
        raise UnsupportedOptionError(f"target {exporter.name!r} has no int8 weight-only mode")


@dataclass(frozen=True)
class ExportResult:
    target: str
    precision: str
    artifact: Path
    manifest_path: Path
    verification: Any  # edgesr.export.verify.Verification
    manifest: dict[str, Any]
    export_s: float  # conversion time (without verification), seconds


def student_width(meta: Any, width: float | None) -> float:
    """The width to export: a materialized checkpoint's own width, else `width` or the narrowest trained."""
    if meta.materialized_width is not None:
        if width is not None and abs(width - meta.materialized_width) > 1e-9:
            raise ValueError(
                f"this checkpoint is a materialized student at width {meta.materialized_width:g}; "
                f"it cannot be exported at width {width:g}"
            )
        return float(meta.materialized_width)
    if width is None:
        return float(min(meta.widths))
    if not any(abs(width - w) < 1e-9 for w in meta.widths):
        raise ValueError(
            f"width {width:g} was not trained in this checkpoint (trained widths: "
            f"{', '.join(f'{w:g}' for w in meta.widths)})"
        )
    return float(width)


def load_student(checkpoint: str | os.PathLike[str], width: float | None) -> tuple[nn.Module, Any, float]:
    """(stand-alone eval-mode model, CheckpointMeta, width) ready to trace: no width context needed."""
    from edgesr.models import materialize
    from edgesr.train.checkpoint import load_model

    model, meta = load_model(checkpoint)
    w = student_width(meta, width)
    if meta.materialized_width is None and w < 1.0:
        model = materialize(model, w)
    return model.eval(), meta, w


def artifact_name(meta: Any, width: float, request: ExportRequest, suffix: str) -> str:
    _, _, h, w = request.input_shape
    size = "dynamic" if request.dynamic else f"{h}x{w}"
    # int8 variants get distinct names so one never replaces another: int8w (weights only), int8fi
    precision = request.precision + ("w" if request.weight_only else "fi" if request.fully_integer else "")
    return f"{meta.arch['name']}_x{meta.scale}_w{width:g}_{size}_{precision}{suffix}"


@contextmanager
def staged(final: Path, force: bool) -> Iterator[Path]:
    """Yield a path with `final`'s name inside a hidden staging folder next to it; on success move it
    over `final` (file or folder, e.g. a future .mlpackage); on failure leave `final` untouched.
    """
    if final.exists() and not force:
        raise FileExistsError(f"{final} exists; pass --force (force=True) to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield stage / final.name
        if final.is_dir():  # os.replace cannot replace a non-empty folder
            shutil.rmtree(final)
        os.replace(stage / final.name, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def export_checkpoint(request: ExportRequest) -> ExportResult:
    """Export one checkpoint to one target, verify it on the target's runtime, write its manifest.

    Raises MissingSDKError, UnsupportedOptionError, UnsupportedOpError, VerificationError,
    FileExistsError (existing artifact without `force`); on any error no artifact is left behind.
    """
    from edgesr.export.manifest import build_manifest, manifest_path, write_manifest
    from edgesr.export.verify import verification_input, verify

    exporter = get_exporter(request.target)
    check_options(exporter, request)
    sdk = exporter.sdk_versions()
    model, meta, width = load_student(request.checkpoint, request.width)
    final = Path(request.out_dir) / artifact_name(meta, width, request, exporter.suffix)
    if final.exists() and not request.force:  # fail before the slow conversion
        raise FileExistsError(f"{final} exists; pass --force (force=True) to replace it")
    x, source = verification_input(request.input_shape, meta.scale)
    example = torch.from_numpy(x)
    model = deployable(model, upsampler_for(exporter, request))
    with staged(final, request.force) as tmp:
        t0 = time.perf_counter()
        # int8: the converted q/dq graph the target lowers, and the reference its artifact must match
        quantized = quantized_model(exporter, model, example, request, meta.scale)
        with torch.no_grad():
            exporter.export(quantized if quantized is not None else model, example, tmp, request)
        export_s = time.perf_counter() - t0
        result = verify(model, exporter, tmp, x, source, request, quantized)
        if not result.passed:
            raise VerificationError(
                f"{request.target} {request.precision} artifact failed verification: {result.summary()}; "
                "nothing was written"
            )
        delegation = exporter.delegation(tmp)
        # built from the staged artifact (same file name), so a failure here leaves nothing behind
        manifest = build_manifest(
            request, meta, model, width, tmp, result, delegation, sdk, exporter, export_s
        )
    write_manifest(final, manifest)
    return ExportResult(
        request.target, request.precision, final, manifest_path(final), result, manifest, export_s
    )


def deployable(model: nn.Module, upsampler: str) -> nn.Module:
    """`model` with its upsampler written as `upsampler` (numerically the same function)."""
    if upsampler == "pixelshuffle":
        return model
    from edgesr.export.graphs import rewrite_upsampler

    return rewrite_upsampler(model, upsampler).eval()


def quantized_model(
    exporter: Exporter, model: nn.Module, example: Tensor, request: ExportRequest, scale: int
) -> Any:
    """For int8: the converted PT2E graph (q/dq ops) the target lowers, from the checkpoint's QAT state
    when it has one (for this target's backend), else post-training quantized on built-in train crops.
    None for float precisions.
    """
    if request.precision != "int8" or request.weight_only:
        return None
    from edgesr import quant

    backend = quant.TARGET_BACKEND.get(exporter.name)
    if backend is None:
        raise UnsupportedOptionError(f"target {exporter.name!r} has no int8 quantization backend")
    if quant.is_qat_checkpoint(request.checkpoint):
        converted, qmeta = quant.load_quantized(request.checkpoint, example=example)
        if qmeta.backend != backend:
            raise UnsupportedOptionError(
                f"{request.checkpoint} was quantization-aware trained for backend {qmeta.backend!r}; "
                f"target {exporter.name!r} needs backend {backend!r} (train a QAT stage for it, or export "
                f"to the target of {qmeta.backend!r})"
            )
        if bool(qmeta.fully_integer) != request.fully_integer:
            raise UnsupportedOptionError(
                f"{request.checkpoint} was QAT-trained with fully_integer={qmeta.fully_integer}; "
                f"the request asks for fully_integer={request.fully_integer}"
            )
        return converted
    _, _, h, w = request.input_shape
    images = quant.calibration_images(scale, n=request.calibration_images, size=min(h, w, 64))
    return quant.ptq(model, backend, example, images, fully_integer=request.fully_integer)


@dataclass
class ExportReport:
    """`export_all`: one result per exported target, and why the others were skipped."""

    results: list[ExportResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def default_precision(target: str) -> str:
    """The precision a target exports at when none is asked for (Core ML: fp16; others: fp32)."""
    return getattr(get_exporter(target), "default_precision", "fp32")


def export_all(
    request: ExportRequest, targets: list[str] | None = None, *, target_defaults: bool = False
) -> ExportReport:
    """Export to every registered target (or `targets`) whose SDK is installed and that supports
    the requested options; the rest are reported in `skipped` with the reason (e.g. the pip extra).
    `target_defaults=True` exports each target at its own default precision instead of the request's.
    Conversion (unsupported op) and verification errors are not swallowed.
    """
    from dataclasses import replace

    report = ExportReport()
    for name in targets or EXPORTERS.names():
        exporter = get_exporter(name)
        one = replace(request, target=name)
        if target_defaults:
            one = replace(one, precision=default_precision(name))
        try:  # options a target refuses (some only while converting) and missing SDKs are skips
            check_options(exporter, one)
            exporter.sdk_versions()
            report.results.append(export_checkpoint(one))
        except (MissingSDKError, UnsupportedOptionError) as e:
            report.skipped[name] = str(e)
    return report
