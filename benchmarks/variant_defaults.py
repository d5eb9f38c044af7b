"""Are edgesr's default export variants the fastest here? Every target x precision, tuned.

    python -m benchmarks variant-defaults [--targets onnx tflite executorch] [--precisions fp32 int8]
        [--threads 1] [--runs 10] [--out table.md]

For the quickstart student's architecture (EDSR 4x64 at width 0.25, x2, fresh weights: latency
does not depend on them) at 1x3x180x320, `edgesr export --tune` (edgesr.profile.tune) exports,
verifies and times every variant of each target and precision (upsampler forms; int8: float-ends
and int8 activations) on this machine, and the table compares the variant a plain `edgesr export`
would pick (the target's default) with the fastest one: `default / fastest` above 1.05 means the
default leaves more than 5% on the table here. int8 variants keep the quality gate's mean drop
beside them (all-int8 activations are faster and lose more). The header names the machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.export_latency import cpu_name, quickstart_student

INPUT = (1, 3, 180, 320)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variant-defaults", help="each target's default export variant vs the fastest here")
    p.add_argument("--targets", nargs="+", default=["onnx", "tflite", "executorch"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--out", type=Path, help="also write the table here (.md)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgesr.export import ExportOptions
    from edgesr.export.run import plan_for
    from edgesr.profile.tune import tune_export
    from edgesr.student import load_student

    torch.set_num_threads(args.threads)
    lines = [
        f"quickstart student architecture (fresh weights), input {'x'.join(map(str, INPUT))}, {args.threads} "
        f"thread(s), median of {args.runs} runs after 3 warm-up; torch {torch.__version__}; {cpu_name()}",
        "",
        "| target | precision | variant | median ms | int8 mean drop dB | default | fastest |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, _ = quickstart_student(Path(tmp))
        student = load_student(ckpt)
        for target in args.targets:
            for precision in args.precisions:
                options = ExportOptions(precision=precision, input_shape=INPUT, out_dir=Path(tmp) / target,
                                        force=True, accept_int8_loss=True)  # fmt: skip
                plan = plan_for(student, target, options)
                default = (plan.upsampler, plan.activations if plan.int8_activations else None)
                _, trials = tune_export(student, target, options, threads=args.threads, runs=args.runs,
                                        log=lambda m: print(m, flush=True))  # fmt: skip
                timed = [t for t in trials if t.median_ms is not None]
                fastest = min(timed, key=lambda t: t.median_ms or 0.0)
                base = next((t for t in timed if (t.upsampler, t.activations) == default), None)
                for t in trials:
                    ms = "-" if t.median_ms is None else f"{t.median_ms:.2f}"
                    drop = "-" if t.mean_drop_db is None or precision != "int8" else f"{t.mean_drop_db:.3f}"
                    label = t.label + (f" ({t.error})" if t.error else "")
                    lines.append(
                        f"| {target} | {precision} | {label} | {ms} "
                        f"| {drop} | {'*' if (t.upsampler, t.activations) == default else ''} "
                        f"| {'*' if t is fastest else ''} |"
                    )
                ratio = (
                    base.median_ms / fastest.median_ms
                    if base and base.median_ms and fastest.median_ms
                    else None
                )
                summary.append(
                    f"- {target} {precision}: default {default[0]}"
                    + (f" / {default[1]}" if default[1] else "")
                    + (f" is {ratio:.2f}x the fastest ({fastest.label})" if ratio else ": not timed")
                )
    text = "\n".join(lines + ["", *summary]) + "\n"
    print(text)
    if args.out:
        from edgesr.files import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return 0
