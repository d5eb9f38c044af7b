"""A tiny seeded student checkpoint for the exporter tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import torch

from edgesr.models import build_model, materialize
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint


def checkpoint(tmp_path: Path, name: str, widths, materialized: float | None = None, **args) -> Path:
    """Save a seeded x2 `name` model (trained `widths`; materialized at `materialized` if given)."""
    torch.manual_seed(0)
    model = build_model(name, scale=2, **args)
    if materialized is not None:
        model = materialize(model, materialized)
    save_checkpoint(tmp_path / name, model, CheckpointMeta(model.arch, 2, widths, materialized, "r", 1), None)
    return tmp_path / name
