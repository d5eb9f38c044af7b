"""TFLite end to end: litert-torch export, LiteRT interpreter runs, parity with PyTorch, int8 modes,
upsampler op lists, XNNPACK delegation report, dynamic shapes, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch", reason='litert-torch not installed (pip install "edgesr[tflite]")')
pytest.importorskip("ai_edge_litert", reason='ai-edge-litert not installed (pip install "edgesr[tflite]")')

from export_checkpoints import checkpoint  # noqa: E402

from edgesr.export import (  # noqa: E402
    ExportOptions,
    ExportPlan,
    ExportRequest,
    MissingSDKError,
    UnsupportedOpError,
    UnsupportedOptionError,
    export_checkpoint,
    get_exporter,
    plan_export,
)
from edgesr.export.run import deployable  # noqa: E402
from edgesr.export.verify import FLOAT_PSNR_DB, INT8_PSNR_DB, output_psnr  # noqa: E402
from edgesr.files import sha256_file  # noqa: E402
from edgesr.models import build_model, materialize  # noqa: E402

SHAPE = (1, 3, 12, 16)
EDSR = {"n_resblocks": 1, "n_feats": 16}
PLAIN = {"n_convs": 3, "n_feats": 8, "clamp": True}


def tiny(name: str, width: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, scale=2, **(EDSR if name == "edsr" else PLAIN))
    return (materialize(model, width) if width < 1.0 else model).eval()


def request(tmp_path, **kw) -> ExportPlan:
    """The plan a direct exporter call takes (export_student resolves it from the options)."""
    return plan_export("tflite", ExportOptions(input_shape=SHAPE, **kw))


def litert_int8(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Static int8 PT2E with litert-torch's own quantizer, calibrated on random crops in [0, 1]."""
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    for seed in range(4):
        prepared(torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed)))
    return convert_pt2e(prepared, fold_quantize=False)


@pytest.mark.parametrize("name, widths, args", [("edsr", (1.0, 0.5), EDSR), ("plain", (1.0,), PLAIN)])
def test_fp32_artifact_matches_pytorch_and_reports_delegation(tmp_path, name, widths, args):
    ckpt = checkpoint(tmp_path, name, widths, **args)
    r = export_checkpoint(ExportRequest(ckpt, "tflite", input_shape=SHAPE, out_dir=tmp_path / "out"))
    v = r.verification
    assert v.passed and v.psnr_db > FLOAT_PSNR_DB and v.max_abs_diff < 1e-4
    assert "ai-edge-litert" in v.runtime and "astronaut" in v.image
    m = json.loads(r.manifest_path.read_text())
    assert m["artifact"]["sha256"] == sha256_file(r.artifact) and m["model"]["width"] == min(widths)
    assert m["graph"]["upsampler"] == "depth_to_space"  # the float default
    for key in ("edgesr", "torch", "litert-torch", "ai-edge-litert", "numpy", "python"):
        assert key in m["tools"]
    assert {"layout": "NCHW", "dtype": "float32"}.items() <= m["input"].items()
    d = m["delegation"]
    # the float default upsampler is one real DEPTH_TO_SPACE; no reshape chain is left
    assert d["ops"]["DEPTH_TO_SPACE"] == 1 and "RESHAPE" not in d["ops"] and d["ops"]["CONV_2D"] >= 3
    assert d["float_ops"] is None and not d["integer"]
    assert d["partitions"] >= 1 and d["nodes"] == sum(d["ops"].values())
    assert d["delegated_nodes"] + sum(d["cpu_ops"].values()) == d["nodes"]
    if name == "edsr":  # every op delegated to XNNPACK in one partition
        assert d["delegated_fraction"] == 1.0 and d["partitions"] == 1 and d["cpu_ops"] == {}
    else:  # clamp(0, 1) lowers to RELU_0_TO_1, which XNNPACK does not take: the graph splits
        assert d["cpu_ops"] == {"RELU_0_TO_1": 1} and d["partitions"] == 2


@pytest.mark.parametrize(
    "name, args, clips",
    [
        ("quicksrnet_small", {"n_intermediate": 1, "n_feats": 16}, 3),
        ("xlsr", {"n_gblocks": 1, "n_feats": 16}, 1),
    ],
)
def test_mobile_architectures_export_at_a_width(tmp_path, name, args, clips):
    """QuickSRNet and XLSR students (width 0.5: XLSR's grouped convs stay grouped) match PyTorch. Every
    clip(0, 1) (QuickSRNet's clipped ReLUs and the output clip) is a RELU_0_TO_1 that XNNPACK does
    not take, so the float graph splits around each one: recorded here, as for `plain` above."""
    ckpt = checkpoint(tmp_path, name, (1.0, 0.5), **args)
    r = export_checkpoint(ExportRequest(ckpt, "tflite", input_shape=SHAPE, out_dir=tmp_path / "out"))
    assert r.verification.passed and r.verification.max_abs_diff < 1e-4
    d = r.manifest["delegation"]
    assert d["ops"]["DEPTH_TO_SPACE"] == 1 and "RESHAPE" not in d["ops"]
    assert d["cpu_ops"] == {"RELU_0_TO_1": clips} and d["partitions"] == clips + 1


def test_existing_artifact_needs_force(tmp_path):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), **PLAIN)
    req = ExportRequest(ckpt, "tflite", input_shape=SHAPE, out_dir=tmp_path / "out")
    first = export_checkpoint(req)
    with pytest.raises(FileExistsError, match="pass --force"):
        export_checkpoint(req)
    again = export_checkpoint(
        ExportRequest(ckpt, "tflite", input_shape=SHAPE, out_dir=tmp_path / "out", force=True)
    )
    assert again.artifact == first.artifact and again.verification.passed


def test_fp16_has_half_weights_and_matches_fp32(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    ckpt = checkpoint(tmp_path, "edsr", (1.0,), **EDSR)
    r = export_checkpoint(
        ExportRequest(ckpt, "tflite", precision="fp16", input_shape=SHAPE, out_dir=tmp_path)
    )
    assert r.verification.passed and r.verification.psnr_db > FLOAT_PSNR_DB
    dtypes = {d["dtype"] for d in Interpreter(model_path=str(r.artifact)).get_tensor_details()}
    assert np.float16 in dtypes and r.manifest["input"]["dtype"] == "float32"
    assert r.manifest["delegation"]["ops"]["DEQUANTIZE"] >= 3  # fp16 weights -> fp32 compute


def test_static_int8_matches_qdq_graph_but_leaves_float_islands(tmp_path):
    """litert-torch's own static int8 keeps the residual ADD (and the clamp) in float: a request for
    a fully-integer graph is refused naming the op, and the artifact still runs like its q/dq graph."""
    model = deployable(tiny("plain"), "transposed_conv")
    x = torch.rand(SHAPE)
    qdq = litert_int8(model, x)
    exporter, path = get_exporter("tflite"), tmp_path / "m.tflite"
    with pytest.raises(UnsupportedOpError, match="target 'tflite' cannot convert op 'ADD'") as e:
        exporter.export(qdq, x, path, request(tmp_path, precision="int8", fully_integer=True))
    assert "fully-integer" in str(e.value)
    d = exporter.delegation(path)
    assert d["integer"] and d["float_ops"]["ADD"] == 1 and d["quant_boundaries"] >= 1
    with torch.no_grad():
        want, want_float = qdq(x).numpy(), model(x).numpy()
    got = exporter.run(path, x.numpy())
    assert output_psnr(got, want) > INT8_PSNR_DB
    assert output_psnr(got, want) > output_psnr(got, want_float)  # closer to its q/dq graph than to float


def test_int8_export_checkpoint_verifies_against_qdq_and_float(tmp_path):
    ckpt = checkpoint(tmp_path, "edsr", (1.0,), **EDSR)
    r = export_checkpoint(
        ExportRequest(
            ckpt, "tflite", precision="int8", input_shape=SHAPE, out_dir=tmp_path, accept_int8_loss=True
        )
    )  # a seeded random net: int8 quality is the gate's test (tests/quant/test_quality.py), not this one's
    v = r.verification
    assert v.passed and v.psnr_db > INT8_PSNR_DB and "PT2E" in v.reference
    assert v.float_psnr_db is not None and v.float_psnr_db < v.psnr_db
    q = r.manifest["quantization"]
    assert q["method"] == "ptq" and q["backend"] == "litert" and not q["fully_integer"]
    d = r.manifest["delegation"]
    # int8's default upsampler is the PixelShuffle graph (int8 RESHAPE/TRANSPOSE, edgesr.targets)
    assert r.manifest["graph"]["upsampler"] == "pixelshuffle" and "TRANSPOSE_CONV" not in d["ops"]
    assert d["integer"] and d["ops"]["RESHAPE"] >= 1 and d["delegated_fraction"] == 1.0


def test_fully_integer_has_int8_io_and_no_float_op(tmp_path):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), **PLAIN)
    r = export_checkpoint(
        ExportRequest(
            ckpt, "tflite", precision="int8", fully_integer=True, input_shape=SHAPE, out_dir=tmp_path,
            accept_int8_loss=True,  # a seeded random net (see above)
        )
    )
    assert r.verification.passed and r.verification.psnr_db > INT8_PSNR_DB
    d = r.manifest["delegation"]
    assert d["float_ops"] == {} and d["integer"] and "DEQUANTIZE" not in d["ops"]
    assert {"ADD", "RELU_0_TO_1", "RESHAPE", "TRANSPOSE"} <= d["ops"].keys()  # residual, clamp, upsampler
    for side in ("input", "output"):
        spec = r.manifest[side]
        assert spec["dtype"] == "int8" and d["io"][side]["dtype"] == "int8"
        assert spec["quantization"]["scale"] > 0 and -128 <= spec["quantization"]["zero_point"] <= 127
    # load() takes and returns float: the int8 I/O is quantized/dequantized with those parameters
    out = get_exporter("tflite").run(r.artifact, np.full(SHAPE, 0.5, np.float32))
    step = r.manifest["output"]["quantization"]["scale"]  # the clamp to [0, 1], up to one int8 step
    assert out.dtype == np.float32 and out.shape == (1, 3, 24, 32)
    assert -step <= out.min() <= out.max() <= 1.0 + step


def test_int8_weight_only_runs_float_compute(tmp_path):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), **PLAIN)
    r = export_checkpoint(
        ExportRequest(ckpt, "tflite", precision="int8", weight_only=True, input_shape=SHAPE, out_dir=tmp_path)
    )
    assert r.verification.passed and "float32" in r.verification.reference
    assert r.manifest["quantization"]["method"] == "weight_only" and r.manifest["input"]["dtype"] == "float32"


@pytest.mark.parametrize(
    "variant, op, absent",
    [
        ("pixelshuffle", "RESHAPE", ("DEPTH_TO_SPACE", "TRANSPOSE_CONV")),
        ("depth_to_space", "DEPTH_TO_SPACE", ("RESHAPE", "TRANSPOSE_CONV")),
        ("transposed_conv", "TRANSPOSE_CONV", ("RESHAPE", "DEPTH_TO_SPACE")),
    ],
)
def test_upsampler_variants_lower_to_their_op_and_stay_delegated(tmp_path, variant, op, absent):
    base = tiny("edsr")
    model = deployable(base, variant)
    x = torch.rand(SHAPE)
    exporter, path = get_exporter("tflite"), tmp_path / f"{variant}.tflite"
    exporter.export(model, x, path, request(tmp_path, upsampler=variant))
    d = exporter.delegation(path)
    assert d["ops"][op] >= 1 and not set(absent) & d["ops"].keys()
    assert d["delegated_fraction"] == 1.0 and d["partitions"] == 1
    with torch.no_grad():
        assert output_psnr(exporter.run(path, x.numpy()), base(x).numpy()) > FLOAT_PSNR_DB


def test_dynamic_shapes_where_litert_can_trace_them(tmp_path):
    model = deployable(tiny("plain"), "transposed_conv")
    exporter, path = get_exporter("tflite"), tmp_path / "dyn.tflite"
    with pytest.raises(UnsupportedOptionError, match="only with upsampler 'transposed_conv'"):
        exporter.export(
            tiny("plain"), torch.rand(SHAPE), path, request(tmp_path, dynamic=True, upsampler="pixelshuffle")
        )
    exporter.export(model, torch.rand(SHAPE), path, request(tmp_path, dynamic=True))
    assert exporter.delegation(path)["io"]["input"]["shape"] == [1, 3, -1, -1]
    run = exporter.load(path, threads=1)
    for h, w in [(16, 20), (9, 13)]:
        x = torch.rand(1, 3, h, w)
        with torch.no_grad():
            assert output_psnr(run(x.numpy()), model(x).numpy()) > FLOAT_PSNR_DB
    # EDSR's broadcast mean-shift add does not convert with symbolic H/W: refused, naming the op
    with pytest.raises(UnsupportedOptionError, match="dynamic H/W .*'aten.add.Tensor'"):
        exporter.export(
            deployable(tiny("edsr"), "transposed_conv"),
            torch.rand(SHAPE),
            path,
            request(tmp_path, dynamic=True),
        )


class SVDNet(nn.Module):
    def forward(self, x: torch.Tensor, width: float = 1.0) -> torch.Tensor:
        return torch.linalg.svd(x)[0]


def test_unsupported_op_names_op_and_target(tmp_path):
    with pytest.raises(UnsupportedOpError, match="target 'tflite' cannot convert op 'aten._linalg_svd") as e:
        get_exporter("tflite").export(
            SVDNet().eval(), torch.rand(SHAPE), tmp_path / "m.tflite", request(tmp_path)
        )
    assert e.value.target == "tflite" and e.value.op.startswith("aten._linalg_svd")


def test_missing_sdk_names_the_pip_extra(tmp_path, monkeypatch):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), **PLAIN)
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(MissingSDKError, match=r'pip install "edgesr\[tflite\]"'):
        export_checkpoint(ExportRequest(ckpt, "tflite", input_shape=SHAPE, out_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
