"""Latency-driven width selection (choose.py), its plot (plot.py), and the command-level wiring to
devices and profiles (command.py: `edgesr select-width`, the quickstart's last step)."""

from edgesr.selection.choose import (
    Candidate,
    Selection,
    measured_archs,
    psnr_from_runs,
    select_width,
    selection_table,
    table_markdown,
)
from edgesr.selection.command import quickstart_loop, select_for
from edgesr.selection.plot import plot_selection

__all__ = [
    "Candidate", "Selection", "measured_archs", "plot_selection", "psnr_from_runs",
    "quickstart_loop", "select_for", "select_width", "selection_table", "table_markdown",
]  # fmt: skip
