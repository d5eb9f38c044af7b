"""Small archives with the real layouts of the SR data sets, for tests that serve them from 127.0.0.1."""

from __future__ import annotations

import io
import re
import tarfile
import zipfile

import numpy as np
from PIL import Image

from edgesr.data import catalog


def png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def members(archive: catalog.Archive, per_folder: int, hr: int = 8) -> dict[str, bytes]:
    """Files with the archive's real layout: `per_folder` images under each folder it moves, HR
    images `hr` pixels square and LR ones `hr // scale`."""
    files = {}
    for src, _ in archive.moves:
        scale = re.search(r"X(\d)$", src)
        for i in range(per_folder):
            stem = f"{801 + i:04d}"
            name = f"{stem}x{scale[1]}.png" if scale else f"{stem}.png"
            files[f"{src}/{name}"] = png(i, hr // int(scale[1]) if scale else hr)
    return files


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def tar(files: dict[str, bytes], symlink: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type, info.linkname = tarfile.SYMTYPE, symlink[1]
            t.addfile(info)
    return buf.getvalue()
