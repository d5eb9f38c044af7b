"""Latency model accuracy on this machine: per-layer table vs whole-model measurements.

    python -m benchmarks latency-model quickstart_student --target onnx --resolution 320x180

Exports the architecture at every width of its channel grid and times each whole model, measures
the NetAdapt-style per-layer table (one-op networks, same runtime, threads and resolution), predicts
each width from the table, and prints measured vs predicted: the raw sum of layers, and the model in
use (that sum times a factor fitted on the measured widths) judged leave-one-out, with the share of
widths within +-10% (target: all) and +-5% (target: at least 90%). With several `--target`s (and
`--stored` profiles) each is also predicted leave-one-device-out. `--save DEVICE` adds the
measurements to devices/profiles/DEVICE/.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency-model", help="latency model (per-layer table) vs whole-model timings")
    p.add_argument("source", nargs="?", default="quickstart_student", help="recipe or checkpoint")
    p.add_argument(
        "--target",
        nargs="+",
        default=["onnx"],
        help="one or more export targets (each is a device for the leave-one-device-out check)",
    )
    p.add_argument("--resolution", default="320x180", metavar="WxH")
    p.add_argument("--widths", type=float, nargs="+")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--passes", type=int, default=1, help="repeat everything; report median of pass medians")
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="compare wall-clock medians, or process CPU-time medians (robust on a shared machine)",
    )
    p.add_argument(
        "--stored",
        nargs="+",
        default=[],
        metavar="DEVICE:RUNTIME",
        help="saved profiles (devices/profiles) to add to the leave-one-device-out check, one device "
        "per machine that measured them, e.g. host:onnxruntime",
    )
    p.add_argument("--save", metavar="DEVICE", help="save the measurements as this device's profiles")
    p.add_argument("--out", type=Path, help="also write the report (Markdown) here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgesr.devices import parse_resolution
    from edgesr.export import get_exporter
    from edgesr.files import atomic_write_text
    from edgesr.fingerprint import detect_machine
    from edgesr.profile.latency_model import leave_one_device_out
    from edgesr.profile.store import save_records
    from edgesr.profile.sweep import run_sweep

    res = parse_resolution(args.resolution)
    stored = [_parse_stored(s) for s in args.stored]  # refuse a bad value before timing anything
    for target in args.target:  # an unknown target or a missing SDK, before any timing
        get_exporter(target).sdk_versions()
    lines: list[str] = []

    def out(line: str) -> None:  # printed and written as it comes: a late failure loses nothing
        lines.append(line)
        print(line)
        if args.out:
            atomic_write_text(args.out, "\n".join(lines) + "\n")

    out(f"command: `python -m benchmarks latency-model {shlex.join(sys.argv[2:])}`\n")
    out(f"machine: {detect_machine().text}; torch {torch.__version__}; threads {args.threads}; "
        f"LR {res.text}; {args.warmup} warm-up + {args.runs} timed runs per model and per layer "
        f"x {args.passes} pass(es); "
        f"clock: {'process CPU time' if args.clock == 'cpu' else 'wall clock'}")  # fmt: skip
    accuracies: dict[str, Any] = {}
    here: set[tuple[str, Any]] = set()  # (runtime, machine key) measured in this run
    for target in args.target:
        passes = [
            run_sweep(
                args.source,
                target,
                res,
                args.widths,
                args.threads,
                args.warmup,
                args.runs,
                with_layers=True,
                log=lambda s: print(s, file=sys.stderr),
                clock=args.clock,
            )  # fmt: skip
            for _ in range(args.passes)
        ]
        r = merge_passes(passes, res, args.clock) if len(passes) > 1 else passes[0]
        m0 = r.models[0]
        name = f"{m0.runtime} {m0.runtime_version} ({m0.delegate}), this machine"
        loads = sorted({float(n.split()[2]) for rec in r.models + r.layers for n in rec.notes.split("; ")
                        if n.startswith("load average")})  # fmt: skip
        if loads:
            out(f"\n1-min load average when {m0.runtime} timings started: {loads[0]:.1f} .. {loads[-1]:.1f}")
        by_width = {rec.model.width: rec for rec in r.models if rec.model}
        _report(out, name, r.accuracy, lambda w, by_width=by_width: by_width[w].stats.p90(args.clock))
        accuracies[name] = r.accuracy
        here.add((m0.runtime, m0.machine.key if m0.machine else ()))
        if args.save:
            p1 = save_records(args.save, r.models, f"models_{m0.runtime}")
            p2 = save_records(args.save, r.layers, f"layers_{m0.runtime}", kind="layers")
            print(f"saved {p1} and {p2}", file=sys.stderr)
    for device, runtime in stored:
        for name, acc in _stored_accuracies(device, runtime, res, args.threads, args.clock, here).items():
            _report(out, name, acc, None)
            accuracies[name] = acc
    lodo = leave_one_device_out(accuracies)
    if lodo:
        _report_lodo(out, accuracies, lodo)
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _parse_stored(value: str) -> tuple[str, str]:
    device, sep, runtime = value.partition(":")
    if not sep or not device or not runtime:
        raise SystemExit(f"--stored {value!r}: expected DEVICE:RUNTIME, e.g. host:onnxruntime")
    return device, runtime


def _report(out: Callable[[str], None], name: str, acc: Any, p90: Callable[[float], float] | None) -> None:
    from edgesr.profile.latency_model import TIGHT, TOLERANCE

    out(f"\n### {name}\n")
    if not acc.calibrated:
        out(f"{len(acc.checks)} width(s) with both a prediction and a measurement: too few to calibrate.")
        return
    out(f"latency model = sum of per-layer times x {acc.scale:.3f} (fitted on the measured widths); each "
        "width's held-out prediction uses the factor fitted on the other widths only\n")  # fmt: skip
    out("| width | channels | measured median ms | p90 ms | sum of layers ms | error | "
        "held-out prediction ms | error | within +-10% | within +-5% |")  # fmt: skip
    out("|---|---|---|---|---|---|---|---|---|---|")
    for c, h in zip(acc.checks, acc.held_out, strict=True):
        p = f"{p90(c.width):.2f}" if p90 else "-"
        out(f"| {c.width:g} | {c.channels} | {c.measured_ms:.2f} | {p} | {c.predicted_ms:.2f} | "
            f"{c.error:+.1%} | {h.predicted_ms:.2f} | {h.error:+.1%} | {'yes' if h.ok else 'no'} | "
            f"{'yes' if h.within(TIGHT) else 'no'} |")  # fmt: skip
    n = len(acc.checks)
    out(f"\nsum of layers alone: {sum(c.ok for c in acc.checks)}/{n} widths within +-{TOLERANCE:.0%}")
    wide, tight = acc.held_share(TOLERANCE), acc.held_share(TIGHT)
    out(f"calibrated, held out: {wide:.0%} within +-{TOLERANCE:.0%} (target 100%), {tight:.0%} within "
        f"+-{TIGHT:.0%} (target >= 90%): {'met' if wide == 1.0 and tight >= 0.9 else 'NOT met'}")  # fmt: skip


def _report_lodo(out: Callable[[str], None], accuracies: dict[str, Any], lodo: dict[str, Any]) -> None:
    from edgesr.profile.latency_model import TIGHT, TOLERANCE

    out("\n### Leave one device out\n")
    out("Each device's widths predicted from its own layer table times the geometric mean of the "
        "*other* devices' scales: what a device gets from its table before any whole model is timed "
        "on it.\n")  # fmt: skip
    out("| device | own scale | scale from the others | within +-10% | within +-5% | worst error |")
    out("|---|---|---|---|---|---|")
    for name, checks in lodo.items():
        acc = accuracies[name]
        worst = max(checks, key=lambda c: abs(c.error))
        used = checks[0].predicted_ms / acc.checks[0].predicted_ms
        n, tight = len(checks), sum(c.within(TIGHT) for c in checks)
        out(f"| {name} | {acc.scale:.3f} | {used:.3f} | {sum(c.ok for c in checks)}/{n} | {tight}/{n} | "
            f"{worst.error:+.1%} at width {worst.width:g} |")  # fmt: skip
    out(f"\n(+-{TOLERANCE:.0%} and +-{TIGHT:.0%} as in the per-device tables.)")


def _stored_accuracies(
    device: str, runtime: str, res: Any, threads: int, clock: str, here: set[tuple[str, Any]]
) -> dict[str, Any]:
    """The latency model's accuracy on saved profiles of `device`/`runtime` (fp32 default graphs,
    these threads and LR size), one entry per (machine, architecture) that measured them (records
    without a fingerprint are one machine), one record per width (the newest). Groups of a machine
    and runtime this run measured are left out: they are not another device."""
    import json

    from edgesr.profile.latency_model import accuracy, table_from_records
    from edgesr.profile.store import device_records
    from edgesr.profile.sweep import _metas
    from edgesr.selection.choose import default_variant

    def ok(r: Any) -> bool:
        return r.runtime == runtime and r.precision == "fp32" and r.threads == threads

    models = [
        r for r in device_records(device, kind="models") if ok(r) and r.resolution == res.text and r.model
    ]
    layers = [r for r in device_records(device, kind="layers") if ok(r)]

    def mkey(r: Any) -> Any:
        return r.machine.key if r.machine else ()

    groups: dict[tuple[Any, str], dict[float, Any]] = {}
    for r in sorted(models, key=lambda r: r.measured_at):  # the newest of a width wins
        if r.stats.value(clock) is None or not default_variant(r) or (runtime, mkey(r)) in here:
            continue
        groups.setdefault((mkey(r), json.dumps(r.model.arch, sort_keys=True)), {})[r.model.width] = r
    out = {}
    for (machine_key, _), by_width in groups.items():
        ms = list(by_width.values())
        m0 = ms[0]
        machine = m0.machine
        ls = [r for r in layers if mkey(r) == machine_key]
        table = table_from_records(ls, runtime, m0.delegate, "fp32", threads, clock)
        metas = _metas(m0.model.arch, [r.model.width for r in ms])
        measured = [(r.model.width, r.model.channels, r.stats.value(clock), metas[r.model.width]) for r in ms]
        where = machine.text if machine else "machine not recorded"
        arch = f"{m0.model.arch['name']} {m0.model.arch['args']}"
        out[f"{device} {runtime} {m0.runtime_version} ({m0.delegate}), saved, {where}, {arch}"] = accuracy(
            table, measured, res.hw
        )
    return out


def merge_passes(passes: list[Any], res: Any, clock: str) -> Any:
    """One SweepResult from several passes: each model's and layer's median (wall and CPU) is the
    median of its per-pass medians (on a shared machine load drifts; repeated passes spread it)."""
    import dataclasses
    import statistics

    from edgesr.profile.latency_model import accuracy, table_from_records
    from edgesr.profile.sweep import SweepResult, _metas

    def med(values: list[float | None]) -> float | None:
        vs = [v for v in values if v is not None]
        return statistics.median(vs) if vs else None

    def merged(groups: list[list[Any]]) -> list[Any]:
        out = []
        for recs in zip(*groups, strict=True):
            s = [x.stats for x in recs]
            stats = dataclasses.replace(
                s[0], median_ms=med([x.median_ms for x in s]), p90_ms=med([x.p90_ms for x in s]),
                cpu_median_ms=med([x.cpu_median_ms for x in s]), cpu_p90_ms=med([x.cpu_p90_ms for x in s]),
                mean_ms=None, std_ms=None, min_ms=min(x.min_ms for x in s), max_ms=max(x.max_ms for x in s),
                count=sum(x.count or 0 for x in s),
            )  # fmt: skip
            notes = f"median of {len(recs)} passes' medians; " + "; ".join(x.notes for x in recs)
            out.append(dataclasses.replace(recs[-1], stats=stats, notes=notes))
        return out

    models, layers = merged([p.models for p in passes]), merged([p.layers for p in passes])
    m0 = models[0]
    table = table_from_records(layers, m0.runtime, m0.delegate, m0.precision, m0.threads, clock)
    metas = _metas(m0.model.arch, [m.model.width for m in models])
    measured = [(m.model.width, m.model.channels, m.stats.value(clock), metas[m.model.width]) for m in models]
    return SweepResult(models, layers, accuracy(table, measured, res.hw))
