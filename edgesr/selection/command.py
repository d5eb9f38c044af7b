"""Width selection wired to devices and profiles: `select_for` is `edgesr select-width`;
`quickstart_loop` is the quickstart pipeline's last step (a short host sweep, then a selection for
the host's budget)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from edgesr.devices import Device, load_device, parse_resolution
from edgesr.errors import UsageError
from edgesr.profile.host import runtime_info
from edgesr.profile.store import ProfileRoot, device_records, profile_roots, save_records
from edgesr.profile.sweep import run_sweep
from edgesr.selection.choose import Selection, measured_archs, psnr_from_runs, select_width
from edgesr.selection.configs import ConfigSelection, select_config
from edgesr.selection.plot import plot_configs, plot_selection
from edgesr.student import resolve_arch

__all__ = ["measured_setting", "quickstart_loop", "search_for", "select_for"]


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
    root: ProfileRoot = None,
    clock: str = "wall",
    delegate: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Selection, Path]:
    """Resolve the CLI's defaults from the device file and profiles, select, and plot; `log` hears
    when the comparison is not at the device file's default setting."""
    device = load_device(device_name)
    res = parse_resolution(resolution) if resolution else device.resolution
    if runtime is None:
        have = {r.runtime for r in device_records(device.name, root) if r.resolution == res.text}
        runtime = next((r.name for r in device.runtimes if r.name in have), None)
        if runtime is None:
            raise UsageError(
                f"no measurements on {device.name} at {res.text} in "
                f"{' or '.join(str(r / device.name) for r in profile_roots(root))}: "
                + (
                    f"run `edgesr profile sweep CHECKPOINT --device {device.name}` first"
                    if device.transport in ("host", "macos")
                    else f"time exported artifacts on it first (`edgesr profile run ARTIFACT --device "
                    f"{device.name} --benchmark-binary ...`), or `edgesr profile import` its reports"
                )
            )
    arch = _arch(device, res.text, recipe, scale, runtime, root)
    psnr = psnr_from_runs(list(psnr_from)) if psnr_from else None
    default_threads = device.threads if threads is None else threads
    default = (delegate or device.runtime(runtime).delegates[0], default_threads)
    delegate, threads = measured_setting(device, runtime, res.text, precision, delegate, threads, root)
    if log and (delegate, threads) != default:
        log(
            f"comparing at {runtime}/{delegate}, threads {'not stated' if threads is None else threads}: the "
            f"only setting measured on {device.name} (none at the device file's default)"
        )
    sel = select_width(
        device,
        budget_ms or device.budget_ms,
        arch,
        runtime,
        res,
        precision,
        threads,
        delegate,
        psnr=psnr,
        root=root,
        clock=clock,
        device_threads=False,
    )
    path = plot_selection(sel, plot or Path("runs/select_width") / f"{device.name}.png")
    return sel, path


def search_for(
    device_name: str,
    budget_ms: float | None = None,
    resolution: str | None = None,
    scale: int | None = None,
    recipe: str | None = None,
    threads: int | None = None,
    psnr_from: Sequence[str | os.PathLike[str]] = (),
    plot: str | os.PathLike[str] | None = None,
    root: ProfileRoot = None,
    clock: str = "wall",
    tolerance_db: float = 0.05,
) -> tuple[ConfigSelection, Path]:
    """`edgesr select-width --search`: the whole configuration (edgesr.selection.configs), plotted."""
    device = load_device(device_name)
    res = parse_resolution(resolution) if resolution else device.resolution
    arch = _arch(device, res.text, recipe, scale, None, root)
    psnr = psnr_from_runs(list(psnr_from)) if psnr_from else None
    sel = select_config(device, budget_ms or device.budget_ms, arch, res, threads, psnr, root, clock,
                        tolerance_db=tolerance_db)  # fmt: skip
    path = plot_configs(sel, plot or Path("runs/select_width") / f"{device.name}_configs.png")
    return sel, path


def _arch(
    device: Device, res: str, recipe: str | None, scale: int | None, runtime: str | None, root: ProfileRoot
) -> dict:
    """The recipe's architecture, else the one architecture measured on the device at `res` (on
    `runtime`, when given)."""
    if recipe is not None:
        arch = resolve_arch(recipe)
        if scale is not None and arch["args"]["scale"] != scale:
            raise UsageError(f"--scale {scale} but recipe {recipe} is x{arch['args']['scale']}")
        return arch
    runtimes = [runtime] if runtime else sorted({r.runtime for r in device_records(device.name, root)})
    archs: list[dict] = []
    for rt in runtimes:
        archs += [
            a
            for a in measured_archs(device.name, rt, res, root)
            if (scale is None or a["args"].get("scale") == scale) and a not in archs
        ]
    if len(archs) != 1:
        found = "; ".join(f"{a['name']} {a['args']}" for a in archs) or "none"
        where = f" ({runtime})" if runtime else ""
        raise UsageError(
            f"pass --recipe: {len(archs)} measured architectures on {device.name} at {res}{where}: {found}"
        )
    return archs[0]


def measured_setting(
    device: Device,
    runtime: str,
    resolution: str,
    precision: str,
    delegate: str | None = None,
    threads: int | None = None,
    root: ProfileRoot = None,
) -> tuple[str, int | None]:
    """The delegate and thread count to compare latencies at: those given; else the device file's
    first delegate and threads when whole-model measurements exist there; else the one other setting
    the measurements have, at the same threads or threads not stated (an AI Hub profile: the delegate
    its compute units ran on). Measured at another stated thread count is not taken (not comparable);
    several candidate settings: pass --delegate and --threads."""
    want = (
        delegate or device.runtime(runtime).delegates[0],
        threads if threads is not None else device.threads,
    )
    seen = {
        (r.delegate, r.threads)
        for r in device_records(device.name, root)
        if r.model is not None
        and (r.runtime, r.precision, r.resolution) == (runtime, precision, resolution)
        and delegate in (None, r.delegate)
        and r.threads in ((want[1], None) if threads is None else (threads,))
    }
    if not seen or want in seen:
        return want
    if len(seen) == 1:
        return next(iter(seen))
    found = ", ".join(f"{d} threads {t if t is not None else '-'}" for d, t in sorted(seen, key=str))
    raise UsageError(
        f"measurements of {runtime} {precision} at {resolution} on {device.name} are at several settings "
        f"({found}), none the device file's default; pass --delegate and --threads"
    )


def quickstart_loop(
    student: Path, csd: Path, out: Path, log: Callable[[str], None] | None = None, teacher: Path | None = None
) -> tuple[Selection, Path]:
    """The quickstart's last step: a short host sweep of the student's architecture (3 widths, few
    runs: a first look, not a benchmark), saved under `out/profiles`, then the widest width that
    meets the host's budget, with PSNR from the pipeline's runs. Uses ONNX Runtime when installed,
    else eager PyTorch."""
    device = load_device("host")
    target = "onnx"
    try:
        runtime_info(target)
    except (ImportError, RuntimeError, KeyError, ValueError):
        target = "pytorch"
    root = out / "profiles"
    result = run_sweep(student, target, device.resolution, [0.125, 0.25, 0.5], device.threads, 2, 5, log=log)
    save_records(device.name, result.models, f"models_{result.models[0].runtime}", root)
    # width 1 is the stage-1 teacher's PSNR, not the CSD model's shared teacher (it lost ~0.6 dB to CSD)
    runs = [student, csd, *([teacher] if teacher is not None else [])]
    return select_for("host", psnr_from=runs, plot=out / "select_width.png", root=root)
