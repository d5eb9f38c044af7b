"""Evaluation under the SR protocol: Y-channel PSNR/SSIM, border crop = scale, bicubic baseline.

The bicubic row upsamples the same LR the network sees with the MATLAB-exact bicubic, so every
row of a table is measured on identical inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from edgesr.data.bicubic import imresize
from edgesr.data.images import to_tensor, to_uint8
from edgesr.errors import DataError, UsageError
from edgesr.metrics import psnr_y, self_ensemble, ssim_y
from edgesr.models.zoo import is_zoo_ref, lookup


@dataclass(frozen=True)
class EvalRow:
    dataset: str
    method: str  # "bicubic", "teacher" or "width 0.25"
    width: float | None
    psnr: float  # dB, Y channel, mean over images
    ssim: float | None
    images: int
    # per image, in the data set's order (paired statistics across methods: edgesr.stats); () in
    # results written before edgesr kept them
    image_psnr: tuple[float, ...] = ()
    image_ssim: tuple[float, ...] = ()

    def __post_init__(self) -> None:  # results.json gives lists
        object.__setattr__(self, "image_psnr", tuple(self.image_psnr))
        object.__setattr__(self, "image_ssim", tuple(self.image_ssim))


def method_name(width: float) -> str:
    return "teacher (w=1)" if width == 1.0 else f"student w={width:g}"


def run_sr(
    model: nn.Module, lr: torch.Tensor, width: float | None = None, ensemble: bool = False
) -> torch.Tensor:
    """Super-resolve a batch `lr` (N x 3 x h x w, [0, 1]) at `width`; returns N x 3 x sh x sw.

    `width=None` runs the model as it is (full width, or a materialized model's own width). A
    materialized (stand-alone narrow) model cannot run at any other width: asking is an error.
    """
    fixed = getattr(model, "materialized_width", None)
    if fixed is not None:
        _check_fixed(fixed, [width] if width is not None else [])

        def fn(x: torch.Tensor) -> torch.Tensor:
            return model(x)
    else:

        def fn(x: torch.Tensor) -> torch.Tensor:
            return model(x, width=1.0 if width is None else width)

    return self_ensemble(fn, lr) if ensemble else fn(lr)


def _check_fixed(fixed: float, requested: Sequence[float]) -> None:
    other = [w for w in requested if abs(w - fixed) > 1e-9]
    if other:
        raise UsageError(
            f"this model was materialized at width {fixed:g}; it cannot run at width {other[0]:g}"
        )


def model_widths(model: nn.Module, requested: Sequence[float]) -> list[float]:
    """The widths to evaluate: a materialized model's own, else the requested ones and the teacher's."""
    fixed = getattr(model, "materialized_width", None)
    if fixed is not None:
        _check_fixed(fixed, requested)
        return [float(fixed)]
    return sorted({float(w) for w in requested} | {1.0}, reverse=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    datasets: Mapping[str, Sequence[dict]],
    scale: int,
    widths: Sequence[float],
    self_ensemble: bool = False,
    with_ssim: bool = True,
    device: torch.device | str = "cpu",
) -> list[EvalRow]:
    """Mean Y-PSNR (and SSIM) per data set and width. Items are dicts with `lr`, `hr` (3xHxW)."""
    was_training = model.training
    model.eval()
    rows: list[EvalRow] = []
    try:
        for name, items in datasets.items():
            for w in model_widths(model, widths):
                psnrs, ssims = [], []
                for item in items:
                    sr = super_resolve(model, item["lr"], w, self_ensemble, device)
                    psnrs.append(psnr_y(sr, item["hr"], crop=scale))
                    if with_ssim:
                        ssims.append(ssim_y(sr, item["hr"], crop=scale))
                rows.append(_row(name, method_name(w), w, psnrs, ssims))
    finally:
        model.train(was_training)
    return rows


@torch.no_grad()
def super_resolve(
    model: nn.Module,
    lr: torch.Tensor,
    width: float | None = None,
    ensemble: bool = False,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One LR image (3 x h x w in [0, 1]) -> its SR image (3 x sh x sw), clamped to [0, 1] as saved."""
    return run_sr(model, lr.unsqueeze(0).to(device), width, ensemble).float().clamp(0, 1).cpu()[0]


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline of one LR image: MATLAB-exact imresize of its uint8 form."""
    return to_tensor(imresize(to_uint8(lr), scale=scale))


def bicubic_rows(datasets: Mapping[str, Sequence[dict]], scale: int, with_ssim: bool = True) -> list[EvalRow]:
    rows = []
    for name, items in datasets.items():
        psnrs, ssims = [], []
        for item in items:
            up = bicubic_upscale(item["lr"], scale)
            psnrs.append(psnr_y(up, item["hr"], crop=scale))
            if with_ssim:
                ssims.append(ssim_y(up, item["hr"], crop=scale))
        rows.append(_row(name, "bicubic", None, psnrs, ssims))
    return rows


def _row(name: str, method: str, width: float | None, psnrs: list[float], ssims: list[float]) -> EvalRow:
    if not psnrs:
        raise DataError(f"data set {name!r} has no images")
    ssim = sum(ssims) / len(ssims) if ssims else None
    return EvalRow(name, method, width, sum(psnrs) / len(psnrs), ssim, len(psnrs), tuple(psnrs), tuple(ssims))


def reported_rows(source: str | None, datasets: Sequence[str], self_ensemble: bool = False) -> list[EvalRow]:
    """What the paper reports for the zoo teacher `source` (`zoo:NAME`, e.g. a checkpoint's
    `meta.source`) on those of `datasets` it reports, as rows to print beside the measured ones; []
    for any other source. With `self_ensemble` the "+" numbers where the paper has them. The rows
    have `images == 0`: nothing was measured."""
    if not is_zoo_ref(source):
        return []
    teacher = lookup(source)
    plus = self_ensemble and bool(teacher.psnr_plus)
    table = teacher.psnr_plus if plus else teacher.psnr
    method = f"{teacher.ref}{'+' if plus else ''} " + ("reported" if teacher.by_authors else "re-measured*")
    by_name = {k.lower(): v for k, v in table.items()}
    if "b100" in by_name:  # B100 is also distributed as BSD100
        by_name["bsd100"] = by_name["b100"]
    return [EvalRow(d, method, None, float(v), None, 0) for d in datasets
            if (v := by_name.get(d.lower())) is not None]  # fmt: skip


def psnr_by_width(rows: Sequence[EvalRow]) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for r in rows:
        if r.width is not None:
            out.setdefault(r.dataset, {})[r.width] = r.psnr
    return out


def _grid(rows: Sequence[EvalRow]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Data sets as columns, methods as rows, cells 'PSNR / SSIM'."""
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    cell = {(r.method, r.dataset): r for r in rows}

    def fmt(r: EvalRow | None) -> str:
        if r is None:
            return ""
        return f"{r.psnr:.2f}" + ("" if r.ssim is None else f" / {r.ssim:.4f}")

    return datasets, [
        (m, [fmt(cell.get((m, d))) for d in datasets]) for m in dict.fromkeys(r.method for r in rows)
    ]


def table_markdown(rows: Sequence[EvalRow], title: str = "") -> str:
    datasets, grid = _grid(rows)
    lines = [f"**{title}**", ""] if title else []
    lines.append("| method | " + " | ".join(f"{d} PSNR-Y / SSIM" for d in datasets) + " |")
    lines.append("|---|" + "---|" * len(datasets))
    lines += [f"| {m} | " + " | ".join(vals) + " |" for m, vals in grid]
    return "\n".join(lines)


def print_table(rows: Sequence[EvalRow], title: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    datasets, grid = _grid(rows)
    table = Table(title=title)
    table.add_column("method")
    for d in datasets:
        table.add_column(f"{d}\nPSNR-Y / SSIM", justify="right")
    for m, vals in grid:
        table.add_row(m, *vals)
    (console or Console()).print(table)
