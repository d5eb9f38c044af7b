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

if TYPE_CHECKING:
    from edgesr.export.base import Exporter

FLOAT_PSNR_DB = 50.0  # the converters issue's bar for fp32/fp16 artifacts vs PyTorch


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["psnr_db"] = "inf" if math.isinf(self.psnr_db) else round(self.psnr_db, 3)
        return d


def verification_input(shape: tuple[int, int, int, int], scale: int) -> tuple[np.ndarray, str]:
    """A real LR crop as float32 (1, 3, H, W) in [0, 1], and a description of where it came from."""
    from edgesr.data import EvalImages, builtin_pairs

    pair = builtin_pairs("val")[0]
    lr = EvalImages([pair], scale)[0]["lr"].numpy()  # 3 x h x w, cached MATLAB-bicubic LR
    _, _, h, w = shape
    lh, lw = lr.shape[1:]
    y0, x0 = max(0, (lh - h) // 2), max(0, (lw - w) // 2)
    crop = lr[:, y0 : y0 + h, x0 : x0 + w]
    ph, pw = h - crop.shape[1], w - crop.shape[2]
    if ph or pw:
        # "symmetric" tiles the image as often as needed, so any requested size works.
        crop = np.pad(crop, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="symmetric")
    note = f"builtin val {pair.name!r} x{scale} LR {lw}x{lh}, centre crop {w}x{h}"
    if ph or pw:
        note += " (mirror-padded)"
    return np.ascontiguousarray(crop[None], dtype=np.float32), note


def output_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two [0, 1] images after clipping to [0, 1]; inf when equal."""
    d = np.clip(a.astype(np.float64), 0, 1) - np.clip(b.astype(np.float64), 0, 1)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def verify(
    model: nn.Module, exporter: Exporter, path: Path, x: np.ndarray, image: str, precision: str
) -> Verification:
    """Run the artifact at `path` on `x` and compare with `model(x)` in PyTorch (float32)."""
    if precision == "int8":
        raise NotImplementedError("int8 verification (against fake-quant and float) comes with the QAT work")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = exporter.run(path, x)
    if out.shape != ref.shape:
        raise RuntimeError(f"{exporter.name} artifact returned shape {out.shape}, PyTorch {ref.shape}")
    psnr = output_psnr(out, ref)
    versions = exporter.sdk_versions()
    return Verification(
        runtime=exporter.runtime + _version_note(versions),
        reference=f"PyTorch {torch.__version__} eager, float32",
        image=image,
        input_shape=tuple(x.shape),
        psnr_db=psnr,
        max_abs_diff=float(np.max(np.abs(out.astype(np.float64) - ref))),
        threshold_db=FLOAT_PSNR_DB,
        passed=psnr > FLOAT_PSNR_DB,
    )


def _version_note(versions: dict[str, str]) -> str:
    return " (" + ", ".join(f"{k} {v}" for k, v in versions.items()) + ")" if versions else ""
