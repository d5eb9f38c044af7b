"""Where a student's error on a photo comes from: bias, coarse and fine error, and detail energy.

    python -m benchmarks error-split RUN [RUN ...] --data DIR [--photos NAME ...] [--block 8]
        [--out FILE.md]

Written to find out why a student falls under bicubic on some photos (docs/distillation.md: CSD at
x4 on the two dark, flat photos). RUN is a student checkpoint or run folder (e.g. a protocol run,
runs/distill_protocol_x4_anchor/w0.5/runs/csd-s0); DIR a folder of HR photos, each super-resolved
from its MATLAB-bicubic LR at the run's scale, exactly as the protocol validates (edgesr.data).
On the 8-bit Y channel with a border crop of `scale` (the protocol's Y-PSNR, edgesr.metrics):

- `psnr`: Y-PSNR (dB);
- `bias`: mean(SR - HR), in Y levels;
- `coarse`: the MSE of the error's BLOCK x BLOCK block means (error at scales of BLOCK pixels and
  more, the bias included); the blocks tile the image from the top left, those at the right and
  bottom edges cut short where the side is not a multiple of BLOCK;
- `fine`: the rest of the MSE. coarse + fine = MSE exactly: a block's mean is orthogonal to the
  deviations from it;
- `detail`: the SR's mean squared 4-neighbour Laplacian over the HR's: below 1, smoother than the
  photo; high-frequency energy in the wrong places raises it and the `fine` error together.

Bicubic gets one row per photo. A run's rows are labelled with its folder (or file) name, which
must differ between the runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from benchmarks import at_least_one
from edgesr.data import eval_sets, to_uint8
from edgesr.errors import UsageError
from edgesr.evaluate import bicubic_upscale, super_resolve
from edgesr.files import atomic_write_text
from edgesr.metrics import rgb_to_y
from edgesr.student import load_student


class ErrorSplit(NamedTuple):
    psnr: float
    bias: float
    coarse: float
    fine: float
    detail: float


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("error-split", help="per photo: a student's error split into bias, coarse and fine")
    p.add_argument("runs", nargs="+", type=Path, help="student checkpoints or run folders")
    p.add_argument("--data", required=True, type=Path, help="HR photos, e.g. a protocol's OUT/data/val")
    p.add_argument("--photos", nargs="+", help="only these photos (file stems); default: every photo")
    block = at_least_one("must be a whole number of pixels >= 1, got {n}")
    p.add_argument("--block", type=block, default=8, help="block side (px) between coarse and fine error")
    p.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    p.set_defaults(run=run)


def laplacian_energy(y: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of a 2-D array."""
    lap = 4 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1] - y[1:-1, :-2] - y[1:-1, 2:]
    return float(np.mean(lap**2))


def split_error(sr_y: np.ndarray, hr_y: np.ndarray, block: int = 8) -> ErrorSplit:
    """`ErrorSplit` of two equally sized 2-D Y arrays (0..255 scale, already border-cropped), each
    side at least 3 pixels; the edge blocks are cut short where a side is not a multiple of `block`."""
    if sr_y.shape != hr_y.shape or sr_y.ndim != 2:
        raise ValueError(f"need two equal 2-D arrays, got {sr_y.shape} and {hr_y.shape}")
    if block < 1 or min(sr_y.shape) < 3:
        size = f"{sr_y.shape[1]}x{sr_y.shape[0]}"
        raise ValueError(f"need block >= 1 and sides >= 3 px, got block {block} and {size}")
    err = sr_y.astype(np.float64) - hr_y.astype(np.float64)
    mse = float(np.mean(err**2))
    starts = [np.arange(0, n, block) for n in err.shape]
    sizes = [np.diff(np.append(s, n)) for s, n in zip(starts, err.shape, strict=True)]
    sums = np.add.reduceat(np.add.reduceat(err, starts[0], axis=0), starts[1], axis=1)
    means = sums / np.outer(sizes[0], sizes[1])
    per_pixel = np.repeat(np.repeat(means, sizes[0], axis=0), sizes[1], axis=1)  # each pixel's block mean
    coarse = float(np.mean(per_pixel**2))
    fine = float(np.mean((err - per_pixel) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    hr_detail = laplacian_energy(hr_y.astype(np.float64))
    detail = laplacian_energy(sr_y.astype(np.float64)) / hr_detail if hr_detail > 0 else float("nan")
    return ErrorSplit(psnr, float(err.mean()), coarse, fine, detail)


def y_cropped(img: torch.Tensor, crop: int) -> np.ndarray:
    """Y (0..255) of a 3 x H x W image in [0, 1] as its saved 8-bit file, `crop` px off each border."""
    y = rgb_to_y(to_uint8(img))
    return y[crop:-crop, crop:-crop] if crop else y


def measure(runs: Sequence[Path], data: Path, photos: Sequence[str] | None, block: int) -> list[dict]:
    """One row per (photo, bicubic or run): {"photo", "source", **ErrorSplit}."""
    labels = [run.name for run in runs]
    twice = sorted({name for name in labels if labels.count(name) > 1})
    if twice:
        names = ", ".join(twice)
        raise UsageError(f"two runs are both named {names}: rows are labelled by name; give distinct runs")
    students = [(run.name, load_student(run)) for run in runs]
    scales = {s.scale for _, s in students}
    if len(scales) != 1:
        raise UsageError(f"the runs have different scales {sorted(scales)}: compare runs of one scale")
    scale = scales.pop()
    images = list(eval_sets([str(data)], scale).values())[0]
    wanted = set(photos or [])
    missing = wanted - {pair.name for pair in images.pairs}
    if missing:
        names = ", ".join(sorted(missing))
        raise UsageError(f"{data}: no photo named {names} (give file stems, e.g. --photos Storm)")
    rows = []
    for i in [i for i, pair in enumerate(images.pairs) if not wanted or pair.name in wanted]:
        item = images[i]  # reads the photo and its LR: only the photos asked for
        hr = y_cropped(item["hr"], scale)
        if min(hr.shape) < 3:
            size = f"{hr.shape[1]}x{hr.shape[0]}"
            raise UsageError(f"{data}/{item['name']}: {size} px after the border crop; needs at least 3x3")
        outputs = [("bicubic", bicubic_upscale(item["lr"], scale))]
        with torch.no_grad():
            outputs += [(name, super_resolve(s.net.eval(), item["lr"])) for name, s in students]
        for source, sr in outputs:
            split = split_error(y_cropped(sr, scale), hr, block)
            rows.append({"photo": item["name"], "source": source, **split._asdict()})
    return rows


def table(rows: Sequence[dict], block: int) -> str:
    head = (f"| photo | source | Y-PSNR | bias | coarse MSE ({block} px blocks) | fine MSE | detail / HR |\n"
            "|---|---|---|---|---|---|---|\n")  # fmt: skip
    body = "".join(
        f"| {r['photo']} | {r['source']} | {r['psnr']:.2f} | {r['bias']:+.3f} | {r['coarse']:.4f} | "
        f"{r['fine']:.4f} | {r['detail']:.3f} |\n"
        for r in rows
    )
    return head + body


def run(args: argparse.Namespace) -> int:
    rows = measure(args.runs, args.data, args.photos, args.block)
    text = table(rows, args.block)
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0
