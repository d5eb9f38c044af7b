"""Patches/s one data-loader worker delivers from a 2K image folder, with and without prepared sub-images.

    python -m benchmarks loader [--images 16] [--size 2040x1356] [--scale 4] [--patch 48] [--batch 16]
                                [--seconds 4] [--rounds 3] [--folder DIR] [--prepare-workers N]

Builds a DIV2K-layout folder of `--images` synthetic 2K photos (PNG, multi-scale texture plus sensor
noise: ~4.5 MB each at 2040x1356 like DIV2K's, so decoding costs what a real one costs) with their
shipped MATLAB-bicubic LR, or uses `--folder`; runs `edgesr.data.prepare.prepare` on it (timed); then
times `TrainPatches` through `build_train_loader(workers=0)` -- exactly the work one loader worker
does per batch, collate included, on one thread as DataLoader workers run -- in interleaved rounds:

  2K folder     preload=False: every patch decodes a whole 2K HR PNG and its LR;
  sub-images    preload=False on the prepared folder: every patch decodes one 480x480 HR crop + LR;
  2K preloaded  preload=True (what `edgesr train` does today): every image decoded once up front,
                a patch is a slice of memory; its cost is start-up time and RAM, printed with it.

and prints what the figures mean for feeding a GPU step of the paper recipes (batch 16, LR patch 48).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.export_latency import cpu_name

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

CROP, STEP, THRESH = 480, 240, 48  # prepare's defaults (BasicSR's DIV2K recipe)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loader", help="patches/s of one loader worker: 2K folder vs prepared sub-images")
    p.add_argument("--images", type=int, default=16, help="synthetic 2K images (default 16)")
    p.add_argument("--size", default="2040x1356", help="WxH of the synthetic images (DIV2K's typical)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--patch", type=int, default=48, help="LR patch side (the paper recipes: 48)")
    p.add_argument("--batch", type=int, default=16, help="patches per step (the paper recipes: 16)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per mode per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--folder", type=Path, help="a real training folder instead of synthetic images")
    p.add_argument("--prepare-workers", type=int, default=None, help="default: os.cpu_count()")
    p.set_defaults(run=run)


# ----------------------------------------------------------------------------------- synthetic set


def synthetic_photo(h: int, w: int, seed: int) -> np.ndarray:
    """uint8 HxWx3 with photo-like statistics: smooth regions, mid-scale texture, fine detail, noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((6, 60.0), (40, 30.0), (200, 18.0)):  # cells across the width, amplitude
        low = rng.normal(0, 1, (max(2, cells * h // w), cells, 3)).astype(np.float32)
        for c in range(3):
            up = Image.fromarray(low[..., c], mode="F").resize((w, h), Image.Resampling.BICUBIC)
            img[..., c] += amp * np.asarray(up)
    img += rng.normal(0, 3.0, (h, w, 3)).astype(np.float32)  # sensor noise: what makes PNG big
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def _make_image(args: tuple[Path, str, int, int, int, int]) -> None:
    from edgesr.data.bicubic import degrade
    from edgesr.data.images import write_image

    root, name, h, w, scale, seed = args
    hr = synthetic_photo(h, w, seed)
    write_image(root / "DIV2K_train_HR" / f"{name}.png", hr)
    write_image(root / "DIV2K_train_LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png", degrade(hr, scale))


def make_div2k_like(root: Path, n: int, w: int, h: int, scale: int, workers: int) -> Path:
    """`root/DIV2K_train_HR/0001.png ...` plus the shipped `DIV2K_train_LR_bicubic/X{scale}`."""
    jobs = [(root, f"{i:04d}", h, w, scale, i) for i in range(1, n + 1)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_image, jobs))
    return root


# ----------------------------------------------------------------------------------- timing


def _patches_per_s(
    dataset: Dataset[dict[str, torch.Tensor]], batch: int, start_step: int, seconds: float
) -> float:
    from edgesr.data.datasets import build_train_loader

    n = 0
    t0 = time.perf_counter()
    for b in build_train_loader(dataset, batch, workers=0, start_step=start_step):
        n += int(b["lr"].shape[0])
        if time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def run(args: argparse.Namespace) -> int:
    import torch

    from edgesr.data.datasets import TrainPatches, load_lr
    from edgesr.data.pairs import find_pairs
    from edgesr.data.prepare import prepare

    w, h = (int(v) for v in args.size.lower().split("x"))
    s, p, batch = args.scale, args.patch, args.batch
    cpus = os.cpu_count() or 1
    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory(prefix="edgesr-loader-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        if args.folder is None:
            root = make_div2k_like(tmp / "DIV2K", args.images, w, h, s, cpus)
            source = f"{args.images} synthetic {w}x{h} PNGs + shipped x{s} LR (DIV2K layout)"
        else:
            root = args.folder
            source = str(args.folder)
        made_s = time.perf_counter() - t0
        raw_pairs = find_pairs(root, s, split_hint="train")
        shipped = sum(pr.lr_path is not None for pr in raw_pairs)
        cache = tmp / "lr-cache"
        if shipped < len(raw_pairs):  # make the synthesised LRs now, untimed: training does that once
            for pr in raw_pairs:
                load_lr(pr, s, cache)

        rep = prepare(
            root, s, out=tmp / "sub", crop=CROP, step=STEP, thresh=THRESH, workers=args.prepare_workers
        )
        t0 = time.perf_counter()
        raw = TrainPatches(raw_pairs, s, p, length=1 << 40, seed=0, cache_dir=cache, preload=False)
        raw_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        sub_pairs = find_pairs(rep.out, s)
        sub = TrainPatches(sub_pairs, s, p, length=1 << 40, seed=0, cache_dir=cache, preload=False)
        sub_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        pre = TrainPatches(raw_pairs, s, p, length=1 << 40, seed=0, cache_dir=cache, preload=True)
        pre_s = time.perf_counter() - t0
        pre_mb = sum(a.nbytes for im in pre._images or [] for a in im) / 1e6
        sub_pre_mb = sum(lh * lw * 3 * (1 + s * s) for lh, lw in sub.lr_sizes) / 1e6

        sub_mb, raw_mb = _folder_mb(rep.out), _folder_mb(raw_pairs[0].hr_path.parent)
        modes = {"2K folder": raw, "sub-images": sub, "2K preloaded": pre}
        for ds in modes.values():  # warm-up: imports, page cache
            _patches_per_s(ds, batch, 0, 0.0)
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds):  # interleaved: drifting machine load hits every mode alike
            for m, ds in modes.items():
                rates[m].append(_patches_per_s(ds, batch, 1000 * (r + 1), args.seconds))

    print(f"machine: {cpu_name()}, {cpus} cores, torch {torch.__version__}, 1 thread (as a loader worker)")
    print(f"data: {source}; x{s}, LR patch {p} (HR {p * s}), batch {batch}")
    print(
        f"prepare: {rep.images} images -> {rep.crops} sub-images ({rep.crops / max(rep.images, 1):.0f} per "
        f"image; crop {CROP} step {STEP} thresh {THRESH}) in {rep.seconds:.1f} s with "
        f"{min(args.prepare_workers or cpus, rep.images)} worker processes "
        f"({rep.seconds / max(rep.images, 1):.2f} s/image); on disk "
        f"{sub_mb:.0f} MB (HR + LR crops) vs {raw_mb:.0f} MB of 2K HR"
        + (f" (synthetic set made in {made_s:.0f} s)" if args.folder is None else "")
    )
    lr_note = (
        "both folders ship their LR: each patch decodes one HR and one LR file, the LR cache is not used"
        if shipped == len(raw_pairs)
        else f"{len(raw_pairs) - shipped} of {len(raw_pairs)} 2K images ship no LR: their MATLAB-bicubic "
        "LR was made into edgesr's LR cache before timing, so a 2K patch decodes the 2K HR + the cached "
        "LR PNG (never re-degrades); the sub-images carry their LR crops"
    )
    print(f"cached: {lr_note}; files come from the OS page cache (decode is measured, not disk)")
    print(
        f"opening the data set (find_pairs + TrainPatches' header checks): 2K {raw_open:.2f} s for "
        f"{len(raw_pairs)} images, sub-images {sub_open:.2f} s for {len(sub_pairs)} "
        f"({1000 * sub_open / len(sub_pairs):.2f} ms per pair)"
    )
    print()
    print(f"| mode | patches/s (median of {args.rounds}, min-max) | ms/patch | batches/s | "
          f"workers for 10 steps/s | workers for 30 steps/s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    med = {m: statistics.median(v) for m, v in rates.items()}
    for m, v in rates.items():
        need = [math.ceil(k * batch / med[m]) for k in (10, 30)]
        print(
            f"| {m} | {med[m]:.1f} ({min(v):.1f}-{max(v):.1f}) | {1000 / med[m]:.2f} | "
            f"{med[m] / batch:.2f} | {need[0]} | {need[1]} |"
        )
    print()
    speedup = med["sub-images"] / med["2K folder"]
    print(
        f"what it means: a GPU step of batch {batch} at 10 / 30 steps/s eats {10 * batch} / {30 * batch} "
        f"patches/s. From the 2K folder one worker makes {med['2K folder']:.1f} patches/s, so that takes "
        f"{math.ceil(10 * batch / med['2K folder'])} / {math.ceil(30 * batch / med['2K folder'])} worker "
        f"processes (each a CPU core of this speed); from prepared sub-images {speedup:.1f}x more per "
        "worker, "
        f"{math.ceil(10 * batch / med['sub-images'])} / {math.ceil(30 * batch / med['sub-images'])} workers."
    )
    per_image, sub_ratio = pre_mb / len(raw_pairs), sub_pre_mb / max(pre_mb, 1e-9)
    print(
        f"preloading (edgesr train does it when the decoded set fits data.preload_max_gb, default 8) "
        f"decodes nothing per patch but took "
        f"{pre_s:.1f} s and {pre_mb:.0f} MB here: {per_image:.1f} MB per 2K image, {per_image * 0.8:.1f} GB "
        f"for DIV2K's 800 per training process (each DDP rank its own; forked loader workers share it). "
        f"Preloading the sub-images would hold {sub_ratio:.1f}x that (the windows overlap): prepared "
        "sub-images are read per patch (over the preload budget), where memory stays flat whatever the "
        "size of the set."
    )
    return 0
