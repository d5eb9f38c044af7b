"""Width sweeps with the latency model's check: `run_sweep` is `edgesr profile sweep`.

Choosing a width from the measurements is edgesr.selection (above this layer).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgesr.devices import Resolution
from edgesr.errors import UsageError
from edgesr.export import ExportOptions, plan_export
from edgesr.export.plan import UnsupportedOptionError
from edgesr.models import build_model, candidate_widths, students_at
from edgesr.profile.host import PYTORCH, profile_module, sweep
from edgesr.profile.latency_model import Accuracy, accuracy, measure_table, needed_keys, table_from_records
from edgesr.profile.store import Record
from edgesr.student import load_network, resolve_arch
from edgesr.targets import ACTIVATIONS, TARGETS


@dataclass(frozen=True)
class SweepResult:
    models: list[Record]
    layers: list[Record] = field(default_factory=list)
    accuracy: Accuracy = field(default_factory=Accuracy)


def sweep_configs(
    targets: Sequence[str],
    precisions: Sequence[str],
    upsamplers: Sequence[str] | None = None,
    activations: Sequence[str] | None = None,
) -> tuple[list[tuple[str, str, str | None, str | None]], list[str]]:
    """The (target, precision, upsampler, activations) configurations a sweep times, and why each
    asked-for combination that `edgesr export` would refuse is left out. `upsamplers` / `activations`
    None: the target's default only; "all": every one the target (for int8: its backend) accepts.
    Float and weight-only configurations have no activations policy (None)."""
    configs: list[tuple[str, str, str | None, str | None]] = []
    refused: list[str] = []
    for target in targets:
        if target == PYTORCH:
            if upsamplers or activations or set(precisions) != {"fp32"}:
                refused.append("pytorch: eager PyTorch is timed as it is, in fp32 (no export variants)")
            if "fp32" in precisions:
                configs.append((PYTORCH, "fp32", None, None))
            continue
        spec = TARGETS.get(target)
        for precision in precisions:
            ups = [None] if not upsamplers else (list(spec.upsamplers) if "all" in upsamplers else upsamplers)
            acts: list[str | None] = [None]
            if activations and precision == "int8":
                acts = list(ACTIVATIONS) if "all" in activations else list(activations)
            elif activations and "int8" not in precisions:
                refused.append(f"{target} {precision}: --activations applies to int8 only (ignored)")
            found, errors = 0, []
            for up, act in itertools.product(ups, acts):
                options = ExportOptions(precision=precision, upsampler=up, activations=act)
                try:
                    plan = plan_export(target, options)
                except (UsageError, UnsupportedOptionError) as e:
                    named = (up is None or "all" not in (upsamplers or [])) and (
                        act is None or "all" not in (activations or [])
                    )
                    errors.append((named, f"{' '.join(v for v in (target, precision, up, act) if v)}: {e}"))
                    continue
                found += 1
                config = (target, precision, up, act if plan.int8_activations else None)
                if config not in configs:
                    configs.append(config)
            # a value asked for by name is reported; one that `all` expanded to only when nothing
            # of this target and precision was left
            refused += [msg for named, msg in errors if named or not found][: None if found else 1]
    return configs, refused


def _full_weights(source: str | os.PathLike[str]) -> Any:
    """The checkpoint's full-width model when it has one (a CSD run), else None (use fresh weights)."""
    p = Path(source)
    if not (p.is_dir() or p.suffix == ".safetensors"):
        return None
    network = load_network(p)
    return network.net if network.meta.materialized_width is None else None


def _metas(arch: dict[str, Any], widths: Sequence[float]) -> dict[float, Any]:
    """Meta-device (shape-only) students of `arch` at `widths`."""
    with torch.device("meta"):
        full = build_model(arch["name"], **arch["args"])
    return dict(students_at(full, widths))


def run_sweep(
    source: str | os.PathLike[str],
    target: str,
    resolution: Resolution,
    widths: Sequence[float] | None = None,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    with_layers: bool = False,
    log: Callable[[str], None] | None = None,
    clock: str = "wall",
    precision: str = "fp32",
    upsampler: str | None = None,
    activations: str | None = None,
    runtime_options: dict[str, str] | None = None,
) -> SweepResult:
    """Time the source's architecture at `widths` (default: the whole channel grid) with `target` at
    `precision` (int8: each width post-training quantized for the target, as `edgesr export` does);
    as the `upsampler` / `activations` export variant (default: the target's); with `with_layers`
    also measure the per-layer table and check the latency model against the sweep."""
    if with_layers and precision != "fp32":
        raise UsageError(f"--layers measures the fp32 latency model; sweep {precision} without --layers")
    if target != PYTORCH and runtime_options:
        runtime_options = TARGETS.get(target).non_default_options(runtime_options)
    if with_layers and (upsampler or activations or runtime_options):
        # layer records are keyed by layer only: a variant's table would overwrite the default's
        raise UsageError("--layers measures the default graph's latency table: sweep variants and runtime "
                         "options without --layers")  # fmt: skip
    arch = resolve_arch(source)
    widths = list(widths or candidate_widths(arch))
    if log:
        name = f"{arch['name']} x{arch['args']['scale']}"
        variant = f", {upsampler or 'default upsampler'}"
        variant += f", activations {activations}" if activations else ""
        variant += "".join(f", {k}={v}" for k, v in sorted((runtime_options or {}).items()))
        log(f"sweep {name} on {target} {precision}{variant}, LR {resolution.text}, threads {threads}")
    models = sweep(arch, widths, target, resolution, threads, warmup, runs, _full_weights(source), log,
                   precision, upsampler, activations, runtime_options)  # fmt: skip
    if not with_layers:
        return SweepResult(models)
    metas = _metas(arch, widths)
    keys = needed_keys(metas.values(), resolution.hw)
    if log:
        log(f"latency table: {len(keys)} distinct layers")

    def time_layer(module: Any, shape: tuple[int, int, int, int], name: str, key: Any) -> Record:
        return profile_module(module, target, shape, name, threads, warmup, runs, layer=key)

    layers = measure_table(keys, time_layer, log)
    r0 = models[0]
    table = table_from_records(layers, r0.runtime, r0.delegate, r0.precision, threads, clock)
    measured = [
        (w, r.model.channels if r.model else 0, r.stats.value(clock), metas[w])
        for w, r in zip(widths, models, strict=True)
    ]
    return SweepResult(models, layers, accuracy(table, measured, resolution.hw))
