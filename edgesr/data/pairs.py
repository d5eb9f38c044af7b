"""Finding LR/HR pairs on disk: the DIV2K, benchmark and plain folder layouts, and the cache folder.

The lowest layer of `edgesr.data` that knows about data sets: `samples` (the built-in set) and
`datasets` (the LR cache and the torch datasets) build on it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgesr.errors import DataError
from edgesr.files import default_cache_dir  # its home is edgesr.files (the models' zoo uses it too)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "ImagePair",
    "default_cache_dir",
    "find_pairs",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_LAYOUTS = (
    "expected one of these layouts:\n"
    "  DIV2K:      DIV2K/DIV2K_train_HR/0001.png [+ DIV2K/DIV2K_train_LR_bicubic/X4/0001x4.png]\n"
    "              (or the DIV2K_train_HR / DIV2K_valid_HR folder itself)\n"
    "  benchmark:  Set5/HR/baby.png [+ Set5/LR_bicubic/X4/babyx4.png]\n"
    "  plain:      a folder of HR images (" + ", ".join(IMAGE_EXTENSIONS) + ")"
)


class DatasetError(DataError):
    """A data folder or image set that cannot be used; the message names the folder or files."""


@dataclass(frozen=True)
class ImagePair:
    """One HR image and, when the data set ships it, its LR counterpart (else None: synthesised)."""

    name: str
    hr_path: Path
    lr_path: Path | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.name,
    )


def _find_lr(lr_dir: Path, stem: str, scale: int) -> Path | None:
    # Shipped LR files are named <stem>x<scale>.<ext> (DIV2K and the benchmark packs).
    if not lr_dir.is_dir():
        return None
    for ext in IMAGE_EXTENSIONS:
        for cand in (lr_dir / f"{stem}x{scale}{ext}", lr_dir / f"{stem}x{scale}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _pairs(hr_dir: Path, lr_dir: Path | None, scale: int) -> list[ImagePair]:
    return [
        ImagePair(p.stem, p, _find_lr(lr_dir, p.stem, scale) if lr_dir is not None else None)
        for p in _images_in(hr_dir)
    ]


_DIV2K_HR = re.compile(r"^DIV2K_(?P<split>[A-Za-z0-9]+)_HR$")


def find_pairs(root: str | os.PathLike[str], scale: int, split_hint: str | None = None) -> list[ImagePair]:
    """List the image pairs under `root`, recognising the DIV2K, benchmark and plain layouts.

    Args:
        root: the DIV2K folder (or one of its `DIV2K_*_HR` folders), a benchmark folder holding
            `HR/` (e.g. `Set5`), or a plain folder of HR images.
        scale: SR factor; selects the shipped `X{scale}` LR folder when one exists.
        split_hint: "train" or "valid"/"val" to pick a DIV2K split when the folder holds both.

    Returns:
        Pairs sorted by file name. A missing shipped LR file leaves `lr_path` None, so that LR
        is synthesised with the same MATLAB-bicubic degradation.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found; {_LAYOUTS}")
    root = root.resolve()
    hr_dir: Path
    lr_dir: Path | None

    if m := _DIV2K_HR.match(root.name):  # pointed directly at DIV2K_train_HR
        hr_dir, lr_dir = root, root.parent / f"DIV2K_{m['split']}_LR_bicubic" / f"X{scale}"
    elif splits := sorted(p.name for p in root.iterdir() if p.is_dir() and _DIV2K_HR.match(p.name)):
        if split_hint is not None:
            wanted = "valid" if split_hint in ("val", "valid") else split_hint
            if f"DIV2K_{wanted}_HR" not in splits:
                raise DatasetError(f"{root}: no DIV2K_{wanted}_HR folder (found: {', '.join(splits)})")
            chosen = f"DIV2K_{wanted}_HR"
        elif len(splits) == 1:
            chosen = splits[0]
        else:
            # Guessing here could silently train on the validation images.
            raise DatasetError(
                f"{root}: holds several DIV2K splits ({', '.join(splits)}); point at one of them "
                "or pass split_hint='train' / 'valid'"
            )
        split = _DIV2K_HR.match(chosen)["split"]  # type: ignore[index]
        hr_dir, lr_dir = root / chosen, root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
    elif (root / "HR").is_dir():  # benchmark: Set5/HR + Set5/LR_bicubic/X4
        hr_dir, lr_dir = root / "HR", root / "LR_bicubic" / f"X{scale}"
    elif root.name == "HR" and (root.parent / "LR_bicubic").is_dir():  # pointed at Set5/HR
        hr_dir, lr_dir = root, root.parent / "LR_bicubic" / f"X{scale}"
    else:
        hr_dir, lr_dir = root, None

    pairs = _pairs(hr_dir, lr_dir, scale)
    if not pairs:
        raise DatasetError(f"{hr_dir}: no images found; {_LAYOUTS}")
    return pairs
