"""What every importer returns (`Parsed`), the error it raises, and the number pattern they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from edgesr.errors import EdgesrError
from edgesr.profile.store import OpTime, Stats

__all__ = ["NUM", "ParseError", "Parsed", "number_fields"]

NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"  # an int or float as the tools print it


class ParseError(EdgesrError, ValueError):
    """The input is not (complete) output of the format it was read as; names the file."""


@dataclass(frozen=True)
class Parsed:
    stats: Stats
    runtime: str | None  # litert, executorch; None when the output does not say (aihub-json)
    delegate: str | None = None
    threads: int | None = None
    artifact: str | None = None  # the model file the output names, when it does
    peak_mem_mb: float | None = None
    ops: tuple[OpTime, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def number_fields(line: str) -> dict[str, float]:
    """`count=50 first=44 avg=44.5` -> {"count": 50.0, "first": 44.0, "avg": 44.5}."""
    return {k: float(v) for k, v in re.findall(rf"(\w+)=({NUM})", line)}
