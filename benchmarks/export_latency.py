"""Host latency of exported students on every runtime installed here, next to eager PyTorch.

    python -m benchmarks export-latency [--runs 10] [--threads 2] [--targets onnx executorch ...]
        [--precisions fp32 int8 int8-all] [--models quickstart edsr16 peak] [--out table.md|table.csv]

`int8` is what `edgesr export --precision int8` builds by default (PTQ; float image-facing ends on
ExecuTorch and TFLite), `int8-all` the same student with every activation int8 (`--activations
int8 --accept-int8-loss`): side by side they give the latency cost of the float ends.

Two students at one 1x3x180x320 LR frame: (a) the quickstart student (EDSR 4x64 at width 0.25, x2;
`runs/quickstart/student` when it holds a checkpoint, else a freshly initialised model of that
architecture: latency does not depend on the weights' values) and (b) an EDSR-style x4 student
(16 residual blocks, 16 channels; 320x180 -> 1280x720). Each target exports through
`edgesr.export.export_checkpoint` (conversion time = `export_s`, verification excluded), then the
artifact is loaded on its runtime with a fixed thread count, run `--warmup` times untimed and
`--runs` times timed; median and p90 wall ms are printed. A target whose exporter is not
registered, whose SDK is missing, or whose artifact cannot run on this machine (Core ML off macOS)
is listed with the reason.

Roofline: the `peak` model (a plain net of 64-channel 3x3 convs, 94% of its MACs in 64->64 convs,
the densest layer these students have) is exported and timed the same way, in the same run, and its
GMAC/s on each runtime and precision is taken as that runtime's conv peak on this machine. Every
other row gets `% peak`: its GMAC/s over the peak of its runtime and precision, so a slow artifact
shows whether its runtime is slow here (low peak) or the graph is (low % of peak). The header names
the machine (edgesr.fingerprint: CPU model and family, the ISA features kernels dispatch on).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from edgesr.export import ExportResult
    from edgesr.profile.store import Stats
    from edgesr.student import Student

QUICKSTART = Path("runs/quickstart/student")
INPUT = (1, 3, 180, 320)  # LR frame, NCHW
ALL_TARGETS = ("onnx", "executorch", "tflite", "coreml")
PYTORCH = "pytorch eager"
# --precisions values: ExportOptions beyond the defaults
VARIANTS: dict[str, dict[str, object]] = {
    "fp32": {"precision": "fp32"},
    "fp16": {"precision": "fp16"},
    "int8": {"precision": "int8", "accept_int8_loss": True},  # latency: a gate refusal would hide the row
    "int8-all": {"precision": "int8", "activations": "int8", "accept_int8_loss": True},
}
MODELS = {
    "quickstart": "quickstart student (EDSR 4x64 w0.25, x2)",
    "edsr16": "EDSR 16x16, x4",
    "peak": "peak probe (plain 6x64, x2)",
}
PEAK = MODELS["peak"]
FAILED = "FAILED"


@dataclass(frozen=True)
class Row:
    model: str
    runtime: str
    precision: str
    export_s: float | None  # conversion seconds (verification excluded); None for eager / skipped
    median_ms: float | None  # per frame, wall clock; None when not run
    p90_ms: float | None
    gmac_per_s: float | None
    vs_eager: float | None  # eager median / this median
    note: str
    pct_peak: float | None = None  # gmac_per_s / the peak probe's on this runtime and precision


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-latency", help="host latency per export runtime vs eager PyTorch")
    p.add_argument("--runs", type=int, default=10, help="timed runs per runtime")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime")
    p.add_argument("--targets", nargs="+", default=list(ALL_TARGETS), help="export targets to try")
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=list(VARIANTS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--out", type=Path, help="also write the table here (.csv or .md)")
    p.set_defaults(run=run)


def quickstart_student(tmp: Path) -> tuple[Path, str]:
    """(checkpoint, description): the trained quickstart student, or a fresh one saved to `tmp`."""
    from edgesr.models import build_model, materialize
    from edgesr.train.checkpoint import CheckpointError, resolve_checkpoint

    try:
        return resolve_checkpoint(QUICKSTART), f"trained, {QUICKSTART}"
    except CheckpointError as e:
        reason = str(e)
    model = materialize(build_model("edsr", scale=2, n_resblocks=4, n_feats=64), 0.25)
    return save(tmp / "quickstart", model, 2, 0.25), f"freshly initialised ({reason})"


def cpu_name() -> str:
    """The machine for benchmark headers: CPU model and family, and the ISA features kernels
    dispatch on (edgesr.fingerprint), e.g. "AMD EPYC (family 26, model 2) (x86_64; avx2, ...)"."""
    from edgesr.fingerprint import detect_machine

    return detect_machine().text


def save(path: Path, model: nn.Module, scale: int, width: float | None) -> Path:
    from edgesr.train.checkpoint import CheckpointMeta, resolve_checkpoint, save_checkpoint

    meta = CheckpointMeta(model.arch, scale, (width or 1.0,), width, "benchmark", 0)
    save_checkpoint(path, model, meta, None)
    return resolve_checkpoint(path)


def time_runtime(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, runs: int) -> Stats:
    """Wall-clock ms statistics of `fn(x)` after `warmup` untimed calls."""
    from edgesr.profile.timing import time_fn

    return time_fn(lambda: fn(x), warmup, runs)


def export(student: Student, target: str, precision: str, out_dir: Path) -> ExportResult | str:
    """The verified artifact, or why this target/precision is skipped here."""
    from edgesr.export import (
        ExportOptions,
        MissingSDKError,
        UnsupportedOptionError,
        export_student,
        get_exporter,
    )

    exporter = get_exporter(target)
    variant = VARIANTS[precision]
    if variant["precision"] not in exporter.spec.precisions:
        return f"{precision} not supported by the {target} exporter"
    options = ExportOptions(**variant, input_shape=INPUT, out_dir=out_dir / precision, force=True)  # type: ignore[arg-type]
    try:
        exporter.sdk_versions()
        return export_student(student, target, options)
    except (MissingSDKError, UnsupportedOptionError) as e:
        return str(e)
    except Exception as e:  # noqa: BLE001  a broken target is a row of the table, not the end of the run
        return failure("export", e)


def failure(stage: str, e: Exception) -> str:
    """'FAILED <stage>: <error>' (first line), the marker `run` counts to exit non-zero."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{FAILED} {stage}: {type(e).__name__}: {first}"[:200]


def bench_model(label: str, ckpt: Path, args: argparse.Namespace, out_dir: Path) -> list[Row]:
    """The eager row, then one row per (target, precision) of `args`."""
    from edgesr.export import EXPORTERS, get_exporter
    from edgesr.models import count_macs, reparameterize
    from edgesr.student import load_student

    student = load_student(ckpt)
    model = reparameterize(student.net)  # eager PyTorch of the deployed graph, as the exports are
    gmac = count_macs(copy.deepcopy(model).to("meta"), INPUT[2:]) / 1e9
    x = np.random.default_rng(0).random(INPUT, dtype=np.float32)

    def eager(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()

    base = time_runtime(eager, x, args.warmup, args.runs)
    rows = [
        Row(label, PYTORCH, "fp32", None, base.median_ms, base.p90_ms, gmac / base.median_ms * 1e3, 1.0, "")
    ]
    for target in args.targets:
        if target not in EXPORTERS:
            rows.append(Row(label, target, "-", None, None, None, None, None, "exporter not registered"))
            continue
        exporter = get_exporter(target)
        for precision in args.precisions:
            result = export(student, target, precision, out_dir / target)
            if isinstance(result, str):
                rows.append(Row(label, target, precision, None, None, None, None, None, result))
                continue
            reason = exporter.runs_here(result.artifact)
            if reason:
                rows.append(Row(label, target, precision, result.export_s, None, None, None, None, reason))
                continue
            try:
                st = time_runtime(exporter.load(result.artifact, args.threads), x, args.warmup, args.runs)
            except Exception as e:  # noqa: BLE001
                rows.append(
                    Row(label, target, precision, result.export_s, None, None, None, None, failure("run", e))
                )
                continue
            psnr = result.verification.psnr_db
            runtime = exporter.spec.runtime_label
            note = f"{runtime}; PSNR vs PyTorch {psnr:.1f} dB" if psnr is not None else runtime
            activations = (result.manifest.get("quantization") or {}).get("activations")
            if activations:
                note += f"; activations {activations}"
            ms = st.median_ms
            rows.append(
                Row(
                    label,
                    target,
                    precision,
                    result.export_s,
                    ms,
                    st.p90_ms,
                    gmac / ms * 1e3,
                    base.median_ms / ms,
                    note,
                )
            )
    return rows


def run(args: argparse.Namespace) -> int:
    from edgesr.models import build_model

    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("--runs and --threads must be >= 1 and --warmup >= 0")
    if args.out is not None and args.out.suffix not in (".csv", ".md"):
        raise SystemExit(f"--out must end in .csv or .md, got {args.out}")
    torch.set_num_threads(args.threads)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        qs_ckpt, qs_source = quickstart_student(tmp)
        torch.manual_seed(0)
        edsr = build_model("edsr", scale=4, n_resblocks=16, n_feats=16)
        peak = build_model("plain", scale=2, n_convs=6, n_feats=64)
        cases = {
            "quickstart": (MODELS["quickstart"], qs_ckpt),
            "edsr16": (MODELS["edsr16"], save(tmp / "edsr16x16", edsr, 4, None)),
            "peak": (PEAK, save(tmp / "peak", peak, 2, None)),
        }
        for label, ckpt in (cases[m] for m in args.models):
            rows += bench_model(label, ckpt, args, tmp / "exports")
    rows = with_peaks(rows)
    header = (
        f"input {'x'.join(map(str, INPUT))}, threads {args.threads}, warmup {args.warmup}, runs {args.runs}, "
        f"torch {torch.__version__}, machine {cpu_name()}, load average "
        f"{os.getloadavg()[0]:.1f}; quickstart student: {qs_source}"
    )
    print_table(rows, header)
    print(
        f"command: python -m benchmarks export-latency --runs {args.runs} --warmup {args.warmup} "
        f"--threads {args.threads} --targets {' '.join(args.targets)} "
        f"--precisions {' '.join(args.precisions)} --models {' '.join(args.models)}"
    )
    if args.out is not None:
        from edgesr.files import atomic_write_text

        atomic_write_text(args.out, to_csv(rows) if args.out.suffix == ".csv" else to_markdown(rows, header))
        print(f"wrote {args.out}")
    return 1 if any(r.note.startswith(FAILED) for r in rows) else 0


def with_peaks(rows: list[Row]) -> list[Row]:
    """Each row with `pct_peak`: its GMAC/s over the peak probe's on the same runtime and precision
    (rows without a probe row to compare with keep None)."""
    peaks = {(r.runtime, r.precision): r.gmac_per_s for r in rows if r.model == PEAK and r.gmac_per_s}
    out = []
    for r in rows:
        peak = peaks.get((r.runtime, r.precision))
        out.append(replace(r, pct_peak=100 * r.gmac_per_s / peak) if peak and r.gmac_per_s else r)
    return out


COLUMNS = ("model", "runtime", "precision", "export s", "median ms", "p90 ms", "GMAC/s", "% peak", "vs eager",
           "note")  # fmt: skip


def _cells(r: Row) -> list[str]:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [
        r.model, r.runtime, r.precision, f(r.export_s, ".1f"), f(r.median_ms, ".1f"), f(r.p90_ms, ".1f"),
        f(r.gmac_per_s, ".1f"), f(r.pct_peak, ".0f"), f(r.vs_eager, ".2f") + ("x" if r.vs_eager else ""),
        r.note,
    ]  # fmt: skip


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*COLUMNS, title=title)
    for r in rows:
        table.add_row(*_cells(r))
    Console(width=200).print(table)


def to_markdown(rows: list[Row], title: str) -> str:
    lines = [title, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "runtime", "precision", "export_s", "median_ms", "p90_ms", "gmac_per_s",
                     "pct_peak", "vs_eager", "note"])  # fmt: skip
    for r in rows:
        writer.writerow([r.model, r.runtime, r.precision, r.export_s, r.median_ms, r.p90_ms, r.gmac_per_s,
                         r.pct_peak, r.vs_eager, r.note])  # fmt: skip
    return buf.getvalue()
