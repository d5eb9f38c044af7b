"""Checkpoints: self-describing, atomic, pruned, and clear errors on foreign files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from edgesr.models import build_model, materialize
from edgesr.train.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_model,
    read_meta,
    resolve_checkpoint,
    save_checkpoint,
)


def meta(model, step: int, width: float | None = None) -> CheckpointMeta:
    return CheckpointMeta(model.arch, 2, (1.0, 0.5), width, "abc123", step)


def test_round_trip_rebuilds_model_from_the_file_alone(tmp_path):
    torch.manual_seed(0)
    model = build_model("rcan", scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)
    save_checkpoint(tmp_path / "checkpoints", model, meta(model, 7), None)
    loaded, m = load_model(tmp_path)  # via run dir -> checkpoints/latest
    assert m.step == 7 and m.arch == model.arch and m.widths == (1.0, 0.5)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x, width=0.5), model(x, width=0.5))


def test_materialized_student_round_trip(tmp_path):
    model = build_model("plain", scale=2, n_convs=3, n_feats=16)
    student = materialize(model, 0.5)
    save_checkpoint(tmp_path, student, meta(model, 1, 0.5), None)
    loaded, m = load_model(tmp_path / "step-0000001")
    assert m.materialized_width == 0.5
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x), student(x))


def test_latest_pointer_and_pruning(tmp_path):
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, meta(model, step), {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-0000002", "step-0000003"]
    assert resolve_checkpoint(tmp_path).parent.name == "step-0000003"
    assert not list(tmp_path.glob(".*tmp"))


def test_foreign_safetensors_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "official.safetensors"
    save_file({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="official.safetensors.*not an edgesr checkpoint"):
        read_meta(path)


def test_missing_and_wrong_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="expected an edgesr checkpoint"):
        resolve_checkpoint(tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        resolve_checkpoint(tmp_path)


def test_weights_that_do_not_match_the_architecture(tmp_path):
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    m = CheckpointMeta(
        {"name": "edsr", "args": {**model.arch["args"], "n_feats": 16}}, 2, (1.0,), None, "x", 1
    )
    save_checkpoint(tmp_path, model, m, None)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path)
