"""ONNX end to end: export, run on ONNX Runtime, parity with PyTorch, dynamic shapes, CLI round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime", reason='ONNX Runtime not installed (pip install "edgesr[onnx]")')
pytest.importorskip("onnx", reason='onnx not installed (pip install "edgesr[onnx]")')

from export_checkpoints import checkpoint  # noqa: E402

from edgesr.cli import main  # noqa: E402
from edgesr.export import (  # noqa: E402
    ExportRequest,
    UnsupportedOpError,
    export_checkpoint,
    get_exporter,
    plan_export,
)
from edgesr.files import sha256_file  # noqa: E402

SHAPE = (1, 3, 24, 32)


@pytest.mark.parametrize(
    "name, widths, args",
    [
        ("edsr", (1.0, 0.5), {"n_resblocks": 1, "n_feats": 16}),
        ("plain", (1.0,), {"n_convs": 3, "n_feats": 8}),
        ("quicksrnet_large", (1.0, 0.5), {"n_intermediate": 1, "n_feats": 16}),  # anchor + clips
        ("xlsr", (1.0, 0.5), {"n_gblocks": 1, "n_feats": 16}),  # grouped convs, concat
    ],
)
def test_onnx_artifact_matches_pytorch(tmp_path, name, widths, args):
    ckpt = checkpoint(tmp_path, name, widths, **args)
    r = export_checkpoint(ExportRequest(ckpt, "onnx", input_shape=SHAPE, out_dir=tmp_path / "out"))
    v = r.verification
    assert v.passed and v.psnr_db > 50 and v.max_abs_diff < 1e-4
    assert "onnxruntime" in v.runtime and "astronaut" in v.image
    m = json.loads(r.manifest_path.read_text())
    assert m["artifact"]["sha256"] == sha256_file(r.artifact)
    assert m["model"]["width"] == min(widths) and m["delegation"]["opset"] == 17
    assert m["delegation"]["ops"]["Conv"] >= 3 and m["delegation"]["delegated_fraction"] == 1.0
    assert m["model"]["params"] > 0 and m["model"]["macs"] > 0
    for key in ("edgesr", "torch", "onnx", "onnxruntime", "numpy", "python"):
        assert key in m["tools"]
    assert {"layout": "NCHW", "range": [0.0, 1.0], "dtype": "float32"}.items() <= m["input"].items()


def test_materialized_student_exports_at_its_width(tmp_path):
    ckpt = checkpoint(tmp_path, "edsr", (0.5,), materialized=0.5, n_resblocks=1, n_feats=16)
    r = export_checkpoint(ExportRequest(ckpt, "onnx", input_shape=SHAPE, out_dir=tmp_path))
    assert r.artifact.name == "edsr_x2_w0.5_24x32_fp32.onnx" and r.verification.passed


def test_dynamic_shapes_run_at_two_sizes(tmp_path):
    ckpt = checkpoint(tmp_path, "edsr", (1.0, 0.5), n_resblocks=1, n_feats=16)
    r = export_checkpoint(ExportRequest(ckpt, "onnx", input_shape=SHAPE, dynamic=True, out_dir=tmp_path))
    assert r.artifact.name.endswith("_dynamic_fp32.onnx")
    assert r.manifest["input"]["shape"] == [1, 3, "height", "width"]
    run = get_exporter("onnx").load(r.artifact)
    for h, w in [(16, 20), (33, 47)]:
        assert run(np.random.rand(1, 3, h, w).astype(np.float32)).shape == (1, 3, 2 * h, 2 * w)


class SVDNet(nn.Module):
    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        return torch.linalg.svd(x)[0]


def test_unsupported_op_names_op_and_target(tmp_path):
    plan = plan_export("onnx", ExportRequest(tmp_path / "unused", "onnx", input_shape=SHAPE))
    with pytest.raises(UnsupportedOpError, match="target 'onnx' cannot convert op 'aten::linalg_svd'") as e:
        get_exporter("onnx").export(SVDNet().eval(), torch.rand(SHAPE), tmp_path / "m.onnx", plan)
    assert (e.value.op, e.value.target) == ("aten::linalg_svd", "onnx")


def test_cli_export_then_inspect(tmp_path, capsys):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), n_convs=3, n_feats=8)
    out = tmp_path / "exports"
    assert main(["export", str(ckpt), "--target", "onnx", "--input", "1x3x16x24", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "onnx" in printed.out and "True" in printed.out
    artifact = out / "plain_x2_w1_16x24_fp32.onnx"
    assert main(["export", str(ckpt), "--target", "onnx", "--input", "1x3x16x24", "--out", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    for path in (artifact, artifact.with_name(artifact.name + ".json")):
        assert main(["inspect", str(path)]) == 0
        shown = capsys.readouterr().out
        assert "sha256 ok" in shown and '"target": "onnx"' in shown
    artifact.with_name(artifact.name + ".json").unlink()
    assert main(["inspect", str(artifact)]) == 1
    assert "no manifest next to it" in capsys.readouterr().err
