"""Evaluation helpers: a materialized student runs only at its own width, and says so."""

from __future__ import annotations

import pytest
import torch

from edgesr.evaluate import model_widths, run_sr
from edgesr.models import build_model, materialize


def test_materialized_model_refuses_other_widths():
    shared = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    student = materialize(shared, 0.5)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(run_sr(student, x), shared(x, width=0.5))  # None: its own width
    torch.testing.assert_close(run_sr(student, x, 0.5), shared(x, width=0.5))
    with pytest.raises(ValueError, match="materialized at width 0.5; it cannot run at width 1"):
        run_sr(student, x, 1.0)
    with pytest.raises(ValueError, match="cannot run at width 0.25"):
        model_widths(student, [0.25])
    assert model_widths(student, [0.5]) == [0.5]
    assert model_widths(shared, [0.25]) == [1.0, 0.25]
    torch.testing.assert_close(run_sr(shared, x), shared(x))
