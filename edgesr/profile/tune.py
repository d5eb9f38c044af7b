"""`edgesr export --tune`: for one student, target and precision, try the graph variants on this
machine and keep the fastest one whose quality is within a tolerance of the best.

The variants are the target's upsampler forms (edgesr.targets.UPSAMPLERS: every one is numerically
the same function in float) and, for int8 with int8 activations, the activations policy
(those its backend accepts: `float-ends` / `int8`, which change accuracy as well as speed). Each is
exported and verified exactly as `edgesr export` does (edgesr.export.export_student), into a
staging folder, then all are timed on their runtimes here in interleaved rounds (median wall ms of
`runs` calls, median over the rounds, at `threads`). Quality is the int8
quality gate's mean Y-PSNR drop against the float student (0 for float variants). The winner is the
fastest variant whose drop is at most `tolerance_db` above the smallest drop; it is moved to the
output folder under the name a plain export would give it, with every trial (variant, median ms,
drop, or why it could not be exported) in its manifest's `tuning` section, together with the
machine it was timed on (edgesr.fingerprint). The other variants' files are removed.

Latencies measured here are valid for this machine kind only: tune on the device you ship to, or
read the trials as this host's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesr.errors import OutputExistsError, UsageError
from edgesr.export import ExportOptions, ExportResult, export_student, get_exporter, manifest_path
from edgesr.export.manifest import write_manifest
from edgesr.export.plan import UnsupportedOptionError, artifact_name, plan_export
from edgesr.export.run import plan_for
from edgesr.fingerprint import detect_machine
from edgesr.profile.timing import time_fn
from edgesr.student import Student
from edgesr.targets import ACTIVATIONS, TARGETS

# (run, x, warmup, runs) -> median ms; tests pass a fake one
Timer = Callable[[Callable[[np.ndarray], np.ndarray], np.ndarray, int, int], float]


def wall_median_ms(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int, runs: int) -> float:
    return time_fn(lambda: run(x), warmup, runs).typical_ms


@dataclass(frozen=True)
class Trial:
    upsampler: str
    activations: str | None  # int8 with int8 activations only
    median_ms: float | None = None
    mean_drop_db: float | None = None  # int8 quality gate: Y-PSNR drop vs float; 0 for float
    error: str = ""  # why the variant could not be exported or run here

    @property
    def label(self) -> str:
        return self.upsampler + (f", activations {self.activations}" if self.activations else "")


def variants(target: str, options: ExportOptions, qat: bool = False) -> list[tuple[str, str | None]]:
    """(upsampler, activations) pairs to try: the given upsampler/activations if fixed, else every
    upsampler the target takes and, for int8 with int8 activations, every activations policy an
    export would accept (edgesr.export.plan_export). A QAT student is exported as it
    was trained, so it has one variant."""
    spec = TARGETS.get(target)
    if qat:
        return [(options.upsampler or "pixelshuffle", options.activations)]
    ups = [options.upsampler] if options.upsampler else list(spec.upsamplers)
    int8_acts = options.precision == "int8" and not options.weight_only
    if options.activations or not int8_acts:
        return [(u, options.activations) for u in ups]
    acts = [a for a in ACTIVATIONS if _planned(target, replace(options, activations=a))]
    return [(u, a) for u in ups for a in acts]


def _planned(target: str, options: ExportOptions) -> bool:
    """Whether `edgesr export` would plan these options for `target` (else it refuses them)."""
    try:
        plan_export(target, options)
    except (UsageError, UnsupportedOptionError):
        return False
    return True


def tune_export(
    student: Student,
    target: str,
    options: ExportOptions,
    tolerance_db: float = 0.05,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 10,
    timer: Timer = wall_median_ms,
    log: Callable[[str], None] | None = None,
    rounds: int = 3,
) -> tuple[ExportResult, list[Trial]]:
    """Export every variant, time it here, keep the fastest within `tolerance_db` (module docstring).

    Timing is interleaved: `rounds` rounds, each timing every variant once (`runs` calls), the order
    reversed every other round; a variant's figure is its median over the rounds, so a load that
    comes and goes on the machine falls on every variant alike."""
    if tolerance_db < 0:
        raise UsageError(f"--tune-tolerance-db must be >= 0, got {tolerance_db}")
    exporter = get_exporter(target)
    out_dir = Path(options.out_dir)
    final = out_dir / artifact_name(student, plan_for(student, target, options))  # every variant's name
    if final.exists() and not options.force:  # before any export
        raise OutputExistsError(f"{final} exists; pass --force to replace it")
    trials: list[Trial] = []
    results: dict[int, ExportResult] = {}
    loaded: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
    x = np.random.default_rng(0).random(options.input_shape, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix=".tune-", dir=_parent(out_dir)) as tmp:
        for k, (up, acts) in enumerate(variants(target, options, student.is_qat)):
            opts = replace(options, upsampler=up, activations=acts, out_dir=Path(tmp) / str(k), force=True)
            try:
                r = export_student(student, target, opts)
                reason = exporter.runs_here(r.artifact)
                if reason:
                    raise UsageError(f"cannot time it here: {reason}")
                run = exporter.load(r.artifact, threads, dict(options.runtime_options))
                run(x)  # it runs here (a runtime's own exception types vary: any failure is this trial's)
            except Exception as e:  # noqa: BLE001  a variant that fails is a trial result, not the end
                trials.append(
                    Trial(up, acts, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"[:200])
                )
                continue
            quality = (r.manifest.get("quantization") or {}).get("quality") or {}
            trials.append(Trial(up, acts, None, float(quality.get("mean_drop_db", 0.0))))
            results[len(trials) - 1], loaded[len(trials) - 1] = r, run
        if not results:
            raise UsageError(
                f"--tune: no variant of {target} {options.precision} could be exported and run here: "
                + "; ".join(f"{t.label}: {t.error}" for t in trials)
            )
        times: dict[int, list[float]] = {i: [] for i in loaded}
        for rnd in range(rounds):
            for i in sorted(loaded, reverse=bool(rnd % 2)):
                times[i].append(timer(loaded[i], x, warmup if rnd == 0 else 1, runs))
        for i, ts in times.items():
            trials[i] = replace(trials[i], median_ms=float(np.median(ts)))
            if log:
                log(
                    f"  {trials[i].label}: {trials[i].median_ms:.2f} ms, drop {trials[i].mean_drop_db:.3f} dB"
                )
        chosen = _choose(trials, tolerance_db)
        r = results[chosen]
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            **r.manifest,
            "tuning": _record(trials, chosen, tolerance_db, threads, warmup, runs, rounds),
        }
        write_manifest(r.artifact, manifest)  # staged next to its artifact, then both moved in
        _replace(r.artifact, final)
        _replace(manifest_path(r.artifact), manifest_path(final))
    return replace(r, artifact=final, manifest_path=manifest_path(final), manifest=manifest), trials


def _replace(src: Path, dst: Path) -> None:
    """`src` onto `dst`: one atomic rename for a file; a folder (Core ML .mlpackage) replaces the old
    one only after it is in place beside it."""
    if src.is_dir():
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old")
            os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old)
        else:
            os.replace(src, dst)
    else:
        os.replace(src, dst)


def _parent(out_dir: Path) -> Path:
    parent = out_dir if out_dir.is_dir() else out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _choose(trials: Sequence[Trial], tolerance_db: float) -> int:
    """Index of the fastest timed trial whose drop is within `tolerance_db` of the smallest drop."""
    timed = [i for i, t in enumerate(trials) if t.median_ms is not None]
    best_drop = min(trials[i].mean_drop_db or 0.0 for i in timed)
    ok = [i for i in timed if (trials[i].mean_drop_db or 0.0) <= best_drop + tolerance_db]
    return min(ok, key=lambda i: trials[i].median_ms or float("inf"))


def _record(trials: Sequence[Trial], chosen: int, tolerance_db: float, threads: int | None, warmup: int,
            runs: int, rounds: int) -> dict[str, Any]:  # fmt: skip
    return {
        "chosen": asdict(trials[chosen]),
        "rule": f"fastest variant whose int8 mean drop is within {tolerance_db:g} dB of the smallest",
        "timing": f"median over {rounds} interleaved rounds of the median wall ms of {runs} calls "
        f"({warmup} warm-up first), threads {threads or 'default'}",
        "machine": asdict(detect_machine()),
        "trials": [asdict(t) for t in trials],
    }
