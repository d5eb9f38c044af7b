"""The adb path against a test double of `adb`: a script on PATH that records its arguments and
replays real-format tool output, including a device that disconnects mid-run."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from edgesr.cli import main
from edgesr.fingerprint import Machine
from edgesr.profile.adb import Adb, AdbError, DeviceDisconnectedError, profile_android
from edgesr.profile.store import load_profile

DATA = Path(__file__).parent / "data"

FAKE_ADB = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
else:
    serial = "emulator-5554"
mode = os.environ.get("FAKE_ADB_MODE", "ok")
gone = os.environ["FAKE_ADB_LOG"] + ".gone"
if os.path.exists(gone) or mode == "offline":
    msg = "error: device offline" if mode == "offline" else f"error: device '{{serial}}' not found"
    sys.stderr.write(msg + "\n")
    sys.exit(1)
if args == ["get-state"]:
    print("device"); sys.exit(0)
if args[0] == "push":
    print(f"{{args[1]}}: 1 file pushed, 0 skipped."); sys.exit(0)
if args[0] == "shell" and args[1] in ("mkdir", "chmod", "rm"):
    sys.exit(0)
if args[1:] == ["cat", "/proc/cpuinfo"]:
    print("processor\t: 0\nFeatures\t: fp asimd fphp asimdhp asimddp i8mm bf16 sve\n"
          "CPU implementer\t: 0x41\nCPU part\t: 0xd4d\n"); sys.exit(0)
if args[1:2] == ["getprop"]:
    print({{"ro.soc.model": "Tensor G3", "ro.product.cpu.abi": "arm64-v8a",
           "ro.build.version.release": "14"}}[args[2]]); sys.exit(0)
if args[0] == "shell":
    reply = open(os.environ["FAKE_ADB_REPLY"]).read()
    if mode == "disconnect":
        sys.stdout.write(reply[: len(reply) // 3])
        open(gone, "w").close()
        sys.stderr.write(f"error: device '{{serial}}' not found\n")
        sys.exit(1)
    if mode == "crash":
        sys.stdout.write(reply[: len(reply) // 3])
        sys.stderr.write("Segmentation fault\n")
        sys.exit(139)
    sys.stdout.write(reply); sys.exit(0)
sys.stderr.write("fake adb: unexpected " + " ".join(args) + "\n"); sys.exit(2)
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "adb_log.jsonl"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))

    def calls() -> list[list[str]]:
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    return calls


@pytest.fixture
def files(tmp_path):
    art = tmp_path / "edsr_x2_w0.25_180x320_fp32.tflite"
    art.write_bytes(b"TFL3 not really a model")
    pte = tmp_path / "edsr_x2_w0.25_180x320_fp32.pte"
    pte.write_bytes(b"ET12 not really a program")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    return art, pte, binary


def _remote_dirs(calls):
    return {a[a.index("mkdir") + 2] for a in calls if "mkdir" in a}


def test_litert_run_pushes_runs_parses_and_cleans_up(fake_adb, files, monkeypatch):
    art, _, binary = files
    monkeypatch.setenv("FAKE_ADB_REPLY", str(DATA / "benchmark_model_cpu.txt"))
    rec, out = profile_android(
        art,
        binary,
        Adb(serial="3A1B2C3D"),
        threads=4,
        runs=50,
        warmup=5,
        delegate="gpu",
        op_profiling=True,
        resolution="320x180",
    )
    calls = fake_adb()
    assert all(c[:2] == ["-s", "3A1B2C3D"] for c in calls)
    (remote,) = _remote_dirs(calls)
    assert remote.startswith("/data/local/tmp/edgesr-")
    pushes = [c[3:] for c in calls if c[2] == "push"]
    assert pushes == [[str(art), f"{remote}/{art.name}"], [str(binary), f"{remote}/benchmark_model"]]
    run = next(c[3:] for c in calls if c[2] == "shell" and c[3].endswith("/benchmark_model"))
    assert f"--graph={remote}/{art.name}" in run and "--num_threads=4" in run and "--use_gpu=true" in run
    assert "--num_runs=50" in run and "--warmup_runs=5" in run and "--enable_op_profiling=true" in run
    assert calls[-1][2:] == ["shell", "rm", "-rf", remote]  # cleaned up last
    # the phone's fingerprint, read before anything is pushed (edgesr.fingerprint)
    isa = ("asimd", "asimddp", "asimdhp", "bf16", "i8mm", "sve")
    assert rec.machine == Machine("Tensor G3", "aarch64", isa, "Android 14")
    assert rec.stats.median_ms == pytest.approx(44.19) and rec.method == "adb:benchmark_model"
    assert rec.runtime == "litert" and rec.threads == 4 and rec.resolution == "320x180"
    assert "count=50" in out


def test_executorch_runner_path(fake_adb, files, monkeypatch):
    _, pte, binary = files
    runner = binary.with_name("executor_runner")
    binary.rename(runner)
    monkeypatch.setenv("FAKE_ADB_REPLY", str(DATA / "executor_runner_iterations.txt"))
    rec, _ = profile_android(pte, runner, Adb(), threads=4, runs=6)
    run = next(c[1:] for c in fake_adb() if c[0] == "shell" and c[1].endswith("/executor_runner"))
    assert any(a.startswith("--model_path=") for a in run) and "--num_executions=6" in run
    assert "--cpu_threads=4" in run
    assert rec.runtime == "executorch" and rec.stats.count == 5 and "no warm-up flag" in rec.notes


def test_device_that_disconnects_mid_run(fake_adb, files, monkeypatch):
    art, _, binary = files
    monkeypatch.setenv("FAKE_ADB_REPLY", str(DATA / "benchmark_model_cpu.txt"))
    monkeypatch.setenv("FAKE_ADB_MODE", "disconnect")
    with pytest.raises(
        DeviceDisconnectedError, match=r"device '3A1B2C3D' disconnected.*running benchmark_model"
    ) as e:
        profile_android(art, binary, Adb(serial="3A1B2C3D"))
    calls = fake_adb()
    (remote,) = _remote_dirs(calls)
    # cleanup was still attempted, and since the device is gone the error says what is left
    assert calls[-1][2:] == ["shell", "rm", "-rf", remote]
    assert any(f"adb shell rm -rf {remote}" in n for n in getattr(e.value, "__notes__", []))


def test_offline_device_fails_before_pushing(fake_adb, files, monkeypatch):
    art, _, binary = files
    monkeypatch.setenv("FAKE_ADB_MODE", "offline")
    with pytest.raises(DeviceDisconnectedError, match="offline"):
        profile_android(art, binary, Adb())
    assert [c for c in fake_adb() if "push" in c] == []


def test_crashing_binary_reports_exit_code_and_cleans_up(fake_adb, files, monkeypatch):
    art, _, binary = files
    monkeypatch.setenv("FAKE_ADB_REPLY", str(DATA / "benchmark_model_cpu.txt"))
    monkeypatch.setenv("FAKE_ADB_MODE", "crash")
    with pytest.raises(AdbError, match=r"exit 139.*Segmentation fault"):
        profile_android(art, binary, Adb())
    assert fake_adb()[-1][:3] == ["shell", "rm", "-rf"]


def test_missing_adb_executable_is_a_clear_error(files):
    art, _, binary = files
    with pytest.raises(AdbError, match="adb executable '/nonexistent/adb' not found"):
        profile_android(art, binary, Adb(executable="/nonexistent/adb"))


def test_cli_profile_run_on_android_saves_a_profile(fake_adb, files, monkeypatch, tmp_path):
    art, _, binary = files
    monkeypatch.setenv("FAKE_ADB_REPLY", str(DATA / "benchmark_model_op_profiling.txt"))
    rc = main(
        [
            "profile",
            "run",
            str(art),
            "--device",
            "pixel8",
            "--benchmark-binary",
            str(binary),
            "--op-profiling",
            "--profiles",
            str(tmp_path / "prof"),
            "--resolution",
            "320x180",
        ]
    )
    assert rc == 0
    prof = load_profile(tmp_path / "prof" / "pixel8" / "models_litert.yaml")
    (rec,) = prof.records
    assert prof.device == "pixel8" and prof.kind == "models"
    assert rec.stats.mean_ms == pytest.approx(44.452) and len(rec.ops) == 9 and rec.delegate == "xnnpack"
    assert rec.sha256 is not None and rec.artifact == art.name
