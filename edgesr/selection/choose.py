"""Latency-driven width selection: the widest student that meets a device's budget.

    sel = select_width(load_device("host"), budget_ms=33.3, arch=arch, runtime="onnxruntime")
    sel.chosen.width, sel.chosen.latency_ms       # from a measurement where there is one
    plot_selection(sel, "select.png")  # edgesr.selection.plot
    write_recipe_width("recipes/quickstart_student.yaml", 0.375)  # edgesr.recipe_edit

Candidates are every width on the architecture's channel grid (multiples of `width_multiple`).
A candidate's latency is its whole-model measurement on the device when there is one; otherwise the
latency model's prediction (the per-layer sum times the scale fitted on this device's measured
widths), but only when the model is trusted on this device (at least 90% of the measured widths
predicted within +-10% leave-one-out, edgesr.profile.latency_model); otherwise it has none and
cannot be chosen. Budgets are compared with the typical figure (median, where the source has one).

Only measurements valid for the machine are used (edgesr.fingerprint): on `host` the running
machine is detected, and records made on another CPU model or ISA are left out with a note naming
the re-measure command; records without a fingerprint (imports, profiles written before edgesr
recorded one) are used with a note saying so, and lose to a fingerprinted record of the same width.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgesr.devices import Device, Resolution
from edgesr.errors import NotFoundError, UsageError
from edgesr.export import ExportOptions, plan_export
from edgesr.export.plan import UnsupportedOptionError
from edgesr.fingerprint import Machine, detect_machine
from edgesr.models import arch_channels, build_model, candidate_widths, count_macs, count_params, students_at
from edgesr.profile.latency_model import Accuracy, Check, LayerTable, MissingLayerError, table_from_records
from edgesr.profile.layers import UnsupportedLayerError, model_layers
from edgesr.profile.store import ProfileRoot, Record, device_records
from edgesr.targets import target_of_runtime


@dataclass(frozen=True)
class Candidate:
    width: float
    channels: int
    params: int
    macs: int
    predicted_ms: float | None = None
    measured_ms: float | None = None
    measured_p90_ms: float | None = None
    psnr_db: float | None = None
    latency_ms: float | None = None  # what the choice uses: measured, else trusted prediction
    basis: str = "none"  # measured | predicted | none


@dataclass(frozen=True)
class Selection:
    device: str
    runtime: str
    delegate: str
    precision: str
    threads: int | None
    resolution: str
    budget_ms: float
    arch: dict[str, Any]
    candidates: tuple[Candidate, ...]
    accuracy: Accuracy
    chosen: Candidate | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    clock: str = "wall"  # wall: wall-clock medians; cpu: process CPU-time medians


def _models(arch: dict[str, Any], widths: list[float]) -> dict[float, Any]:
    with torch.device("meta"):
        full = build_model(arch["name"], **arch["args"])
    return dict(students_at(full, widths))


def _matches(r: Record, runtime: str, delegate: str, precision: str, res: str, threads: int | None) -> bool:
    return (r.runtime, r.delegate, r.precision, r.resolution) == (runtime, delegate, precision, res) and (
        r.threads == threads  # exact: latencies at different thread counts are not comparable
    )


@functools.cache
def _default_form(runtime: str, precision: str) -> tuple[str, str | None] | None:
    """(upsampler, int8 activations policy or None) that `edgesr export` makes by default for
    `runtime`'s target at `precision`; None when it cannot say (eager PyTorch, a refused precision)."""
    try:
        plan = plan_export(target_of_runtime(runtime), ExportOptions(precision=precision))
    except (KeyError, UsageError, UnsupportedOptionError):
        return None
    return plan.upsampler, plan.activations if plan.int8_activations else None


def default_variant(r: Record) -> bool:
    """Whether `r` timed the export's default graph, or does not say which variant it timed: a width
    choice compares one graph form across widths (`select-width --search` compares them all)."""
    if r.runtime_options:  # a runtime setting other than the runtime's defaults
        return False
    form = _default_form(r.runtime, r.precision)
    if r.upsampler is None or form is None:
        return True
    return r.upsampler == form[0] and (r.activations is None or r.activations == form[1])


def valid_on(
    machine: Machine | None,
    records: list[Record],
    device: str,
    runtime: str,
    notes: list[str],
    what: str = "whole-model",
    precision: str = "fp32",
    threads: int | None = None,
) -> list[Record]:
    """The records valid on `machine` (all when None): same fingerprint, or none recorded where no
    fingerprinted record of the same key matches. Adds a note for those left out (made on another
    machine) and for those used without a fingerprint."""
    if machine is None:
        return records
    other = {id(r) for r in records if r.machine is not None and not machine.matches(r.machine)}
    fingerprinted = {r.condition for r in records if machine.matches(r.machine)}
    # a record with no fingerprint loses to this machine's own measurement of the same thing
    stale = {id(r) for r in records if r.machine is None and r.condition in fingerprinted}
    used = [r for r in records if id(r) not in other and id(r) not in stale]
    unknown = [r for r in used if r.machine is None]
    flags = " --layers" if what != "whole-model" else ""
    flags += f" --precision {precision}" if precision != "fp32" else ""
    flags += f" --threads {threads}" if threads is not None else ""
    command = (
        f"edgesr profile sweep CHECKPOINT --device {device} --target {target_of_runtime(runtime)}{flags}"
    )
    if other:
        kinds = sorted({machine.differences(r.machine) for r in records if id(r) in other and r.machine})
        notes.append(
            f"{len(other)} {what} measurement(s) on {device} were made on another machine "
            f"({'; '.join(kinds)}) and are not used; re-measure here: `{command}`"
        )
    if unknown:
        notes.append(
            f"{len(unknown)} {what} measurement(s) on {device} record no machine fingerprint (made "
            f"before edgesr recorded one, or imported): used as they are, they may come from another "
            f"CPU; re-measure here: `{command}`"
        )
    return used


def measured_archs(device: str, runtime: str, resolution: str, root: ProfileRoot = None) -> list[dict]:
    """Distinct architectures with whole-model measurements on `device` at `resolution`."""
    out: list[dict] = []
    for r in device_records(device, root):
        if (
            r.model is not None
            and r.runtime == runtime
            and r.resolution == resolution
            and r.model.arch not in out
        ):
            out.append(r.model.arch)
    return out


def _busiest(records: Any) -> str | None:
    """The highest 'load average L on N CPUs' recorded with host timings, when L > N / 2 (other work
    competed with the timed runs), else None."""
    worst = None
    for r in records:
        m = re.search(r"load average ([\d.]+) on (\d+) CPUs", r.notes or "")
        if m and float(m.group(1)) > int(m.group(2)) / 2 and (worst is None or float(m.group(1)) > worst[0]):
            worst = (float(m.group(1)), m.group(0))
    return worst[1] if worst else None


def psnr_from_runs(paths: list[str | os.PathLike[str]]) -> dict[float, float]:
    """Width -> best known Y-PSNR (dB, first data set) from run directories' results.json."""
    best: dict[float, float] = {}
    for p in paths:
        f = Path(p) / "results.json" if Path(p).is_dir() else Path(p)
        if not f.is_file():
            raise NotFoundError(f"{p}: no results.json (is it a finished run directory?)")
        rows = json.loads(f.read_text())["rows"]
        first = rows[0]["dataset"] if rows else None
        for r in rows:
            if r["width"] is not None and r["dataset"] == first:
                best[float(r["width"])] = max(best.get(float(r["width"]), -1e9), float(r["psnr"]))
    return best


def select_width(
    device: Device,
    budget_ms: float,
    arch: dict[str, Any],
    runtime: str,
    resolution: Resolution | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    delegate: str | None = None,
    psnr: dict[float, float] | None = None,
    root: ProfileRoot = None,
    clock: str = "wall",
    device_threads: bool = True,
    machine: Machine | None = None,
) -> Selection:
    """Candidates at `resolution` (default: the device's) on `runtime`; `clock`: compare wall-clock
    medians (default) or process CPU-time medians (host timings on a shared machine, 1 thread).
    `threads` None is the device file's threads, or with `device_threads=False` measurements that do
    not state a thread count (an AI Hub profile). `machine`: use only records measured on it (or
    with no fingerprint); default: the running machine on a `host` device, else any."""
    if budget_ms <= 0:
        raise UsageError(f"budget must be > 0 ms, got {budget_ms}")
    res = resolution or device.resolution
    delegate = delegate or device.runtime(runtime).delegates[0]
    threads = threads if threads is not None or not device_threads else device.threads
    if machine is None and device.transport == "host":
        machine = detect_machine()
    cond = (runtime, delegate, precision, res.text, threads)
    notes: list[str] = []
    records = [
        r
        for r in device_records(device.name, root)
        if r.model is not None
        and r.model.arch == arch
        and _matches(r, *cond)
        and r.stats.value(clock) is not None
        and default_variant(r)
    ]
    records = valid_on(machine, records, device.name, runtime, notes, "whole-model", precision, threads)
    measured: dict[int, Record] = {}
    for r in records:
        assert r.model is not None
        # a fingerprinted record beats one without; then the newest
        rank = (r.machine is not None, r.measured_at)
        old = measured.get(r.model.channels)
        if old is None or rank > (old.machine is not None, old.measured_at):
            measured[r.model.channels] = r
    # Layer records carry their own input size in `layer`: any entry may serve this resolution.
    layer_recs = valid_on(
        machine,
        [
            r
            for r in device_records(device.name, root, "layers")
            if _matches(r, runtime, delegate, precision, r.resolution, threads)
        ],
        device.name,
        runtime,
        notes,
        "latency-model layer",
        precision,
        threads,
    )
    table: LayerTable = table_from_records(layer_recs, runtime, delegate, precision, threads, clock)
    rows = []
    unpredictable = False
    for w, model in _models(arch, candidate_widths(arch)).items():
        ch = arch_channels(model.arch, w)
        pred = None
        if table.entries:
            try:
                pred = table.predict(model_layers(model, res.hw))
            except (MissingLayerError, UnsupportedLayerError) as e:
                if not unpredictable:
                    notes.append(f"latency model cannot predict every width: {e}")
                unpredictable = True
        rec = measured.get(ch)
        rows.append((w, ch, count_params(model), count_macs(model, res.hw), pred, rec))
    checks = tuple(
        Check(w, ch, rec.stats.value(clock), pred)
        for w, ch, _, _, pred, rec in rows
        if pred is not None and rec is not None
    )
    acc = Accuracy(checks)
    cands = []
    for w, ch, params, macs, raw, rec in rows:
        pred = acc.predict(raw) if raw is not None else None  # corrected for this device
        meas = rec.stats.value(clock) if rec else None
        lat, basis = (
            (meas, "measured")
            if meas is not None
            else ((pred, "predicted") if pred is not None and acc.trusted else (None, "none"))
        )
        cands.append(
            Candidate(
                w,
                ch,
                params,
                macs,
                pred,
                meas,
                rec.stats.p90(clock) if rec else None,
                (psnr or {}).get(w),
                lat,
                basis,
            )
        )
    ok = [c for c in cands if c.latency_ms is not None and c.latency_ms <= budget_ms]
    chosen = max(ok, key=lambda c: c.width) if ok else None
    if not measured and not acc.trusted:
        notes.append(
            f"no whole-model measurements of this architecture on {device.name} ({runtime}/{delegate}, "
            f"{precision}, {res.text}, threads {threads}): run `edgesr profile sweep` first"
        )
    if chosen is None and any(c.latency_ms is not None for c in cands):
        fastest = min((c for c in cands if c.latency_ms is not None), key=lambda c: c.latency_ms or 0)
        notes.append(
            f"no width meets {budget_ms:g} ms; the fastest known is width {fastest.width:g} "
            f"at {fastest.latency_ms:.1f} ms"
        )
    if busy := _busiest(measured.values()):
        notes.append(
            f"measured while the machine was busy ({busy}): these timings may be high; re-measure on an "
            "idle machine (`edgesr profile sweep ...`), or compare process CPU time (--clock cpu)"
        )
    if chosen is not None and chosen.basis == "predicted":
        notes.append(
            f"width {chosen.width:g} is predicted, not measured: confirm with "
            f"`edgesr profile sweep ... --widths {chosen.width:g}`"
        )
    return Selection(
        device.name,
        runtime,
        delegate,
        precision,
        threads,
        res.text,
        budget_ms,
        arch,
        tuple(cands),
        acc,
        chosen,
        tuple(notes),
        clock,
    )


def selection_table(sel: Selection) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the candidate table, as strings."""
    unit = "CPU ms" if sel.clock == "cpu" else "ms"
    header = ["width", "channels", "params", "GMACs", f"predicted {unit}", f"measured {unit}", f"p90 {unit}",
              "PSNR dB", "fits"]  # fmt: skip

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = []
    for c in sel.candidates:
        fits = "-" if c.latency_ms is None else ("yes" if c.latency_ms <= sel.budget_ms else "no")
        mark = " <- chosen" if sel.chosen is not None and c.width == sel.chosen.width else ""
        rows.append(
            [
                f"{c.width:g}",
                str(c.channels),
                f"{c.params:,}",
                f"{c.macs / 1e9:.2f}",
                f(c.predicted_ms, ".1f"),
                f(c.measured_ms, ".1f"),
                f(c.measured_p90_ms, ".1f"),
                f(c.psnr_db, ".2f"),
                fits + mark,
            ]
        )
    return header, rows


def table_markdown(sel: Selection) -> str:
    header, rows = selection_table(sel)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
