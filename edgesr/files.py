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
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "sha256_file"]


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


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
