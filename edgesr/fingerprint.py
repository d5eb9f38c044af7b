"""What makes a latency valid: the machine it was measured on, as a comparable fingerprint.

A latency holds for one CPU model with one set of instruction-set features: the same int8 graph was
0.65x the speed of fp32 on this project's AVX2-only build machine and 2.5x faster on an
AVX-512/VNNI one (docs/export.md), because XNNPACK and ONNX Runtime pick different kernels by ISA.
So every host and adb profile record carries a `Machine`, and selection compares only records whose
machine is the one it selects for (edgesr.selection).

    Machine(cpu="AMD EPYC (family 25, model 1)", arch="x86_64", isa=("avx2", "f16c", "fma"), os="Linux")

`isa` holds only the features that change which kernels the runtimes pick, from /proc/cpuinfo's
`flags` (x86) or `Features` (Arm), so two machines match when the CPU model, architecture and those
features are equal. The OS is recorded, not matched (a kernel update does not move a conv kernel).
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgesr.schema import _check

# The features XNNPACK / ONNX Runtime / LiteRT dispatch on (their kernel selection code), by the
# names /proc/cpuinfo uses. x86: 256/512-bit FMA, VNNI int8 dot products, AMX tiles, bf16/fp16.
# Arm: dot product (asimddp), int8 matmul (i8mm), fp16 arithmetic (asimdhp), SVE, bf16.
KERNEL_FEATURES: tuple[str, ...] = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "i8mm", "sve", "sve2", "bf16",
)  # fmt: skip
# macOS names (sysctl hw.optional.*) for the Arm features above
_MACOS_FEATURES = {
    "hw.optional.arm.FEAT_DotProd": "asimddp",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "asimdhp",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.AdvSIMD": "asimd",
}


@dataclass(frozen=True)
class Machine:
    """The CPU a measurement was made on (and the OS, for the record)."""

    cpu: str  # model name, e.g. "AMD EPYC 7B13", "Apple M2", "Google Tensor G3"
    arch: str  # x86_64, aarch64, arm64
    isa: tuple[str, ...] = ()  # the KERNEL_FEATURES it has, sorted
    os: str = ""  # e.g. "Linux", "Android 14", "Darwin"

    def __post_init__(self) -> None:
        _check(bool(self.cpu.strip()), "cpu", "must name the CPU model, e.g. 'AMD EPYC 7B13'")
        _check(
            list(self.isa) == sorted(set(self.isa)), "isa", f"must be sorted and unique, got {list(self.isa)}"
        )

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        """What must be equal for two measurements to be comparable."""
        return (self.cpu, self.arch, self.isa)

    def matches(self, other: Machine | None) -> bool:
        return other is not None and self.key == other.key

    def differences(self, other: Machine) -> str:
        """How `other` differs from this machine, for messages: 'cpu X vs Y; isa +avx512_vnni'."""
        parts = []
        if self.cpu != other.cpu:
            parts.append(f"cpu {other.cpu!r} vs {self.cpu!r}")
        if self.arch != other.arch:
            parts.append(f"arch {other.arch} vs {self.arch}")
        extra, missing = sorted(set(other.isa) - set(self.isa)), sorted(set(self.isa) - set(other.isa))
        if extra or missing:
            parts.append("isa " + " ".join([*(f"+{f}" for f in extra), *(f"-{f}" for f in missing)]))
        return "; ".join(parts) or "identical"

    @property
    def text(self) -> str:
        return f"{self.cpu} ({self.arch}; {', '.join(self.isa) or 'no listed kernel features'})"


def kernel_features(flags: str | list[str]) -> tuple[str, ...]:
    """The KERNEL_FEATURES among a cpuinfo `flags` / `Features` line (or list), sorted."""
    have = set(flags.split() if isinstance(flags, str) else flags)
    return tuple(sorted(f for f in KERNEL_FEATURES if f in have))


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(CPU model, kernel features) from /proc/cpuinfo text (each key's first occurrence, i.e. the
    first processor's block for per-processor keys).

    x86 has `model name` and `flags`; Arm Linux/Android has `Features` and, depending on the kernel,
    `Hardware` (the SoC), a generic `model name` ("AArch64 Processor rev 4"), `Model` (a board, e.g.
    "Raspberry Pi 5 Model B") or only `CPU implementer`/`CPU part` (then the model is those numbers).
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key and key not in fields:
            fields[key] = value.strip()
    features = fields.get("flags") or fields.get("Features") or ""
    model = fields.get("Hardware") or fields.get("model name") or fields.get("Model") or ""
    if "cpu family" in fields and "model" in fields:
        # a VM may show only "AMD EPYC": family 25 (Zen 3, AVX2) and 26 (Zen 5, AVX-512/VNNI) both
        # answer to it, and their int8/fp32 speed ratio differs 4x; family and model tell them apart
        model = f"{model or 'x86-64'} (family {fields['cpu family']}, model {fields['model']})"
    if not model and "CPU part" in fields:
        model = f"Arm implementer {fields.get('CPU implementer', '?')} part {fields['CPU part']}"
    return model, kernel_features(features)


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def detect_machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> Machine:
    """This machine's fingerprint: /proc/cpuinfo on Linux, sysctl on macOS, else `platform`."""
    arch, system = platform.machine() or "unknown", platform.system()
    model, isa = "", ()
    if cpuinfo.is_file():
        model, isa = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    elif system == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
        isa = tuple(sorted(f for name, f in _MACOS_FEATURES.items() if _sysctl(name) == "1"))
        isa = kernel_features(list(isa) + _sysctl("machdep.cpu.features").lower().split())
    model = " ".join(model.split()) or platform.processor() or f"unknown {arch} CPU"
    return Machine(cpu=model, arch=arch, isa=isa, os=system)
