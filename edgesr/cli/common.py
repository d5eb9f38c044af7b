"""What every command module shares: the top-level examples, the console type, the usage error."""

from __future__ import annotations

from rich.console import Console

from edgesr.errors import UsageError

__all__ = ["EXAMPLES", "TRUST_HELP", "Console", "UsageError", "make_console"]

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
