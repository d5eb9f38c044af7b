"""ExecuTorch's result formats.

- `executor_runner`: the example runner's log (`Iteration i of N: X ms` per run in recent versions,
  `Model executed successfully N time(s) in X ms.` in all).
- `executorch-json`: the Android benchmark app's `benchmark_results.json` (a list of
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
from pathlib import Path
from typing import Any

from edgesr.profile.importers.parsed import NUM, Parsed, ParseError
from edgesr.profile.store import OpTime, Stats
from edgesr.profile.timing import stats_from_ms
from edgesr.sdk import import_sdk

__all__ = ["parse_etdump", "parse_etdump_csv", "parse_executor_runner", "parse_executorch_json"]


def parse_executor_runner(text: str, source: str = "executor_runner output") -> Parsed:
    """ExecuTorch `executor_runner` log -> Parsed. With per-iteration lines the first run is treated
    as warm-up (it includes one-time kernel set-up) when there are at least 3; otherwise only the
    mean of all runs is known."""
    found = re.findall(rf"Iteration \d+ of (\d+): ({NUM}) ms", text)
    iters = [float(ms) for _, ms in found]
    total = re.search(rf"Model executed successfully (\d+) time\(s\) in ({NUM}) ms", text)
    if total is None:  # every runner version ends with it: without it the run did not finish
        cut = f" ({len(iters)} iteration lines before the cut)" if iters else ""
        raise ParseError(
            f"{source}: no 'Model executed successfully N time(s) in X ms' line{cut}: not executor_runner "
            "output, or the run did not finish (did the device disconnect?); re-run and import its "
            "complete output"
        )
    if iters and len(iters) != int(found[0][0]):
        raise ParseError(
            f"{source}: {len(iters)} 'Iteration i of {found[0][0]}' lines, not {found[0][0]}: the log is "
            "incomplete; import the runner's complete output"
        )
    if iters:
        warm = 1 if len(iters) >= 3 else 0
        stats = stats_from_ms(iters[warm:], warm)
    else:
        n = int(total.group(1))
        stats = Stats(mean_ms=float(total.group(2)) / n, count=n, warmup=0)
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
