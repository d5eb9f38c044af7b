"""A run directory has one owner; interruption, a full disk and errors leave it resumable and say so.

Real processes where the behaviour is about processes (two writers, SIGINT), a real tmpfs for the
full disk (root only: mounting needs it; CI runs as root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from edgesr.cli import main
from edgesr.train import trainer as trainer_mod
from edgesr.train.checkpoint import resolve_checkpoint

RECIPE = """\
name: safety
scale: 2
model: {{name: edsr, args: {{n_resblocks: {blocks}, n_feats: {feats}}}}}
data: {{train: {train}, val: [{val}], patch_size: 8, batch_size: 2, workers: {workers}}}
train: {{mode: single, widths: [1.0], steps: {steps}, checkpoint_every: {every}, val_every: 100000,
         log_every: 1}}
"""


def _recipe(tmp_path: Path, photos, *, steps=6, every=3, feats=16, blocks=1, workers=0) -> Path:
    path = tmp_path / f"safety-{steps}-{every}-{feats}-{workers}.yaml"
    path.write_text(RECIPE.format(train=photos["train"], val=photos["val"], steps=steps, every=every,
                                  feats=feats, blocks=blocks, workers=workers))  # fmt: skip
    return path


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgesr", "train", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait_for(pred, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        assert proc.poll() is None, f"the run ended early (exit {proc.returncode})"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def test_a_second_writer_of_a_run_dir_is_refused_naming_the_pid(tiny_photos, tmp_path):
    """Before: both processes exited 0 and the second overwrote the first's recipe and checkpoints."""
    recipe = _recipe(tmp_path, tiny_photos, steps=100_000, every=100_000)
    run = tmp_path / "run"
    log = (tmp_path / "first.log").open("w")  # a file, not a pipe nobody reads: a full pipe blocks
    first = subprocess.Popen(_cmd(str(recipe), "--run-dir", str(run)), env=ENV, text=True,
                             stdout=log, stderr=log)  # fmt: skip
    try:
        _wait_for(lambda: (run / "status.json").is_file(), first)
        second = subprocess.run(_cmd(str(recipe), "--run-dir", str(run)), env=ENV, capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        resume = subprocess.run(_cmd("--resume", str(run)), env=ENV, capture_output=True, text=True,
                                timeout=300)  # fmt: skip
        for proc in (second, resume):
            assert proc.returncode == 1, proc.stderr[-2000:]
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert str(run) in lines[0] and f"PID {first.pid}" in lines[0]
        assert first.poll() is None, "the first run must still be running for this test to mean anything"
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=300) == 130, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        first.kill()
    assert _status(run)["state"] == "stopped"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "the log has duplicated steps: two writers ran"


def test_the_lock_dies_with_its_process(tiny_photos, tmp_path):
    """A SIGKILLed run leaves its lock file but no lock: --resume goes on."""
    recipe = _recipe(tmp_path, tiny_photos, steps=400, every=2)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(str(recipe), "--run-dir", str(run)), env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for(lambda: (run / "checkpoints" / "latest").is_file(), proc)
    proc.kill()
    proc.wait()
    assert (run / ".lock").is_file()
    from edgesr.files import owned_dir

    with owned_dir(run):  # acquired at once: the kernel dropped the dead process's lock
        pass


def test_ctrl_c_finishes_the_step_saves_says_stopped_and_resume_equals_uninterrupted(tiny_photos, tmp_path):
    """Before: status.json stayed "running" and the steps since the last checkpoint were lost.
    Ctrl-C reaches the whole process group, the data loader's worker too: sent so here."""
    recipe = _recipe(tmp_path, tiny_photos, steps=300, every=1000, workers=1)
    full, run = tmp_path / "full", tmp_path / "run"
    done = subprocess.run(_cmd(str(recipe), "--run-dir", str(full)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    proc = subprocess.Popen(_cmd(str(recipe), "--run-dir", str(run)), env=ENV, text=True,
                            start_new_session=True, **pipes)  # fmt: skip

    def logged_steps() -> int:
        log = run / "log.jsonl"
        return len(log.read_text().splitlines()) if log.is_file() else 0

    _wait_for(lambda: logged_steps() >= 5, proc)
    os.killpg(proc.pid, signal.SIGINT)  # the trainer and its data-loader worker, as a terminal does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    status = _status(run)
    assert status["state"] == "stopped" and status["signal"] == "SIGINT"
    assert 5 <= status["step"] < 300
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step-{status['step']:07d}", "the stop saved a checkpoint at the step it stopped"
    assert f"edgesr train --resume {run}" in err and "Traceback" not in err

    resumed = subprocess.run(_cmd("--resume", str(run)), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_file(resolve_checkpoint(full)), load_file(resolve_checkpoint(run))
    assert all((a[k] == b[k]).all() for k in a)


def test_resuming_a_completed_run_changes_nothing(tiny_photos, tmp_path, capsys):
    """Before: it "succeeded" and overwrote results.json with zero throughput."""
    recipe = _recipe(tmp_path, tiny_photos, steps=2, every=2)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in before}
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "already completed at step 2" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in before} == mtimes


def test_an_error_mid_run_sets_status_failed_with_the_reason(tiny_photos, tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, tiny_photos, steps=6, every=2)
    run = tmp_path / "run"
    real = trainer_mod._checkpoint
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in the second checkpoint")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "_checkpoint", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        from edgesr.recipe import load_recipe

        trainer_mod.train(load_recipe(recipe), run)
    status = _status(run)
    assert status["state"] == "failed" and "simulated failure" in status["reason"] and status["step"] == 4
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000002"


def test_plain_progress_lines_come_by_time_not_only_by_step(tiny_photos, tmp_path, monkeypatch, capsys):
    """Before: with log_every 100 and no terminal, the first line came after 100 steps."""
    from edgesr.train.monitor import Monitor

    path = tmp_path / "quiet.yaml"
    recipe = _recipe(tmp_path, tiny_photos, steps=3, every=3).read_text()
    path.write_text(recipe.replace("log_every: 1", "log_every: 100"))
    monkeypatch.setattr(Monitor, "PLAIN_EVERY_S", 0.0)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "training steps 1..3 into" in err
    assert "step 1/3" in err and "step 2/3" in err


MOUNTED = os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    if not MOUNTED:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_mid_checkpoint_keeps_the_last_good_one(tiny_photos, tmp_path, small_disk, capsys):
    """Before: a half-written staging folder, status "running", and
    `[enforce fail at inline_container.cc:672] . unexpected pos`."""
    # 32 channels x 2 blocks: a checkpoint (weights + Adam moments) is about 0.55 MB, so the first
    # fits in 1.2 MB and the second (written before the first is pruned) does not.
    recipe = _recipe(tmp_path, tiny_photos, steps=6, every=2, feats=32, blocks=2)
    run = small_disk / "run"
    assert main(["train", str(recipe), "--run-dir", str(run)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("step", "training"))]
    assert len(err) == 1 and "no space left on" in err[0] and str(small_disk) in err[0], err
    assert "need about" in err[0] and "step-0000002" in err[0] and f"--resume {run}`" in err[0], err
    status = _status(run)
    assert status["state"] == "failed" and "no space left" in status["reason"]
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-0000002"
    assert load_file(ckpts / "step-0000002" / "model.safetensors")  # the last good one reads back
    assert not [p.name for p in ckpts.iterdir() if p.name.startswith(".")], "a staging folder was left"
