"""A tiny built-in train/val set made of the real photos that scikit-image ships.

No network is needed: the files are read from the installed `skimage/data` folder (never through
`skimage.data.*()`, which may download). They are converted once to RGB PNGs under
`cache_dir/builtin/{split}/HR/`, so they look like any benchmark folder on disk.

Split:
  - val: astronaut, chelsea, coffee -- natural photos with fine texture (fabric, fur, wood
    grain), three different sizes.
  - train: the other RGB photos, plus four grey texture photos replicated to RGB (camera, brick,
    grass, gravel) for more texture variety. Both motorcycle views go to train: they are a stereo
    pair of the same scene, so splitting them would leak val content into train. `color.png`
    (a synthetic colour wheel) is left out; so are the grey scans (moon, coins, page, text).
    The .jpg sources carry their JPEG artifacts into the HR, which is acceptable for a smoke-test
    set but means these numbers are not comparable with DIV2K results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from edgesr.data.images import read_image, write_image
from edgesr.data.pairs import ImagePair, default_cache_dir
from edgesr.errors import DataError, UsageError

__all__ = ["BUILTIN_TRAIN", "BUILTIN_VAL", "builtin_pairs", "skimage_data_dir"]

BUILTIN_VAL: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png")
BUILTIN_TRAIN: tuple[str, ...] = (
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "ihc.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
)


def skimage_data_dir() -> Path:
    """The installed `skimage/data` folder (imported lazily: scikit-image is slow to import)."""
    import skimage.data

    return Path(os.path.dirname(skimage.data.__file__))


def builtin_pairs(
    split: Literal["train", "val"], cache_dir: str | os.PathLike[str] | None = None
) -> list[ImagePair]:
    """Materialise the built-in `split` as `cache_dir/builtin/{split}/HR/*.png`; return its pairs.

    Idempotent: a PNG is (re)written, atomically, only when missing or older than its source.
    The pairs carry no LR; the datasets make it with the MATLAB-bicubic degradation.
    """
    if split not in ("train", "val"):
        raise UsageError(f"builtin split must be 'train' or 'val', got {split!r}")
    names = BUILTIN_TRAIN if split == "train" else BUILTIN_VAL
    src_dir = skimage_data_dir()
    hr_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "builtin" / split / "HR"
    pairs = []
    for name in names:
        src = src_dir / name
        if not src.is_file():
            raise DataError(f"{src}: built-in sample image missing from the scikit-image install")
        dst = hr_dir / f"{Path(name).stem}.png"
        if not dst.is_file() or dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
            write_image(dst, read_image(src))
        pairs.append(ImagePair(name=dst.stem, hr_path=dst, lr_path=None))
    return sorted(pairs, key=lambda p: p.name)
