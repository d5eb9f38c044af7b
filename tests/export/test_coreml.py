"""Core ML: export at every precision, structural verification (Core ML cannot run on Linux), manifests,
validation that catches a mismatched or corrupt package, the missing-SDK message, unsupported ops, --force.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools", reason='coremltools not installed (pip install "edgesr[coreml]")')

from export_checkpoints import checkpoint as save_checkpoint_of  # noqa: E402

from edgesr.cli import main  # noqa: E402
from edgesr.export import (  # noqa: E402
    ExportRequest,
    MissingSDKError,
    UnsupportedOpError,
    export_checkpoint,
    get_exporter,
    plan_export,
)
from edgesr.export.coreml import NOT_ON_LINUX  # noqa: E402
from edgesr.export.coreml_eval import NAME as EVALUATOR  # noqa: E402
from edgesr.export.manifest import artifact_sha256  # noqa: E402
from edgesr.export.verify import FLOAT_PSNR_DB, INT8_PSNR_DB, output_psnr, verification_input  # noqa: E402
from edgesr.models import build_model, materialize  # noqa: E402

SHAPE = (1, 3, 12, 16)
MODELS = {
    "edsr": ((1.0, 0.5), {"n_resblocks": 1, "n_feats": 16}),
    "plain": ((1.0,), {"n_convs": 3, "n_feats": 8}),
}
# (precision, weight_only) -> how every conv weight must be stored in the program
WEIGHTS = {
    ("fp16", False): "FLOAT16 const",
    ("fp32", False): "FLOAT32 const",
    ("int8", True): "INT8 constexpr_affine_dequantize",
    ("int8", False): "INT8 constexpr_affine_dequantize",
}
ON_MAC = platform.system() == "Darwin"


def checkpoint(tmp_path, name: str):
    widths, args = MODELS[name]
    return save_checkpoint_of(tmp_path, name, widths, **args)


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coreml")
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before conftest's per-test cache fixture
        mp.setenv("EDGESR_CACHE", str(tmp / "cache"))
        ckpt = checkpoint(tmp, "edsr")
        req = ExportRequest(ckpt, "coreml", precision="fp16", input_shape=SHAPE, out_dir=tmp)
        return export_checkpoint(req)


@pytest.mark.parametrize(
    "name, precision, weight_only, activations",
    [("edsr", "fp16", False, None), ("edsr", "fp32", False, None), ("edsr", "int8", True, None),
     ("edsr", "int8", False, None), ("edsr", "int8", False, "int8"), ("plain", "fp16", False, None),
     ("plain", "int8", False, None)],
)  # fmt: skip
def test_export_verifies_structure_and_says_numerics_not_run(tmp_path, name, precision, weight_only, activations):  # noqa: E501
    # accept_int8_loss: a random net (see tests/quant/test_quality.py)
    req = ExportRequest(checkpoint(tmp_path, name), "coreml", precision=precision, weight_only=weight_only,
                        input_shape=SHAPE, out_dir=tmp_path / "out", calibration_images=2,
                        accept_int8_loss=True, activations=activations)  # fmt: skip
    r = export_checkpoint(req)
    assert r.artifact.suffix == ".mlpackage" and r.artifact.is_dir()
    v, m = r.verification, json.loads(r.manifest_path.read_text())
    if ON_MAC:
        assert v.numerics_run and v.passed
        return
    assert v.passed and not v.numerics_run and NOT_ON_LINUX in v.note
    assert m["verification"]["numerics_run"] is False and m["verification"]["psnr_db"] is None
    assert "numerics not run" in m["verification"]["note"]
    s = v.structure
    assert all(ok is True for ok in s["checks"].values()) and s["scale"] == 2
    w8a8 = precision == "int8" and not weight_only
    if w8a8 and activations is None:  # the default: float ends, so the first and last conv are fp16
        assert m["quantization"]["activations"].endswith("(float-ends)")
        ends = 3 if name == "plain" else 2  # plain: its nearest conv reads the image too
        int8 = WEIGHTS[precision, weight_only]
        assert s["weights"] == {"FLOAT16 const": ends, int8: s["ops"]["conv"] - ends}
    else:
        assert set(s["weights"]) == {WEIGHTS[precision, weight_only]}
    assert s["ops"]["conv"] == sum(s["weights"].values()) >= 3
    assert ("quantize" in s["ops"]) == w8a8
    if name == "edsr":
        assert s["ops"]["pixel_shuffle"] == 1
    assert m["artifact"]["sha256"] == artifact_sha256(r.artifact)
    assert m["input"]["dtype"] == m["output"]["dtype"] == ("float32" if precision == "fp32" else "float16")
    assert m["delegation"]["ops"] == s["ops"]
    assert "not measurable on Linux" in m["delegation"]["compute_units"]
    assert m["tools"]["coremltools"]
    if precision == "int8":
        assert m["quantization"]["method"] == ("weight_only" if weight_only else "ptq")


def test_validate_rejects_a_mismatched_or_corrupt_package(fp16_export, tmp_path):
    coreml, path = get_exporter("coreml"), fp16_export.artifact
    req = ExportRequest(path, "coreml", precision="fp16", input_shape=SHAPE)
    assert coreml.validate(path, plan_export("coreml", req))["passed"]
    other_shape = coreml.validate(path, plan_export("coreml", replace(req, input_shape=(1, 3, 16, 16))))
    assert not other_shape["passed"] and "input shape [1, 3, 12, 16]" in other_shape["checks"]["input"]
    fp32 = coreml.validate(path, plan_export("coreml", replace(req, precision="fp32")))
    assert "FLOAT32 const" in fp32["checks"]["weights"] and "FLOAT32" in fp32["checks"]["input"]
    int8 = coreml.validate(path, plan_export("coreml", replace(req, precision="int8", weight_only=True)))
    assert "not stored as int8" in int8["checks"]["weights"] and int8["checks"]["input"] is True
    dynamic = coreml.validate(path, plan_export("coreml", replace(req, dynamic=True)))
    assert "not flexible" in dynamic["checks"]["input"]
    broken = tmp_path / "broken.mlpackage"
    shutil.copytree(path, broken)
    (broken / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(b"\x00not a protobuf" * 8)
    result = coreml.validate(broken, plan_export("coreml", req))
    assert not result["passed"] and "cannot read the model spec" in result["checks"]["readable"]


def test_dynamic_shapes(tmp_path):
    ckpt = checkpoint(tmp_path, "edsr")
    req = ExportRequest(ckpt, "coreml", precision="fp16", input_shape=SHAPE, dynamic=True, out_dir=tmp_path)
    r = export_checkpoint(req)
    assert r.artifact.name.endswith("_dynamic_fp16.mlpackage") and r.verification.passed
    assert r.manifest["input"]["shape"] == [1, 3, "height", "width"]
    static = get_exporter("coreml").validate(r.artifact, plan_export("coreml", replace(req, dynamic=False)))
    assert "flexible dims" in static["checks"]["input"]


def test_missing_sdk_names_the_pip_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)
    with pytest.raises(MissingSDKError, match=r'pip install "edgesr\[coreml\]"'):
        export_checkpoint(ExportRequest(tmp_path / "unused", "coreml", input_shape=SHAPE))


class ErfinvNet(nn.Module):
    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        return torch.erfinv(x * 0.5)


def test_unsupported_op_names_op_and_target(tmp_path):
    req = ExportRequest(tmp_path / "unused", "coreml", input_shape=SHAPE)
    match = "target 'coreml' cannot convert op 'aten.erfinv.default'"
    with pytest.raises(UnsupportedOpError, match=match) as e:
        plan = plan_export("coreml", req)
        get_exporter("coreml").export(ErfinvNet().eval(), torch.rand(SHAPE), tmp_path / "m.mlpackage", plan)
    assert (e.value.op, e.value.target) == ("aten.erfinv.default", "coreml")
    assert not (tmp_path / "m.mlpackage").exists()


def test_cli_defaults_to_fp16_and_needs_force_to_replace(tmp_path, capsys):
    ckpt, out = checkpoint(tmp_path, "plain"), tmp_path / "exports"
    args = ["export", str(ckpt), "--target", "coreml", "--input", "1x3x12x16", "--out", str(out)]
    assert main(args) == 0
    artifact = out / "plain_x2_w1_12x16_fp16.mlpackage"
    capsys.readouterr()
    assert main(args) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    (artifact / "stale-file").write_text("left from an older export")
    assert main([*args, "--force"]) == 0
    manifest = json.loads(artifact.with_name(artifact.name + ".json").read_text())
    assert not (artifact / "stale-file").exists()
    assert manifest["artifact"]["sha256"] == artifact_sha256(artifact)
    assert main(["inspect", str(artifact)]) == 0
    assert "structure only" in capsys.readouterr().out


@pytest.mark.parametrize("upsampler, mil_ops", [("pixelshuffle", {"pixel_shuffle"}),
                                                ("depth_to_space", {"reshape", "transpose"}),
                                                ("transposed_conv", {"conv_transpose"})])  # fmt: skip
def test_each_upsampler_converts_to_its_mil_ops(tmp_path, upsampler, mil_ops):
    req = ExportRequest(checkpoint(tmp_path, "edsr"), "coreml", precision="fp16", input_shape=SHAPE,
                        upsampler=upsampler, out_dir=tmp_path)  # fmt: skip
    r = export_checkpoint(req)
    ops = r.manifest["delegation"]["ops"]
    assert r.verification.passed and r.manifest["graph"]["upsampler"] == upsampler
    assert mil_ops <= set(ops) and ("pixel_shuffle" in ops) == (upsampler == "pixelshuffle")


@pytest.mark.parametrize("precision, weight_only", list(WEIGHTS))
def test_reference_evaluator_matches_pytorch(tmp_path, precision, weight_only):
    """The saved program, evaluated by edgesr's MIL evaluator, against what it was converted from."""
    from edgesr import quant

    torch.manual_seed(0)
    model = materialize(build_model("edsr", scale=2, n_resblocks=2, n_feats=16), 0.5).eval()
    x, _ = verification_input(SHAPE, 2)
    example = torch.from_numpy(x)
    w8a8 = precision == "int8" and not weight_only
    source = quant.ptq(model, "coreml", example, quant.calibration_images(2, n=2, size=16)) if w8a8 else model
    req = ExportRequest(tmp_path, "coreml", precision=precision, weight_only=weight_only, input_shape=SHAPE)
    coreml = get_exporter("coreml")
    with torch.no_grad():
        coreml.export(source, example, tmp_path / "m.mlpackage", plan_export("coreml", req))
        ref = source(example).numpy()
    out = coreml.evaluate(tmp_path / "m.mlpackage", x)
    assert out.shape == ref.shape and out.dtype == np.float32
    assert output_psnr(out, ref) > (INT8_PSNR_DB if precision == "int8" else FLOAT_PSNR_DB)
    other = coreml.evaluate(tmp_path / "m.mlpackage", np.ascontiguousarray(x[..., ::-1]))
    assert output_psnr(other, ref) < INT8_PSNR_DB  # it computes from its input, not a cached answer
    assert "not Core ML" in EVALUATOR


class TanhNet(nn.Module):
    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        return torch.tanh(x)


def test_reference_evaluator_names_an_op_it_does_not_know(tmp_path):
    req = ExportRequest(tmp_path, "coreml", precision="fp16", input_shape=SHAPE)
    coreml = get_exporter("coreml")
    plan = plan_export("coreml", req)
    coreml.export(TanhNet().eval(), torch.rand(SHAPE), tmp_path / "m.mlpackage", plan)
    with pytest.raises(NotImplementedError, match="does not know op 'tanh'"):
        coreml.evaluate(tmp_path / "m.mlpackage", np.zeros(SHAPE, np.float32))


@pytest.mark.skipif(ON_MAC, reason="checks the Linux behaviour; on macOS Core ML runs the package")
def test_load_refuses_off_macos(fp16_export):
    coreml = get_exporter("coreml")
    assert coreml.runs_here() == NOT_ON_LINUX
    with pytest.raises(RuntimeError, match="only on macOS"):
        coreml.load(fp16_export.artifact)


@pytest.mark.skipif(not ON_MAC, reason=NOT_ON_LINUX)
def test_core_ml_runs_the_package_on_macos(fp16_export):
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    out = get_exporter("coreml").run(fp16_export.artifact, x)
    assert out.shape == (1, 3, 2 * SHAPE[2], 2 * SHAPE[3]) and out.dtype == np.float32
