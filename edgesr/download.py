"""Resumable, verified downloads: the one way edgesr brings a file in from the network.

    got = download(url, dest, size=3530603713, sha256="9d0b...", progress=cb)

- The bytes go to `dest.part`; a `dest.part` left by an earlier attempt is continued with an HTTP
  `Range` request, not restarted. A server that ignores `Range` (answers 200) is read from the
  start again, truncating the part file.
- A dropped connection, a timeout or a 5xx/408/429 answer is retried with exponential back-off;
  a 206 answer is placed by its Content-Range (one that starts elsewhere is retried, one for a file
  of another size refused); a host that does not resolve or a certificate that does not verify is
  final (retrying will not help);
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
import re
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesr.errors import DataError
from edgesr.files import is_no_space, mount_point, no_space_message

__all__ = [
    "ChecksumError", "DownloadError", "Downloaded", "ProgressLines", "check_url", "download", "mirror_url",
    "part_path",
]  # fmt: skip

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
    check_url(url)
    dest = Path(dest)
    if dest.exists():
        digest = _verify(dest, dest, size, sha256, md5, kept="it is left as it is")
        return Downloaded(dest, digest, dest.stat().st_size, fetched=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    start = part_size(part)
    if size is not None and start > size:
        raise ChecksumError(
            f"{part}: the partial download is {start} bytes, more than the {size} the file has; "
            "it is not this file: delete it and run again"
        )
    tail = f"; {hint}" if hint else ""
    failures, best = 0, start
    while size is None or part_size(part) < size:
        try:
            complete = _fetch_into(url, part, size, progress, timeout_s, tail)
            if complete and (size is None or part_size(part) >= size):
                break  # the server says the file is complete (and, when pinned, it is)
            reason = "the connection closed early"
        except _Retryable as e:
            reason = e.reason
        except OSError as e:  # writing the part file, not the network
            if is_no_space(e):
                full = no_space_message(part, size) or f"no space left on {mount_point(part)}"
                raise DownloadError(
                    f"{part}: {full}; the bytes so far are kept: free space and run again to continue"
                ) from None
            raise DownloadError(f"{part}: cannot write the download ({e.strerror or e})") from None
        if part_size(part) > best:  # progress: a later drop gets the full retry budget again
            best, failures = part_size(part), 0
            continue
        failures += 1
        if failures > retries:
            kept = (f"; {part_size(part)} bytes are kept in {part} and the next run continues from there"
                    if part.exists() else "")  # fmt: skip
            raise DownloadError(f"{url}: {reason} ({retries} retries){kept}{tail}")
        time.sleep(backoff_s * 2 ** (failures - 1))
    digest = _verify(part, dest, size, sha256, md5, kept=f"the download is kept at {part} for inspection")
    os.replace(part, dest)
    return Downloaded(dest, digest, dest.stat().st_size, fetched=True, resumed_from=start)


def check_url(url: str, what: str = "URL") -> str:
    """`url` if it is http(s)://HOST/...; else a DownloadError naming it (and `what` gave it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DownloadError(f"{what} {url!r}: expected http(s)://HOST/PATH")
    return url


def mirror_url(base: str, file: str, what: str) -> str:
    """`base/file` for a mirror that serves the same file names; `what` names where `base` came
    from (an option or environment variable) in the error a malformed one gets."""
    return check_url(f"{base.rstrip('/')}/{file}", f"{what} (mirror of {file})")


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
    url: str, part: Path, size: int | None, progress: Progress | None, timeout_s: float, tail: str
) -> bool:
    """One GET from the end of `part`. True when the server says nothing is left to fetch (the
    whole answer arrived, or a 416 on a complete file); False after a transfer cut short that
    brought bytes. Raises `_Retryable` for a transient failure, DownloadError for a final one, and
    OSError for a failure to write `part` (a full disk is not a network error)."""
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
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}{tail}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror | ssl.SSLCertVerificationError):  # retrying won't help
            host = urllib.parse.urlsplit(url).hostname
            raise DownloadError(
                f"{url}: cannot reach {host} ({e.reason}); is this machine online?{tail}"
            ) from None
        raise _Retryable(f"cannot connect ({e.reason})") from None
    except (OSError, http.client.HTTPException) as e:
        raise _Retryable(f"cannot connect ({e})") from None
    with response:
        offset = _answer_start(response, offset, size, url)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = size if size is not None else (offset + expected if expected is not None else None)
        if expected is not None:
            _check_room(part, expected)
        received = 0
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # IncompleteRead, resets, timeouts
                    if not received:
                        raise _Retryable(f"connection lost ({type(e).__name__})") from None
                    return False
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(offset + received, total)
    if expected is not None and received < expected:
        return False  # the server closed early without an error: continue with Range
    if not received and offset == 0:
        raise _Retryable("the server sent no bytes")
    return True


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _answer_start(response: Any, offset: int, size: int | None, url: str) -> int:
    """Where the answer's bytes go in the part file: `offset` for a 206 that starts there, 0 for a
    200 (the server ignored Range: start again). A 206 from anywhere else is retried; one whose total
    contradicts the pinned size is the wrong file."""
    if not offset or response.status == 200:
        return 0
    m = _CONTENT_RANGE.fullmatch((response.headers.get("Content-Range") or "").strip())
    if m is None:
        raise _Retryable("a partial answer without a valid Content-Range")
    start, total = int(m[1]), m[3]
    if size is not None and total != "*" and int(total) != size:
        raise ChecksumError(f"{url}: the server's file is {total} bytes, expected {size}: not this file")
    if start == 0:
        return 0  # the whole file after all: start again
    if start != offset:
        raise _Retryable(f"the server answered from byte {start}, asked for {offset}")
    return offset


def _check_room(part: Path, need: int) -> None:
    free = shutil.disk_usage(part.parent).free
    if free < need:
        raise DownloadError(
            f"{part.parent}: {free / 1e9:.2f} GB free, the download needs {need / 1e9:.2f} GB more; "
            "free space (or choose another folder) and run again: it continues where it stopped"
        )


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
