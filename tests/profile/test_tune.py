"""`edgesr export --tune`: every variant exported and verified, the fastest within the tolerance kept,
the trials in its manifest. A fake timer reports the latencies, so the right choice is known."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from export_checkpoints import checkpoint  # noqa: E402

from edgesr.cli import main  # noqa: E402
from edgesr.errors import OutputExistsError  # noqa: E402
from edgesr.export import ExportOptions  # noqa: E402
from edgesr.profile import tune  # noqa: E402
from edgesr.profile.tune import Trial, _choose, tune_export, variants  # noqa: E402
from edgesr.student import load_student  # noqa: E402

pytest.importorskip("onnxruntime")
SHAPE = (1, 3, 12, 16)


def fake_timer(ms: list[float]):
    """Reports `ms` in the order the variants are timed; each artifact is still run once."""
    left = iter(ms)

    def timer(run, x, warmup, runs):  # noqa: ANN001
        run(x)
        return next(left)

    return timer


def test_tune_keeps_the_fastest_variant_and_records_every_trial(tmp_path):
    student = load_student(checkpoint(tmp_path, "plain", (1.0,), n_convs=3, n_feats=8))
    options = ExportOptions(precision="fp32", input_shape=SHAPE, out_dir=tmp_path / "out")
    assert [u for u, _ in variants("onnx", options)] == ["pixelshuffle", "depth_to_space", "transposed_conv"]
    # 2 interleaved rounds, the order reversed in the second: medians 9, 5, 7
    timer = fake_timer([9.0, 5.0, 7.0, 7.0, 5.0, 9.0])
    result, trials = tune_export(student, "onnx", options, timer=timer, rounds=2)
    assert [(t.upsampler, t.median_ms) for t in trials] == [
        ("pixelshuffle", 9.0),
        ("depth_to_space", 5.0),
        ("transposed_conv", 7.0),
    ]
    assert result.manifest["graph"]["upsampler"] == "depth_to_space" and result.verification.passed
    saved = json.loads(result.manifest_path.read_text())
    assert saved["tuning"]["chosen"]["upsampler"] == "depth_to_space" and len(saved["tuning"]["trials"]) == 3
    assert saved["tuning"]["machine"]["cpu"] and saved["artifact"]["file"] == result.artifact.name
    # only the chosen artifact and its manifest are left, and its sha still checks out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [result.artifact.name, result.manifest_path.name]
    )
    assert main(["inspect", str(result.artifact)]) == 0
    # again without --force: refused before anything is exported
    with pytest.raises(OutputExistsError, match="pass --force"):
        tune_export(student, "onnx", options, timer=fake_timer([]), rounds=1)


def test_the_fastest_is_kept_only_within_the_quality_tolerance():
    trials = [
        Trial("pixelshuffle", "float-ends", 10.0, 0.10),
        Trial("pixelshuffle", "int8", 6.0, 0.40),
        Trial("transposed_conv", "float-ends", 8.0, 0.12),
        Trial("depth_to_space", "int8", error="UnsupportedOpError: ..."),
    ]
    assert _choose(trials, 0.05) == 2  # all-int8 is faster but loses 0.3 dB more
    assert _choose(trials, 0.5) == 1
    assert _choose(trials, 0.0) == 0


def test_int8_tries_both_activation_policies_unless_one_is_asked_for(tmp_path):
    assert {a for _, a in variants("tflite", ExportOptions(precision="int8"))} == {"float-ends", "int8"}
    assert {a for _, a in variants("tflite", ExportOptions(precision="int8", activations="int8"))} == {"int8"}
    assert {a for _, a in variants("tflite", ExportOptions(precision="int8", weight_only=True))} == {None}
    fully = ExportOptions(precision="int8", fully_integer=True)
    assert {a for _, a in variants("tflite", fully)} == {"int8"}  # float ends are not fully integer
    assert variants("tflite", ExportOptions(precision="int8"), qat=True) == [("pixelshuffle", None)]
    assert variants("onnx", ExportOptions(upsampler="transposed_conv")) == [("transposed_conv", None)]


def test_cli_tune_and_its_refusal_for_all_targets(tmp_path, capsys, monkeypatch):
    ckpt = checkpoint(tmp_path, "plain", (1.0,), n_convs=3, n_feats=8)
    fake = functools.partial(tune_export, timer=fake_timer([3.0, 1.0, 2.0]), rounds=1)
    monkeypatch.setattr(tune, "tune_export", fake)
    argv = [
        "export",
        str(ckpt),
        "--target",
        "onnx",
        "--input",
        "1x3x12x16",
        "--out",
        str(tmp_path / "x"),
        "--tune",
    ]
    assert main(argv) == 0
    assert "--tune: kept depth_to_space of 3 variants" in " ".join(capsys.readouterr().err.split())
    argv[3] = "all"
    assert main(argv) != 0
    assert "--tune times one target's variants" in capsys.readouterr().err
