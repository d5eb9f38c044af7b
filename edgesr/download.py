"""Resumable, verified downloads: the one way edgesr brings a file in from the network.

    got = download(url, dest, size=3530603713, sha256="9d0b...", progress=cb)

- The bytes go to `dest.part`; a `dest.part` left by an earlier attempt is continued with an HTTP
  `Range` request, not restarted. A server that ignores `Range` (answers 200) is read from the
  start again, truncating the part file.
- A dropped connection, a timeout or a 5xx/408/429 answer is retried with exponential back-off;
  the retry count starts again whenever an attempt brought new bytes, so a slow link that drops
  every few hundred MB still finishes. Any other 4xx is final: one line naming the URL and status.
- When the bytes are all there, size then sha256 are checked BEFORE `dest` exists. A mismatch
  leaves `dest.part` in place for inspection, touches nothing else, and names the file and both
  hashes. Only a verified file is renamed to `dest` (atomic on one file system).
- An existing `dest` is re-verified, never overwritten: a mismatch there is reported, not repaired.

Only the standard library's urllib is used: a download needs GET, Range and a timeout, and one
less dependency is one less thing to break on a fresh GPU machine. The design follows what
torchvision's `download_url` and tensorflow-datasets' download manager do (checksum before use,
size pinned next to the hash), plus the resume they lack.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgesr.errors import DataError

__all__ = ["ChecksumError", "DownloadError", "Downloaded", "ProgressLines", "download", "part_path"]

Progress = Callable[[int, int | None], None]  # (bytes on disk, total bytes or None)

_CHUNK = 1 << 20
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(DataError):
    """A file that could not be downloaded (HTTP error, network down after the retries)."""


class ChecksumError(DownloadError):
    """Downloaded (or existing) bytes that do not match the pinned size or sha256."""


@dataclass(frozen=True)
class Downloaded:
    """What `download` did: the verified file, its sha256, and whether it came over the network."""

    path: Path
    sha256: str
    size: int
    fetched: bool  # False when `dest` was already there and verified
    resumed_from: int = 0  # bytes a previous attempt had left in `dest.part`


class ProgressLines:
    """A `progress` callback for logs (no terminal): a line at the start and at every further 10%
    (every 50 MB when the size is unknown), so a log shows the transfer is alive and stays short:
    `download(url, dest, progress=ProgressLines("DIV2K_train_HR.zip", print))`."""

    def __init__(self, label: str, print_fn: Callable[[str], object]) -> None:
        self.label, self.print_fn, self.shown = label, print_fn, -1
        self.start = time.monotonic()

    def __call__(self, done: int, total: int | None) -> None:
        step = min(10, done * 10 // total) if total else done // (50 << 20)
        if step <= self.shown:
            return
        self.shown = step
        rate = done / max(time.monotonic() - self.start, 1e-9) / 1e6
        of = f" / {total / 1e6:.1f}" if total else ""
        self.print_fn(f"downloading {self.label}: {done / 1e6:.1f}{of} MB ({rate:.1f} MB/s)")


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    progress: Progress | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    hint: str = "",
) -> Downloaded:
    """Download `url` to `dest`, resuming a partial download, and verify it (see the module doc).

    `size`, `sha256` and `md5` are checked when given (md5 only where the one public source of a
    file's checksum published nothing stronger); without them the file is only as trustworthy as
    the server, and the returned sha256 is what the caller should record. `hint` ends the message
    of a failed download (e.g. how this caller's users point it at a mirror).
    """
    dest = Path(dest)
    if dest.exists():
        digest = _verify(dest, dest, size, sha256, md5, kept="it is left as it is")
        return Downloaded(dest, digest, dest.stat().st_size, fetched=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        raise ChecksumError(
            f"{part}: the partial download is {start} bytes, more than the {size} the file has; "
            "it is not this file: delete it and run again"
        )
    failures, best = 0, start
    while size is None or part_size(part) < size:
        try:
            if _fetch_into(url, part, size, progress, timeout_s, hint):
                break  # the server says the file is complete
            reason = "the connection closed early"
        except _Retryable as e:
            reason = e.reason
        if part_size(part) > best:  # progress: a later drop gets the full retry budget again
            best, failures = part_size(part), 0
            continue
        failures += 1
        if failures > retries:
            raise DownloadError(
                f"{url}: {reason} ({retries} retries); {part_size(part)} bytes are kept in "
                f"{part} and the next run continues from there" + (f"; {hint}" if hint else "")
            )
        time.sleep(backoff_s * 2 ** (failures - 1))
    digest = _verify(part, dest, size, sha256, md5, kept=f"the download is kept at {part} for inspection")
    os.replace(part, dest)
    return Downloaded(dest, digest, dest.stat().st_size, fetched=True, resumed_from=start)


def part_size(part: Path) -> int:
    return part.stat().st_size if part.exists() else 0


class _Retryable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _opener(url: str) -> urllib.request.OpenerDirector:
    # A loopback URL (tests, a local mirror) must not go through a proxy the environment names.
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _fetch_into(
    url: str, part: Path, size: int | None, progress: Progress | None, timeout_s: float, hint: str
) -> bool:
    """One GET from the end of `part`. True when the server says nothing is left to fetch (the
    whole file arrived in this attempt, or a 416 on a complete file); False after a partial
    transfer that brought bytes. Raises `_Retryable` for a transient failure, DownloadError for a
    final one."""
    offset = part_size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "edgesr-download"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _opener(url).open(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset and (size is None or offset == size):
            return True  # asked for bytes past the end: the part file already holds all of it
        if e.code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(
            f"{url}: the server answered HTTP {e.code} {e.reason}" + (f"; {hint}" if hint else "")
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise _Retryable(f"cannot connect ({reason})") from None
    with response:
        if offset and response.status == 200:
            offset = 0  # the server ignored Range and sends the whole file: start again
        length = response.headers.get("Content-Length")
        total = size if size is not None else (offset + int(length) if length and length.isdigit() else None)
        received = 0
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(offset + received, total)
            except (OSError, http.client.HTTPException) as e:  # includes IncompleteRead, timeouts
                f.flush()
                if not received:
                    raise _Retryable(f"connection lost ({type(e).__name__})") from None
                return False
    if length and length.isdigit() and received < int(length):
        return False  # the server closed early without an error: continue with Range
    if not received and offset == 0:
        raise _Retryable("the server sent no bytes")
    return True


def _verify(
    path: Path, name: Path, size: int | None, sha256: str | None, md5: str | None, *, kept: str
) -> str:
    got = path.stat().st_size
    if size is not None and got != size:
        raise ChecksumError(f"{name.name}: {got} bytes, expected {size}; {kept}")
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            for h in hashes.values():
                h.update(block)
    for algo, want in (("sha256", sha256), ("md5", md5)):
        have = hashes[algo].hexdigest()
        if want is not None and have != want.lower():
            raise ChecksumError(
                f"{name.name}: {algo} mismatch: expected {want.lower()}, got {have}; {kept} "
                "(delete it and run again to download it afresh, or check the mirror)"
            )
    return hashes["sha256"].hexdigest()
