"""Sessions: `nox -s tests`, `nox -s lint`, `nox -s quickstart`, `nox -s benchmarks`.

One private helper installs the package; thin named sessions call it with different knobs.
`session.posargs` pass through (e.g. `nox -s tests -- -k slicing`).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


def _install(session: nox.Session, extras: str = "") -> None:
    # torch is pinned in pyproject (2.13.0) so a CPU machine never resolves a CUDA build.
    # silent=False: pip's progress shows, not minutes of silence on a fresh machine
    session.install("-e", f".[{extras}]" if extras else ".", silent=False)
    session.run(
        "python",
        "-c",
        "import sys, torch, numpy; print(sys.version); "
        "print('torch', torch.__version__, 'numpy', numpy.__version__, 'threads', torch.get_num_threads())",
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (CPU, no downloads)."""
    _install(session, "test,all")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, and the layer contracts of .importlinter (docs/architecture.md) on the source tree."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    session.run("ruff", "check", "edgesr", "tests", "benchmarks", "noxfile.py")
    session.run("lint-imports", "--no-cache")


@nox.session(python=PYTHON)
def quickstart(session: nox.Session) -> None:
    """The main job: distil a width-0.25 student on the built-in photos, print its PSNR table, export it
    to Core ML, TFLite, ExecuTorch and ONNX and print the verification table."""
    _install(session, "all")
    session.run("edgesr", "quickstart", *session.posargs)


@nox.session(python=PYTHON)
def benchmarks(session: nox.Session) -> None:
    """Speed and memory figures (printed, not asserted)."""
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs)
