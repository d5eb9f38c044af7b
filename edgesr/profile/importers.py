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
- `aihub-json`: a Qualcomm AI Hub profile, `json.dump(profile_job.download_profile(), f)`: an object
  `{execution_summary, execution_detail}` (qai_hub's `_profile_pb_to_python_dict`). Times are
  microseconds, memory bytes. `execution_summary.all_inference_times` are the timed runs (the first,
  a cold run, is counted as warm-up when there are at least 3); a profile with only
  `estimated_inference_time` (AI Hub's headline figure, the fastest run, not a median) is refused.
  Peak memory is the upper bound of `inference_memory_peak_range` (else
  `estimated_inference_peak_memory`). Each `execution_detail` entry names an op (`name`, `type`),
  its `compute_unit` (NPU, GPU, CPU) and, when AI Hub measured it, `execution_time`. The profile
  does not name the runtime (the target runtime is a property of the compiled model, not of the
  profile), so `Parsed.runtime` is None and the importer needs `--runtime`; the delegate follows
  from the compute units (`aihub_delegate`).

Detection: `.etdump`/`.etdp` -> etdump; JSON text starting with `[` -> executorch-json, with `{` and an
`execution_summary` key -> aihub-json; otherwise by the formats' marker lines.
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

FORMATS = ("benchmark_model", "executor_runner", "executorch-json", "etdump", "etdump-csv", "aihub-json")
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


class ParseError(ValueError):
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


# AI Hub compute unit -> the delegate name edgesr's device files use for it, per runtime. Evidence:
# qai_hub's own client test shows a TFLite profile's NPU layers on the QNN delegate (HTP) and its CPU
# layers on XNNPACK; Core ML's compute units are CPU, GPU and the Neural Engine (ANE); ONNX Runtime
# reaches the NPU through the QNN execution provider. Unlisted pairs are not guessed.
AIHUB_UNIT_DELEGATES: dict[str, dict[str, str]] = {
    "litert": {"NPU": "qnn", "GPU": "gpu", "CPU": "xnnpack"},
    "coreml": {"NPU": "ane", "GPU": "gpu", "CPU": "cpu"},
    "onnxruntime": {"NPU": "qnn", "CPU": "cpu"},
}
_UNIT_ORDER = ("NPU", "GPU", "CPU")  # AI Hub places ops on the NPU first, then GPU, then CPU


def aihub_top_unit(units: dict[str, int]) -> str | None:
    """The most capable compute unit any op ran on (the one asked for; the others are fallback)."""
    return next((u for u in _UNIT_ORDER if units.get(u)), next(iter(units), None))


def aihub_delegate(runtime: str, units: dict[str, int]) -> str | None:
    """The delegate of `runtime` that ran an AI Hub profile with these per-op compute unit counts."""
    top = aihub_top_unit(units)
    return AIHUB_UNIT_DELEGATES.get(runtime, {}).get(top) if top else None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_aihub_json(text: str, source: str = "AI Hub profile") -> Parsed:
    """A saved Qualcomm AI Hub profile (`profile_job.download_profile()`) -> Parsed (us -> ms)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"{source}: not JSON ({e})") from None
    summary = data.get("execution_summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise ParseError(
            f"{source}: no execution_summary object: not an AI Hub profile "
            "(expected the dict profile_job.download_profile() returns, saved with json.dump)"
        )

    def bad(key: str, want: str, v: Any) -> ParseError:
        return ParseError(
            f"{source}: execution_summary.{key} must be {want}, got {type(v).__name__} {v!r:.60}"
        )

    times, est = summary.get("all_inference_times"), summary.get("estimated_inference_time")
    if times is not None and not (isinstance(times, list) and all(_is_num(t) and t > 0 for t in times)):
        raise bad("all_inference_times", "a list of run times in microseconds (> 0)", times)
    if est is not None and not (_is_num(est) and est > 0):
        raise bad("estimated_inference_time", "microseconds (> 0)", est)
    notes = []
    if times:
        ms = [t / 1000 for t in times]
        warm = 1 if len(ms) >= 3 else 0
        stats = stats_from_ms(ms[warm:], warm)
        if warm:
            notes.append(f"first of {len(ms)} runs ({ms[0]:.1f} ms, cold) counted as warm-up")
        if est is not None:
            notes.append(f"AI Hub estimate {est / 1000:.3f} ms")
    elif est is not None:
        raise ParseError(
            f"{source}: execution_summary has no all_inference_times, only estimated_inference_time "
            f"({est / 1000:.3f} ms), which is AI Hub's fastest run, not a median: a profile stores "
            "medians only; re-download the profile from a recent AI Hub job"
        )
    else:
        raise ParseError(
            f"{source}: execution_summary has neither all_inference_times nor estimated_inference_time "
            "(did the profile job fail?)"
        )

    peak_range, est_peak = (
        summary.get("inference_memory_peak_range"),
        summary.get("estimated_inference_peak_memory"),
    )
    if peak_range is not None and not (
        isinstance(peak_range, list) and len(peak_range) == 2 and all(_is_num(v) for v in peak_range)
    ):
        raise bad("inference_memory_peak_range", "[low, high] in bytes", peak_range)
    if est_peak is not None and not _is_num(est_peak):
        raise bad("estimated_inference_peak_memory", "bytes", est_peak)
    mib = 2**20
    peak = None
    if peak_range and peak_range[1] > 0:
        peak = peak_range[1] / mib
        notes.append(f"inference memory peak {peak_range[0] / mib:.1f}-{peak:.1f} MB")
        if est_peak:
            notes.append(f"process peak after inference {est_peak / mib:.1f} MB")
    elif est_peak:
        peak = est_peak / mib
        notes.append(f"peak memory: estimated_inference_peak_memory {peak:.1f} MB")
    load = [(k, summary.get(f"{k}_time")) for k in ("first_load", "warm_load")]
    if all(_is_num(v) for _, v in load):
        notes.append(", ".join(f"{k.replace('_', ' ')} {v / 1000:.1f} ms" for k, v in load))

    detail = data.get("execution_detail") or []
    if not isinstance(detail, list):
        raise ParseError(
            f"{source}: execution_detail must be a list of per-op objects, got {type(detail).__name__}"
        )
    units: dict[str, int] = {}
    ops: list[OpTime] = []
    untimed = 0
    for i, d in enumerate(detail):
        unit = d.get("compute_unit") if isinstance(d, dict) else None
        if not isinstance(unit, str):
            raise ParseError(f"{source}: execution_detail[{i}] has no compute_unit: {d!r:.80}")
        units[unit] = units.get(unit, 0) + 1
        t = d.get("execution_time")
        if t is None:
            untimed += 1
        elif not _is_num(t) or t < 0:
            raise ParseError(
                f"{source}: execution_detail[{i}].execution_time must be microseconds, got {t!r}"
            )
        else:
            name = str(d.get("name", f"op {i}"))
            ops.append(OpTime(name, str(d.get("type", name)), t / 1000, None, unit))
    units = dict(sorted(units.items(), key=lambda kv: -kv[1]))  # most ops first
    if units:
        notes.insert(0, "compute units: " + ", ".join(f"{u} {n}" for u, n in units.items()))
    if untimed:
        notes.append(f"{untimed} ops without execution_time")
    return Parsed(stats, None, None, None, None, peak, tuple(ops), "; ".join(notes), {"compute_units": units})


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
        "aihub-json": parse_aihub_json,
    }[fmt]
    return [parser(text, str(path))]
