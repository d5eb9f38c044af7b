"""Latency profiles: the versioned, diff-friendly YAML format measurements are kept in.

A profile file `devices/profiles/<device>/<name>.yaml` holds one device's measurements of one kind:

    format: edgesr-profile/1
    device: host
    kind: models            # whole models (artifacts); `layers` = the latency model's per-layer table
    records:                # sorted by their identity key, so re-measuring rewrites lines in place
      - artifact: edsr_x2_w0.25_180x320_fp32.onnx
        sha256: 9f2c...     # of the artifact file (or of the weights for eager PyTorch)
        runtime: onnxruntime
        runtime_version: 1.31.1
        delegate: cpu
        precision: fp32
        threads: 2
        resolution: 320x180 # LR input, W x H
        stats: {median_ms: 31.2, p90_ms: 33.0, mean_ms: 31.5, std_ms: 0.9, min_ms: 30.8, max_ms: 34.1,
                count: 20, warmup: 3}
        peak_mem_mb: 41.2   # see edgesr.profile.timing.peak_rss_delta_mb for what it measures
        model: {arch: {name: edsr, args: {...}}, width: 0.25, channels: 16, params: ..., macs: ...}
        layer: null         # layers profiles: {kind, c_in, c_out, kernel, height, width}
        upsampler: depth_to_space  # the export variant timed (null: not recorded)
        activations: null   # int8 with int8 activations: int8 | float-ends
        runtime_options: {} # runtime settings timed, e.g. {spinning: disabled} (ONNX Runtime)
        int8_drop_db: null  # int8 from a checkpoint's weights: Y-PSNR lost to int8 (gate photos)
        ops: []             # per-op times when the source had them (op profiling, ETDump)
        measured_at: '2026-11-22T15:02:11Z'
        method: host        # host | adb:<binary> | import:<format> | aihub:profile
        notes: ''
        machine:            # the CPU it ran on (edgesr.fingerprint); host and adb records have one
          cpu: AMD EPYC (family 26, model 2)
          arch: x86_64
          isa: [avx2, avx512_bf16, avx512_vnni, avx512bw, avx512f, avx_vnni, f16c, fma]
          os: Linux

Every value is in milliseconds unless its name says otherwise. Saving merges by identity key
(artifact hash or name, runtime, delegate, precision, threads, resolution, layer, runtime options,
machine): a new
measurement replaces the old one of the same key and one of the same key without a fingerprint,
others are kept (so measurements of one artifact on two machine kinds sit side by side, and
selection takes the one that matches the machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from edgesr import schema
from edgesr.devices import DEVICES_DIR
from edgesr.errors import ProfileError
from edgesr.files import atomic_write_text
from edgesr.fingerprint import Machine
from edgesr.schema import _check, _found, _plain, config_errors
from edgesr.yamlfile import read_yaml_file

FORMAT = "edgesr-profile/1"
PROFILES_DIR = DEVICES_DIR / "profiles"  # the project's measurements, shipped (read-only to commands)

ProfileRoot = str | os.PathLike[str] | None


def user_profiles_dir() -> Path:
    """Where this user's measurements go: `$EDGESR_PROFILES`, else `$XDG_DATA_HOME/edgesr/profiles`
    (`~/.local/share/edgesr/profiles`). Commands never write into the shipped `devices/profiles/`."""
    if env := os.environ.get("EDGESR_PROFILES"):
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "edgesr" / "profiles"


def profile_roots(root: ProfileRoot = None) -> list[Path]:
    """The folders profiles are read from: `root` alone when given (`--profiles DIR`), else the
    shipped profiles then the user's (a user record with the same key replaces the shipped one)."""
    return [Path(root)] if root is not None else [PROFILES_DIR, user_profiles_dir()]


@dataclass(frozen=True)
class Stats:
    """Latency statistics of `count` timed runs after `warmup` untimed ones, milliseconds.

    Sources differ in what they report (benchmark_model: mean and std; the ExecuTorch benchmark
    app: mean and a 10%-trimmed mean); fields a source does not give stay null, never guessed.
    """

    median_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    trimmed_mean_ms: float | None = None  # mean of the middle 80% (ExecuTorch benchmark app)
    # Process CPU time per run (host timings only): all threads' CPU time, so it excludes time spent
    # waiting for a CPU that other work holds. At 1 thread it approximates the latency on an idle core.
    cpu_median_ms: float | None = None
    cpu_p90_ms: float | None = None
    count: int | None = None  # None when the source does not say
    warmup: int | None = None

    def __post_init__(self) -> None:
        _check(
            any(v is not None for v in (self.median_ms, self.trimmed_mean_ms, self.mean_ms)),
            "",
            "needs median_ms, trimmed_mean_ms or mean_ms",
        )
        names = (
            "median_ms",
            "p90_ms",
            "mean_ms",
            "std_ms",
            "min_ms",
            "max_ms",
            "trimmed_mean_ms",
            "cpu_median_ms",
            "cpu_p90_ms",
        )
        for name in names:
            v = getattr(self, name, None)
            _check(v is None or v >= 0, name, f"must be >= 0 ms, got {v}")
        _check(self.typical_ms > 0, "median_ms", f"a latency must be > 0 ms, got {self.typical_ms}")
        _check(self.count is None or self.count >= 1, "count", f"must be >= 1, got {self.count}")

    @property
    def typical_ms(self) -> float:
        """The figure budgets are compared with: the median, else the trimmed mean, else the mean."""
        for v in (self.median_ms, self.trimmed_mean_ms, self.mean_ms):
            if v is not None:
                return v
        raise AssertionError("unreachable: checked in __post_init__")

    def value(self, clock: str = "wall") -> float | None:
        """The typical figure on `clock`: wall (`typical_ms`) or cpu (`cpu_median_ms`, may be None)."""
        if clock == "cpu":
            return self.cpu_median_ms
        if clock != "wall":
            raise ValueError(f"clock must be wall or cpu, got {clock!r}")
        return self.typical_ms

    def p90(self, clock: str = "wall") -> float | None:
        return self.cpu_p90_ms if clock == "cpu" else self.p90_ms

    @property
    def typical_name(self) -> str:
        return (
            "median"
            if self.median_ms is not None
            else ("trimmed mean" if self.trimmed_mean_ms is not None else "mean")
        )


@dataclass(frozen=True)
class LayerKey:
    """One layer as the latency model sees it: kind + channels (+ kernel) at its input resolution."""

    kind: str  # conv, relu, add, add_bcast, mul_scalar, pixel_shuffle
    c_in: int
    c_out: int
    kernel: int = 0  # conv kernel side; 0 for other kinds
    height: int = 0  # input height of this layer, pixels
    width: int = 0
    repeat: int = 1  # table entries only: the layer chained this many times in one network

    @property
    def text(self) -> str:
        k = f" k{self.kernel}" if self.kernel else ""
        r = f" x{self.repeat}" if self.repeat != 1 else ""
        return f"{self.kind}{k} {self.c_in}->{self.c_out} @{self.width}x{self.height}{r}"


@dataclass(frozen=True)
class ModelInfo:
    arch: dict[str, Any]  # {"name": registered model, "args": constructor arguments}
    width: float
    channels: int  # active feature channels at this width
    params: int
    macs: int  # multiply-accumulates for one frame at the record's resolution


@dataclass(frozen=True)
class OpTime:
    name: str
    kind: str  # op / node type as the runtime names it
    avg_ms: float
    count: int | None = None  # times called per inference
    delegate: str | None = None


@dataclass(frozen=True)
class Record:
    artifact: str
    runtime: str
    delegate: str
    precision: str
    resolution: str  # LR input W x H, e.g. 320x180
    stats: Stats
    measured_at: str
    method: str
    sha256: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    peak_mem_mb: float | None = None
    model: ModelInfo | None = None
    layer: LayerKey | None = None
    ops: tuple[OpTime, ...] = ()
    notes: str = ""
    machine: Machine | None = None  # None: not recorded (imports, files written before fingerprints)
    # The graph variant the artifact was exported as (edgesr.targets.UPSAMPLERS; for int8 with int8
    # activations, the activations policy): None where not recorded (imports, older profiles, eager
    # PyTorch). The artifact's hash already tells variants apart; these say which one it is.
    upsampler: str | None = None
    activations: str | None = None
    # int8 records swept from a checkpoint's own weights: the mean Y-PSNR the int8 graph loses to the
    # float student on the int8 gate photos (edgesr.quant.quality), so selection can rank precisions.
    int8_drop_db: float | None = None
    # runtime settings the artifact was timed with (edgesr.targets.RuntimeOption), e.g.
    # {spinning: disabled}; only those that differ from the runtime's defaults
    runtime_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.runtime_options.items():
            _check(isinstance(value, str), f"runtime_options.{name}",
                   f"must be the setting's name, got {value!r} (YAML reads on/off as booleans)")  # fmt: skip

    @property
    def variant(self) -> str:
        """'depth_to_space, activations int8'; 'default' when the record does not say; runtime options
        after a semicolon ('default; spinning=disabled')."""
        graph = "default" if self.upsampler is None else self.upsampler
        graph += f", activations {self.activations}" if self.upsampler and self.activations else ""
        return graph + "".join(f"; {k}={v}" for k, v in sorted(self.runtime_options.items()))

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity: a re-measurement of the same thing under the same conditions on the same machine
        replaces this."""
        return (*self.condition, self.machine.key if self.machine is not None else ())

    @property
    def condition(self) -> tuple[Any, ...]:
        """The key without the machine: what was measured and how, whichever machine measured it."""
        # A layer-table entry is identified by its layer (its one-op network's weights are random).
        what = self.layer.text if self.layer is not None else (self.sha256 or self.artifact)
        farm = self.method.split(":")[0] == "aihub"  # the farm's phone is not the one on your desk
        return (
            what,
            self.runtime,
            self.delegate,
            self.precision,
            self.threads or 0,
            self.resolution,
            farm,
            *sorted(self.runtime_options.items()),  # nothing for the defaults: older keys unchanged
        )


@dataclass(frozen=True)
class Profile:
    device: str
    kind: Literal["models", "layers"] = "models"
    format: Literal["edgesr-profile/1"] = FORMAT
    records: tuple[Record, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for i, r in enumerate(self.records):
            _check(
                (r.layer is not None) == (self.kind == "layers"),
                f"records[{i}].layer",
                "layers profiles need a layer on every record; models profiles none",
            )


def _sort_key(r: Record) -> tuple[Any, ...]:
    m = r.model
    return (
        r.runtime,
        r.delegate,
        r.precision,
        r.upsampler or "",
        r.activations or "",
        sorted(r.runtime_options.items()),
        r.resolution,
        r.threads or 0,
        r.layer.text if r.layer else "",
        m.channels if m else 0,
        r.artifact,
        r.machine.key if r.machine else (),
    )


def _rounded(value: Any) -> Any:
    """Round floats to 4 decimals (0.1 us) so re-saves do not churn digits."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def dump_profile(profile: Profile) -> str:
    data = _rounded(_plain(replace(profile, records=tuple(sorted(profile.records, key=_sort_key)))))
    head = {k: data[k] for k in ("format", "device", "kind")}
    body = yaml.safe_dump(head, sort_keys=False)
    body += yaml.safe_dump({"records": data["records"]}, sort_keys=False, width=110)
    return f"# edgesr latency profile (docs/devices.md). Measured, not edited by hand.\n{body}"


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate one profile file; ProfileError names the file, key and what was expected."""
    source = str(path)
    with config_errors(ProfileError):
        data = read_yaml_file(path, source)
        if not isinstance(data, dict):
            raise ProfileError(f"expected a profile mapping, got {_found(data)}", source=source)
        if data.get("format") != FORMAT:
            raise ProfileError(
                f"format: expected {FORMAT!r}, got {data.get('format')!r} (not an edgesr profile, or a "
                "newer version)",
                key="format",
                source=source,
            )
        try:
            return schema.from_dict(Profile, data)
        except ProfileError as e:
            raise e.with_source(source) from None


def profile_dir(device: str, root: ProfileRoot = None) -> Path:
    """The folder a device's new records are written to (`root`, default: the user's)."""
    return Path(root if root is not None else user_profiles_dir()) / device


def save_records(
    device: str,
    records: Iterable[Record],
    name: str,
    root: ProfileRoot = None,
    kind: Literal["models", "layers"] = "models",
) -> Path:
    """Merge `records` into `<root>/<device>/<name>.yaml` (same key: the new one wins); atomic.
    `root` defaults to the user's profiles (`user_profiles_dir()`), never the shipped ones."""
    path = profile_dir(device, root) / f"{name}.yaml"
    old: dict[tuple[Any, ...], Record] = {}
    if path.is_file():
        prev = load_profile(path)
        if prev.device != device or prev.kind != kind:
            raise ProfileError(
                f"{path} holds {prev.kind} records of device {prev.device!r}, not {kind} of {device!r}"
            )
        old = {r.key: r for r in prev.records}
    for r in records:
        if r.machine is not None:  # a fingerprinted re-measurement replaces one made before fingerprints
            old.pop((*r.condition, ()), None)
        old[r.key] = r
    atomic_write_text(path, dump_profile(Profile(device, kind, FORMAT, tuple(old.values()))))
    return path


def device_records(device: str, root: ProfileRoot = None, kind: str = "models") -> list[Record]:
    """Every record of `kind` in `<root>/<device>/*.yaml` for each of `profile_roots(root)` (a
    corrupt file raises, naming it); a later root's record replaces an earlier one's with its key."""
    out: dict[tuple[Any, ...], Record] = {}
    for base in profile_roots(root):
        for path in sorted((base / device).glob("*.yaml")):
            p = load_profile(path)
            if p.device != device:
                raise ProfileError(
                    f"device: {p.device!r} in the folder of device {device!r}", source=str(path)
                )
            if p.kind == kind:
                out.update((r.key, r) for r in p.records)
    return list(out.values())
