"""Optional SDKs (export converters, runtimes, torchao): imported on use, or a one-line fix.

Training machines have none of the export SDKs; `import edgesr.<anything>` must work there. Code that
needs an SDK calls `import_sdk` inside the function that uses it, and a missing one becomes a
`MissingSDKError` whose message is the `pip install` that fixes it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from edgesr.errors import EdgesrError

__all__ = ["MissingSDKError", "SDKLog", "import_sdk", "sdk_output_to"]


class MissingSDKError(EdgesrError, ImportError, RuntimeError):
    """An SDK is not installed; the message is the exact `pip install` that fixes it.

    Also a RuntimeError so that callers handling "this cannot run here" errors catch it too.
    """


def import_sdk(target: str, label: str, extra: str, *modules: str) -> list[ModuleType]:
    """Import `modules` for `target`, or raise `MissingSDKError` naming the pip extra."""
    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        raise MissingSDKError(
            f'target {target!r} needs the {label} SDK: pip install "edgesr[{extra}]"'
        ) from e


class SDKLog:
    """What `sdk_output_to` captured: the log file and how many lines this capture added."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.lines = path, 0

    def tail(self, n: int = 20) -> str:
        if self.path is None or not self.path.is_file():
            return ""
        return "\n".join(self.path.read_text(errors="replace").splitlines()[-min(n, self.lines) :])


@contextlib.contextmanager
def sdk_output_to(log: str | os.PathLike[str] | None) -> Iterator[SDKLog]:
    """Send everything printed while converting (file descriptors 1 and 2: the converters' C++ logs,
    torchao's `Failed to load` lines, version and Future warnings) to the file `log`, appended,
    instead of the terminal; `None` leaves it on the terminal (`--verbose`).

    An export prints about 100 such lines on a machine without a GPU, none of them about the user's
    model; the command prints where they went, and their last lines when the export failed.
    """
    if log is None:
        yield SDKLog(None)
        return
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    captured = SDKLog(path)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        start = f.tell()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            f.flush()
            with open(path, "rb") as r:
                r.seek(start)
                captured.lines = r.read().count(b"\n")
