"""The quickstart's last step on a tiny stand-in for its runs: host sweep -> select-width -> files."""

from __future__ import annotations

import json

import pytest

from edgesr.models import build_model, materialize
from edgesr.pipeline import profile_stage
from edgesr.profile.store import load_profile
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint


def test_profile_stage_measures_selects_and_reports(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from rich.console import Console

    model = materialize(build_model("edsr", scale=2, n_resblocks=1, n_feats=32), 0.25)
    student, csd = tmp_path / "student", tmp_path / "csd"
    save_checkpoint(
        student / "checkpoints", model, CheckpointMeta(model.arch, 2, (0.25,), 0.25, "r", 1), None
    )
    row = {
        "dataset": "val",
        "method": "student w=0.25",
        "width": 0.25,
        "psnr": 30.5,
        "ssim": 0.9,
        "images": 3,
    }
    for run, rows in ((student, [row]), (csd, [row | {"psnr": 30.0}, row | {"width": 1.0, "psnr": 32.0}])):
        run.mkdir(exist_ok=True)
        (run / "results.json").write_text(json.dumps({"rows": rows}))
    sel = profile_stage(student, csd, tmp_path, Console(stderr=True))
    prof = load_profile(tmp_path / "profiles" / "host" / "models_onnxruntime.yaml")
    assert {r.model.channels for r in prof.records} == {8, 16}  # widths 0.125 and 0.25 both snap to 8
    assert all(r.threads == 2 and r.resolution == "320x180" for r in prof.records)
    by_w = {c.width: c for c in sel.candidates}
    assert by_w[0.25].psnr_db == 30.5 and by_w[1.0].psnr_db == 32.0  # best known PSNR per width
    assert by_w[0.5].measured_ms is not None and by_w[1.0].measured_ms is None
    if sel.chosen is not None:
        assert sel.chosen.basis == "measured" and sel.chosen.latency_ms <= sel.budget_ms
    assert (tmp_path / "select_width.png").read_bytes()[:4] == b"\x89PNG"
    assert "| width | channels |" in (tmp_path / "select_width.md").read_text()
    assert "select-width:" in capsys.readouterr().err
