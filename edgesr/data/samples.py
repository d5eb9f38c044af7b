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
    (a synthetic colour wheel) is left out; so are the grey scans (coins, page, text).
  - smooth: what int8 quantization fails on and the textured val photos hide (docs/quantization.md):
    moon (a low-contrast grey scan) and `sky_gradient`, a generated sky (a smooth vertical gradient
    with a soft glow and a little grain). Used by the int8 quality gate of `edgesr export`.
    The .jpg sources carry their JPEG artifacts into the HR, which is acceptable for a smoke-test
    set but means these numbers are not comparable with DIV2K results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from edgesr.data.images import read_image, write_image
from edgesr.data.pairs import ImagePair, default_cache_dir
from edgesr.errors import DataError, UsageError

__all__ = [
    "BUILTIN_SMOOTH", "BUILTIN_TRAIN", "BUILTIN_VAL", "SPLITS", "builtin_image", "builtin_pairs",
    "skimage_data_dir", "sky_gradient",
]  # fmt: skip

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


def builtin_image(spec: str) -> Path:
    """`builtin:astronaut` -> the installed photo's path (any built-in val or train photo), so
    commands that take one image can be tried without one of your own."""
    name = spec.removeprefix("builtin:")
    files = {Path(f).stem: f for f in (*BUILTIN_VAL, *BUILTIN_TRAIN)}
    if name not in files:
        names = ", ".join(f"builtin:{n}" for n in files)
        raise UsageError(f"{spec}: no such built-in photo; the built-in photos are {names}")
    return skimage_data_dir() / files[name]


BUILTIN_SMOOTH: tuple[str, ...] = ("moon.png", "sky_gradient")  # the second is generated
SPLITS: dict[str, tuple[str, ...]] = {"train": (), "val": BUILTIN_VAL, "smooth": BUILTIN_SMOOTH}


def sky_gradient(height: int = 360, width: int = 480, seed: int = 0) -> np.ndarray:
    """A synthetic smooth sky (uint8 H x W x 3): deep blue at the top to a pale horizon, a soft glow,
    and grain of 0.6 levels (a real sky is never perfectly flat). Deterministic for a seed."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    top, horizon = np.array([40.0, 90.0, 170.0]), np.array([205.0, 215.0, 228.0])
    t = y**0.8
    sky = top * (1 - t) + horizon * t + 30.0 * np.exp(-((x - 0.7) ** 2 + (y - 0.8) ** 2) / 0.03)
    grain = np.random.default_rng(seed).normal(0.0, 0.6, (height, width, 1))
    return np.clip(np.round(sky + grain), 0, 255).astype(np.uint8)


def builtin_pairs(
    split: Literal["train", "val", "smooth"], cache_dir: str | os.PathLike[str] | None = None
) -> list[ImagePair]:
    """Materialise the built-in `split` as `cache_dir/builtin/{split}/HR/*.png`; return its pairs.

    Idempotent: a PNG is (re)written, atomically, only when missing or older than its source.
    The pairs carry no LR; the datasets make it with the MATLAB-bicubic degradation.
    """
    if split not in SPLITS:
        raise UsageError(f"builtin split must be one of {', '.join(SPLITS)}, got {split!r}")
    names = BUILTIN_TRAIN if split == "train" else SPLITS[split]
    src_dir = skimage_data_dir()
    hr_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "builtin" / split / "HR"
    pairs = []
    for name in names:
        if name == "sky_gradient":
            dst = hr_dir / f"{name}.png"
            if not dst.is_file():
                write_image(dst, sky_gradient())
            pairs.append(ImagePair(name=name, hr_path=dst, lr_path=None))
            continue
        src = src_dir / name
        if not src.is_file():
            raise DataError(f"{src}: built-in sample image missing from the scikit-image install")
        dst = hr_dir / f"{Path(name).stem}.png"
        if not dst.is_file() or dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
            write_image(dst, read_image(src))
        pairs.append(ImagePair(name=dst.stem, hr_path=dst, lr_path=None))
    return sorted(pairs, key=lambda p: p.name)
