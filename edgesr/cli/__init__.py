"""`edgesr` command line: a thin layer that parses, loads and calls one library function.

One module per command group (train.py: train, quickstart, recipes, bench; evaluate.py: eval,
upscale; export.py: export, inspect; profile.py: profile, devices; select.py: select-width; data.py:
data fetch, ls, prepare; zoo.py: zoo ls, fetch); each adds its parsers and sets the handler the
parsed command runs.

Errors: an `EdgesrError` (edgesr.errors) is the user's to fix and its message says how, so it is
printed as one line (exit 1). Anything else is a bug in edgesr: the traceback is printed with a line
asking for a report (exit 2).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

import edgesr
from edgesr.cli import data, evaluate, export, profile, select, train, zoo
from edgesr.cli.common import EXAMPLES, make_console
from edgesr.errors import EdgesrError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgesr",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"edgesr {edgesr.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (train, evaluate, export, profile, select, data, zoo):
        group.add_parsers(sub)
    return p


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line. `a.b=value` overrides may come anywhere on the line, also after an
    option (`edgesr train RECIPE --run-dir X a.b=v`): argparse stops filling a `nargs="*"`
    positional at the first option, so the overrides after it are collected here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    console = make_console(stderr=True)
    try:
        return args.run(args, console)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    except EdgesrError as e:
        console.print(f"error: {e}", style="red", highlight=False, markup=False, soft_wrap=True)
        return e.exit_code
    except Exception:  # noqa: BLE001  a bug: show everything needed to report it
        console.print(traceback.format_exc(), highlight=False, markup=False)
        console.print(
            f"edgesr {args.command}: this is a bug in edgesr, not a problem with your input; please "
            "report it to the edgesr maintainers with the traceback above and the command you ran",
            style="red", highlight=False, markup=False,
        )  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
