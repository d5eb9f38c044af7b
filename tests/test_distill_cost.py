"""`python -m benchmarks distill-cost`: every method's step timed side by side, with the projection."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main as bench_main


def test_distill_cost_times_each_method_and_projects_the_protocol(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cost.md"
    argv = ["distill-cost", "--scales", "2", "--widths", "0.25", "--methods", "scratch", "output_kd", "csd",
            "--steps", "1", "--warmup", "0", "--seeds", "3", "--out", str(out)]  # fmt: skip
    assert bench_main(argv) == 0
    text = out.read_text()
    printed = capsys.readouterr().out  # rows are printed as they are measured, then written
    assert all(f"| {m} |" in printed for m in ("scratch", "output_kd", "csd"))
    rows = dict(re.findall(r"^\| (\w+) \| ([0-9.]+) \|", text, flags=re.M))
    assert set(rows) == {"scratch", "output_kd", "csd"}
    walls = {k: float(v) for k, v in rows.items()}
    assert all(v > 0 for v in walls.values())
    # the projection is the sum of the rows x the recipe's 600 steps x 3 seeds (whole minutes, from
    # the unrounded rows: 3 rows of 3 decimals can move it by 3 x 0.0005 x 30 = 0.045 min)
    minutes = float(re.search(r"\*\*(\d+) min\*\*", text).group(1))
    assert abs(minutes - sum(walls.values()) * 600 * 3 / 60) <= 0.5 + 0.05
    assert "distill-cost --recipe distill_protocol_cpu --scales 2 --widths 0.25" in text
    assert "Machine:" in text


def test_distill_cost_refuses_cuda_without_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        SystemExit, match="--device cuda: torch .* sees no CUDA GPU here; time on --device cpu"
    ):
        bench_main(["distill-cost", "--scales", "2", "--methods", "scratch", "--device", "cuda"])


def test_benchmarks_print_a_user_error_as_one_line() -> None:
    argv = [sys.executable, "-m", "benchmarks", "distill-cost", "--recipe", "no_such_recipe"]
    root = Path(__file__).resolve().parents[1]  # where `benchmarks` is importable
    run = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=root)
    assert run.returncode == 1 and "Traceback" not in run.stderr  # RecipeError's exit status
    assert run.stderr.startswith("error: unknown recipe 'no_such_recipe'") and run.stderr.count("\n") == 1
