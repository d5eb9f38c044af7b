"""`edgesr data fetch`: download catalog archives, verify them, and unpack them into the layout
`find_pairs` reads, so that nothing half-done is ever in that layout.

Per archive, under the data root:

    .edgesr-data/downloads/FILE(.part)   the download (resumed with Range; see edgesr.download)
    .edgesr-data/staging-FILE/           extraction, after the checksum; members checked first
    .edgesr-data/FILE.json               the marker: url, sha256 (and md5) seen, what was pinned,
                                         image count, destinations, when; `complete` once moved

Each destination folder is renamed out of staging whole (`os.rename`, one file system). The marker
is written (complete: false) before the first rename, so a run killed between renames is finished
by the next one instead of being mistaken for the user's own folders. A destination that exists
without a marker is the user's: it is never replaced, and the fetch says so. The archive is
deleted once its folders are in place (`keep_archives=True` keeps it).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import edgesr
from edgesr.data.catalog import ARCHIVES, Archive, data_root, lookup
from edgesr.data.pairs import IMAGE_EXTENSIONS, DatasetError
from edgesr.download import Progress, download, mirror_url
from edgesr.files import atomic_write_json, is_no_space, no_space_message

__all__ = ["MARKER_DIR", "FetchResult", "UnsafeArchiveError", "archive_state", "fetch", "mirror_from_env"]

MARKER_DIR = ".edgesr-data"


class UnsafeArchiveError(DatasetError):
    """An archive with a member that would land outside its folder (absolute path, `..`, a link)."""


@dataclass(frozen=True)
class FetchResult:
    archive: str
    status: str  # "fetched" or "present"
    sha256: str
    images: int
    destinations: tuple[Path, ...]


def mirror_from_env() -> str | None:
    return os.environ.get("EDGESR_DATA_MIRROR") or None


def archive_state(archive: Archive, root: Path) -> dict | None:
    """The marker of a fetched archive, or None."""
    marker = root / MARKER_DIR / f"{archive.file}.json"
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def fetch(
    names: Iterable[str],
    root: str | os.PathLike[str] | None = None,
    *,
    mirror: str | None = None,
    keep_archives: bool = False,
    progress: Callable[[str], Progress] | None = None,
    log: Callable[[str], None] = print,
) -> list[FetchResult]:
    """Fetch the catalog sets `names` into `root` (default: `data_root()`).

    `mirror`: a base URL serving the same file names (default `$EDGESR_DATA_MIRROR`);
    `progress(file)` returns the byte-progress callback for that file's download.
    """
    root = Path(root) if root is not None else data_root()
    sets = [lookup(n) for n in names]
    for d in sets:
        if d.manual:
            how = d.manual.replace("DATA_ROOT", str(root))
            raise DatasetError(f"{d.name}: has no public download; {how}")
    files = list(dict.fromkeys(f for d in sets for f in d.archives))  # ordered, no repeats
    mirror = mirror if mirror is not None else mirror_from_env()
    return [_fetch_one(ARCHIVES[f], root, mirror, keep_archives, progress, log) for f in files]


def _fetch_one(
    archive: Archive,
    root: Path,
    mirror: str | None,
    keep_archives: bool,
    progress: Callable[[str], Progress] | None,
    log: Callable[[str], None],
) -> FetchResult:
    dests = tuple(root / dst for _, dst in archive.moves)
    relative = [dst for _, dst in archive.moves]  # markers name folders relative to the root
    state = archive_state(archive, root)
    if state and state.get("complete") and all(d.is_dir() for d in dests):
        log(f"{archive.file}: already in place ({', '.join(str(d) for d in dests)}; verified "
            f"{state.get('fetched_at', '?')}), nothing to do")  # fmt: skip
        return FetchResult(archive.file, "present", state.get("sha256", ""), state.get("images", 0), dests)
    ours = set(state.get("destinations", [])) if state else set()
    present = [(d, rel) for d, rel in zip(dests, relative, strict=True) if d.exists() or d.is_symlink()]
    theirs = [d for d, rel in present if rel not in ours]
    if theirs:
        raise DatasetError(
            f"{theirs[0]}: exists and was not put there by edgesr data fetch; edgesr never replaces "
            f"it. Use it as it is (point data.train / data.val at it), or move it away to fetch "
            f"{archive.file}"
        )

    work = root / MARKER_DIR
    url = mirror_url(mirror, archive.file, "--mirror / EDGESR_DATA_MIRROR") if mirror else archive.url
    hint = ("check that the mirror serves the catalog's file names" if mirror else
            "fetch from a mirror with the same file names: --mirror URL or EDGESR_DATA_MIRROR")  # fmt: skip
    _check_space(work, archive)
    log(f"{archive.file}: downloading {url}")
    got = download(url, work / "downloads" / archive.file, size=archive.size, sha256=archive.sha256,
                   md5=archive.md5, progress=progress(archive.file) if progress else None,
                   hint=hint)  # fmt: skip
    log(f"{archive.file}: {_checked(archive)}; extracting")

    stage = work / f"staging-{archive.file}"
    shutil.rmtree(stage, ignore_errors=True)  # ours: left by an interrupted extraction
    stage.mkdir(parents=True)
    try:
        _extract(got.path, stage)
    except OSError as e:  # a full disk, mostly: no half-extracted staging left behind
        shutil.rmtree(stage, ignore_errors=True)
        raise DatasetError(f"{archive.file}: cannot extract into {stage}: {_os_reason(e, stage)}") from None
    sources = [stage / src for src, _ in archive.moves]
    missing = [src for (src, _), s in zip(archive.moves, sources, strict=True) if not s.is_dir()]
    if missing:
        shutil.rmtree(stage, ignore_errors=True)
        raise DatasetError(
            f"{archive.file}: the archive has no {', '.join(missing)} folder (it is not the expected "
            f"release, or the mirror serves another file); the download is kept at {got.path}"
        )
    images = sum(_count_images(s) for s in sources)
    if images != archive.images:
        shutil.rmtree(stage, ignore_errors=True)
        raise DatasetError(
            f"{archive.file}: {images} images after extraction, expected {archive.images}; nothing was "
            f"moved into {root} and the download is kept at {got.path} for inspection"
        )

    marker = {
        "archive": archive.file, "url": url, "sha256": got.sha256, "md5": archive.md5,
        "size": got.size, "pinned": _checked(archive), "source": archive.source, "images": images,
        "destinations": relative, "complete": False,
        "fetched_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "edgesr": edgesr.__version__,
    }  # fmt: skip
    atomic_write_json(work / f"{archive.file}.json", marker)
    for src, dst in zip(sources, dests, strict=True):
        if dst.exists():  # ours, from a run stopped between two renames: replace it whole
            shutil.rmtree(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src, dst)
        except OSError as e:
            raise DatasetError(
                f"{archive.file}: cannot move {src.name} into place at {dst}: {_os_reason(e, dst)}; "
                "run the same command again to finish"
            ) from None
    atomic_write_json(work / f"{archive.file}.json", {**marker, "complete": True})
    shutil.rmtree(stage, ignore_errors=True)
    if not keep_archives:
        got.path.unlink()
    log(f"{archive.file}: {images} images in {', '.join(str(d) for d in dests)}")
    return FetchResult(archive.file, "fetched", got.sha256, images, dests)


def _os_reason(e: OSError, where: Path) -> str:
    if is_no_space(e):
        return no_space_message(where) or "no space left on the device"
    if e.errno == errno.EXDEV:
        return ("the data root's .edgesr-data and this folder are on different file systems (a "
                "symlink?); use --root on the disk that should hold the data")  # fmt: skip
    return e.strerror or str(e)


def _checked(archive: Archive) -> str:
    if archive.sha256:
        return "size and sha256 match the pinned values"
    if archive.md5:
        return "md5 matches the pinned value (no sha256 is published)"
    return "no checksum is published: image count checked after extraction"


def _check_space(work: Path, archive: Archive) -> None:
    if archive.size is None:
        return
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    need = 2 * archive.size  # the archive and its extracted copy are both on disk for a moment
    if free < need:
        raise DatasetError(
            f"{work}: {free / 1e9:.1f} GB free, {archive.file} needs about {need / 1e9:.1f} GB "
            "(archive + extracted); free space or choose another --root"
        )


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _unsafe(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":")


def _extract(archive: Path, dest: Path) -> None:
    """Unpack into `dest` after checking every member name (zip-slip: absolute paths, `..`, drive
    letters; for tar also links and device files) before a single byte is written."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            bad = [n for n in z.namelist() if _unsafe(n)]
            if bad:
                raise UnsafeArchiveError(_unsafe_message(archive, bad[0]))
            z.extractall(dest)
        return
    try:
        with tarfile.open(archive) as t:
            members = t.getmembers()
            bad = [m.name for m in members if _unsafe(m.name) or not (m.isfile() or m.isdir())]
            if bad:
                raise UnsafeArchiveError(_unsafe_message(archive, bad[0]))
            t.extractall(dest, filter="data")
    except tarfile.TarError as e:
        raise DatasetError(
            f"{archive}: not a zip or tar archive ({e}); the file is kept for inspection"
        ) from None


def _unsafe_message(archive: Path, member: str) -> str:
    return (
        f"{archive.name}: member {member!r} would be written outside the data folder (absolute path, "
        "'..', a link or a device file); refused, nothing was extracted. The archive is kept at "
        f"{archive}: do not unpack it by hand"
    )
