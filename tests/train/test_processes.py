"""The trainer across processes: DDP through torchrun, and a real SIGKILL followed by --resume."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from edgesr.train.checkpoint import resolve_checkpoint

RECIPE = """\
name: ddp
scale: 2
model: {{name: edsr, args: {{n_resblocks: 1, n_feats: 16}}}}
data: {{train: {train}, val: [{val}], patch_size: 8, batch_size: {batch}, workers: 0}}
train: {{mode: single, widths: [1.0], steps: 3, checkpoint_every: 3, val_every: 3, log_every: 1}}
"""


def _train(tmp_path, photos, batch: int, nproc: int, run: str) -> dict[str, torch.Tensor]:
    recipe = tmp_path / f"{run}.yaml"
    recipe.write_text(RECIPE.format(train=photos["train"], val=photos["val"], batch=batch))
    cmd = [sys.executable, "-m", "edgesr", "train", str(recipe), "--run-dir", str(tmp_path / run)]
    if nproc > 1:
        torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "edgesr", *cmd[3:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(resolve_checkpoint(tmp_path / run))


def test_two_ranks_match_one_process_with_the_global_batch(tiny_photos, tmp_path):
    ddp = _train(tmp_path, tiny_photos, batch=2, nproc=2, run="ddp")
    single = _train(tmp_path, tiny_photos, batch=4, nproc=1, run="single")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-5)
    assert (tmp_path / "ddp" / "results.json").is_file()  # rank 0 wrote the run's files once


def test_sigkill_at_any_moment_then_resume_equals_uninterrupted(tiny_photos, tmp_path):
    """A real kill (not a clean stop) shortly after the first checkpoint: resume ends identical.

    The kill lands within ~50 ms of `latest` appearing, so mostly in the steps after a checkpoint;
    writes mid-checkpoint are covered by the atomic-write design and tests/train/test_checkpoint.py."""
    import signal
    import time

    recipe = tmp_path / "kill.yaml"
    recipe.write_text(
        RECIPE.format(train=tiny_photos["train"], val=tiny_photos["val"], batch=2)
        .replace("steps: 3, checkpoint_every: 3", "steps: 40, checkpoint_every: 5")
        .replace("val_every: 3", "val_every: 1000")
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    base = [sys.executable, "-m", "edgesr", "train"]
    full = subprocess.run(
        [*base, str(recipe), "--run-dir", str(tmp_path / "full")], env=env, capture_output=True
    )
    assert full.returncode == 0, full.stderr[-2000:]

    proc = subprocess.Popen([*base, str(recipe), "--run-dir", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not latest.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.is_file(), "the run ended before its first checkpoint; nothing to resume"
    resumed = subprocess.run([*base, "--resume", str(tmp_path / "killed")], env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (
        load_file(resolve_checkpoint(tmp_path / "full")),
        load_file(resolve_checkpoint(tmp_path / "killed")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
