"""Atomic writes: a reader never sees a half-written file or folder, and a failure leaves the old one.

One mechanism for every output edgesr writes:

    with atomic_path(p) as tmp:      # any writer: PIL, savefig, safetensors, a folder (tmp.mkdir())
        save(tmp)
    atomic_write_bytes(p, data)      # bytes as given
    atomic_write_text(p, text)       # UTF-8, no newline translation: CRLF text stays CRLF
    atomic_write_json(p, obj)        # json.dumps(obj, indent=2, allow_nan=False) + "\\n"

The output is made under a hidden staging folder next to `p` (same file system, so the final
`os.replace` is atomic on POSIX) and moved over `p` only when the writer returned; the staging
folder is removed either way. A file that replaces a file keeps that file's permission bits (a
recipe edited by `select-width --write` stays 0640); a new one gets what `open()` gives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgesr.errors import EdgesrError

__all__ = [
    "LOCK_NAME", "DirectoryBusyError", "atomic_path", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "default_cache_dir", "is_no_space", "mount_point", "no_space_message", "owned_dir",
    "sha256_file",
]  # fmt: skip

LOCK_NAME = ".lock"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a not-yet-existing path with `path`'s name; on success move it over `path`.

    The writer creates a file or a folder there (the name and suffix are `path`'s, so tools that
    pick a format by extension still can). If the body raises, `path` is left as it was.
    A folder, or a file replacing a folder, moves the old one aside first: readers see the old or
    the new output, never a mix (for an instant, none).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        new = stage / path.name
        yield new
        if not (new.exists() or new.is_symlink()):
            raise FileNotFoundError(f"{path}: the writer created nothing to move into place")
        old_dir = path.is_dir() and not path.is_symlink()
        new_dir = new.is_dir() and not new.is_symlink()
        if path.is_file() and new.is_file() and not new.is_symlink():
            os.chmod(new, path.stat().st_mode & 0o7777)  # keep the replaced file's mode
        if old_dir or (new_dir and (path.exists() or path.is_symlink())):
            os.replace(path, stage / f".old.{path.name}")  # os.replace cannot replace a folder
        os.replace(new, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` as UTF-8, exactly as given (no newline translation), atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write `obj` as strict JSON (NaN and infinity are an error, not invalid JSON) plus a newline."""
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def default_cache_dir() -> Path:
    """`$EDGESR_CACHE` if set, else `~/.cache/edgesr`: generated LR images, the built-in photos, the
    teacher zoo. Here, at the bottom of the layers, so that both edgesr.data and edgesr.models use it."""
    env = os.environ.get("EDGESR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgesr"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# One writer per directory.


class DirectoryBusyError(EdgesrError, RuntimeError):
    """Another process holds the directory's lock (a run directory another `edgesr train` writes)."""


_held: set[str] = set()  # realpaths this process holds: re-entrant (the stage helper, then the trainer)


@contextlib.contextmanager
def owned_dir(path: str | os.PathLike[str], what: str = "run directory") -> Iterator[Path]:
    """Create `path` if needed and hold an exclusive OS lock on it (`path/.lock`) for the block.

    The lock is `flock(2)` on an open file, so the kernel drops it when the process ends however it
    ends: a run killed with SIGKILL leaves no stale lock that blocks `--resume` (its data-loader
    workers, which inherit the file, exit within seconds of it). A second process gets
    `DirectoryBusyError` naming the directory and the PID that holds it. Re-entrant within one
    process (the quickstart's stage helper and the trainer both take it).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(path)
    if key in _held:
        yield path
        return
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryBusyError(
            f"{path}: this {what} is in use by another edgesr process (PID {holder}); wait for it to "
            f"finish, stop it (kill {holder}), or choose another directory"
        ) from None
    except OSError as e:  # ENOLCK: a file system without locks (some NFS set-ups)
        os.close(fd)
        raise DirectoryBusyError(
            f"{path}: cannot lock this {what} ({e.strerror}); use a directory on a local file system"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.add(key)
        yield path
    finally:
        _held.discard(key)
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting locker)


def mount_point(path: str | os.PathLike[str]) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    while not p.exists():
        p = p.parent
    dev = p.stat().st_dev
    while p.parent != p and p.parent.stat().st_dev == dev:
        p = p.parent
    return p


def no_space_message(path: str | os.PathLike[str], need_bytes: int | None = None) -> str | None:
    """'no space left on DEVICE (...)' when `path`'s file system is full (or cannot take
    `need_bytes` more), else None. For errors whose own text does not say so, e.g. torch.save's
    `[enforce fail at inline_container.cc] unexpected pos` on a full disk."""
    mount = mount_point(path)
    free = shutil.disk_usage(mount).free
    if free > max(need_bytes or 0, 1 << 20):
        return None
    need = f", need about {need_bytes / 2**20:.0f} MB" if need_bytes else ""
    return f"no space left on {mount} ({free / 2**20:.1f} MB free{need})"


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
