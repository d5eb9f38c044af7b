"""`edgesr data prepare`: aligned LR/HR sub-images of a training set, made once in worker processes.

A training step draws random 48x48 LR patches; from a 2K PNG that costs decoding all 2.8 MP of it
for one patch. Cut into 480x480 sub-images (BasicSR's recipe, `extract_subimages.py` in
XPixelGroup/BasicSR: windows at 0, step, 2*step, ... plus one flush with the far edge when more than
`thresh` pixels are left over) a patch costs decoding ~0.23 MP. The output is a benchmark-layout
folder that `find_pairs` already reads, so `data.train: data/DIV2K/DIV2K_train_HR_sub` just works:

    <out>/HR/0001_s001.png ...                  HR crops, crop x crop
    <out>/LR_bicubic/X4/0001_s001x4.png ...     LR crops, (crop/scale)^2, aligned with the HR crops
    <out>/.edgesr-prepared.json                 settings, source and counts (present = complete)

LR crops come from the LR the set ships when it ships one, else from the MATLAB-bicubic degrade of
the whole (mod-cropped) HR image -- the LR that training on the 2K folder itself sees (`load_lr`):
degrading each HR crop on its own would differ within a few pixels of the crop's border.
The output is written under a staging folder next to `out` and moved into place at the end, so a
failure or Ctrl-C leaves nothing half-written; the source images are only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgesr.data.bicubic import degrade, modcrop
from edgesr.data.images import read_image
from edgesr.data.pairs import DatasetError, ImagePair, find_pairs
from edgesr.errors import EdgesrError, UsageError
from edgesr.files import atomic_path, atomic_write_json, is_no_space

__all__ = ["MARKER", "PrepareError", "PrepareReport", "crop_positions", "default_out", "prepare"]

MARKER = ".edgesr-prepared.json"
_FORMAT = 1
_DEGRADATION = "matlab-bicubic-v1"  # as edgesr.data.datasets: a new degradation needs a new folder
# BasicSR writes level 3 with OpenCV for speed; with Pillow, level 6 (its default) gives files ~12%
# smaller that decode ~15% faster (a 480x480 crop: 8.6 vs 10 ms) for 40 ms more once per crop written
# (measured on this project's 2-core EPYC): a crop is written once and decoded thousands of times.
_PNG_LEVEL = 6
Progress = Callable[[int, int], None]


class PrepareError(DatasetError):
    """A preparation that cannot be made or reused; the message names the folder and what to do."""


@dataclass(frozen=True)
class PrepareReport:
    """What `prepare` made (or found already made).

    out: the folder to train on (`data.train: <out>`); hr_dir / lr_dir: its HR and LR crops.
    images: source images cut; crops: aligned LR/HR sub-image pairs in `out`; shipped_lr: source
    images whose LR crops came from the shipped LR (the others' from the MATLAB-bicubic degrade);
    skipped: source image names smaller than the crop in height or width (no crop made).
    already_done: `out` already held this preparation and nothing was written; seconds: wall time.
    """

    out: Path
    hr_dir: Path
    lr_dir: Path
    scale: int
    images: int
    crops: int
    shipped_lr: int
    skipped: tuple[str, ...]
    already_done: bool
    seconds: float


def crop_positions(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Window starts along one axis: 0, step, 2*step, ... while the window fits, plus `length - crop`
    when more than `thresh` pixels would be left uncovered (BasicSR's rule). Empty if crop > length."""
    if crop > length:
        return []
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def default_out(hr_dir: Path) -> Path:
    """`DIV2K/DIV2K_train_HR` -> `DIV2K/DIV2K_train_HR_sub`; a benchmark set's `Set5/HR` -> `Set5_sub`."""
    named = hr_dir.parent if hr_dir.name == "HR" else hr_dir
    return named.parent / f"{named.name}_sub"


def _check_settings(scale: int, crop: int, step: int, thresh: int, workers: int | None) -> None:
    if scale < 1:
        raise UsageError(f"scale={scale}: must be a whole number >= 1")
    for name, value in (("crop", crop), ("step", step)):
        if value < 1:
            raise UsageError(f"{name}={value}: must be >= 1 (HR pixels)")
        if value % scale:
            near = max(scale, round(value / scale) * scale)
            raise UsageError(
                f"{name}={value} is not a multiple of the scale x{scale}, so the LR {name} would be "
                f"{value / scale:g} pixels and the LR crops could not be aligned; use e.g. {name}={near}"
            )
    if thresh < 0:
        raise UsageError(f"thresh={thresh}: must be >= 0 (HR pixels)")
    if workers is not None and workers < 1:
        raise UsageError(f"workers={workers}: must be >= 1")


def _sources(pairs: Sequence[ImagePair]) -> dict[str, object]:
    """The source folders and a fingerprint of every file's name, size and mtime: a re-run on edited
    or added images must not pass for a finished one."""
    rows = []
    for p in pairs:
        for path in (p.hr_path, p.lr_path):
            if path is not None:
                st = path.stat()
                rows.append([str(path), st.st_size, st.st_mtime_ns])
    lr_dirs = sorted({str(p.lr_path.parent) for p in pairs if p.lr_path is not None})
    return {
        "hr_dir": str(pairs[0].hr_path.parent),
        "lr_dir": lr_dirs[0] if len(lr_dirs) == 1 else None,
        "images": len(pairs),
        "fingerprint": hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
    }


# ------------------------------------------------------------------------------ one image (worker)


@dataclass(frozen=True)
class _Task:
    pair: ImagePair
    scale: int
    crop: int
    step: int
    thresh: int
    hr_dir: Path
    lr_dir: Path


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", compress_level=_PNG_LEVEL)


def _cut(task: _Task) -> tuple[str, int, bool]:
    """Write the aligned crops of one image: (its name, crops written, LR came from the shipped file)."""
    pair, s = task.pair, task.scale
    try:
        hr = modcrop(read_image(pair.hr_path), s)
        h, w = hr.shape[:2]
        ys = crop_positions(h, task.crop, task.step, task.thresh)
        xs = crop_positions(w, task.crop, task.step, task.thresh)
        if not ys or not xs:
            return pair.name, 0, False
        if pair.lr_path is not None:
            lr = read_image(pair.lr_path)
            if lr.shape[0] * s != h or lr.shape[1] * s != w:
                raise PrepareError(
                    f"{pair.lr_path}: LR is {lr.shape[1]}x{lr.shape[0]}, so x{s} gives "
                    f"{lr.shape[1] * s}x{lr.shape[0] * s}, but the HR {pair.hr_path} is {w}x{h} after "
                    "cropping to a multiple of the scale (wrong scale folder?)"
                )
        else:
            lr = degrade(hr, s)
        c, lc = task.crop, task.crop // s
        digits = max(3, len(str(len(ys) * len(xs))))
        index = 0
        for y in ys:  # row-major numbering, as BasicSR's
            for x in xs:
                index += 1
                name = f"{pair.name}_s{index:0{digits}d}"
                _save_png(task.hr_dir / f"{name}.png", hr[y : y + c, x : x + c])
                _save_png(task.lr_dir / f"{name}x{s}.png", lr[y // s : y // s + lc, x // s : x // s + lc])
        return pair.name, index, pair.lr_path is not None
    except PrepareError:
        raise
    except EdgesrError as e:
        # Some edgesr errors (ImageError) take several constructor arguments and would not survive
        # the trip back from a worker process; the message already names the file.
        raise PrepareError(str(e)) from None


def _ignore_signals() -> None:
    # Ctrl-C reaches the whole process group: the parent cancels what is queued and waits for the
    # images in hand, then removes the staging folder; a worker dying of it would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(tasks: list[_Task], workers: int, progress: Progress | None) -> Iterator[tuple[str, int, bool]]:
    """Results of `_cut` over `tasks` (in completion order), in this process when workers == 1."""
    total = len(tasks)
    if progress:
        progress(0, total)
    if workers == 1:
        for done, task in enumerate(tasks, 1):
            yield _cut(task)
            if progress:
                progress(done, total)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_signals)
    try:
        pending: set[Future[tuple[str, int, bool]]] = {pool.submit(_cut, t) for t in tasks}
        done = 0
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in finished:
                yield fut.result()  # re-raises a worker's error here
                done += 1
                if progress:
                    progress(done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _marker_settings(marker: dict[str, Any]) -> dict[str, Any]:
    return {k: marker.get(k) for k in ("format", "scale", "crop", "step", "thresh", "degradation", "source")}


def _existing(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a finished preparation with these settings in `out`; None if `out` is absent."""
    if not out.exists():
        return None
    marker_path = out / MARKER
    if not marker_path.is_file():
        raise PrepareError(
            f"{out}: exists and is not an `edgesr data prepare` output (no {MARKER}); "
            "delete it or choose another --out"
        )
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError) as e:
        raise PrepareError(f"{marker_path}: unreadable ({e}); delete {out} and prepare again") from None
    have = _marker_settings(marker)
    if have != wanted:
        diff = [
            f"{k}: {have[k]!r} -> {wanted[k]!r}" for k in wanted if have[k] != wanted[k] and k != "source"
        ]
        src_old, src_new = have.get("source") or {}, wanted["source"]
        if isinstance(src_old, dict) and isinstance(src_new, dict):
            if src_old.get("hr_dir") != src_new["hr_dir"]:
                diff.append(f"source {src_old.get('hr_dir')} -> {src_new['hr_dir']}")
            elif src_old != src_new:
                diff.append("the source images changed since (added, removed or edited)")
        raise PrepareError(
            f"{out}: holds sub-images prepared with other settings ({'; '.join(diff) or 'older format'}); "
            f"delete {out} to prepare again, or write these elsewhere with --out"
        )
    hr_count = sum(1 for _ in (out / "HR").iterdir()) if (out / "HR").is_dir() else 0
    if hr_count != marker.get("crops"):
        raise PrepareError(
            f"{out}: holds {hr_count} HR crops but was prepared with {marker.get('crops')}; "
            f"it was edited since: delete {out} and prepare again"
        )
    return marker


def prepare(
    root: str | os.PathLike[str],
    scale: int,
    *,
    out: str | os.PathLike[str] | None = None,
    crop: int = 480,
    step: int = 240,
    thresh: int = 48,
    workers: int | None = None,
    progress: Progress | None = None,
    split: str = "train",
) -> PrepareReport:
    """Cut every image of a training set into aligned LR/HR sub-images, once.

    Args:
        root: any folder `find_pairs` reads; a DIV2K folder gives its train split.
        scale: SR factor; the LR crops are (crop/scale)^2 and go to `<out>/LR_bicubic/X{scale}`.
        out: output folder; default `default_out(HR folder)`, e.g. `DIV2K/DIV2K_train_HR_sub`.
        crop, step, thresh: HR window side, stride and leftover threshold (BasicSR's 480/240, with
            `thresh` 48: a strip of 48 HR pixels or fewer at the far edge gets no window of its own).
            crop and step must be multiples of `scale`.
        workers: worker processes (default: the CPUs this process may use), one image per task;
            1 = this process.
        split: the DIV2K split to cut when `root` holds both (default "train").
        progress: called as progress(images done, images total), from this process.

    Returns:
        A `PrepareReport`; `already_done` when `out` already held this exact preparation.

    Raises:
        UsageError: bad crop/step/thresh/scale/workers. PrepareError (a DatasetError): `out` holds
        something else or other settings, or a source image cannot be read (nothing is left behind).
    """
    t0 = time.perf_counter()
    _check_settings(scale, crop, step, thresh, workers)
    pairs = find_pairs(root, scale, split_hint=split)
    names = [p.name for p in pairs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise PrepareError(
            f"{pairs[0].hr_path.parent}: several images share the name {', '.join(dup[:5])} "
            "(e.g. a.png and a.jpg); their crops would collide: keep one of each"
        )
    hr_src = pairs[0].hr_path.parent
    out_dir = (Path(out).expanduser() if out is not None else default_out(hr_src)).resolve()
    if out_dir == hr_src or out_dir in hr_src.parents:
        raise PrepareError(
            f"{out_dir}: the output would hold the source images {hr_src}; choose another --out"
        )
    settings: dict[str, Any] = {
        "format": _FORMAT, "scale": scale, "crop": crop, "step": step, "thresh": thresh,
        "degradation": _DEGRADATION, "source": _sources(pairs),
    }  # fmt: skip
    hr_out, lr_out = out_dir / "HR", out_dir / "LR_bicubic" / f"X{scale}"
    if (marker := _existing(out_dir, settings)) is not None:
        return PrepareReport(
            out_dir, hr_out, lr_out, scale, marker["images"], marker["crops"], marker["shipped_lr"],
            tuple(marker["skipped"]), True, time.perf_counter() - t0,
        )  # fmt: skip

    n_workers = min(workers or len(os.sched_getaffinity(0)) or 1, len(pairs))
    crops = shipped = 0
    skipped: list[str] = []
    with atomic_path(out_dir) as stage:
        stage_hr, stage_lr = stage / "HR", stage / "LR_bicubic" / f"X{scale}"
        stage_hr.mkdir(parents=True)
        stage_lr.mkdir(parents=True)
        tasks = [_Task(p, scale, crop, step, thresh, stage_hr, stage_lr) for p in pairs]
        try:
            for name, n, from_shipped in _run(tasks, n_workers, progress):
                crops += n
                shipped += from_shipped
                if n == 0:
                    skipped.append(name)
        except OSError as e:
            if is_no_space(e):
                raise PrepareError(
                    f"{out_dir}: no space left while writing the sub-images ({e}); they take about "
                    "3.5x the source folder's size at step = crop/2 (measured on 2K PNGs): free space "
                    "or choose another --out"
                ) from None
            raise
        if crops == 0:
            raise PrepareError(
                f"{hr_src}: every image is smaller than the {crop}x{crop} crop; use a smaller --crop"
            )
        skipped.sort()
        atomic_write_json(
            stage / MARKER,
            {
                **settings,
                "tool": "edgesr data prepare",
                "images": len(pairs) - len(skipped),
                "crops": crops,
                "shipped_lr": shipped,
                "skipped": skipped,
            },
        )
    return PrepareReport(
        out_dir, hr_out, lr_out, scale, len(pairs) - len(skipped), crops, shipped, tuple(skipped),
        False, time.perf_counter() - t0,
    )  # fmt: skip
