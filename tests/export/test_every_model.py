"""Every registered architecture exports to every target and verifies on the target's runtime.

One model per class (presets such as `edsr_baseline` or `quicksrnet_small` build the same class), at
its tiny test size (test_graphs.TINY), fp32 and int8 to all four targets: ONNX, TFLite and ExecuTorch
int8 (PTQ, each target's default activations: float-ends) checked on their runtimes against the q/dq
graph, and Core ML (int8, checked by edgesr's MIL reference evaluator on Linux). Re-parameterisable models are
collapsed before export and their manifests say how many blocks were.
"""

from __future__ import annotations

import pytest
import torch
from test_graphs import TINY

from edgesr.export import ExportOptions, export_student
from edgesr.models import MODELS, build_model, count_rep_blocks
from edgesr.student import load_student
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint

SHAPE = (1, 3, 12, 16)


def _one_per_class() -> list[str]:
    seen: dict[type, str] = {}
    for name in MODELS.names():
        with torch.device("meta"):
            cls = type(build_model(name, scale=2, **TINY[name]))
        seen.setdefault(cls, name)
    return sorted(seen.values())


CLASSES = _one_per_class()


def _student(tmp_path, name: str):
    torch.manual_seed(0)
    model = build_model(name, scale=2, **TINY[name])
    save_checkpoint(tmp_path / name, model, CheckpointMeta(model.arch, 2, (1.0,), None, "r", 1), None)
    return load_student(tmp_path / name), count_rep_blocks(model)


def test_every_registered_class_is_covered():
    assert {"ecbsr", "edsr", "plain", "quicksrnet", "rcan", "xlsr"} <= set(CLASSES)


@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch", "coreml"])
@pytest.mark.parametrize("name", CLASSES)
def test_fp32_export_verifies(tmp_path, name, target):
    student, blocks = _student(tmp_path, name)
    options = ExportOptions(precision="fp32", input_shape=SHAPE, out_dir=tmp_path / "out")
    r = export_student(student, target, options)
    assert r.verification.passed, r.verification.summary()
    assert r.manifest["graph"]["reparameterized_blocks"] == blocks
    assert r.manifest["model"]["name"] == name


@pytest.mark.parametrize("target", ["onnx", "tflite", "executorch", "coreml"])
@pytest.mark.parametrize("name", CLASSES)
def test_int8_export_verifies(tmp_path, name, target):
    student, blocks = _student(tmp_path, name)
    options = ExportOptions(
        precision="int8", input_shape=SHAPE, out_dir=tmp_path / "out", accept_int8_loss=True
    )
    r = export_student(student, target, options)
    assert r.verification.passed, r.verification.summary()
    assert r.manifest["quantization"]["method"] == "ptq"
    if not r.verification.numerics_run:  # Core ML off macOS: edgesr's evaluator, against the q/dq graph
        assert r.verification.structure["checks"]["reference_evaluator"] is True
    assert r.manifest["graph"]["reparameterized_blocks"] == blocks
