"""The selection plots (PNG): latency vs width and PSNR vs latency for one setting; PSNR vs latency
of every measured configuration for `select-width --search`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesr.files import atomic_path

if TYPE_CHECKING:
    from edgesr.selection.choose import Selection
    from edgesr.selection.configs import ConfigSelection


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as a PNG at `path` atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_selection(sel: Selection, path: str | os.PathLike[str]) -> Path:
    """PNG: latency vs width (measured, predicted, budget) and PSNR vs latency where both are known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    cs = sel.candidates
    unit = "CPU-time" if sel.clock == "cpu" else "wall-clock"
    pm = [(c.width, c.predicted_ms) for c in cs if c.predicted_ms is not None]
    mm = [(c.width, c.measured_ms) for c in cs if c.measured_ms is not None]
    if pm:
        a.plot(*zip(*pm, strict=True), "o--", color="tab:gray", label="latency model")
    if mm:
        a.plot(*zip(*mm, strict=True), "s-", color="tab:blue", label=f"measured ({unit} median)")
    a.axhline(sel.budget_ms, color="tab:red", lw=1, label=f"budget {sel.budget_ms:g} ms")
    if sel.chosen is not None and sel.chosen.latency_ms is not None:
        a.plot([sel.chosen.width], [sel.chosen.latency_ms], "*", ms=16, color="tab:green", label="chosen")
    a.set(
        xlabel="student width",
        ylabel=f"{unit} ms per frame",
        yscale="log",
        title=f"{sel.device}: {sel.runtime}/{sel.delegate} {sel.precision}, {sel.resolution}",
    )
    a.legend(fontsize=8)
    pts = [
        (c.latency_ms, c.psnr_db, c.width) for c in cs if c.latency_ms is not None and c.psnr_db is not None
    ]
    if pts:
        b.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        for ms, db, w in pts:
            b.annotate(f"w={w:g}", (ms, db), textcoords="offset points", xytext=(4, 4), fontsize=8)
        b.axvline(sel.budget_ms, color="tab:red", lw=1)
    else:
        b.text(
            0.5,
            0.5,
            "no width has both a PSNR and a latency\n(pass --psnr-from RUN_DIR)",
            ha="center",
            va="center",
            transform=b.transAxes,
        )
    b.set(xlabel=f"{unit} ms per frame", ylabel="Y-PSNR (dB)", title="PSNR vs latency")
    return _save(fig, path)


def plot_configs(sel: ConfigSelection, path: str | os.PathLike[str]) -> Path:
    """PNG: Y-PSNR (else width, when no PSNR is known) vs latency of every configuration, one colour
    per runtime and one marker per precision, the budget line, and the choice starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rated = any(c.psnr_db is not None for c in sel.configs)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"fp32": "o", "fp16": "D", "int8": "s"}
    colours = dict(zip(sorted({c.runtime for c in sel.configs}), plt.cm.tab10.colors, strict=False))
    for runtime, colour in colours.items():
        for precision, marker in markers.items():
            pts = [c for c in sel.configs if (c.runtime, c.precision) == (runtime, precision)]
            pts = [c for c in pts if c.psnr_db is not None] if rated else pts
            if pts:
                ys = [c.psnr_db if rated else c.width for c in pts]
                ax.scatter([c.latency_ms for c in pts], ys, color=colour, marker=marker,
                           label=f"{runtime} {precision}", alpha=0.8)  # fmt: skip
    ax.axvline(sel.budget_ms, color="tab:red", lw=1, label=f"budget {sel.budget_ms:g} ms")
    c = sel.chosen
    if c is not None and (c.psnr_db is not None or not rated):
        ax.plot([c.latency_ms], [c.psnr_db if rated else c.width], "*", ms=18, color="tab:green",
                label=f"chosen: {c.label}")  # fmt: skip
    unit = "CPU-time" if sel.clock == "cpu" else "wall-clock"
    ax.set(xlabel=f"{unit} ms per frame (median)", xscale="log",
           ylabel="Y-PSNR (dB), int8: float less its drop" if rated else "student width (no PSNR known)",
           title=f"{sel.device}: configurations at {sel.resolution}, threads {sel.threads}")  # fmt: skip
    ax.legend(fontsize=7)
    return _save(fig, path)
