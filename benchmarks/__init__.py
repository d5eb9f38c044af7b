"""edgesr benchmarks: speed and memory figures, printed (never asserted). Run `python -m benchmarks -h`."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least_one(error: str) -> Callable[[str], int]:
    """An argparse `type`: a whole number >= 1, else argparse's one-line error naming the option,
    `error` formatted with the number given as {n}."""

    def parse(text: str) -> int:
        n = int(text)
        if n < 1:
            raise argparse.ArgumentTypeError(error.format(n=n))
        return n

    return parse
