"""The `qat` recipe stage: gradients in QAT mode, self-describing checkpoints, kill-and-resume equality."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("torchao.quantization.pt2e")
pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")

from edgesr import quant  # noqa: E402
from edgesr.recipe import QUANT_BACKENDS, Recipe, RecipeError, from_dict, qat_losses  # noqa: E402
from edgesr.train.checkpoint import load_model, read_meta, resolve_checkpoint  # noqa: E402
from edgesr.train.trainer import build_objective, train  # noqa: E402

EDSR = {"name": "edsr", "args": {"n_resblocks": 1, "n_feats": 16}}
PLAIN = {"name": "plain", "args": {"n_convs": 3, "n_feats": 16, "clamp": True}}


def _recipe(photos: dict[str, Path], mode: str, model: dict = EDSR, **train_cfg: object) -> Recipe:
    cfg = {
        "name": f"qat-{mode}",
        "scale": 2,
        "model": model,
        "data": {"train": str(photos["train"]), "val": [str(photos["val"])], "patch_size": 8,
                 "batch_size": 2, "workers": 0},
        "train": {"mode": mode, "steps": 4, "checkpoint_every": 2, "val_every": 2, "log_every": 1,
                  "optim": {"lr": 1e-3}, **train_cfg},
    }  # fmt: skip
    return from_dict(Recipe, cfg)


@pytest.fixture(scope="module")
def runs(tiny_photos, tmp_path_factory) -> dict[str, Path]:
    """A 2-step teacher and a 2-step distilled width-0.5 student: the inputs of a QAT stage."""
    root = tmp_path_factory.mktemp("qat")
    train(_recipe(tiny_photos, "single", widths=[1.0], steps=2), root / "teacher")
    distill = {"widths": [0.5], "init": str(root / "teacher"), "losses": [{"name": "output_kd"}], "steps": 2}
    train(_recipe(tiny_photos, "distill", **distill), root / "student")
    return {"teacher": root / "teacher", "student": root / "student"}


def _qat(photos, runs, **extra: object) -> Recipe:
    cfg = {"widths": [0.5], "init": str(runs["teacher"]), "student_from": str(runs["student"]),
           "losses": [{"name": "output_kd", "args": {"alpha": 0.5}}], **extra}  # fmt: skip
    return _recipe(photos, "qat", **cfg)


def test_recipe_lists_match_the_package() -> None:
    assert QUANT_BACKENDS == quant.BACKENDS
    from edgesr.losses import LOSSES

    assert set(qat_losses()) <= set(LOSSES.names())


def test_qat_recipe_rejects_feature_losses_and_unknown_backends(tiny_photos, runs) -> None:
    with pytest.raises(RecipeError, match=r"losses\[0\].name.*feature"):
        _qat(tiny_photos, runs, losses=[{"name": "fakd"}])
    with pytest.raises(RecipeError, match=r"quant.backend.*xnnpack"):
        _qat(tiny_photos, runs, quant={"backend": "tensorrt"})
    with pytest.raises(RecipeError, match="student_from"):
        _recipe(tiny_photos, "qat", widths=[0.5], init=str(runs["teacher"]), losses=[{"name": "l1"}])


@pytest.mark.parametrize("loss", qat_losses())
def test_every_qat_loss_reaches_the_fake_quant_student(tiny_photos, runs, loss) -> None:
    args = {"csd": {"layers": ["relu1_1"], "layer_weights": [1.0]}, "output_kd": {"alpha": 1.0}}.get(loss, {})
    recipe = _qat(tiny_photos, runs, losses=[{"name": loss, "args": args}], csd={"negatives": 1})
    objective, width = build_objective(recipe)
    assert width == 0.5 and objective.quant_entry["backend"] == "xnnpack"
    assert any(hasattr(m, "observer_enabled") for m in objective.net.modules())  # really fake-quantized
    objective.train()
    loss_value, _ = objective(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), step=1)
    loss_value.backward()
    trainable = {n: p for n, p in objective.net.named_parameters() if p.requires_grad}
    assert trainable
    if loss in ("edge", "edge_kd"):
        # the last conv's bias (EDSR's tail, after the upsampler) only shifts the whole image, which a
        # zero-sum edge filter cannot see: its gradient is float noise (~1e-8), so it is not asserted
        last_bias = [n for n in trainable if n.endswith("bias")][-1]
        assert "tail" in last_bias
        assert trainable.pop(last_bias).grad.abs().max() < 1e-5
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{loss}: no gradient reached {name}"
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_qat_stage_starts_from_ptq_ranges_unless_told_to_observe(tiny_photos, runs) -> None:
    calibrated, _ = build_objective(_qat(tiny_photos, runs))
    acts = quant.activation_fake_quants(calibrated.net)
    assert acts and all(not m.observer_enabled[0] for m in acts)  # fixed from the first step
    assert all(float(m.scale.max()) != 1.0 for m in acts)  # set (a fresh fake quant's scale is 1)
    observed, _ = build_objective(_qat(tiny_photos, runs, quant={"activation_ranges": "observe"}))
    assert all(m.observer_enabled[0] for m in quant.activation_fake_quants(observed.net))
    with pytest.raises(RecipeError, match="activation_ranges.*calibrate, observe"):
        _qat(tiny_photos, runs, quant={"activation_ranges": "histogram"})


def test_float_control_is_the_qat_graph_with_fake_quant_off(tiny_photos, runs) -> None:
    """`fake_quant: false` trains the same exported graph in float: its output is the float student's,
    and a training step neither quantizes nor observes."""
    control, _ = build_objective(_qat(tiny_photos, runs, quant={"fake_quant": False}))
    fqs = control.net._edgesr_fake_quants
    assert fqs and all(not m.fake_quant_enabled[0] and not m.observer_enabled[0] for m in fqs)
    student, _ = load_model(runs["student"])
    x = torch.rand(2, 3, 8, 8)
    control.train()
    loss_value, _ = control(x, torch.rand(2, 3, 16, 16), step=1)
    loss_value.backward()
    assert all(not m.observer_enabled[0] for m in fqs)
    control.net.eval()
    with torch.no_grad():
        assert torch.allclose(control.net(x), student.eval()(x), atol=1e-6)
    qat, _ = build_objective(_qat(tiny_photos, runs))
    qat.net.eval()
    with torch.no_grad():
        assert not torch.allclose(qat.net(x), student(x), atol=1e-6)  # the QAT graph does quantize


def test_qat_run_killed_and_resumed_equals_uninterrupted(tiny_photos, runs, tmp_path) -> None:
    """Weights and every fake-quant buffer (ranges, scales, observer flags) end bit-identical; the
    observer freeze at step 3 falls after the kill, so it must be re-derived on resume."""
    recipe = _qat(tiny_photos, runs, quant={"freeze_observers_at": 3})
    train(recipe, tmp_path / "full")
    part = train(recipe, tmp_path / "part", stop_at=1)
    assert part.steps == 1
    train(recipe, tmp_path / "part", resume=True)
    a, b = load_file(resolve_checkpoint(tmp_path / "full")), load_file(resolve_checkpoint(tmp_path / "part"))
    assert a.keys() == b.keys() and any("activation_post_process" in k for k in a)
    diff = [(k, a[k], b[k]) for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff
    flags = [v for k, v in a.items() if k.endswith("observer_enabled")]
    assert flags and all(int(f) == 0 for f in flags)  # frozen after step 3
    start = load_file(resolve_checkpoint(runs["student"]))
    assert not torch.equal(a["head.weight"], start["head.weight"])  # it trained
    assert json.loads((tmp_path / "full/results.json").read_text())["rows"]


@pytest.mark.parametrize("backend", ["xnnpack", "litert"])
def test_fully_integer_qat_of_a_full_plain_net_checkpoints_resumes_and_converts(
    tiny_photos, tmp_path, backend, checkpoint_reads
) -> None:
    """The NPU path end to end: a float plain net with its clamp, QAT-trained at full width from its
    own float checkpoint, fully integer. Its fake quants are shared between ops (depth-to-space,
    clamp), which a checkpoint must still save; the converted graph has no float island."""
    pytest.importorskip("litert_torch") if backend == "litert" else None
    from pt2e_graphs import float_islands, io_quantized

    train(_recipe(tiny_photos, "single", PLAIN, widths=[1.0], steps=2), tmp_path / "float")
    qat = _recipe(
        tiny_photos, "qat", PLAIN, widths=[1.0],
        init=str(tmp_path / "float"), student_from=str(tmp_path / "float"),
        losses=[{"name": "output_kd", "args": {"alpha": 0.5}}],
        quant={"backend": backend, "fully_integer": True},
    )  # fmt: skip
    train(qat, tmp_path / "full")
    train(qat, tmp_path / "part", stop_at=2)
    train(qat, tmp_path / "part", resume=True)
    a, b = load_file(resolve_checkpoint(tmp_path / "full")), load_file(resolve_checkpoint(tmp_path / "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    int8, qmeta = quant.load_quantized(tmp_path / "full", example=torch.rand(1, 3, 12, 12))
    assert (qmeta.backend, qmeta.fully_integer, qmeta.width) == (backend, True, 1.0)
    assert not float_islands(int8), dict(float_islands(int8))
    assert io_quantized(int8) == (True, True)
    if backend != "litert":
        return
    # exported as trained: the int8 TFLite keeps the graph's PixelShuffle (an int8 reshape/transpose)
    from edgesr.export import ExportRequest, UnsupportedOptionError, export_checkpoint

    req = dict(checkpoint=tmp_path / "full", target="tflite", precision="int8", fully_integer=True,
               input_shape=(1, 3, 12, 16), out_dir=tmp_path / "exports",
               accept_int8_loss=True)  # fmt: skip  (4 QAT steps: the gate is tested in test_quality.py)
    with pytest.raises(UnsupportedOptionError, match="QAT checkpoint.*PixelShuffle"):
        export_checkpoint(ExportRequest(**req, upsampler="transposed_conv"))
    checkpoint_reads.clear()
    res = export_checkpoint(ExportRequest(**req))
    assert res.verification.passed and res.manifest["graph"]["upsampler"] == "pixelshuffle"
    assert res.manifest["quantization"]["method"] == "qat"
    assert checkpoint_reads == [str(resolve_checkpoint(tmp_path / "full"))]  # one export, one read


def test_qat_checkpoint_describes_itself_and_converts(tiny_photos, runs, tmp_path) -> None:
    train(_qat(tiny_photos, runs, steps=2), tmp_path / "run")
    meta = read_meta(tmp_path / "run")
    assert meta.quant is not None and meta.quant["backend"] == "xnnpack" and meta.materialized_width == 0.5
    assert quant.is_qat_checkpoint(tmp_path / "run") and not quant.is_qat_checkpoint(runs["student"])
    fq, _ = load_model(tmp_path / "run")
    fq.eval()
    int8, qmeta = quant.load_quantized(tmp_path / "run", example=torch.rand(1, 3, 12, 12))
    assert (qmeta.backend, qmeta.fully_integer, qmeta.width, qmeta.scale) == ("xnnpack", False, 0.5, 2)
    x = torch.rand(1, 3, 12, 16)
    with torch.no_grad():
        assert (int8(x) - fq(x)).abs().max() < 1e-5


def test_qat_activations_default_like_export_and_export_keeps_them(tiny_photos, runs, tmp_path) -> None:
    """No `quant.activations`: the backend's export default (float ends for xnnpack), recorded in the
    checkpoint; the export plans the artifact with what QAT trained and refuses another policy."""
    from edgesr.export.plan import ExportOptions, UnsupportedOptionError
    from edgesr.export.run import plan_for
    from edgesr.student import load_student

    train(_qat(tiny_photos, runs, steps=2), tmp_path / "fe")
    train(_qat(tiny_photos, runs, steps=2, quant={"activations": "int8"}), tmp_path / "int8")
    fe, int8 = load_student(tmp_path / "fe"), load_student(tmp_path / "int8")
    assert fe.quant["activations"] == "float-ends" and int8.quant["activations"] == "int8"
    options = ExportOptions(precision="int8")
    assert plan_for(fe, "executorch", options).activations == "float-ends"
    assert plan_for(int8, "executorch", options).activations == "int8"
    with pytest.raises(UnsupportedOptionError, match="exported as trained: activations 'float-ends'"):
        plan_for(fe, "executorch", ExportOptions(precision="int8", activations="int8"))
    x = torch.rand(1, 3, 12, 12)
    fq_fe, fq_int8 = quant.quantized_student(fe)[0], quant.quantized_student(int8)[0]
    assert fq_fe(x).shape == fq_int8(x).shape == (1, 3, 24, 24)
    n_quant = [sum("quantize_per_tensor" in str(n.target) for n in g.graph.nodes) for g in (fq_fe, fq_int8)]
    assert n_quant[0] < n_quant[1]  # the float-ends graph quantizes fewer activations
    with pytest.raises(RecipeError, match="fully_integer"):
        _qat(tiny_photos, runs, quant={"activations": "float-ends", "fully_integer": True})
    with pytest.raises(RecipeError, match="estimator"):
        _qat(tiny_photos, runs, quant={"estimator": "percentile"})


def test_eval_quant_reports_float_ptq_and_qat_of_one_student(tiny_photos, runs, tmp_path, capsys) -> None:
    from edgesr.cli import main

    train(_qat(tiny_photos, runs, steps=2), tmp_path / "qat")
    out = tmp_path / "table.md"
    rc = main(["eval", str(tmp_path / "qat"), "--data", str(tiny_photos["val"]), "--quant", "--no-ssim",
               "--markdown", str(out)])  # fmt: skip
    assert rc == 0
    table = out.read_text()
    ptq_row, qat_row = "int8 PTQ (xnnpack, float ends) w=0.5", "int8 QAT (xnnpack, float ends) w=0.5"
    for method in ("bicubic", "float w=0.5", ptq_row, qat_row):
        assert f"| {method} |" in table, table
    cells = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in table.splitlines()[4:]}
    assert cells[qat_row] != cells["float w=0.5"]  # the QAT row is its own model
    per_image = out.with_suffix(".per_image.md").read_text()  # one row per val image, both int8 rows
    assert "| **worst drop** |" in per_image and per_image.count("| img") == 2
    assert "int8 PTQ (xnnpack, float ends) (drop)" in per_image
    assert "int8 QAT (xnnpack, float ends) (drop)" in per_image


ECB = {"name": "ecbsr", "args": {"n_convs": 3, "n_feats": 16}}


def _convs(graph: torch.fx.GraphModule) -> int:
    conv = torch.ops.aten.conv2d.default
    return sum(n.op == "call_function" and n.target == conv for n in graph.graph.nodes)


def test_qat_of_a_reparameterisable_student_trains_the_collapsed_graph(tiny_photos, tmp_path) -> None:
    """One CSD run of multi-branch blocks; its width-0.5 student is collapsed before fake quantization
    (one int8 weight grid per deployed conv), saved, rebuilt from the checkpoint, and exported."""
    train(_recipe(tiny_photos, "csd", ECB, widths=[0.5], steps=2, csd={"lambda_cl": 0.0}), tmp_path / "csd")
    qat = _recipe(
        tiny_photos, "qat", ECB, widths=[0.5], init=str(tmp_path / "csd"), student_from=str(tmp_path / "csd"),
        losses=[{"name": "output_kd", "args": {"alpha": 0.5}}],
    )  # fmt: skip
    objective, width = build_objective(qat)
    assert width == 0.5 and _convs(objective.net) == 3 + 1  # 3 collapsed blocks + the nearest conv
    train(qat, tmp_path / "qat")
    fq, meta = load_model(tmp_path / "qat")  # the rebuild collapses too, or the state would not load
    assert meta.quant is not None and _convs(fq) == 4
    from edgesr.export import ExportRequest, export_checkpoint

    res = export_checkpoint(ExportRequest(
        checkpoint=tmp_path / "qat", target="executorch", precision="int8", input_shape=(1, 3, 12, 16),
        out_dir=tmp_path / "exports", accept_int8_loss=True,
    ))  # fmt: skip
    assert res.verification.passed and res.manifest["quantization"]["method"] == "qat"
    assert res.manifest["graph"]["reparameterized_blocks"] == 3
