"""What every command module shares: the top-level examples, the console type, the usage error, the
device options of the profiling commands."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from edgesr.download import ProgressLines
from edgesr.errors import UsageError

__all__ = ["EXAMPLES", "TRUST_HELP", "Console", "UsageError", "byte_progress", "device_args", "make_console"]

TRUST_HELP = (
    "run an artifact whose sha256 no longer matches its manifest (by default it is refused: the file "
    "changed after export)"
)

EXAMPLES = """\
examples:
  edgesr quickstart                                 # the whole pipeline on the built-in photos (CPU)
  edgesr train quickstart_teacher                   # one recipe by name
  edgesr train recipes/csd_edsr_x4_w025.yaml train.steps=1000 data.batch_size=8
  edgesr train --resume runs/quickstart/csd
  edgesr eval runs/quickstart/csd --data builtin:val --width 0.25
  edgesr upscale photo.png --checkpoint runs/quickstart/student --out photo_x2.png
  edgesr export runs/quickstart/student --target all
  edgesr profile sweep runs/quickstart/student --device host --target onnx
  edgesr select-width --device host --budget-ms 33.3 --recipe quickstart_student
  edgesr data fetch div2k benchmarks                # DIV2K + Set5/Set14/B100/Urban100, verified
  edgesr recipes ls
  edgesr recipes validate recipes/*.yaml
  edgesr bench distill --preset cpu --seeds 0 1 --out docs/bench/distill_cpu
"""


def make_console(stderr: bool = False) -> Console:
    """The CLI's console (stdout, or stderr for messages). In a pipe or a file rich would wrap at 80
    columns, splitting paths and error lines and squeezing tables to `40.…`; there nothing is
    wrapped and tables get 200 columns, so what lands in a log reads like the terminal."""
    console = Console(stderr=stderr, soft_wrap=True)
    return console if console.is_terminal else Console(stderr=stderr, soft_wrap=True, width=200)


def device_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """`--device` (repeatable with `many`) and `--profiles`: `profile ...` and `select-width`."""
    if many:
        p.add_argument(
            "--device", required=True, action="append",
            help="device name (devices/*.yaml) or a device file; --via aihub: repeat it for several",
        )  # fmt: skip
    else:
        p.add_argument("--device", required=True, help="device name (devices/*.yaml) or a device file")
    p.add_argument(
        "--profiles", type=Path,
        help="profiles folder to read and write alone (default: read the shipped devices/profiles and "
        "your own, $EDGESR_PROFILES or ~/.local/share/edgesr/profiles; write your own)",
    )  # fmt: skip


ByteProgress = Callable[[int, int | None], None]


@contextlib.contextmanager
def byte_progress(console: Console) -> Iterator[Callable[[str], ByteProgress]]:
    """Download progress for `edgesr.download`: yields `for_file(label) -> progress(done, total)`.
    On a terminal, a live bar per file (bytes, rate, ETA); in a log, `ProgressLines` (a line per
    10%), so the transfer shows it is alive without a line per chunk."""
    if not console.is_terminal:
        yield lambda label: ProgressLines(label, lambda m: console.print(m, highlight=False, markup=False))
        return
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:

        def for_file(label: str) -> ByteProgress:
            task = bar.add_task(label, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield for_file
