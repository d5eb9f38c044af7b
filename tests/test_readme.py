"""Every command in the README's ```bash blocks runs, in order, as a newcomer would type it, in a
temporary copy of the repository: each exits 0, the repository's tracked files stay unchanged, and
what trains ends above bicubic.

Two kinds of line are adapted, and the test says so:
- training lines get a small `train.steps` override (the README's full runs take ~10 minutes each);
  the set-up line `python3 -m nox -s quickstart` runs what that session runs, `edgesr quickstart`;
- `python3 -m nox -s lint tests` is this test suite itself (CI runs it, via .ci/run), not re-run.
Lines under a `# needs: ...` comment need what the comment names (a phone, network access) and are
listed, not run; the test checks that every such line says what it needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = 200  # a stage of the quickstart at 200 steps ends above bicubic (see the note below)
BENCH_STEPS = 20  # `bench distill` trains 9 methods x 2 seeds: its table, not its quality, is checked
TRAINS = re.compile(r"^edgesr (quickstart|train (?!--resume)|bench distill)")


def bash_lines(readme: str) -> list[tuple[str, str | None]]:
    """(command, what it needs or None) for every command line of the ```bash blocks, in order."""
    out: list[tuple[str, str | None]] = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        needs = None
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("# needs:"):
                needs = line.removeprefix("# needs:").strip()
            elif line and not line.startswith("#"):
                out.append((line, needs))
                needs = None
    return out


def adapted(line: str) -> str | None:
    """The shell line the test runs for a README line (None: not run here, see the module doc)."""
    command = line.split("  #")[0].strip()  # drop the trailing comment
    if command == "python3 -m pip install nox && python3 -m nox -s quickstart":
        command = "edgesr quickstart"
    elif "nox -s lint tests" in command:
        return None
    if TRAINS.match(command):
        steps = BENCH_STEPS if command.startswith("edgesr bench") else STEPS
        command = re.sub(r" train\.steps=\d+", "", command) + f" train.steps={steps}"
    if command.startswith("edgesr "):
        command = f"{shlex.quote(sys.executable)} -m edgesr {command[len('edgesr ') :]}"
    elif command.startswith("python "):
        command = f"{shlex.quote(sys.executable)} {command[len('python ') :]}"
    return command


def test_every_readme_line_needs_nothing_or_says_what():
    lines = bash_lines((REPO / "README.md").read_text())
    assert len(lines) > 20
    for line, needs in lines:
        if needs is None:
            assert "benchmark_model" not in line and "real-photos" not in line, line
    assert any(n and "phone" in n for _, n in lines)


def _tracked(root: Path) -> dict[str, str]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    names = [n for n in files.decode().split("\0") if n]
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names if (root / n).is_file()}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tracked files")
def test_readme_commands_run_as_written(tmp_path):
    """About 12 minutes on 2 cores: the quickstart and every export, sweep and QAT line of the README."""
    copy = tmp_path / "repo"
    for name in _tracked(REPO):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    before = _tracked(copy)
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / ".local/share"),
           "EDGESR_CACHE": str(home / ".cache/edgesr"), "OMP_NUM_THREADS": "2"}  # fmt: skip
    env.pop("EDGESR_PROFILES", None)  # the documented default place, under this HOME
    ran, listed = [], []
    for line, needs in bash_lines((copy / "README.md").read_text()):
        command = adapted(line)
        if needs is not None or command is None:
            listed.append((line, needs or "this test suite itself"))
            continue
        print(f"README line: {line}", file=sys.stderr, flush=True)  # shown with -s, or on a failure
        proc = subprocess.run(["bash", "-c", command], cwd=copy, env=env, capture_output=True, text=True,
                              timeout=1200)  # fmt: skip
        failed = f"README line failed: {line}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        assert proc.returncode == 0, failed
        ran.append(line)
    assert _tracked(copy) == before, "a README command changed the repository's own files"
    # what trained ends above bicubic on the val photos: the quickstart's student, and each README run
    results = {
        p.parent.relative_to(copy).as_posix(): json.loads(p.read_text()) for p in copy.rglob("results.json")
    }
    finals = ["runs/quickstart/student", "runs/teacher", "runs/student", "runs/quickstart/qat"]
    for run in finals:
        rows = results[run]["rows"]
        bicubic = next(r["psnr"] for r in rows if r["method"] == "bicubic")
        trained = [r["psnr"] for r in rows if r["width"] is not None]
        assert trained and min(trained) > bicubic, f"{run}: {trained} vs bicubic {bicubic}"
    print(f"ran {len(ran)} README lines; not run here: {listed}")
