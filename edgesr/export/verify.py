"""Verify an artifact on its real runtime against PyTorch, on a real photo from the built-in val set.

The input is a crop of the benchmark (MATLAB-bicubic) LR of the first built-in val image, the
size of the export's example input; images smaller than that are mirror-padded. Both outputs are
clipped to [0, 1] (what an image would keep) and compared with PSNR at data range 1; the max abs
difference is taken on the raw outputs. A float artifact must exceed 50 dB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgesr.data import EvalImages, builtin_pairs

if TYPE_CHECKING:
    from edgesr.export.base import Exporter
    from edgesr.export.plan import ExportPlan

FLOAT_PSNR_DB = 50.0  # the converters issue's bar for fp32/fp16 artifacts vs PyTorch
# int8: the artifact against the converted PT2E graph run in PyTorch (same quantization parameters);
# integer kernels round differently from the q/dq reference by about one step on some pixels.
INT8_PSNR_DB = 40.0


@dataclass(frozen=True)
class Verification:
    runtime: str  # what ran the artifact, e.g. "onnxruntime 1.31.1 (CPUExecutionProvider)"
    reference: str  # what it was compared with
    image: str  # the input: built-in image and crop
    input_shape: tuple[int, ...]
    psnr_db: float  # between clipped outputs, data range 1; inf when identical
    max_abs_diff: float  # on the raw outputs
    threshold_db: float
    passed: bool
    numerics_run: bool = True  # False where the runtime cannot run here (Core ML on Linux)
    float_psnr_db: float | None = None  # int8: the artifact against the float model (the cost of int8)
    structure: dict[str, Any] | None = None  # structural checks, where numerics could not run
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["psnr_db"] = _db(self.psnr_db)
        d["float_psnr_db"] = _db(self.float_psnr_db)
        d["max_abs_diff"] = None if math.isnan(self.max_abs_diff) else self.max_abs_diff
        return d

    def summary(self) -> str:
        if not self.numerics_run:
            failed = [k for k, v in (self.structure or {}).get("checks", {}).items() if v is not True]
            return "numerics not run here; structure " + ("ok" if not failed else f"FAILED: {failed}")
        s = f"PSNR {self.psnr_db:.1f} dB vs {self.reference} (bar {self.threshold_db:g} dB)"
        if self.float_psnr_db is not None:
            s += f", {self.float_psnr_db:.1f} dB vs float"
        return s + f", max abs diff {self.max_abs_diff:.3g}"


def _db(v: float | None) -> float | str | None:
    if v is None or math.isnan(v):
        return None
    return "inf" if math.isinf(v) else round(v, 3)


def _centre(lh: int, lw: int, h: int, w: int) -> tuple[int, int]:
    """Top-left corner of the centre h x w crop of an lh x lw image (0 where the image is smaller)."""
    return max(0, (lh - h) // 2), max(0, (lw - w) // 2)


def verification_input(shape: tuple[int, int, int, int], scale: int) -> tuple[np.ndarray, str]:
    """A real LR crop as float32 (1, 3, H, W) in [0, 1], and a description of where it came from."""
    pair = builtin_pairs("val")[0]
    lr = EvalImages([pair], scale)[0]["lr"].numpy()  # 3 x h x w, cached MATLAB-bicubic LR
    _, _, h, w = shape
    lh, lw = lr.shape[1:]
    y0, x0 = _centre(lh, lw, h, w)
    crop = lr[:, y0 : y0 + h, x0 : x0 + w]
    ph, pw = h - crop.shape[1], w - crop.shape[2]
    if ph or pw:
        # "symmetric" tiles the image as often as needed, so any requested size works.
        crop = np.pad(crop, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="symmetric")
    note = f"builtin val {pair.name!r} x{scale} LR {lw}x{lh}, centre crop {w}x{h}"
    if ph or pw:
        note += " (mirror-padded)"
    # a fresh array: np.pad's result can carry a 0 stride on the batch axis, which ExecuTorch rejects
    return np.array(crop[None], dtype=np.float32, copy=True, order="C"), note


def verification_hr(shape: tuple[int, int, int, int], scale: int) -> np.ndarray | None:
    """The HR photo under `verification_input`'s crop, float32 (1, 3, H*scale, W*scale) in [0, 1];
    None when that input was mirror-padded (its padding has no HR)."""
    item = EvalImages([builtin_pairs("val")[0]], scale)[0]
    lr, hr = item["lr"].numpy(), item["hr"].numpy()  # type: ignore[attr-defined]
    _, _, h, w = shape
    if lr.shape[1] < h or lr.shape[2] < w:
        return None
    y0, x0 = _centre(lr.shape[1], lr.shape[2], h, w)
    crop = hr[:, y0 * scale : (y0 + h) * scale, x0 * scale : (x0 + w) * scale]
    return np.array(crop[None], dtype=np.float32, copy=True)


def output_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two [0, 1] images after clipping to [0, 1]; inf when equal."""
    d = np.clip(a.astype(np.float64), 0, 1) - np.clip(b.astype(np.float64), 0, 1)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def verify(
    model: nn.Module,
    exporter: Exporter,
    path: Path,
    x: np.ndarray,
    image: str,
    plan: ExportPlan,
    quantized: nn.Module | None = None,
) -> Verification:
    """Run the artifact at `path` on `x` and compare with PyTorch.

    Float artifacts are compared with `model(x)` (float32, bar FLOAT_PSNR_DB). An int8 artifact is
    compared with `quantized(x)`, the converted q/dq graph it was lowered from (bar INT8_PSNR_DB), and
    its distance from the float model is recorded. Where the runtime cannot run here
    (`exporter.runs_here(path)` gives the reason) the result is the exporter's structural validation, with
    `numerics_run=False`.
    """
    versions = exporter.sdk_versions()
    runtime = exporter.spec.runtime_label + _version_note(versions)
    shape = tuple(x.shape)
    int8 = plan.int8_activations  # weight-only: compared with float
    if int8 and quantized is None:
        raise ValueError("int8 verification needs the converted (q/dq) model the artifact came from")
    reference = (
        f"the converted PT2E int8 graph in PyTorch {torch.__version__}"
        if int8
        else f"PyTorch {torch.__version__} eager, float32"
    )
    threshold = INT8_PSNR_DB if plan.precision == "int8" else FLOAT_PSNR_DB
    reason = exporter.runs_here(path)
    if reason is not None:
        structure = exporter.validate(path, plan)
        evaluator = exporter.evaluator()  # a program evaluator of our own, not the runtime
        if evaluator is not None:
            evaluator_name, evaluate = evaluator
            with torch.no_grad():
                xt = torch.from_numpy(x)
                ref = (quantized(xt) if int8 else model(xt)).numpy()
            out = evaluate(path, x)
            psnr = output_psnr(out, ref)
            structure["reference_evaluator"] = {
                "name": evaluator_name,
                "reference": reference,
                "psnr_db": _db(psnr),
                "max_abs_diff": float(np.max(np.abs(out.astype(np.float64) - ref))),
            }
            # the program's numerics, as far as they can be checked here, must meet the same bar
            ok = psnr > threshold
            structure["checks"]["reference_evaluator"] = ok or f"{psnr:.1f} dB <= {threshold:g} dB"
            structure["passed"] = bool(structure["passed"]) and ok
        return Verification(
            runtime=runtime, reference=reference, image=image, input_shape=shape, psnr_db=math.nan,
            max_abs_diff=math.nan, threshold_db=threshold, passed=bool(structure["passed"]),
            numerics_run=False, structure=structure, note=f"numerics not run: {reason}",
        )  # fmt: skip
    with torch.no_grad():
        xt = torch.from_numpy(x)
        ref_float = model(xt).numpy()
        ref = quantized(xt).numpy() if int8 else ref_float
    out = exporter.run(path, x)
    if out.shape != ref.shape:
        raise RuntimeError(f"{exporter.spec.name} artifact returned shape {out.shape}, PyTorch {ref.shape}")
    psnr = output_psnr(out, ref)
    return Verification(
        runtime=runtime,
        reference=reference,
        image=image,
        input_shape=shape,
        psnr_db=psnr,
        max_abs_diff=float(np.max(np.abs(out.astype(np.float64) - ref))),
        threshold_db=threshold,
        passed=psnr > threshold,
        float_psnr_db=output_psnr(out, ref_float) if int8 else None,
    )


def _version_note(versions: dict[str, str]) -> str:
    return " (" + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")" if versions else ""


def verification_table(results: list[Any]) -> Any:
    """A rich table of `ExportResult`s: target, precision, runtime, figures against PyTorch, file."""
    from rich.table import Table

    folders = sorted({str(r.artifact.parent) for r in results})
    table = Table("target", "precision", "runtime", "vs PyTorch dB", "vs float dB", "ok", "file")
    table.title = "verification on each artifact's runtime, built-in val image" + (
        f" ({', '.join(folders)})" if folders else ""
    )
    table.columns[-1].overflow = "fold"
    for r in results:
        v = r.verification
        psnr = f"{v.psnr_db:.1f}" if v.numerics_run else "runtime n/a here"
        evaluator = (v.structure or {}).get("reference_evaluator")
        if evaluator and evaluator.get("psnr_db") is not None:
            psnr += f"; edgesr MIL eval {evaluator['psnr_db']}"
        vs_float = f"{v.float_psnr_db:.1f}" if v.float_psnr_db is not None else ""
        runtime = v.runtime.split(" (")[0].split(" ")[0]  # e.g. "onnxruntime", "ai-edge-litert"
        table.add_row(r.target, r.precision, runtime, psnr, vs_float, str(v.passed), r.artifact.name)
    return table
