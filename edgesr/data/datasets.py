"""Data set specs, the cache of synthesised LR, and the train/eval torch datasets.

Determinism contract for training: item i of `TrainPatches` depends only on (seed, i) -- never on
the worker, process or the order items are requested -- so a run resumed at step t that starts
its sampler at index t * batch sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin
from torch.utils.data import DataLoader, Dataset, Sampler

from edgesr.data.bicubic import degrade, modcrop
from edgesr.data.catalog import DATASETS, resolve
from edgesr.data.images import image_size, read_image, to_tensor
from edgesr.data.pairs import DatasetError, ImagePair, default_cache_dir, find_pairs
from edgesr.data.samples import SPLITS, builtin_pairs
from edgesr.files import atomic_path

__all__ = [
    "open_dataset",
    "dataset_name",
    "load_lr",
    "lr_cache_path",
    "EvalImages",
    "TrainPatches",
    "StepBatchSampler",
    "build_train_loader",
    "eval_sets",
]

# Bump when the degradation changes so every cached LR is regenerated.
_DEGRADATION_VERSION = "matlab-bicubic-v1"


def open_dataset(
    spec: str,
    scale: int,
    cache_dir: str | os.PathLike[str] | None = None,
    split_hint: str | None = None,
) -> list[ImagePair]:
    """Pairs for a dataset spec: a folder path, `builtin:train` / `builtin:val` / `builtin:smooth`,
    or a catalog name (`div2k`, `set5`, ...: its folder under the data root, see `data.catalog`)."""
    if spec.startswith("builtin:"):
        split = spec.removeprefix("builtin:")
        if split not in SPLITS:
            raise DatasetError(
                f"{spec}: unknown built-in set; use {', '.join('builtin:' + s for s in SPLITS)}"
            )
        return builtin_pairs(split, cache_dir)  # type: ignore[arg-type]
    if (named := resolve(spec)) is not None:
        folder, split = named
        return find_pairs(folder, scale, split_hint or split)
    return find_pairs(spec, scale, split_hint)


def dataset_name(spec: str) -> str:
    """Display name of a data set: `builtin:val` -> `val`, `bench/Set5/HR` -> `Set5`, else the folder name."""
    if spec.startswith("builtin:"):
        return spec.split(":", 1)[1]
    if (entry := DATASETS.get(spec.lower())) is not None and entry.path:
        return Path(entry.path).name  # set5 -> Set5, as the papers' tables write it
    path = Path(spec)
    return path.parent.name if path.name in ("HR", "hr") and path.parent.name else path.name


# ----------------------------------------------------------------------------------- LR cache


def _fingerprint(hr_path: Path, scale: int) -> str:
    st = hr_path.stat()
    return json.dumps(
        {
            "hr": str(hr_path),
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
            "scale": scale,
            "degradation": _DEGRADATION_VERSION,
        },
        sort_keys=True,
    )


def lr_cache_path(hr_path: Path, scale: int, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`cache_dir/<folder>-<hash of the absolute HR folder>/X{scale}/<stem>.png`."""
    hr_path = Path(hr_path).resolve()
    folder = hr_path.parent
    dataset_id = f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:12]}"
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / dataset_id / f"X{scale}" / f"{hr_path.stem}.png"


def _cached_fingerprint(path: Path) -> str | None:
    try:
        with Image.open(path) as img:
            return img.text.get("edgesr-source")  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None  # unreadable cache entry: regenerate it


def load_lr(
    pair: ImagePair, scale: int, cache_dir: str | os.PathLike[str] | None = None, hr: np.ndarray | None = None
) -> np.ndarray:
    """uint8 LR of `pair`: the shipped file, else the cached or freshly made MATLAB-bicubic LR.

    A cached LR records the HR's absolute path, mtime, size and the degradation version in a PNG
    text chunk; when any of those changed (the image was edited), the LR is made again.
    """
    if pair.lr_path is not None:
        return read_image(pair.lr_path)
    hr_path = Path(pair.hr_path).resolve()
    cached = lr_cache_path(hr_path, scale, cache_dir)
    fingerprint = _fingerprint(hr_path, scale)
    if cached.is_file() and _cached_fingerprint(cached) == fingerprint:
        return read_image(cached)
    lr = degrade(hr if hr is not None else read_image(hr_path), scale)
    info = PngImagePlugin.PngInfo()
    info.add_text("edgesr-source", fingerprint)
    # Atomic: concurrent workers making the same LR never expose a half-written PNG.
    with atomic_path(cached) as tmp:
        Image.fromarray(lr).save(tmp, format="PNG", pnginfo=info)
    return lr


def _check_lr_size(pair: ImagePair, scale: int, hr_hw: tuple[int, int]) -> None:
    if pair.lr_path is None:
        return
    lr_hw = image_size(pair.lr_path)
    want = (hr_hw[0] - hr_hw[0] % scale, hr_hw[1] - hr_hw[1] % scale)
    if (lr_hw[0] * scale, lr_hw[1] * scale) != want:
        raise DatasetError(
            f"{pair.lr_path}: LR is {lr_hw[1]}x{lr_hw[0]}, so x{scale} gives "
            f"{lr_hw[1] * scale}x{lr_hw[0] * scale}, but the HR {pair.hr_path} is {want[1]}x{want[0]} "
            "after cropping to a multiple of the scale (wrong scale folder?)"
        )


# ----------------------------------------------------------------------------------- datasets


class EvalImages(Dataset[dict[str, object]]):
    """Whole-image evaluation set.

    Item: {"name": str, "lr": float 3xhxw in [0,1], "hr": float 3x(h*s)x(w*s) in [0,1]}, where
    the HR is modcropped to a multiple of `scale`. Shipped LR sizes are checked up front.
    """

    def __init__(
        self, pairs: list[ImagePair], scale: int, cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        if not pairs:
            raise DatasetError("EvalImages: empty list of image pairs")
        self.pairs, self.scale, self.cache_dir = list(pairs), scale, cache_dir
        for pair in self.pairs:
            _check_lr_size(pair, scale, image_size(pair.hr_path))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, object]:
        pair = self.pairs[i]
        hr = modcrop(read_image(pair.hr_path), self.scale)
        lr = load_lr(pair, self.scale, self.cache_dir, hr=hr)
        return {"name": pair.name, "lr": to_tensor(lr), "hr": to_tensor(hr)}


def _dihedral(a: np.ndarray, t: int) -> np.ndarray:
    # t in 0..7 enumerates the 8 symmetries of the square: bit0 flips W, bit1 flips H,
    # bit2 transposes H and W (HWC arrays).
    if t & 1:
        a = a[:, ::-1]
    if t & 2:
        a = a[::-1]
    if t & 4:
        a = a.transpose(1, 0, 2)
    return a


class TrainPatches(Dataset[dict[str, torch.Tensor]]):
    """Random aligned LR/HR patches; item i is a pure function of (seed, i).

    Item i draws from `np.random.default_rng([seed, i])`: the image (uniform over images), the
    LR crop corner, and (if `augment`) one of the 8 flip/rot90 variants. Returns
    {"lr": float 3xPxP, "hr": float 3x(sP)x(sP)} in [0, 1], P = `patch_size` (LR pixels).

    Args:
        length: number of items, i.e. steps * batch size.
        preload: decode every HR/LR once into memory (uint8) instead of on every item.
        preload_max_bytes: preload only when the decoded set (HR + LR, uint8, from the image
            headers: `decoded_bytes`) fits in this many bytes; else decode per item. Preloaded
            DIV2K train is 7.1 GB per training process; its prepared sub-images (edgesr data
            prepare) would be 3.3x that, as the crops overlap, and are made to be read per item.
        smooth_fraction: that fraction of items (drawn per item) is the flattest of `smooth_pool`
            random (image, corner) positions: the one whose LR patch has the least mean absolute
            neighbour difference. With 0 (the default) the draws are exactly those of uniform crops.
    """

    def __init__(
        self,
        pairs: list[ImagePair],
        scale: int,
        patch_size: int,
        length: int,
        seed: int,
        augment: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        preload: bool = True,
        preload_max_bytes: int | None = None,
        smooth_fraction: float = 0.0,
        smooth_pool: int = 16,
    ) -> None:
        if not pairs:
            raise DatasetError("TrainPatches: empty list of image pairs")
        if patch_size < 1 or length < 0:
            raise ValueError(f"TrainPatches: bad patch_size={patch_size} or length={length}")
        self.pairs, self.scale, self.patch_size = list(pairs), scale, patch_size
        self.length, self.seed, self.augment, self.cache_dir = length, seed, augment, cache_dir
        if not 0 <= smooth_fraction <= 1 or smooth_pool < 1:
            raise ValueError(f"TrainPatches: smooth_fraction={smooth_fraction}, smooth_pool={smooth_pool}")
        self.smooth_fraction, self.smooth_pool = smooth_fraction, smooth_pool
        self.lr_sizes: list[tuple[int, int]] = []
        for pair in self.pairs:
            hr_hw = image_size(pair.hr_path)
            _check_lr_size(pair, scale, hr_hw)
            lr_hw = (hr_hw[0] // scale, hr_hw[1] // scale)
            if min(lr_hw) < patch_size:
                raise DatasetError(
                    f"{pair.hr_path}: image is {hr_hw[1]}x{hr_hw[0]} (LR {lr_hw[1]}x{lr_hw[0]} at "
                    f"x{scale}), smaller than the {patch_size}x{patch_size} LR patch"
                )
            self.lr_sizes.append(lr_hw)
        self.decoded_bytes = sum(3 * lh * lw * (1 + scale * scale) for lh, lw in self.lr_sizes)
        self._images: list[tuple[np.ndarray, np.ndarray]] | None = None
        if preload and (preload_max_bytes is None or self.decoded_bytes <= preload_max_bytes):
            self._images = [self._load(k) for k in range(len(self.pairs))]

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[k]
        hr = modcrop(read_image(pair.hr_path), self.scale)
        return load_lr(pair, self.scale, self.cache_dir, hr=hr), hr

    @property
    def preloaded(self) -> bool:
        return self._images is not None

    def __len__(self) -> int:
        return self.length

    def _image(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, HR) of image k, preloaded or decoded now."""
        return self._images[k] if self._images is not None else self._load(k)

    def _position(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """A uniform random (image, LR top, LR left)."""
        k = int(rng.integers(len(self.pairs)))
        lh, lw = self.lr_sizes[k]
        p = self.patch_size
        return k, int(rng.integers(lh - p + 1)), int(rng.integers(lw - p + 1))

    def _roughness(self, lr: np.ndarray, y: int, x: int) -> float:
        """Mean absolute horizontal + vertical neighbour difference of the LR patch (8-bit levels)."""
        a = lr[y : y + self.patch_size, x : x + self.patch_size].astype(np.int16)
        return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(f"TrainPatches index {i} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, i])
        if self.smooth_fraction and rng.random() < self.smooth_fraction:
            candidates = [self._position(rng) for _ in range(self.smooth_pool)]
            loaded = {c[0]: self._image(c[0]) for c in candidates}  # each image decoded once
            k, y, x = min(candidates, key=lambda c: self._roughness(loaded[c[0]][0], c[1], c[2]))
            lr, hr = loaded[k]
        else:
            k, y, x = self._position(rng)
            lr, hr = self._image(k)
        p, s = self.patch_size, self.scale
        t = int(rng.integers(8)) if self.augment else 0
        lr_patch = _dihedral(lr[y : y + p, x : x + p], t)
        hr_patch = _dihedral(hr[y * s : (y + p) * s, x * s : (x + p) * s], t)
        return {"lr": to_tensor(lr_patch), "hr": to_tensor(hr_patch)}


class StepBatchSampler(Sampler[list[int]]):
    """Batches of item indices for steps start..steps-1; rank r of `world` takes its slice of each.

    Step t on rank r reads items [(t * world + r) * batch, ... + batch): the randomness lives in the
    items (seeded by index), so the data of step t never depends on workers, ranks or restarts.
    """

    def __init__(self, start: int, steps: int, batch: int, rank: int = 0, world: int = 1) -> None:
        if batch < 1 or start < 0 or not 0 <= rank < world:
            raise ValueError(f"bad batch={batch}, start={start} or rank={rank} of world={world}")
        self.start, self.steps, self.batch, self.rank, self.world = (
            start,
            max(start, steps),
            batch,
            rank,
            world,
        )

    def __iter__(self) -> Iterator[list[int]]:
        for t in range(self.start, self.steps):
            first = (t * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))

    def __len__(self) -> int:
        return self.steps - self.start


def build_train_loader(
    dataset: Dataset[dict[str, torch.Tensor]],
    batch_size: int,
    workers: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> DataLoader[dict[str, torch.Tensor]]:
    """Loader of the batches of steps start_step.. until the dataset is used up (len = steps*batch*world).

    Resuming at step t gives exactly the batches t, t+1, ... of an uninterrupted run, whatever
    `workers` is, because items are seeded by index.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    steps = len(dataset) // (batch_size * world)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(start_step, steps, batch_size, rank, world),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_leave_signals_to_the_trainer if workers else None,
    )


def _leave_signals_to_the_trainer(_: int) -> None:
    """Ctrl-C reaches the whole process group: a worker that died of it would make the trainer's
    next batch fail before it could save; the trainer stops cleanly, then shuts the workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def eval_sets(
    specs: Sequence[str], scale: int, cache_dir: str | os.PathLike[str] | None = None
) -> dict[str, EvalImages]:
    """Evaluation data sets by display name; two specs with one name are an error, not an overwrite."""
    sets: dict[str, EvalImages] = {}
    for spec in specs:
        name = dataset_name(spec)
        if name in sets:
            raise DatasetError(f"two data sets are both named {name!r} ({spec}); give folders distinct names")
        sets[name] = EvalImages(open_dataset(spec, scale, cache_dir), scale, cache_dir)
    return sets
