"""Parsers for latency results produced elsewhere, into one `Parsed` shape; format detection.

Formats (docs/devices.md shows a sample of each), one module per tool family:
- `litert`: `benchmark_model`, LiteRT/TFLite's benchmark tool output.
- `executorch`: `executor_runner` (the example runner's log), `executorch-json` (the Android benchmark
  app's `benchmark_results.json`), `etdump` (an ETDump file, via `executorch.devtools.Inspector`) and
  `etdump-csv` (the Inspector's dataframe saved as CSV).
- `aihub`: `aihub-json`, a saved Qualcomm AI Hub profile (no runtime named: the importer needs
  `--runtime`; the delegate follows from the compute units).

Detection: `.etdump`/`.etdp` -> etdump; JSON text starting with `[` -> executorch-json, with `{` and an
`execution_summary` key -> aihub-json; otherwise by the formats' marker lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from edgesr.errors import NotFoundError
from edgesr.profile.importers.aihub import (
    AIHUB_UNIT_DELEGATES,
    aihub_delegate,
    aihub_top_unit,
    parse_aihub_json,
)
from edgesr.profile.importers.executorch import (
    parse_etdump,
    parse_etdump_csv,
    parse_executor_runner,
    parse_executorch_json,
)
from edgesr.profile.importers.litert import parse_benchmark_model
from edgesr.profile.importers.parsed import Parsed, ParseError

__all__ = [
    "AIHUB_UNIT_DELEGATES",
    "FORMATS",
    "ParseError",
    "Parsed",
    "aihub_delegate",
    "aihub_top_unit",
    "detect_format",
    "parse_aihub_json",
    "parse_benchmark_model",
    "parse_etdump",
    "parse_etdump_csv",
    "parse_executor_runner",
    "parse_executorch_json",
    "parse_file",
]

FORMATS = ("benchmark_model", "executor_runner", "executorch-json", "etdump", "etdump-csv", "aihub-json")


def detect_format(path: Path, text: str | None) -> str:
    if path.suffix in (".etdump", ".etdp"):
        return "etdump"
    if text is None:
        raise ParseError(
            f"{path}: binary file that is not an ETDump (.etdump); formats: {', '.join(FORMATS)}"
        )
    head = text.lstrip()[:1]
    if head == "{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "execution_summary" in data:
            return "aihub-json"
        if data is not None:
            raise ParseError(
                f"{path}: a JSON object without execution_summary: not an AI Hub profile (nor an "
                f"ExecuTorch benchmark_results.json, which is a list); pass --format ({', '.join(FORMATS)})"
            )
    if path.suffix == ".json" or head == "[":
        return "executorch-json"
    if text.startswith("event_block_name"):
        return "etdump-csv"
    if "Model executed successfully" in text or "executor_runner" in text:
        return "executor_runner"
    if re.search(r"count=\d+ ", text) or "Inference timings in us" in text or "STARTING!" in text:
        return "benchmark_model"
    raise ParseError(f"{path}: cannot tell the format; pass --format (one of {', '.join(FORMATS)})")


def parse_file(path: str | Path, fmt: str = "auto") -> list[Parsed]:
    """Parse a result file in `fmt` (or auto-detected); always a list (the JSON may hold several)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no such file: {path}")
    raw = path.read_bytes()
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    fmt = detect_format(path, text) if fmt == "auto" else fmt
    if fmt == "etdump":
        return [parse_etdump(path)]
    if fmt not in FORMATS:
        raise ParseError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if text is None:
        raise ParseError(f"{path}: not text, cannot be read as {fmt}")
    if fmt == "executorch-json":
        return parse_executorch_json(text, str(path))
    parser = {
        "benchmark_model": parse_benchmark_model,
        "executor_runner": parse_executor_runner,
        "etdump-csv": parse_etdump_csv,
        "aihub-json": parse_aihub_json,
    }[fmt]
    return [parser(text, str(path))]
