"""LiteRT/TFLite `benchmark_model` output (stdout of `adb shell benchmark_model ...`).

Read: the `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` line of the timed runs (us), parameter
echo lines (`Num threads: [4]`, `Graph: [..]`, `Use gpu: [1]`), the memory line, and with
`--enable_op_profiling=true` the "Operator-wise Profiling Info for Regular Benchmark Runs" table.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgesr.profile.importers.parsed import NUM, Parsed, ParseError, number_fields
from edgesr.profile.store import OpTime, Stats

__all__ = ["parse_benchmark_model"]


def parse_benchmark_model(text: str, source: str = "benchmark_model output") -> Parsed:
    """LiteRT `benchmark_model` output -> Parsed (times converted from us to ms)."""
    f = number_fields(_timed_runs(text, source))
    us = 1e-3
    stats = Stats(
        median_ms=f["median"] * us if "median" in f else None,
        mean_ms=f["avg"] * us,
        std_ms=f["std"] * us if "std" in f else None,
        min_ms=f["min"] * us if "min" in f else None,
        max_ms=f["max"] * us if "max" in f else None,
        count=int(f["count"]),
    )
    warm = re.search(r"Min warmup runs: \[(\d+)\]", text)
    stats = Stats(**{**stats.__dict__, "warmup": int(warm.group(1)) if warm else None})
    threads = re.search(r"Num threads: \[(\d+)\]", text)
    graph = re.search(r"Graph: \[([^\]]+)\]", text)
    if re.search(r"Use gpu: \[1\]", text) or "GPU delegate" in text or "TfLiteGpuDelegate" in text:
        delegate = "gpu"
    elif re.search(r"Use (?:NNAPI|nnapi): \[1\]", text):
        delegate = "nnapi"
    elif "XNNPACK delegate" in text or re.search(r"Use xnnpack: \[1\]", text):
        delegate = "xnnpack"
    elif re.search(r"Use xnnpack: \[0\]", text):
        delegate = "cpu"
    else:
        delegate = None  # the output does not say: the caller knows what it asked for
    mem = re.search(
        rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) "
        rf"\(MB\): init=({NUM}) overall=({NUM})",
        text,
    )
    periodic = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUM})", text)
    peak = float(periodic.group(1)) if periodic else (float(mem.group(2)) if mem else None)
    summary = re.search(rf"Init: ({NUM}), First inference: ({NUM})", text)
    notes = (
        f"init {float(summary.group(1)) * us:.1f} ms, first inference {float(summary.group(2)) * us:.1f} ms"
        if summary
        else ""
    )
    return Parsed(
        stats,
        "litert",
        delegate,
        int(threads.group(1)) if threads else None,
        Path(graph.group(1)).name if graph else None,
        peak,
        _op_table(text),
        notes,
    )


def _timed_runs(text: str, source: str) -> str:
    """The count line of the timed runs, refusing output that stops before them.

    benchmark_model runs two sections, each announced by "Running benchmark for at least N
    iterations" and closed by a `count=..` line: the warm-up, then the timed runs. Output cut off
    after the warm-up (a device that disconnected, a log copied too early) still holds a count
    line, the warm-up's, which must not be taken for the measurement.
    """

    def count_line(block: str) -> str | None:
        for ln in block.splitlines():  # the op profiler repeats it as "Timings (microseconds): count="
            if re.search(r"(^|\s)count=\d+", ln) and "Timings (microseconds)" not in ln:
                return ln
        return None

    parts = re.split(r"Running benchmark for at least (\d+) iterations", text)
    sections = [(int(n), count_line(body)) for n, body in zip(parts[1::2], parts[2::2], strict=True)]
    if not sections:  # an output without the announcements: the count lines alone, in order
        sections = [(0, ln) for ln in text.splitlines() if count_line(ln)]
    done = [(n, ln) for n, ln in sections if ln is not None]
    if not done:
        raise ParseError(
            f"{source}: no 'count=N first=.. avg=.. std=..' line of timed runs: not benchmark_model "
            "output, or the run did not finish (did the device disconnect?)"
        )
    if len(sections) < 2 or sections[1][1] is None:
        raise ParseError(
            f"{source}: only the warm-up runs finished ({done[0][1].strip()}); the timed runs never "
            "reported: the output was cut off or the run stopped (did the device disconnect?); re-run "
            "benchmark_model and import its complete output"
        )
    announced, line = sections[-1] if sections[-1][1] is not None else done[-1]
    fields = number_fields(line)
    if "avg" not in fields:
        raise ParseError(f"{source}: the timed runs' line has no avg= ({line.strip()}); output cut off?")
    # fewer runs than announced is a complete run only when the tool ended normally: it stops a
    # section at --max_secs (150 s by default) and then prints its summary line
    if int(fields["count"]) < announced and "Inference timings in us" not in text:
        raise ParseError(
            f"{source}: the timed runs report count={int(fields['count'])} but at least {announced} were "
            "announced: the run was cut short; re-run benchmark_model and import its complete output"
        )
    return line


def _op_table(text: str) -> tuple[OpTime, ...]:
    """The "Run Order" table of the regular runs (not of initialization), if op profiling was on."""
    start = text.find("Operator-wise Profiling Info for Regular Benchmark Runs")
    if start < 0:
        return ()
    lines = text[start:].splitlines()
    ops: list[OpTime] = []
    header: list[str] | None = None
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip().split("\t")]
        if "[node type]" in cells:
            if header is not None:  # the next table ("Top by Computation Time") starts
                break
            header = [c.strip("[]").lower() for c in cells]
            continue
        if header is None or len(cells) < len(header):
            if header is not None and ops and not ln.strip():
                break
            continue
        row = dict(zip(header, cells, strict=False))
        try:
            ops.append(OpTime(row["name"], row["node type"], float(row["avg ms"]), int(row["times called"])))
        except (KeyError, ValueError) as e:
            raise ParseError(f"op profiling row {ln.strip()!r}: {e}") from None
    return tuple(ops)
