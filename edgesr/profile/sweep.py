"""Width sweeps with the latency model's check, and width selection wired to devices and profiles.

`run_sweep` is `edgesr profile sweep`; `select_for` is `edgesr select-width`; `quickstart_loop` is
the quickstart pipeline's last step (a short host sweep, then a selection for the host's budget).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesr.devices import Resolution, load_device, parse_resolution
from edgesr.profile.latency_model import Accuracy, accuracy, measure_table, needed_keys, table_from_records
from edgesr.profile.plot import plot_selection
from edgesr.profile.store import PROFILES_DIR, Record, device_records, save_records
from edgesr.selection import (
    Selection,
    candidate_widths,
    measured_archs,
    psnr_from_runs,
    resolve_arch,
    select_width,
)


@dataclass(frozen=True)
class SweepResult:
    models: list[Record]
    layers: list[Record] = field(default_factory=list)
    accuracy: Accuracy = field(default_factory=Accuracy)


def _full_weights(source: str | os.PathLike[str]) -> Any:
    """The checkpoint's full-width model when it has one (a CSD run), else None (use fresh weights)."""
    p = Path(source)
    if not (p.is_dir() or p.suffix == ".safetensors"):
        return None
    from edgesr.train.checkpoint import load_model

    model, meta = load_model(p)
    return model if meta.materialized_width is None else None


def _metas(arch: dict[str, Any], widths: Sequence[float]) -> dict[float, Any]:
    """Meta-device (shape-only) students of `arch` at `widths`."""
    import torch

    from edgesr.models import build_model, materialize

    with torch.device("meta"):
        full = build_model(arch["name"], **arch["args"])
    return {w: full if w == 1.0 else materialize(full, w) for w in widths}


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
) -> SweepResult:
    """Time the source's architecture at `widths` (default: the whole channel grid) with `target`;
    with `with_layers` also measure the per-layer table and check the latency model against the sweep."""

    from edgesr.profile.host import profile_module, sweep

    arch = resolve_arch(source)
    widths = list(widths or candidate_widths(arch))
    if log:
        name = f"{arch['name']} x{arch['args']['scale']}"
        log(f"sweep {name} on {target}, LR {resolution.text}, threads {threads}")
    models = sweep(arch, widths, target, resolution, threads, warmup, runs, _full_weights(source), log)
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


def select_for(
    device_name: str,
    budget_ms: float | None = None,
    resolution: str | None = None,
    scale: int | None = None,
    recipe: str | None = None,
    runtime: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    psnr_from: Sequence[str | os.PathLike[str]] = (),
    plot: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = PROFILES_DIR,
    clock: str = "wall",
) -> tuple[Selection, Path]:
    """Resolve the CLI's defaults from the device file and profiles, select, and plot."""
    device = load_device(device_name)
    res = parse_resolution(resolution) if resolution else device.resolution
    if runtime is None:
        have = {r.runtime for r in device_records(device.name, root) if r.resolution == res.text}
        runtime = next((r.name for r in device.runtimes if r.name in have), None)
        if runtime is None:
            raise ValueError(
                f"no measurements on {device.name} at {res.text} in {root}/{device.name}: "
                f"run `edgesr profile sweep SOURCE --device {device.name}` first"
            )
    if recipe is not None:
        arch = resolve_arch(recipe)
        if scale is not None and arch["args"]["scale"] != scale:
            raise ValueError(f"--scale {scale} but recipe {recipe} is x{arch['args']['scale']}")
    else:
        archs = [
            a
            for a in measured_archs(device.name, runtime, res.text, root)
            if scale is None or a["args"].get("scale") == scale
        ]
        if len(archs) != 1:
            found = "; ".join(f"{a['name']} {a['args']}" for a in archs) or "none"
            raise ValueError(
                f"pass --recipe: {len(archs)} measured architectures on {device.name} at "
                f"{res.text} ({runtime}): {found}"
            )
        arch = archs[0]
    psnr = psnr_from_runs(list(psnr_from)) if psnr_from else None
    sel = select_width(
        device,
        budget_ms or device.budget_ms,
        arch,
        runtime,
        res,
        precision,
        threads,
        psnr=psnr,
        root=root,
        clock=clock,
    )
    path = plot_selection(sel, plot or Path("runs/select_width") / f"{device.name}.png")
    return sel, path


def quickstart_loop(
    student: Path, csd: Path, out: Path, log: Callable[[str], None] | None = None
) -> tuple[Selection, Path]:
    """The quickstart's last step: a short host sweep of the student's architecture (3 widths, few
    runs: a first look, not a benchmark), saved under `out/profiles`, then the widest width that
    meets the host's budget, with PSNR from the pipeline's runs. Uses ONNX Runtime when installed,
    else eager PyTorch."""
    from edgesr.profile.host import runtime_info

    device = load_device("host")
    target = "onnx"
    try:
        runtime_info(target)
    except (ImportError, RuntimeError, KeyError, ValueError):
        target = "pytorch"
    root = out / "profiles"
    result = run_sweep(student, target, device.resolution, [0.125, 0.25, 0.5], device.threads, 2, 5, log=log)
    save_records(device.name, result.models, f"models_{result.models[0].runtime}", root)
    return select_for("host", psnr_from=[student, csd], plot=out / "select_width.png", root=root)
