"""Latency-driven width selection (choose.py), the whole configuration's (configs.py), their plots
(plot.py), and the command-level wiring to devices and profiles (command.py: `edgesr select-width`,
its `--search`, the quickstart's last step)."""

from edgesr.selection.choose import (
    Candidate,
    Selection,
    measured_archs,
    psnr_from_runs,
    select_width,
    selection_table,
    table_markdown,
)
from edgesr.selection.command import quickstart_loop, search_for, select_for
from edgesr.selection.configs import Config, ConfigSelection, config_table, select_config
from edgesr.selection.plot import plot_configs, plot_selection

__all__ = [
    "Candidate", "Config", "ConfigSelection", "Selection", "config_table", "measured_archs", "plot_configs",
    "plot_selection", "psnr_from_runs", "quickstart_loop", "search_for", "select_config", "select_for",
    "select_width", "selection_table", "table_markdown",
]  # fmt: skip
