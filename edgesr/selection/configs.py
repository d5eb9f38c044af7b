"""Choosing the whole deployed configuration: width x runtime x precision x export variant.

    sel = select_config(load_device("host"), 33.3, arch, psnr={0.25: 38.9, 0.5: 39.4})
    sel.chosen.label            # 'onnxruntime int8 depth_to_space, activations int8, width 0.5'
    write_recipe_export(...)    # edgesr.recipe_edit: the width and the export section a recipe keeps

The candidates are the configurations measured on the device (`edgesr profile sweep --target A B
--precision fp32 int8 --upsampler all --activations all [--runtime-option spinning=all]`), one per
(runtime, delegate, precision, upsampler, activations, runtime options, width), valid on this
machine (edgesr.selection.choose's fingerprint rule).
A configuration's quality is its width's float Y-PSNR (`psnr`, from the runs' results.json) less,
for int8, the drop its sweep measured on the int8 gate photos (recorded when the sweep quantized a
checkpoint's own weights; fp16 is counted as float: edgesr's fp16 exports stay ~80 dB from fp32).

The choice: the most accurate configuration that meets the budget, where configurations within
`tolerance_db` of the best are a tie that the fastest wins (Y-PSNR differences under 0.05 dB are
below what the per-image evaluation resolves, docs/distillation.md). When no fitting configuration
has a known quality (no --psnr-from, or int8 without a measured drop) the widest width wins, float
before int8, then the fastest, and a note says the choice was made without PSNR. Latencies are only
measured ones: the latency model predicts fp32 default graphs only, so it is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgesr.devices import Device, Resolution
from edgesr.errors import UsageError
from edgesr.fingerprint import Machine, detect_machine
from edgesr.profile.store import ProfileRoot, Record, device_records
from edgesr.selection.choose import valid_on
from edgesr.targets import TARGETS, target_of_runtime

FLOAT = ("fp32", "fp16")


@dataclass(frozen=True)
class Config:
    runtime: str
    delegate: str
    precision: str
    variant: str  # Record.variant: 'depth_to_space, activations int8', or 'default'
    upsampler: str | None
    activations: str | None
    width: float
    channels: int
    latency_ms: float
    p90_ms: float | None = None
    float_psnr_db: float | None = None
    int8_drop_db: float | None = None
    runtime_options: tuple[tuple[str, str], ...] = ()  # settings other than the runtime's defaults

    @property
    def psnr_db(self) -> float | None:
        """The width's float Y-PSNR less the int8 drop; None when either is unknown."""
        if self.float_psnr_db is None:
            return None
        if self.precision in FLOAT:
            return self.float_psnr_db
        return None if self.int8_drop_db is None else self.float_psnr_db - self.int8_drop_db

    @property
    def target(self) -> str:
        return target_of_runtime(self.runtime)

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision} {self.variant}, width {self.width:g}"

    def export_section(self) -> dict[str, Any]:
        """What `edgesr export` needs to make this configuration's artifact (a recipe's `export:`)."""
        out: dict[str, Any] = {"target": self.target, "precision": self.precision}
        if TARGETS.get(self.target).delegates:  # a choice inside the artifact (executorch: xnnpack, coreml)
            out["delegate"] = self.delegate
        if self.upsampler is not None:
            out["upsampler"] = self.upsampler
        if self.activations is not None:
            out["activations"] = self.activations
        if self.runtime_options:
            out["runtime_options"] = dict(self.runtime_options)
        return out


def export_flags(section: dict[str, Any]) -> str:
    """`edgesr export` flags that make an export section's artifact: `--target onnx ...
    --runtime-option spinning=disabled`."""
    options = section.get("runtime_options", {})
    flags = [f"--{k} {v}" for k, v in section.items() if k != "runtime_options"]
    return " ".join([*flags, *(f"--runtime-option {k}={v}" for k, v in options.items())])


@dataclass(frozen=True)
class ConfigSelection:
    device: str
    budget_ms: float
    threads: int | None
    resolution: str
    arch: dict[str, Any]
    configs: tuple[Config, ...]  # fastest first
    chosen: Config | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    clock: str = "wall"
    tolerance_db: float = 0.05

    @property
    def rule(self) -> str:
        return (
            f"most accurate within {self.budget_ms:g} ms; within {self.tolerance_db:g} dB of the best, "
            "the fastest"
        )


def _exportable(runtime: str) -> bool:
    """Whether `runtime` runs an export target's artifacts (eager PyTorch, or a runtime no target
    uses, is not a configuration `edgesr export` can make)."""
    try:
        return target_of_runtime(runtime) != "pytorch"
    except KeyError:
        return False


def _config(r: Record, clock: str, psnr: dict[float, float] | None) -> Config:
    assert r.model is not None
    return Config(
        r.runtime,
        r.delegate,
        r.precision,
        r.variant,
        r.upsampler,
        r.activations,
        r.model.width,
        r.model.channels,
        r.stats.value(clock) or 0.0,
        r.stats.p90(clock),
        (psnr or {}).get(r.model.width),
        r.int8_drop_db,
        tuple(sorted(r.runtime_options.items())),
    )


def choose(configs: list[Config], budget_ms: float, tolerance_db: float) -> tuple[Config | None, str | None]:
    """The configuration the module docstring's rule picks, and a note when it had no PSNR to go by."""
    fits = [c for c in configs if c.latency_ms <= budget_ms]
    if not fits:
        return None, None
    rated = [c for c in fits if c.psnr_db is not None]
    if rated:
        best = max(c.psnr_db for c in rated if c.psnr_db is not None)
        tied = [c for c in rated if c.psnr_db is not None and c.psnr_db >= best - tolerance_db]
        return min(tied, key=lambda c: (c.latency_ms, -(c.psnr_db or 0.0), c.label)), None
    chosen = max(fits, key=lambda c: (c.width, c.precision in FLOAT, -c.latency_ms))
    return chosen, (
        "no configuration within the budget has a known Y-PSNR (pass --psnr-from RUN_DIR; int8 needs a "
        "sweep of the trained checkpoint, which records its int8 drop): chosen by width, float before "
        "int8, then speed"
    )


def select_config(
    device: Device,
    budget_ms: float,
    arch: dict[str, Any],
    resolution: Resolution | None = None,
    threads: int | None = None,
    psnr: dict[float, float] | None = None,
    root: ProfileRoot = None,
    clock: str = "wall",
    machine: Machine | None = None,
    tolerance_db: float = 0.05,
) -> ConfigSelection:
    """Every measured configuration of `arch` on `device` at `resolution` (default: the device's)
    and `threads` (default: the device file's), and the choice (module docstring)."""
    if budget_ms <= 0:
        raise UsageError(f"budget must be > 0 ms, got {budget_ms}")
    if tolerance_db < 0:
        raise UsageError(f"--tolerance-db must be >= 0, got {tolerance_db}")
    res = resolution or device.resolution
    threads = threads if threads is not None else device.threads
    if machine is None and device.transport == "host":
        machine = detect_machine()
    records = [
        r
        for r in device_records(device.name, root)
        if r.model is not None
        and r.model.arch == arch
        and r.resolution == res.text
        and r.threads == threads
        and r.stats.value(clock) is not None
    ]
    notes: list[str] = []
    shippable = [r for r in records if _exportable(r.runtime)]
    if len(shippable) < len(records):
        left = sorted({r.runtime for r in records if not _exportable(r.runtime)})
        notes.append(f"measurements on {', '.join(left)} are not configurations edgesr exports (eager "
                     "PyTorch is the reference, not a deployment): left out")  # fmt: skip
    records = shippable
    valid: list[Record] = []
    for runtime in sorted({r.runtime for r in records}):
        for precision in sorted({r.precision for r in records if r.runtime == runtime}):
            group = [r for r in records if (r.runtime, r.precision) == (runtime, precision)]
            valid += valid_on(machine, group, device.name, runtime, notes, "whole-model", precision, threads)
    best: dict[tuple[Any, ...], Record] = {}
    for r in sorted(valid, key=lambda r: (r.machine is not None, r.measured_at)):  # the newest wins
        assert r.model is not None
        options = tuple(sorted(r.runtime_options.items()))
        key = (r.runtime, r.delegate, r.precision, r.upsampler, r.activations, options, r.model.channels)
        old = best.get(key)
        # a later sweep from fresh weights (a recipe) keeps the drop measured on the checkpoint's own
        keep = old is None or r.int8_drop_db is not None
        best[key] = r if keep else replace(r, int8_drop_db=old.int8_drop_db)
    configs = sorted((_config(r, clock, psnr) for r in best.values()), key=lambda c: c.latency_ms)
    if not configs:
        notes.append(
            f"no measurements of this architecture on {device.name} at {res.text}, threads {threads}: run "
            f"`edgesr profile sweep CHECKPOINT --device {device.name} --target onnx tflite executorch "
            "--precision fp32 int8 --upsampler all` first"
        )
    chosen, why = choose(configs, budget_ms, tolerance_db)
    if why:
        notes.append(why)
    if configs and chosen is None:
        notes.append(f"no configuration meets {budget_ms:g} ms; the fastest is {configs[0].label} "
                     f"at {configs[0].latency_ms:.1f} ms")  # fmt: skip
    unrated = sorted({c.runtime for c in configs if c.precision == "int8" and c.int8_drop_db is None})
    if unrated and psnr:
        notes.append(
            f"int8 configurations on {', '.join(unrated)} have no measured int8 drop (swept with fresh "
            "weights?): their Y-PSNR is unknown; sweep the trained checkpoint to rate them"
        )
    return ConfigSelection(
        device.name, budget_ms, threads, res.text, arch, tuple(configs), chosen, tuple(notes), clock,
        tolerance_db,
    )  # fmt: skip


def config_table(sel: ConfigSelection) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of every configuration, fastest first, as strings."""
    unit = "CPU ms" if sel.clock == "cpu" else "ms"
    header = ["runtime", "precision", "variant", "width", "channels", unit, f"p90 {unit}", "int8 drop dB",
              "PSNR dB", "fits"]  # fmt: skip

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = []
    for c in sel.configs:
        fits = "yes" if c.latency_ms <= sel.budget_ms else "no"
        rows.append(
            [c.runtime, c.precision, c.variant, f"{c.width:g}", str(c.channels), f"{c.latency_ms:.1f}",
             f(c.p90_ms, ".1f"), f(c.int8_drop_db, ".3f"), f(c.psnr_db, ".2f"),
             fits + (" <- chosen" if c == sel.chosen else "")]
        )  # fmt: skip
    return header, rows
