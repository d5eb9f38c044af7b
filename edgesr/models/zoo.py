"""The teacher zoo: the EDSR and RCAN authors' trained weights by name (`train.init: zoo:edsr_x4`).

    path = fetch("edsr_x4", progress=cb)   # downloaded once into <cache>/zoo, verified, then reused
    model, info = load_zoo("edsr_x4")      # an edgesr EDSR holding them: [0, 1] in, [0, 1] out

Each `Teacher` pins the file's public URL, how it is checked, the architecture it must hold and the
PSNR its authors report. The files are the official PyTorch state dicts; `edgesr.models.official`
reads them (weights only, never pickled objects) and maps them onto edgesr's `EDSR` / `RCAN`.

Checks, in order, before a download enters the cache (`<cache>/zoo/<file>`; the cache is
`$EDGESR_CACHE`, else ~/.cache/edgesr):
1. the bytes: the full sha256 when one is published (edgesr.download checks it), else the hash
   prefix in the file name. EDSR-PyTorch names its files torch.hub style, `edsr_x4-4f62e9ef.pt`,
   where the suffix is the first hex digits of the file's sha256; nothing fuller is published;
2. the content: the file must read as an official checkpoint of exactly the entry's architecture.
A failed check deletes the download and names the file, the URL and what differed. A cached file is
re-checked against its hash each time it is used (a corrupt cache is reported, not used).

`EDGESR_ZOO_MIRROR=BASE_URL` fetches `BASE_URL/<file>` instead of the authors' server (an
air-gapped copy, or a test server); the same checks apply. RCAN's authors publish their weights only
as a zip on Dropbox / Google Drive with no checksum: those entries have no URL, and say how to get
the file (`train.init=PATH/RCAN_BIX4.pt`, or copy it to `<cache>/zoo/RCAN_BIX4.pt`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from edgesr.download import ChecksumError, Progress, download, mirror_url
from edgesr.errors import CheckpointError, EdgesrError, NotFoundError, UnknownNameError
from edgesr.files import default_cache_dir, sha256_file
from edgesr.models import build_model, count_params
from edgesr.models.official import load_official, official_arch

__all__ = [
    "BENCHMARKS", "MIRROR_ENV", "PREFIX", "ZOO", "Progress", "Teacher", "cached", "fetch",
    "is_zoo_ref", "load_zoo", "lookup", "source_url", "teacher_params", "zoo_dir",
]  # fmt: skip

PREFIX = "zoo:"
MIRROR_ENV = "EDGESR_ZOO_MIRROR"
BENCHMARKS = ("Set5", "Set14", "B100", "Urban100", "Manga109")  # the papers' column order


@dataclass(frozen=True)
class Teacher:
    """One named checkpoint: where it comes from, how it is checked, what it holds, what it scores."""

    name: str
    arch: str  # edgesr model name the file maps onto ("edsr" / "rcan")
    args: Mapping[str, Any]  # the constructor arguments the file must hold (scale, blocks, features)
    file: str  # the authors' file name; the cache and a mirror use it too
    url: str | None  # None: no public direct URL with a checksum (`manual` says how to get it)
    sha256_prefix: str | None = None  # hex prefix of the sha256, from the file name (torch.hub style)
    sha256: str | None = None  # the full hash, where one is published
    size: int | None = None
    # Y-PSNR (dB), border crop = scale, bicubic LR: what `psnr_source` reports (`+`: x8 self-ensemble)
    psnr: Mapping[str, float] = field(default_factory=dict)
    psnr_plus: Mapping[str, float] = field(default_factory=dict)
    psnr_source: str = ""
    by_authors: bool = True  # False: the PSNR is a later re-measurement, the authors published none
    manual: str | None = None  # how to get the file when `url` is None

    @property
    def scale(self) -> int:
        return int(self.args["scale"])

    @property
    def ref(self) -> str:
        return PREFIX + self.name


_SNU = "https://cv.snu.ac.kr/research/EDSR/models/"
_EDSR_PAPER = "EDSR paper (Lim et al., CVPRW 2017, arXiv:1707.02921) Table 3"
_TORCHSR = (
    "not published by the EDSR authors (their README gives DIV2K-valid RGB PSNR only); independent "
    "re-measurement by torchSR of its re-hosted copies of these files, Coloquinte/torchSR README @64321b8"
)
_RCAN_PAPER = "RCAN paper (Zhang et al., ECCV 2018, arXiv:1807.02758) Table 3"
_RCAN_MANUAL = (
    "no public direct URL: the RCAN authors publish models_ECCV2018RCAN.zip only on Dropbox "
    "(https://www.dropbox.com/s/qm9vc0p0w9i4s0n/models_ECCV2018RCAN.zip?dl=0) and Google Drive "
    "(links in https://github.com/yulunzhang/RCAN), with no checksum; download it, unzip {file} "
    "and pass its path (train.init=PATH/{file})"
)


def _sets(*values: float) -> dict[str, float]:
    return dict(zip(BENCHMARKS, values, strict=False))


def _edsr(name: str, file: str, scale: int, full: bool, psnr: dict, plus: dict, source: str) -> Teacher:
    args = {"scale": scale, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1} if full else {
        "scale": scale, "n_resblocks": 16, "n_feats": 64, "res_scale": 1.0}  # fmt: skip
    prefix = file.rsplit("-", 1)[1].split(".")[0]
    return Teacher(name, "edsr", args, file, _SNU + file, prefix, psnr=psnr, psnr_plus=plus,
                   psnr_source=source, by_authors=full)  # fmt: skip


def _rcan(scale: int, psnr: dict, plus: dict) -> Teacher:
    file = f"RCAN_BIX{scale}.pt"
    args = {"scale": scale, "n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16}
    return Teacher(f"rcan_x{scale}", "rcan", args, file, None, psnr=psnr, psnr_plus=plus,
                   psnr_source=_RCAN_PAPER, manual=_RCAN_MANUAL.format(file=file))  # fmt: skip


ZOO: dict[str, Teacher] = {
    t.name: t
    for t in (
        _edsr("edsr_baseline_x2", "edsr_baseline_x2-1bc95232.pt", 2, False,
              _sets(37.98, 33.57, 32.15, 31.98), {}, _TORCHSR),
        _edsr("edsr_baseline_x3", "edsr_baseline_x3-abf2a44e.pt", 3, False,
              _sets(34.37, 30.28, 29.08, 28.15), {}, _TORCHSR),
        _edsr("edsr_baseline_x4", "edsr_baseline_x4-6b446fab.pt", 4, False,
              _sets(32.09, 28.58, 27.56, 26.03), {}, _TORCHSR),
        _edsr("edsr_x2", "edsr_x2-0edfb8a3.pt", 2, True,
              _sets(38.11, 33.92, 32.32, 32.93), _sets(38.20, 34.02, 32.37, 33.10), _EDSR_PAPER),
        _edsr("edsr_x3", "edsr_x3-ea3ef2c6.pt", 3, True,
              _sets(34.65, 30.52, 29.25, 28.80), _sets(34.76, 30.66, 29.32, 29.02), _EDSR_PAPER),
        _edsr("edsr_x4", "edsr_x4-4f62e9ef.pt", 4, True,
              _sets(32.46, 28.80, 27.71, 26.64), _sets(32.62, 28.94, 27.79, 26.86), _EDSR_PAPER),
        _rcan(2, _sets(38.27, 34.12, 32.41, 33.34, 39.44), _sets(38.33, 34.23, 32.46, 33.54, 39.61)),
        _rcan(3, _sets(34.74, 30.65, 29.32, 29.09, 34.44), _sets(34.85, 30.76, 29.39, 29.31, 34.76)),
        _rcan(4, _sets(32.63, 28.87, 27.77, 26.82, 31.22), _sets(32.73, 28.98, 27.85, 27.10, 31.65)),
    )
}  # fmt: skip


def is_zoo_ref(source: object) -> TypeGuard[str]:
    """True for a `zoo:NAME` reference (any name: `lookup` says whether it is known)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def lookup(name: str) -> Teacher:
    """The teacher `name` or `zoo:name`; an unknown one is an error listing the valid names."""
    key = name.removeprefix(PREFIX)
    if key in ZOO:
        return ZOO[key]
    close = difflib.get_close_matches(key, ZOO, n=1)
    hint = f" Did you mean {PREFIX}{close[0]}?" if close else ""
    raise UnknownNameError(
        f"unknown zoo teacher {PREFIX}{key}.{hint} Valid: {', '.join(PREFIX + n for n in ZOO)} "
        "(edgesr zoo ls lists them)"
    )


def zoo_dir() -> Path:
    """Where zoo files are kept: `<cache>/zoo` (`$EDGESR_CACHE`, else ~/.cache/edgesr)."""
    return default_cache_dir() / "zoo"


def cached(teacher: Teacher) -> Path | None:
    """The cached file of `teacher`, None when it is not there (not yet fetched)."""
    path = zoo_dir() / teacher.file
    return path if path.is_file() else None


def source_url(teacher: Teacher) -> str | None:
    """`$EDGESR_ZOO_MIRROR/<file>` when the mirror is set and the entry has a public URL (and so a
    hash to check the mirror's copy against), else that URL; None when there is none."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and teacher.url is not None:
        return mirror_url(mirror, teacher.file, MIRROR_ENV)
    return teacher.url


def teacher_params(teacher: Teacher) -> int:
    """Parameter count of the network the file holds (built on the meta device: no memory)."""
    with torch.device("meta"):
        return count_params(build_model(teacher.arch, **teacher.args))


def fetch(name: str, progress: Progress | None = None) -> Path:
    """The verified local file of teacher `name`: the cached one, else downloaded into the cache.

    `progress(bytes_so_far, total_or_None)` is called while downloading. Raises `UnknownNameError`,
    `NotFoundError` (no public URL and not cached), `DownloadError` / `ChecksumError` (network, hash)
    or `CheckpointError` (not an official checkpoint of the entry's architecture); after any of them
    nothing has entered the cache (an interrupted download waits in `<cache>/zoo/.incoming` for the
    next call to continue it)."""
    teacher = lookup(name)
    dest = zoo_dir() / teacher.file
    if dest.is_file():
        _check_cached(teacher, dest)
        return dest
    url = source_url(teacher)
    if url is None:
        raise NotFoundError(
            f"{teacher.ref}: {teacher.manual or 'no public URL'}; or copy the file to {dest}, where "
            f"{teacher.ref} finds it"
        )
    staged = zoo_dir() / ".incoming" / teacher.file  # the cache holds only files that passed
    hint = f"{teacher.ref}: set {MIRROR_ENV}=BASE_URL to fetch {teacher.file} from a mirror"
    got = download(url, staged, size=teacher.size, sha256=teacher.sha256, progress=progress, hint=hint)
    try:
        _check_prefix(teacher, got.path, got.sha256, url)
        _check_layout(teacher, got.path, url)
    except EdgesrError:
        got.path.unlink(missing_ok=True)
        raise
    os.replace(got.path, dest)
    return dest


def load_zoo(name: str, progress: Progress | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Fetch teacher `name` if needed and build it: `load_official`'s `(model, info)`, where the
    model maps [0, 1] images to [0, 1] and `info["zoo"]` is the `Teacher` entry."""
    teacher = lookup(name)
    path = fetch(teacher.name, progress)
    _check_layout(teacher, path, None)  # a file copied into the cache by hand is checked here
    model, info = load_official(
        path, arch=teacher.arch, scale=teacher.scale, res_scale=teacher.args.get("res_scale")
    )
    return model, {**info, "zoo": teacher}


def _check_prefix(teacher: Teacher, path: Path, digest: str, url: str) -> None:
    want = teacher.sha256_prefix
    if teacher.sha256 is None and want is not None and not digest.startswith(want.lower()):
        raise ChecksumError(
            f"{teacher.ref}: {teacher.file} from {url} has sha256 {digest}, which does not start with "
            f"{want} (the hash in its published name); it was deleted and not cached: check the "
            f"mirror ({MIRROR_ENV}) or the network, and run again"
        )


def _check_layout(teacher: Teacher, path: Path, url: str | None) -> None:
    """The file must hold exactly the entry's architecture (keys, shapes, scale, depth, width)."""
    where = f" (from {url})" if url else ""
    try:
        arch, args = official_arch(
            path, arch=teacher.arch, scale=teacher.scale, res_scale=teacher.args.get("res_scale")
        )
    except CheckpointError as e:
        # a download is named by its file name: the staged path is gone once this is raised
        why = str(e).replace(str(path), teacher.file) if url else str(e)
        raise CheckpointError(
            f"{teacher.ref}: {why}{where}; not the official {teacher.arch.upper()} checkpoint this entry "
            "names" + ("; it was deleted and not cached" if url else "")
        ) from None
    wrong = {k: (v, args.get(k)) for k, v in teacher.args.items() if args.get(k) != v}
    if wrong:
        found = ", ".join(f"{k}={got} (expected {want})" for k, (want, got) in wrong.items())
        raise CheckpointError(
            f"{teacher.ref}: {teacher.file if url else path}{where} holds {arch} with {found}; not the "
            "checkpoint this entry names" + ("; it was deleted and not cached" if url else "")
        )


def _check_cached(teacher: Teacher, path: Path) -> None:
    want = teacher.sha256 or teacher.sha256_prefix
    if want is None:
        return  # a hand-copied file with no published hash: _check_layout reads it on load
    digest = sha256_file(path)
    if not digest.startswith(want.lower()):
        raise ChecksumError(
            f"{teacher.ref}: the cached {path} has sha256 {digest}, expected "
            f"{'' if teacher.sha256 else 'a hash starting with '}{want}: it changed on disk; delete it "
            "and run again to download it afresh"
        )
