"""The export orchestration, independent of any SDK: a TorchScript stand-in target exercises staging,
`force`, verification and manifests; the error paths name the target, option or pip extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesr.export import (
    EXPORTERS,
    TARGETS,
    ExportOptions,
    ExportRequest,
    MissingSDKError,
    UnsupportedOptionError,
    VerificationError,
    export_all,
    export_checkpoint,
    parse_input_shape,
    read_manifest,
)
from edgesr.export.base import staged
from edgesr.export.verify import output_psnr, verification_input
from edgesr.files import sha256_file
from edgesr.models import build_model
from edgesr.student import load_student, student_width
from edgesr.targets import TargetSpec
from edgesr.train.checkpoint import CheckpointMeta, read_meta, save_checkpoint

SHAPE = (1, 3, 12, 16)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the stand-in target


class TorchScriptTarget:
    """A stand-in target with no SDK: TorchScript files run by torch.jit (or deliberately wrong)."""

    spec = TargetSpec(
        name="ts", suffix=".pt", sdk_label="TorchScript", extra="none", runtime="torch.jit",
        runtime_package="torch", runtime_label="torch.jit", precisions=("fp32",),
    )  # fmt: skip

    def __init__(self, noise: float = 0.0) -> None:
        self.noise = noise

    def sdk_versions(self):
        return {}

    def export(self, model, example, path, request):
        torch.jit.trace(model, example).save(str(path))

    def load(self, path, threads=None, options=None):
        self.spec.check_runtime_options(options or {})
        m = torch.jit.load(str(path))

        def run(x):
            with torch.no_grad():
                return m(torch.from_numpy(x)).numpy() + self.noise

        return run

    def run(self, path, x):
        return self.load(path)(x)

    def delegation(self, path):
        return {"ops": {"TorchScript": 1}}

    def runs_here(self, path=None):
        return None

    def validate(self, path, plan):
        return {"checks": {}, "passed": True}

    def evaluator(self):
        return None

    def io_spec(self, path):
        return {}


def register_ts(monkeypatch, target: TorchScriptTarget) -> None:
    monkeypatch.setitem(TARGETS._items, "ts", target.spec)
    monkeypatch.setitem(EXPORTERS._items, "ts", target)


@pytest.fixture
def ts_target(monkeypatch):
    register_ts(monkeypatch, TorchScriptTarget())


@pytest.fixture
def shared_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    meta = CheckpointMeta(model.arch, 2, (1.0, 0.5), None, "rhash", 3)
    save_checkpoint(tmp_path / "run" / "checkpoints", model, meta, None)
    return tmp_path / "run"


def test_export_writes_verified_artifact_and_manifest(ts_target, shared_ckpt, tmp_path, checkpoint_reads):
    r = export_checkpoint(ExportRequest(shared_ckpt, "ts", input_shape=SHAPE, out_dir=tmp_path / "out"))
    assert len(checkpoint_reads) == 1  # header and weights in one read, for the whole export
    assert r.artifact == tmp_path / "out" / "edsr_x2_w0.5_12x16_fp32.pt"  # default: narrowest width
    assert r.verification.passed and r.verification.psnr_db > 50
    m, mpath = read_manifest(r.artifact)
    assert mpath == r.manifest_path and m == json.loads(mpath.read_text())
    assert m["artifact"]["sha256"] == sha256_file(r.artifact)
    assert m["model"]["width"] == 0.5 and m["model"]["scale"] == 2
    assert m["input"]["shape"] == list(SHAPE) and m["output"]["shape"] == [1, 3, 24, 32]
    assert m["source"]["recipe_hash"] == "rhash"
    assert m["source"]["checkpoint_sha256"] == sha256_file(
        shared_ckpt / "checkpoints/step-0000003/model.safetensors"
    )
    assert not list((tmp_path / "out").glob(".*"))  # no staging leftovers


def test_existing_artifact_needs_force(ts_target, shared_ckpt, tmp_path):
    req = ExportRequest(shared_ckpt, "ts", input_shape=SHAPE, out_dir=tmp_path)
    first = export_checkpoint(req).artifact
    before, mtime = first.read_bytes(), first.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=first.name):
        export_checkpoint(req)
    assert first.read_bytes() == before and first.stat().st_mtime_ns == mtime
    from dataclasses import replace

    again = export_checkpoint(replace(req, force=True)).artifact
    assert again == first and first.stat().st_mtime_ns != mtime


def test_failed_verification_leaves_nothing(monkeypatch, shared_ckpt, tmp_path):
    register_ts(monkeypatch, TorchScriptTarget(noise=0.1))
    msg = r"PSNR \d+\.\d dB vs PyTorch.*\(bar 50 dB\).*nothing was written"
    with pytest.raises(VerificationError, match=msg):
        export_checkpoint(ExportRequest(shared_ckpt, "ts", input_shape=SHAPE, out_dir=tmp_path / "o"))
    assert list((tmp_path / "o").iterdir()) == []


def test_missing_sdk_names_the_pip_extra(monkeypatch, shared_ckpt, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(MissingSDKError) as e:
        export_checkpoint(ExportRequest(shared_ckpt, "onnx", input_shape=SHAPE, out_dir=tmp_path))
    assert str(e.value) == "target 'onnx' needs the ONNX SDK: pip install \"edgesr[onnx]\""
    options = ExportOptions(input_shape=SHAPE, out_dir=tmp_path)
    report = export_all(load_student(shared_ckpt), options, ["onnx"])
    assert report.results == [] and 'pip install "edgesr[onnx]"' in report.skipped["onnx"]


def test_unknown_target_lists_the_registered_ones(shared_ckpt):
    valid = "Valid: coreml, executorch, onnx, tflite"
    with pytest.raises(KeyError, match=f"unknown target 'onyx'.*Did you mean 'onnx'.*{valid}"):
        export_checkpoint(ExportRequest(shared_ckpt, "onyx"))


def test_unsupported_precision_names_target_precision_and_supported(shared_ckpt):
    unsupported = "'fp16' is not yet supported for target 'onnx'.*fp32, int8"
    with pytest.raises(UnsupportedOptionError, match=unsupported):
        export_checkpoint(ExportRequest(shared_ckpt, "onnx", precision="fp16"))
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, int8"):
        ExportRequest(shared_ckpt, "onnx", precision="bf16")


def test_width_choice(shared_ckpt, tmp_path):
    meta = read_meta(shared_ckpt)
    assert student_width(meta, None) == 0.5 and student_width(meta, 1.0) == 1.0
    with pytest.raises(ValueError, match="width 0.25 was not trained.*1, 0.5"):
        student_width(meta, 0.25)
    narrow = CheckpointMeta(meta.arch, 2, (0.25,), 0.25, "h", 1)
    assert student_width(narrow, None) == 0.25
    with pytest.raises(ValueError, match="materialized student at width 0.25"):
        student_width(narrow, 0.5)


def test_input_shape_parsing():
    assert parse_input_shape("1x3x180x320") == (1, 3, 180, 320)
    for bad in ("1x3x180", "2x3x8x8", "1x1x8x8", "1x3xax8"):
        with pytest.raises(ValueError, match="1x3xHxW|\\(1, 3, H, W\\)"):
            parse_input_shape(bad)


def test_staged_keeps_the_old_file_on_failure(tmp_path):
    final = tmp_path / "a.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), staged(final, force=True) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("conversion failed")
    assert final.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [final]


def test_verification_input_is_a_real_padded_crop():
    x, note = verification_input((1, 3, 300, 40), 2)  # taller than the 256x256 LR: padded
    assert x.shape == (1, 3, 300, 40) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
    assert "astronaut" in note and "mirror-padded" in note
    assert output_psnr(x, x) == float("inf")
    assert output_psnr(x / 2, x / 2 + 0.01) == pytest.approx(40.0)  # data range 1


class StructuralTarget(TorchScriptTarget):
    """A target whose runtime "cannot run here": verification is structural plus an evaluator."""

    def __init__(self, evaluator_noise: float) -> None:
        super().__init__()
        self.evaluator_noise = evaluator_noise

    def runs_here(self, path=None):
        return "needs another OS"

    def validate(self, path, plan):
        return {"checks": {"readable": True}, "passed": True}

    def evaluator(self):
        return "edgesr program evaluator, not the runtime", self.evaluate

    def evaluate(self, path, x):
        return self.load(path)(x) + self.evaluator_noise


@pytest.mark.parametrize("noise, passes", [(0.0, True), (0.1, False)])
def test_structural_verification_counts_the_program_evaluator(
    monkeypatch, shared_ckpt, tmp_path, noise, passes
):
    register_ts(monkeypatch, StructuralTarget(noise))
    req = ExportRequest(shared_ckpt, "ts", input_shape=SHAPE, out_dir=tmp_path / "o")
    if not passes:  # the evaluator's numerics are part of the verdict, not a figure on the side
        with pytest.raises(VerificationError, match="structure FAILED.*reference_evaluator"):
            export_checkpoint(req)
        assert list((tmp_path / "o").iterdir()) == []
        return
    v = export_checkpoint(req).verification
    assert not v.numerics_run and v.passed and "needs another OS" in v.note
    assert v.structure["checks"]["reference_evaluator"] is True
    assert v.structure["reference_evaluator"]["psnr_db"] == "inf"


def test_int8_plan_defaults_per_target_and_mode():
    """PTQ keeps the image-facing ends float with min/max ranges where the graph may hold float ops
    (docs/quantization.md: 0.66 -> 0.21 dB mean loss on 14 real photos), int8 everywhere when fully
    integer or from a QAT checkpoint; 16-bit activations are refused for export with the reason."""
    from edgesr.export import plan_export

    ptq = plan_export("executorch", ExportOptions(precision="int8"))
    assert (ptq.activations, ptq.estimator) == ("float-ends", "minmax")
    npu = plan_export("tflite", ExportOptions(precision="int8", fully_integer=True))
    assert (npu.activations, npu.estimator) == ("int8", "histogram")
    assert plan_export("tflite", ExportOptions(precision="int8"), qat=True).activations == "int8"
    with pytest.raises(UnsupportedOptionError, match="17 dB"):
        plan_export("tflite", ExportOptions(precision="int8", activations="int16"))
    with pytest.raises(ValueError, match="no 16-bit activation kernels|17 dB"):
        plan_export("executorch", ExportOptions(precision="int8", activations="int16-ends"))
