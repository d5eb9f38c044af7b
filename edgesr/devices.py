"""Devices: one schema-validated YAML file per device under `devices/` (specs, never latencies).

A device file says what the device is (SoC, OS), how edgesr measures on it (`transport`: on this
machine, through `adb`, or imported from Xcode / a macOS host), which runtimes and delegates it
offers, and the default LR input resolution and latency budget a width is chosen for. Measured
latencies live beside the files, in `devices/profiles/<device>/` (see `edgesr.profile.store`).

    d = load_device("pixel8")                  # a shipped name, or a path to a .yaml file
    d.resolution.text, d.budget_ms            # "320x180", 33.3
    [n for n, _ in list_devices()]            # ["galaxy_s24", "host", ...]

A corrupt or unknown file raises `DeviceError` naming the file and the key (with "did you mean").
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from edgesr import schema
from edgesr.errors import DeviceError, UnknownNameError, UsageError
from edgesr.fingerprint import detect_machine
from edgesr.registry import unknown_name_message
from edgesr.schema import _check, _found, config_errors
from edgesr.targets import TARGETS
from edgesr.yamlfile import read_yaml_file

__all__ = [
    "DEVICES_DIR",
    "FARM_SERVICES",
    "RUNTIME_OF_TARGET",
    "Device",
    "Farm",
    "Resolution",
    "RuntimeCfg",
    "list_devices",
    "load_device",
    "parse_resolution",
    "resolve_device",
]

DEVICES_DIR = Path(__file__).resolve().parents[1] / "devices"

# Runtime that runs each export target's artifact ("pytorch" = eager PyTorch, no export): a view of
# the target facts (edgesr.targets).
RUNTIME_OF_TARGET: dict[str, str] = {"pytorch": "pytorch", **{t.name: t.runtime for t in TARGETS.values()}}
RuntimeName = Literal["pytorch", "onnxruntime", "executorch", "litert", "coreml"]
FARM_SERVICES = ("aihub",)  # hosted device farms edgesr drives (`--via aihub`: Qualcomm AI Hub)
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
DETECT = "detect"  # `soc: detect` / `cpu: detect`: read from the running machine (the host device)


@dataclass(frozen=True)
class RuntimeCfg:
    """A runtime on the device and the delegates (backends) it can use there, e.g. cpu, xnnpack, gpu."""

    name: RuntimeName
    delegates: tuple[str, ...] = ("cpu",)
    version: str | None = None  # the version installed on the device, when pinned

    def __post_init__(self) -> None:
        _check(bool(self.delegates), "delegates", "must list at least one delegate (e.g. cpu)")


@dataclass(frozen=True)
class Resolution:
    """LR input size in pixels (the network's input; the output is `scale` times larger)."""

    width: int
    height: int

    def __post_init__(self) -> None:
        _check(self.width >= 1 and self.height >= 1, "", f"must be >= 1 pixel, got {self.text}")

    @property
    def text(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class Farm:
    """The same phone in a hosted device farm: `--via aihub` profiles it there without a cable."""

    service: Literal["aihub"]  # Qualcomm AI Hub
    name: str  # the farm's device name, exactly as `edgesr devices ls --farm aihub` lists it

    def __post_init__(self) -> None:
        _check(
            bool(self.name.strip()), "name", "must name the farm's device, e.g. 'Samsung Galaxy S24 (Family)'"
        )


@dataclass(frozen=True)
class Device:
    name: str  # must equal the file's stem
    soc: str
    os: str
    # host: measured on the machine edgesr runs on; adb: an Android device over adb;
    # xcode: results imported from an Xcode Core ML performance report; macos: coremltools on a Mac.
    transport: Literal["host", "adb", "xcode", "macos"]
    runtimes: tuple[RuntimeCfg, ...]
    resolution: Resolution  # default LR input resolution of the use case
    budget_ms: float  # default latency budget per frame, milliseconds
    description: str = ""
    cpu: str = ""
    threads: int | None = None  # default CPU threads for profiling (None = the runtime's default)
    adb_serial: str | None = None  # adb -s SERIAL (None = the only connected device)
    farm: Farm | None = None  # where `--via aihub` finds this device (None: pass --farm-device)

    def __post_init__(self) -> None:
        _check(_NAME.fullmatch(self.name) is not None, "name", f"must be lower_snake_case, got {self.name!r}")
        _check(self.budget_ms > 0, "budget_ms", f"must be > 0 ms, got {self.budget_ms}")
        _check(bool(self.runtimes), "runtimes", "must list at least one runtime")
        names = [r.name for r in self.runtimes]
        _check(len(set(names)) == len(names), "runtimes", f"has duplicate runtimes: {names}")
        _check(self.threads is None or self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")

    def runtime(self, name: str) -> RuntimeCfg:
        """The device's entry for runtime `name`; ValueError naming the available ones."""
        for r in self.runtimes:
            if r.name == name:
                return r
        have = ", ".join(r.name for r in self.runtimes)
        raise DeviceError(f"device {self.name!r} has no runtime {name!r} (it has: {have})")


def parse_resolution(text: str) -> Resolution:
    """'320x180' (W x H of the LR input) -> Resolution(320, 180)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise UsageError(f"resolution must look like WxH in LR pixels (e.g. 320x180), got {text!r}")
    return Resolution(int(m.group(1)), int(m.group(2)))


def list_devices(root: str | os.PathLike[str] = DEVICES_DIR) -> list[tuple[str, Path]]:
    """(name, path) of every `*.yaml` directly under `root` (profiles/ is not scanned)."""
    return [(p.stem, p) for p in sorted(Path(root).glob("*.yaml"))]


def resolve_device(name_or_path: str | os.PathLike[str], root: str | os.PathLike[str] = DEVICES_DIR) -> Path:
    """A device file path, or a shipped device's name (`pixel8` -> devices/pixel8.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = dict(list_devices(root))
    text = str(name_or_path)
    if text in shipped:
        return shipped[text]
    if path.suffix in (".yaml", ".yml") or "/" in text:
        raise DeviceError(f"no such device file: {text}. Devices in {root}: {', '.join(shipped)}")
    raise UnknownNameError(unknown_name_message("device", text, shipped))


def load_device(name_or_path: str | os.PathLike[str], root: str | os.PathLike[str] = DEVICES_DIR) -> Device:
    """Load and validate a device file; DeviceError names the file, the key and what was expected."""
    file = resolve_device(name_or_path, root)
    source = str(file)
    with config_errors(DeviceError):
        data = read_yaml_file(file, source)
        if not isinstance(data, dict):
            raise DeviceError(f"expected a mapping of device keys, got {_found(data)}", source=source)
        try:
            device = schema.from_dict(Device, data)
        except DeviceError as e:
            raise e.with_source(source) from None
    if DETECT in (device.soc, device.cpu) and device.transport != "host":
        raise DeviceError(
            f"soc/cpu: {DETECT!r} reads the machine edgesr runs on, which only a `transport: host` device "
            f"is; write what this {device.transport} device is (e.g. soc: Google Tensor G3)",
            key="soc" if device.soc == DETECT else "cpu",
            source=source,
        )
    if DETECT in (device.soc, device.cpu):
        # the host is whatever machine runs edgesr: its CPU is read, not written down (edgesr.fingerprint)
        m = detect_machine()
        device = replace(
            device,
            soc=m.cpu if device.soc == DETECT else device.soc,
            cpu=f"{m.arch}; {', '.join(m.isa) or 'no listed kernel features'}"
            if device.cpu == DETECT
            else device.cpu,
        )
    if device.name != file.stem:
        raise DeviceError(
            f"name: {device.name!r} does not match the file name {file.name!r} (expected {file.stem!r})",
            key="name",
            source=source,
        )
    return device
