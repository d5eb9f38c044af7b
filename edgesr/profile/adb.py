"""Profile on an Android device through `adb`: push the artifact and the runtime's benchmark binary,
run it, parse its output, and always try to remove what was pushed.

    rec = profile_android("m.tflite", "./benchmark_model", Adb(serial="emulator-5554"), threads=4)

Binaries are the user's own builds (LiteRT's `benchmark_model`, ExecuTorch's `executor_runner`);
edgesr downloads nothing. Every adb call is an argument list (no shell on this side), and its output
is checked: a device that is missing, offline or disconnects mid-run raises `DeviceDisconnectedError`
naming the serial and the step; any other failure raises `AdbError` with the command's output tail.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from edgesr.errors import EdgesrError, NotFoundError, UsageError
from edgesr.fingerprint import Machine, parse_cpuinfo
from edgesr.profile.importers import Parsed, parse_benchmark_model, parse_executor_runner
from edgesr.profile.store import Record
from edgesr.profile.timing import now_utc

REMOTE_ROOT = "/data/local/tmp"
_GONE = re.compile(
    r"error: device (?:'[^']*' )?not found|error: device offline|error: no devices/emulators found"
    r"|error: device unauthorized|error: closed|error: protocol fault|device not found",
    re.I,
)


class AdbError(EdgesrError, RuntimeError):
    """An adb command failed; the message holds the command and the tail of its output."""


class DeviceDisconnectedError(AdbError):
    """The device is not connected, offline, or went away while a command ran."""


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


@dataclass(frozen=True)
class Adb:
    serial: str | None = None
    executable: str = "adb"
    timeout_s: float = 900.0

    @property
    def who(self) -> str:
        return f"device {self.serial!r}" if self.serial else "the adb device"

    def run(self, *args: str, step: str) -> str:
        """Run `adb [-s SERIAL] ARGS...`; return stdout + stderr, or raise naming `step`."""
        if args and args[0] == "shell":  # adb joins shell arguments into one device command line
            args = ("shell", *(shlex.quote(a) for a in args[1:]))
        cmd = [self.executable, *(["-s", self.serial] if self.serial else []), *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise AdbError(
                f"adb executable {self.executable!r} not found: install Android platform-tools "
                "or pass --adb PATH"
            ) from None
        except subprocess.TimeoutExpired:
            raise AdbError(f"{step}: `{' '.join(cmd)}` did not finish within {self.timeout_s:g} s") from None
        out = (p.stdout or "") + (p.stderr or "")
        if _GONE.search(out):
            raise DeviceDisconnectedError(
                f"{self.who} disconnected or is offline ({step}: `{' '.join(cmd)}`): {_tail(out, 2)}"
            )
        if p.returncode != 0:
            raise AdbError(
                f"{step} failed (exit {p.returncode}) on {self.who}: `{' '.join(cmd)}`: {_tail(out)}"
            )
        return out

    def check_connected(self) -> None:
        state = self.run("get-state", step="checking the connection").strip().splitlines()
        if not state or state[-1].strip() != "device":
            raise DeviceDisconnectedError(
                f"{self.who} is not ready (adb get-state: {_tail(' '.join(state), 1)})"
            )


def _litert_command(
    binary: str, model: str, threads: int | None, runs: int, warmup: int, delegate: str, op_profiling: bool
) -> list[str]:
    cmd = [binary, f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}"]
    if threads is not None:
        cmd.append(f"--num_threads={threads}")
    if delegate == "gpu":
        cmd.append("--use_gpu=true")
    elif delegate == "nnapi":
        cmd.append("--use_nnapi=true")
    elif delegate not in ("xnnpack", "cpu"):
        raise UsageError(f"benchmark_model delegate must be xnnpack, cpu, gpu or nnapi, got {delegate!r}")
    if op_profiling:
        cmd.append("--enable_op_profiling=true")
    return cmd


def _executorch_command(binary: str, model: str, threads: int | None, runs: int) -> list[str]:
    cmd = [binary, f"--model_path={model}", f"--num_executions={runs}"]
    if threads is not None:
        cmd.append(f"--cpu_threads={threads}")
    return cmd


def profile_android(
    artifact: str | Path,
    binary: str | Path,
    adb: Adb,
    runtime: str | None = None,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 5,
    delegate: str = "xnnpack",
    op_profiling: bool = False,
    resolution: str = "",
    precision: str = "fp32",
) -> tuple[Record, str]:
    """Time `artifact` on the device with `binary`; returns (Record, raw output).

    `runtime`: litert (.tflite + benchmark_model) or executorch (.pte + executor_runner); by default
    from the artifact's suffix. The pushed folder `/data/local/tmp/edgesr-<random>` is removed
    afterwards whatever happened; if that fails too, the error says what is left on the device.
    """
    artifact, binary = Path(artifact), Path(binary)
    for p in (artifact, binary):
        if not p.is_file():
            raise NotFoundError(f"no such file: {p}")
    runtime = runtime or {".tflite": "litert", ".pte": "executorch"}.get(artifact.suffix)
    if runtime not in ("litert", "executorch"):
        raise UsageError(f"{artifact}: Android profiling supports .tflite (litert) and .pte (executorch)")
    remote = f"{REMOTE_ROOT}/edgesr-{uuid.uuid4().hex[:8]}"
    model, exe = f"{remote}/{artifact.name}", f"{remote}/{binary.name}"
    adb.check_connected()
    machine = phone_machine(adb)
    try:
        adb.run("shell", "mkdir", "-p", remote, step="creating the work folder")
        adb.run("push", str(artifact), model, step="pushing the artifact")
        adb.run("push", str(binary), exe, step="pushing the benchmark binary")
        adb.run("shell", "chmod", "755", exe, step="making the binary executable")
        if runtime == "litert":
            cmd = _litert_command(exe, model, threads, runs, warmup, delegate, op_profiling)
        else:
            cmd = _executorch_command(exe, model, threads, runs)
        out = adb.run("shell", *cmd, step=f"running {binary.name}")
        parsed: Parsed = (
            parse_benchmark_model(out, f"{binary.name} on {adb.who}")
            if runtime == "litert"
            else parse_executor_runner(out, f"{binary.name} on {adb.who}")
        )
    except BaseException as e:  # Ctrl-C and parser errors included: never leave files on the phone
        _cleanup(adb, remote, e)
        raise
    else:
        _cleanup(adb, remote, None)
    rec = Record(
        artifact=artifact.name,
        runtime=runtime,
        delegate=parsed.delegate or delegate,
        precision=precision,
        resolution=resolution,
        stats=parsed.stats,
        measured_at=now_utc(),
        method=f"adb:{binary.name}",
        threads=parsed.threads if parsed.threads is not None else threads,
        peak_mem_mb=parsed.peak_mem_mb,
        ops=parsed.ops,
        notes=parsed.notes,
        machine=machine,
    )
    if runtime == "executorch" and parsed.stats.warmup is not None:
        rec = replace(
            rec, notes=(rec.notes + "; " if rec.notes else "") + "executor_runner has no warm-up flag"
        )
    return rec, out


def phone_machine(adb: Adb) -> Machine | None:
    """The phone's fingerprint: its SoC (`ro.soc.model`, Android 12+; else cpuinfo's `Hardware`),
    ABI, Arm kernel features from /proc/cpuinfo, Android version. None when the phone does not say
    (the timing is still recorded; selection then says the record has no fingerprint)."""
    try:
        cpuinfo = adb.run("shell", "cat", "/proc/cpuinfo", step="reading the CPU features")
        soc = adb.run("shell", "getprop", "ro.soc.model", step="reading the SoC").strip()
        abi = adb.run("shell", "getprop", "ro.product.cpu.abi", step="reading the ABI").strip()
        release = adb.run("shell", "getprop", "ro.build.version.release", step="reading the OS").strip()
    except AdbError:
        return None
    model, isa = parse_cpuinfo(cpuinfo)
    arch = {"arm64-v8a": "aarch64", "x86_64": "x86_64"}.get(abi, abi or "unknown")
    if not (soc or model):
        return None
    return Machine(cpu=soc or model, arch=arch, isa=isa, os=f"Android {release}".strip())


def _cleanup(adb: Adb, remote: str, error: BaseException | None) -> None:
    """Remove the pushed folder; on failure, tell the user what is left (on `error`, or raise)."""
    try:
        adb.run("shell", "rm", "-rf", remote, step="removing the pushed files")
    except AdbError as e:
        msg = f"could not remove {remote} from {adb.who} ({e}); remove it with: adb shell rm -rf {remote}"
        if error is not None:
            error.add_note(msg)
        else:
            raise AdbError(msg) from None
