"""The public SR data sets edgesr can fetch: where each archive lives, its pinned size and sha256
(and who published them), what it unpacks to, and the names recipes use for the sets on disk.

Layout under the data root (`$EDGESR_DATA`, else `./data`), the one `find_pairs` reads:

    DIV2K/DIV2K_train_HR/0001.png    DIV2K/DIV2K_train_LR_bicubic/X4/0001x4.png
    DIV2K/DIV2K_valid_HR/0801.png    DIV2K/DIV2K_valid_LR_bicubic/X4/0801x4.png
    Flickr2K/Flickr2K_HR/000001.png  benchmark/Set5/HR/baby.png  benchmark/Set5/LR_bicubic/X4/babyx4.png

A recipe names a set by its catalog name (`data.train: div2k`, `data.val: [set5, set14]`) or by a
folder path; `resolve` turns a name into the folder under the data root.

Checksums: an archive's `sha256` and `size` are pinned only from a public source that published
them (`source` says which, with the commit); where none did, both are None, `source` says so, and
`fetch` checks the number of images after extraction instead and records the sha256 it saw.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from edgesr.data.pairs import IMAGE_EXTENSIONS, DatasetError

__all__ = [
    "ARCHIVES",
    "BENCHMARK_SETS",
    "DATASETS",
    "Archive",
    "DataSet",
    "benchmark_sets",
    "data_root",
    "lookup",
    "resolve",
]

_DIV2K = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_SNU = "https://cv.snu.ac.kr/research/EDSR/"
# TensorFlow Datasets publishes size + sha256 of every DIV2K archive it downloads.
_TFDS = "tensorflow/datasets tensorflow_datasets/url_checksums/div2k.txt @333639b3"
_TORCHSR = "md5 only, from Coloquinte/torchSR torchsr/datasets/{}.py @64321b8f"
_DIV2K_LICENCE = "research and academic use only (NTIRE 2017 challenge terms)"


@dataclass(frozen=True)
class Archive:
    """One downloadable file and where its folders go.

    `moves`: (folder inside the archive, folder under the data root); each is renamed into place
    whole, so a reader never sees half a folder. `images`: image files expected under all the
    destination folders together (the post-extraction check).
    """

    file: str
    base_url: str
    size: int | None
    sha256: str | None
    source: str
    moves: tuple[tuple[str, str], ...]
    images: int
    md5: str | None = None  # only where the one public checksum is an md5

    @property
    def url(self) -> str:
        return self.base_url + self.file

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.md5 is not None


@dataclass(frozen=True)
class DataSet:
    """A name `edgesr data fetch` accepts: the archives it downloads, and the folder recipes read."""

    name: str
    description: str
    licence: str
    archives: tuple[str, ...]  # Archive.file names
    path: str | None = None  # the folder under the data root that `resolve(name)` gives
    split: str | None = None  # DIV2K split to read when `path` holds both
    manual: str | None = None  # how to get it when no public URL exists


def _div2k(file: str, size: int, sha256: str, moves: tuple[tuple[str, str], ...], images: int) -> Archive:
    return Archive(file, _DIV2K, size, sha256, _TFDS, moves, images)


def _div2k_lr(split: str, kind: str, scale: int, size: int, sha256: str) -> Archive:
    folder = f"DIV2K_{split}_LR_{kind}"
    return _div2k(f"{folder}_X{scale}.zip", size, sha256, ((f"{folder}/X{scale}", f"DIV2K/{folder}/X{scale}"),),
                  800 if split == "train" else 100)  # fmt: skip


ARCHIVES: dict[str, Archive] = {
    a.file: a
    for a in (
        _div2k("DIV2K_train_HR.zip", 3530603713,
               "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
               (("DIV2K_train_HR", "DIV2K/DIV2K_train_HR"),), 800),
        _div2k("DIV2K_valid_HR.zip", 448993893,
               "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
               (("DIV2K_valid_HR", "DIV2K/DIV2K_valid_HR"),), 100),
        _div2k_lr("train", "bicubic", 2, 925390592, "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850"),
        _div2k_lr("train", "bicubic", 3, 427847282, "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a"),
        _div2k_lr("train", "bicubic", 4, 246914039, "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a"),
        _div2k_lr("valid", "bicubic", 2, 117763600, "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57"),
        _div2k_lr("valid", "bicubic", 3, 54513392, "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3"),
        _div2k_lr("valid", "bicubic", 4, 31505881, "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553"),
        _div2k_lr("train", "unknown", 2, 734182735, "f166eeba119fc55bfc9a99c05561980e7a965382f36640ce8ef626c9f61d122c"),
        _div2k_lr("train", "unknown", 3, 377245548, "b6455af3b2aa02d76ae3238c49d7aae3b48b0acdc44b5bdc0f4c02d40ebcb43b"),
        _div2k_lr("train", "unknown", 4, 208956781, "d131c7aad51e0abbdc4433362ce899e5e75f40b9847ead70ee995188e8fd0adb"),
        _div2k_lr("valid", "unknown", 2, 93433041, "ec50bb084c0011130874efd2ed7859b46e0aa7104c565818d5271ac315e04e0a"),
        _div2k_lr("valid", "unknown", 3, 48143315, "ebf23a3e1ef6800cae97285d3a50d022d89b62655e685884c0abcc89eec5b809"),
        _div2k_lr("valid", "unknown", 4, 26695095, "e3897555a98de1157c20974fb6093105fbc1ff5e9caf7bd348f58f6da140fbef"),
        # The EDSR authors' packs (cv.snu.ac.kr): no size or sha256 is published; torchSR's
        # downloaders pin an md5 for each, and the image count is checked after extraction.
        Archive("Flickr2K.tar", _SNU, None, None, _TORCHSR.format("flickr2k"),
                (("Flickr2K/Flickr2K_HR", "Flickr2K/Flickr2K_HR"),
                 ("Flickr2K/Flickr2K_LR_bicubic", "Flickr2K/Flickr2K_LR_bicubic")),
                2650 * 4, md5="5d3f39443d5e9489bff8963f8f26cb03"),  # HR + LR x2, x3, x4
        Archive("benchmark.tar", _SNU, None, None, _TORCHSR.format("benchmarks"),
                tuple((f"benchmark/{s}", f"benchmark/{s}") for s in ("Set5", "Set14", "B100", "Urban100")),
                219 * 4, md5="4ace41d33c2384b97e6b320cd0afd6ba"),  # HR (5+14+100+100) + LR x2, x3, x4
    )
}  # fmt: skip

BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")

_BENCH_LICENCE = "research use; each set keeps its authors' terms (see docs/data.md)"
DATASETS: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet("div2k", "DIV2K train (800) + valid (100): HR and bicubic LR x2/x3/x4",
                _DIV2K_LICENCE,
                ("DIV2K_train_HR.zip", "DIV2K_valid_HR.zip",
                 *(f"DIV2K_{s}_LR_bicubic_X{x}.zip" for s in ("train", "valid") for x in (2, 3, 4))),
                "DIV2K", "train"),
        DataSet("div2k-hr", "DIV2K train + valid HR only (edgesr synthesises LR with MATLAB bicubic)",
                _DIV2K_LICENCE, ("DIV2K_train_HR.zip", "DIV2K_valid_HR.zip"), "DIV2K", "train"),
        DataSet("div2k-valid", "DIV2K valid (0801-0900): HR and bicubic LR x2/x3/x4",
                _DIV2K_LICENCE,
                ("DIV2K_valid_HR.zip", *(f"DIV2K_valid_LR_bicubic_X{x}.zip" for x in (2, 3, 4))),
                "DIV2K", "valid"),
        DataSet("div2k-unknown", "DIV2K 'unknown degradation' LR x2/x3/x4 (NTIRE track 2)",
                _DIV2K_LICENCE,
                tuple(f"DIV2K_{s}_LR_unknown_X{x}.zip" for s in ("train", "valid") for x in (2, 3, 4))),
        DataSet("flickr2k", "Flickr2K: 2650 HR + bicubic LR x2/x3/x4 (EDSR authors' pack; DF2K = DIV2K + this)",
                "research use; Flickr images under their owners' licences", ("Flickr2K.tar",),
                "Flickr2K/Flickr2K_HR"),
        DataSet("benchmarks", "Set5, Set14, B100, Urban100: HR + bicubic LR x2/x3/x4 (EDSR pack, ~250 MB)",
                _BENCH_LICENCE, ("benchmark.tar",)),
        *(DataSet(s.lower(), f"{s} benchmark set", _BENCH_LICENCE, ("benchmark.tar",), f"benchmark/{s}")
          for s in ("Set5", "Set14", "B100", "Urban100")),
        DataSet("manga109", "Manga109 (109 manga volumes): distributed by its authors on request only",
                "academic use on request (http://www.manga109.org/en/download.html)", (),
                "benchmark/Manga109",
                manual="request it at http://www.manga109.org/en/download.html and put the HR images "
                       "in DATA_ROOT/benchmark/Manga109/HR"),
    )
}  # fmt: skip


def data_root() -> Path:
    """`$EDGESR_DATA` if set, else `./data` (where the paper recipes' paths point)."""
    env = os.environ.get("EDGESR_DATA")
    return Path(env).expanduser() if env else Path("data")


def lookup(name: str) -> DataSet:
    """The catalog entry for `name` (case-insensitive), or an error listing the names."""
    key = name.lower()
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise DatasetError(f"{name}: not a data set edgesr knows; {hint}known: {', '.join(DATASETS)}")


def resolve(spec: str, root: Path | None = None) -> tuple[Path, str | None] | None:
    """(folder, DIV2K split) for a catalog name, or None when `spec` is not one (a path).

    A catalog name always means the catalog set, so a recipe means the same on every machine; a
    folder in the working directory that happens to share the name is `./set5`."""
    if "/" in spec or os.sep in spec or spec.lower() not in DATASETS:
        return None
    entry = DATASETS[spec.lower()]
    if entry.path is None:
        raise DatasetError(
            f"{spec}: names several sets, not one folder; use one of "
            + ", ".join(n for n, d in DATASETS.items() if d.archives == entry.archives and d.path)
        )
    folder = (root or data_root()) / entry.path
    if not folder.is_dir():
        how = entry.manual or f"run: edgesr data fetch {entry.name}"
        raise DatasetError(f"{spec}: {folder} does not exist; {how} (data root: $EDGESR_DATA or ./data)")
    return folder, entry.split


def benchmark_sets(root: Path | None = None) -> list[Path]:
    """The benchmark folders present under the data root, in the papers' order."""
    base = (root or data_root()) / "benchmark"
    present = [base / s for s in BENCHMARK_SETS if _has_images(base / s / "HR")]
    if not present:
        raise DatasetError(
            f"{base}: no benchmark sets ({', '.join(BENCHMARK_SETS)}) found; run: edgesr data fetch "
            "benchmarks (or set EDGESR_DATA to the folder that holds benchmark/)"
        )
    return present


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())
