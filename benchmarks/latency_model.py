"""Latency model accuracy on this machine: per-layer table vs whole-model measurements.

    python -m benchmarks latency-model quickstart_student --target onnx --resolution 320x180

Exports the architecture at every width of its channel grid and times each whole model, measures
the NetAdapt-style per-layer table (one-op networks, same runtime, threads and resolution), predicts
each width from the table, and prints measured vs predicted: the raw sum of layers, and the model in
use (that sum times a factor fitted on the measured widths) judged leave-one-out, with the share of
widths within +-10% (target: at least 90%). `--save DEVICE` adds the measurements to devices/profiles/DEVICE/.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from typing import Any

import torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency-model", help="latency model (per-layer table) vs whole-model timings")
    p.add_argument("source", nargs="?", default="quickstart_student", help="recipe or checkpoint")
    p.add_argument("--target", default="onnx")
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
    p.add_argument("--save", metavar="DEVICE", help="save the measurements as this device's profiles")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgesr.devices import parse_resolution
    from edgesr.profile.latency_model import TOLERANCE
    from edgesr.profile.store import save_records
    from edgesr.profile.sweep import run_sweep

    res = parse_resolution(args.resolution)
    passes = [
        run_sweep(
            args.source,
            args.target,
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
    clock = "process CPU time" if args.clock == "cpu" else "wall clock"
    print(f"\ncommand: python -m benchmarks latency-model {shlex.join(sys.argv[2:])}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{m0.runtime} {m0.runtime_version} ({m0.delegate}), threads {args.threads}, LR {res.text}, "
          f"{args.warmup} warm-up + {args.runs} timed runs per model and per layer x {args.passes} pass(es); "
          f"clock: {clock}")  # fmt: skip
    loads = sorted({float(n.split()[2]) for rec in r.models + r.layers for n in rec.notes.split("; ")
                    if n.startswith("load average")})  # fmt: skip
    if loads:
        print(
            f"1-min load average when timings started: {loads[0]:.1f} .. {loads[-1]:.1f} "
            "(this machine has 2 CPUs)"
        )
    acc = r.accuracy
    print(f"\nlatency model = sum of per-layer times x {acc.scale:.3f} (fitted on the measured widths); "
          "each width's 'held out' prediction uses the factor fitted on the other widths only")  # fmt: skip
    print("\n| width | channels | measured median ms | p90 ms | sum of layers ms | error | "
          "held-out prediction ms | error | within +-10% |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    by_width = {rec.model.width: rec for rec in r.models if rec.model}
    for c, h in zip(acc.checks, acc.held_out or acc.checks, strict=True):
        p90 = by_width[c.width].stats.p90(args.clock)
        print(f"| {c.width:g} | {c.channels} | {c.measured_ms:.2f} | {p90:.2f} | {c.predicted_ms:.2f} | "
              f"{c.error:+.1%} | {h.predicted_ms:.2f} | {h.error:+.1%} | "
              f"{'yes' if h.ok else 'no'} |")  # fmt: skip
    n = len(acc.checks)
    n_raw = sum(c.ok for c in acc.checks)
    n_ok = sum(c.ok for c in acc.held_out)
    share = acc.share_within
    print(f"\nsum of layers alone: {n_raw}/{n} widths within +-{TOLERANCE:.0%} ({acc.raw_share:.0%})")
    print(f"calibrated, held out: {n_ok}/{n} widths within +-{TOLERANCE:.0%} ({share:.0%}); "
          f"target >= 90%: {'met' if share >= 0.9 else 'NOT met'}")  # fmt: skip
    if args.save:
        p1 = save_records(args.save, r.models, f"models_{m0.runtime}")
        p2 = save_records(args.save, r.layers, f"layers_{m0.runtime}", kind="layers")
        print(f"saved {p1} and {p2}", file=sys.stderr)
    return 0


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
