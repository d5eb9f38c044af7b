"""The quickstart pipeline: three stages chained by run directory, skipped when done."""

from __future__ import annotations

import json

import pytest

from edgesr.pipeline import quickstart
from edgesr.train.checkpoint import read_meta
from edgesr.train.trainer import TrainingError


def tiny(photos) -> list[str]:
    return [
        "model.args={n_resblocks: 1, n_feats: 16}",
        f"data.train={photos['train']}",
        f"data.val=[{photos['val']}]",
        "data.patch_size=8",
        "data.batch_size=2",
        "data.workers=0",
        "train.steps=2",
        "train.checkpoint_every=2",
        "train.val_every=2",
        "train.optim.milestones=[]",
    ]


def test_pipeline_chains_stages_and_skips_completed_ones(tiny_photos, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export stage is checked with the onnx target")
    result = quickstart(tmp_path / "qs", tiny(tiny_photos), export_targets=["onnx"])
    for stage in ("teacher", "csd", "student"):
        assert json.loads((tmp_path / "qs" / stage / "status.json").read_text())["state"] == "completed"
    methods = [r.method for r in result.rows]
    assert methods == [
        "bicubic",
        "teacher (w=1)",
        "CSD model teacher (w=1)",
        "CSD model student w=0.25",
        "student w=0.25 fine-tuned",
    ]
    assert "student w=0.25 fine-tuned" in (tmp_path / "qs" / "results.md").read_text()
    # the deployable student is a stand-alone narrow model built from the CSD model's slices
    assert read_meta(result.student).materialized_width == 0.25
    # stage 4: the student exported and verified on ONNX Runtime, at the default 180x320 input
    (onnx,) = result.exports.results
    assert onnx.verification.passed and onnx.verification.psnr_db > 50
    assert onnx.artifact.parent == tmp_path / "qs" / "exports" and onnx.artifact.exists()
    assert "_w0.25_180x320_fp32.onnx" in onnx.artifact.name
    # a second run reuses every completed stage
    again = quickstart(tmp_path / "qs", tiny(tiny_photos), export_targets=[])
    assert [r.psnr for r in again.rows] == [r.psnr for r in result.rows]
    assert capsys.readouterr().err.count("already completed") == 3


def test_pipeline_refuses_a_directory_holding_another_recipe(tiny_photos, tmp_path):
    quickstart(tmp_path / "qs", tiny(tiny_photos), export_targets=[])
    with pytest.raises(TrainingError, match="different recipe"):
        quickstart(tmp_path / "qs", [*tiny(tiny_photos), "seed=1"], export_targets=[])
