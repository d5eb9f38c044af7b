"""Parsers for latency results produced elsewhere, into one `Parsed` shape.

Formats (docs/devices.md shows a sample of each):
- `benchmark_model`: LiteRT/TFLite's benchmark tool output (stdout of `adb shell benchmark_model ...`):
  the `count=N first=.. curr=.. min=.. max=.. avg=.. std=..` line of the timed runs (us), parameter
  echo lines (`Num threads: [4]`, `Graph: [..]`, `Use gpu: [1]`), the memory line, and with
  `--enable_op_profiling=true` the "Operator-wise Profiling Info for Regular Benchmark Runs" table.
- `executor_runner`: ExecuTorch's example runner log (`Iteration i of N: X ms` per run in recent
  versions, `Model executed successfully N time(s) in X ms.` in all).
- `executorch-json`: the ExecuTorch Android benchmark app's `benchmark_results.json` (a list of
  `{benchmarkModel, metric, actualValue, targetValue, deviceInfo}`), one result per model.
- `etdump`: an ETDump file, read with `executorch.devtools.Inspector`; `etdump-csv`: the Inspector's
  dataframe saved as CSV. The whole-run times come from the `Method::execute` event.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesr.profile.store import OpTime, Stats
from edgesr.profile.timing import stats_from_ms

FORMATS = ("benchmark_model", "executor_runner", "executorch-json", "etdump", "etdump-csv")
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


class ParseError(ValueError):
    """The input is not (complete) output of the format it was read as; names the file."""


@dataclass(frozen=True)
class Parsed:
    stats: Stats
    runtime: str  # litert, executorch
    delegate: str | None = None
    threads: int | None = None
    artifact: str | None = None  # the model file the output names, when it does
    peak_mem_mb: float | None = None
    ops: tuple[OpTime, ...] = ()
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _f(text: str) -> float:
    return float(text)


def _fields(line: str) -> dict[str, float]:
    return {k: _f(v) for k, v in re.findall(rf"(\w+)=({_NUM})", line)}


def parse_benchmark_model(text: str, source: str = "benchmark_model output") -> Parsed:
    """LiteRT `benchmark_model` output -> Parsed (times converted from us to ms)."""
    # The timed runs' line; the op profiler repeats it as "Timings (microseconds): count=..".
    runs = [
        ln
        for ln in text.splitlines()
        if re.search(r"(^|\s)count=\d+ first=", ln) and "avg=" in ln and "Timings (microseconds)" not in ln
    ]
    if not runs:
        raise ParseError(
            f"{source}: no 'count=N first=.. avg=.. std=..' line of timed runs: not benchmark_model "
            "output, or the run did not finish (did the device disconnect?)"
        )
    f = _fields(runs[-1])
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
        rf"\(MB\): init=({_NUM}) overall=({_NUM})",
        text,
    )
    periodic = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})", text)
    peak = _f(periodic.group(1)) if periodic else (_f(mem.group(2)) if mem else None)
    summary = re.search(rf"Init: ({_NUM}), First inference: ({_NUM})", text)
    notes = (
        f"init {_f(summary.group(1)) * us:.1f} ms, first inference {_f(summary.group(2)) * us:.1f} ms"
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


def parse_executor_runner(text: str, source: str = "executor_runner output") -> Parsed:
    """ExecuTorch `executor_runner` log -> Parsed. With per-iteration lines the first run is treated
    as warm-up (it includes one-time kernel set-up) when there are at least 3; otherwise only the
    mean of all runs is known."""
    iters = [_f(m) for m in re.findall(rf"Iteration \d+ of \d+: ({_NUM}) ms", text)]
    total = re.search(rf"Model executed successfully (\d+) time\(s\) in ({_NUM}) ms", text)
    if iters:
        warm = 1 if len(iters) >= 3 else 0
        stats = stats_from_ms(iters[warm:], warm)
    elif total:
        n = int(total.group(1))
        stats = Stats(mean_ms=_f(total.group(2)) / n, count=n, warmup=0)
    else:
        raise ParseError(
            f"{source}: no 'Model executed successfully N time(s) in X ms' line: not executor_runner "
            "output, or the run did not finish (did the device disconnect?)"
        )
    threads = re.search(r"Resetting threadpool with num threads = (\d+)", text)
    model = re.search(r"Model file (\S+) is loaded", text)
    return Parsed(
        stats,
        "executorch",
        None,
        int(threads.group(1)) if threads else None,
        Path(model.group(1)).name if model else None,
    )


def parse_executorch_json(text: str, source: str = "benchmark_results.json") -> list[Parsed]:
    """ExecuTorch benchmark app results -> one Parsed per benchmarked model."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"{source}: not JSON ({e})") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) and "metric" in d for d in data):
        raise ParseError(f"{source}: expected a list of {{benchmarkModel, metric, actualValue}} objects")
    by_model: dict[tuple[str, str, str], dict[str, Any]] = {}
    for d in data:
        bm = d.get("benchmarkModel") or {}
        key = (str(bm.get("name", "")), str(bm.get("backend", "")), str(bm.get("quantization", "")))
        entry = by_model.setdefault(key, {"device": d.get("deviceInfo") or {}})
        entry[d["metric"]] = d.get("actualValue")
    out = []
    for (name, backend, quant), m in by_model.items():
        avg, trim = m.get("avg_inference_latency(ms)"), m.get("trimmean_inference_latency(ms)")
        if avg is None and trim is None:
            continue  # e.g. an LLM-only entry with token rates
        if m.get("load_status") not in (None, 0, 0.0):
            raise ParseError(f"{source}: model {name!r} failed to load (load_status={m['load_status']})")
        dev = m["device"]
        load = m.get("model_load_time(ms)")
        notes = ", ".join(
            s
            for s in (
                f"device {dev.get('device', '')} {dev.get('arch', '')} {dev.get('os', '')}".strip(),
                f"model load {load:.1f} ms" if load is not None else "",
                f"quantization {quant}" if quant else "",
            )
            if s and s != "device"
        )
        stats = Stats(mean_ms=avg, trimmed_mean_ms=trim)
        pss = m.get("ram_pss_usage(mb)")
        out.append(Parsed(stats, "executorch", backend or None, None, name, pss, (), notes))
    if not out:
        raise ParseError(f"{source}: no avg_inference_latency(ms) or trimmean_inference_latency(ms) metric")
    return out


def _from_rows(rows: list[dict[str, Any]], source: str) -> Parsed:
    execute = [r for r in rows if r["event_name"] == "Method::execute"]
    if not execute:
        raise ParseError(f"{source}: no Method::execute event (was the program executed with ETDump on?)")
    stats = stats_from_ms([float(v) for v in execute[0]["raw"]], None)
    ops = []
    for r in rows:
        if r["event_block_name"] != "Execute" or r["event_name"] in ("Method::execute", "DELEGATE_CALL"):
            continue
        kinds = r.get("op_types") or []
        kind = ",".join(kinds) if kinds else re.sub(r"\s+#\d+$", "", r["event_name"])
        backend = r.get("delegate_backend_name") or ("delegated" if r.get("is_delegated_op") else None)
        ops.append(OpTime(r["event_name"], kind, float(r["avg (ms)"]), None, backend))
    delegated = any(o.delegate for o in ops)
    return Parsed(
        stats,
        "executorch",
        "xnnpack" if delegated else "portable",
        None,
        None,
        None,
        tuple(ops),
        "ETDump: counted runs include the first execution",
    )


def parse_etdump(path: str | Path) -> Parsed:
    """An ETDump file via executorch's Inspector (needs the executorch extra)."""
    from edgesr.export.base import import_sdk

    (devtools,) = import_sdk("executorch", "ExecuTorch", "executorch", "executorch.devtools")
    try:
        df = devtools.Inspector(etdump_path=str(path)).to_dataframe()
    except Exception as e:  # the Inspector raises assorted errors on foreign bytes
        raise ParseError(f"{path}: not a readable ETDump ({type(e).__name__}: {e})") from None
    return _from_rows(df.to_dict("records"), str(path))


def parse_etdump_csv(text: str, source: str = "ETDump CSV") -> Parsed:
    """`Inspector.to_dataframe().to_csv(...)` output -> Parsed (list cells are Python literals)."""
    reader = csv.DictReader(io.StringIO(text))
    need = {"event_block_name", "event_name", "raw", "avg (ms)"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise ParseError(
            f"{source}: expected Inspector dataframe columns {sorted(need)}, got {reader.fieldnames}"
        )
    rows = []
    for r in reader:
        row: dict[str, Any] = dict(r)
        try:
            row["raw"] = ast.literal_eval(r["raw"])
            row["op_types"] = ast.literal_eval(r["op_types"]) if r.get("op_types") else []
        except (ValueError, SyntaxError):
            raise ParseError(f"{source}: bad list cell in row {r['event_name']!r}") from None
        row["is_delegated_op"] = r.get("is_delegated_op") == "True"
        rows.append(row)
    return _from_rows(rows, source)


def detect_format(path: Path, text: str | None) -> str:
    if path.suffix in (".etdump", ".etdp"):
        return "etdump"
    if text is None:
        raise ParseError(
            f"{path}: binary file that is not an ETDump (.etdump); formats: {', '.join(FORMATS)}"
        )
    head = text.lstrip()[:1]
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
        raise FileNotFoundError(f"no such file: {path}")
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
    }[fmt]
    return [parser(text, str(path))]
