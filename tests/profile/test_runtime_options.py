"""Runtime settings (edgesr.targets.RuntimeOption; ONNX Runtime thread spinning): parsed and
refused in one line, applied to the runtime's session, recorded in profiles, chosen by
`select-width --search`, written to the recipe's export section and from there to the manifest."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "export"))
import numpy as np  # noqa: E402
from export_checkpoints import checkpoint  # noqa: E402

from edgesr.cli import main  # noqa: E402
from edgesr.cli.export import _runtime_options  # noqa: E402
from edgesr.devices import load_device, parse_resolution  # noqa: E402
from edgesr.errors import UsageError  # noqa: E402
from edgesr.export import ExportOptions, get_exporter, plan_export  # noqa: E402
from edgesr.export.plan import UnsupportedOptionError  # noqa: E402
from edgesr.fingerprint import detect_machine  # noqa: E402
from edgesr.models import build_model, materialize  # noqa: E402
from edgesr.profile.host import profile_module  # noqa: E402
from edgesr.profile.store import ModelInfo, Record, Stats, device_records, save_records  # noqa: E402
from edgesr.recipe import RECIPES_DIR, load_recipe  # noqa: E402
from edgesr.recipe_edit import write_recipe_width  # noqa: E402
from edgesr.schema import RecipeError  # noqa: E402
from edgesr.selection import select_config  # noqa: E402
from edgesr.selection.choose import default_variant  # noqa: E402
from edgesr.selection.configs import export_flags  # noqa: E402
from edgesr.targets import TARGETS, parse_runtime_options  # noqa: E402


def test_parse_lists_every_combination_and_names_what_is_valid():
    assert parse_runtime_options("onnx", []) == [{}]
    assert parse_runtime_options("onnx", ["spinning=disabled"]) == [{"spinning": "disabled"}]
    both = [{"spinning": "allowed"}, {"spinning": "disabled"}]
    assert parse_runtime_options("onnx", ["spinning=allowed,disabled"]) == both
    assert parse_runtime_options("onnx", ["spinning=all"]) == both
    with pytest.raises(
        ValueError, match=r"onnx has no runtime option 'spin' \(it has spinning=allowed\|disabled\)"
    ):
        parse_runtime_options("onnx", ["spin=disabled"])
    with pytest.raises(ValueError, match=r"spinning='off': expected one of allowed, disabled"):
        parse_runtime_options("onnx", ["spinning=off"])
    with pytest.raises(ValueError, match=r"tflite has no runtime option 'spinning' \(it has none\)"):
        parse_runtime_options("tflite", ["spinning=disabled"])
    with pytest.raises(ValueError, match=r"expected NAME=VALUE"):
        parse_runtime_options("onnx", ["spinning"])
    assert parse_runtime_options("onnx", ["spinning=disabled,disabled"]) == [{"spinning": "disabled"}]
    with pytest.raises(ValueError, match="spinning is given twice"):
        parse_runtime_options("onnx", ["spinning=disabled", "spinning=allowed"])
    # export: one target must have it; `--target all` needs one that has it (the others are skipped)
    assert _runtime_options(TARGETS.names(), ["spinning=disabled"]) == (("spinning", "disabled"),)
    with pytest.raises(UsageError, match="tflite has no runtime option"):
        _runtime_options(["tflite"], ["spinning=disabled"])
    with pytest.raises(UsageError, match="one value per --runtime-option"):
        _runtime_options(["onnx"], ["spinning=all"])
    with pytest.raises(UnsupportedOptionError, match="tflite has no runtime option"):
        plan_export("tflite", ExportOptions(runtime_options=(("spinning", "disabled"),)))


def test_spinning_disabled_reaches_the_ort_session(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    seen = []
    real = ort.InferenceSession

    def spy(path, sess_options=None, **kw):
        seen.append(sess_options)
        return real(path, sess_options=sess_options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    model = materialize(build_model("plain", scale=2, n_convs=2, n_feats=8), 1.0)
    off = profile_module(model, "onnx", (1, 3, 8, 8), "m", threads=1, warmup=1, runs=2,
                         runtime_options={"spinning": "disabled"})  # fmt: skip
    keys = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")
    assert [seen[-1].get_session_config_entry(k) for k in keys] == ["0", "0"]
    assert off.runtime_options == {"spinning": "disabled"} and off.variant.endswith("; spinning=disabled")
    on = profile_module(model, "onnx", (1, 3, 8, 8), "m", threads=1, warmup=1, runs=2,
                        runtime_options={"spinning": "allowed"})  # fmt: skip
    with pytest.raises(RuntimeError, match="does not have configuration"):  # never set: ORT's default
        seen[-1].get_session_config_entry(keys[0])
    # the runtime's default is not recorded as a setting: a record with it keys as the plain one
    assert on.runtime_options == {} and on.key != off.key and default_variant(on) and not default_variant(off)
    with pytest.raises(UsageError, match="tflite has no runtime option"):  # refused before exporting
        profile_module(model, "tflite", (1, 3, 8, 8), "m", runtime_options={"spinning": "disabled"})
    with pytest.raises(UsageError, match="eager PyTorch has no export variants or runtime options"):
        profile_module(model, "pytorch", (1, 3, 8, 8), "m", runtime_options={"spinning": "disabled"})


def test_search_picks_the_setting_writes_it_to_the_recipe_and_export_records_it(tmp_path, capsys):
    host = load_device("host")
    arch = build_model("plain", scale=2, n_convs=3, n_feats=8).arch
    machine = detect_machine()

    def rec(ms, options):
        return Record(
            artifact=f"a-{ms}", runtime="onnxruntime", delegate="cpu", precision="fp32", resolution="24x16",
            stats=Stats(median_ms=ms, p90_ms=ms, count=5), measured_at="2026-12-02T00:00:00Z", method="host",
            threads=host.threads, model=ModelInfo(arch, 1.0, 8, 1, 1), machine=machine,
            upsampler="pixelshuffle", runtime_options=options,
        )  # fmt: skip

    prof = tmp_path / "prof"
    save_records("host", [rec(10.0, {}), rec(7.0, {"spinning": "disabled"})], "models_onnxruntime", prof)
    sel = select_config(host, 50.0, arch, parse_resolution("24x16"), root=prof, machine=machine)
    assert len(sel.configs) == 2 and sel.chosen.latency_ms == 7.0
    section = sel.chosen.export_section()
    assert section["runtime_options"] == {"spinning": "disabled"}
    assert export_flags(section) == (
        "--target onnx --precision fp32 --upsampler pixelshuffle --runtime-option spinning=disabled"
    )  # the command select-width prints, as `edgesr export` parses it
    # the section goes into a recipe (the value is quoted-safe YAML) and validates there
    recipe = tmp_path / "r.yaml"
    shutil.copyfile(RECIPES_DIR / "quickstart_student.yaml", recipe)
    write_recipe_width(recipe, 0.25, export=section)
    assert load_recipe(recipe).export.runtime_options == {"spinning": "disabled"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("spinning: disabled", "spinning: off"))
    with pytest.raises(RecipeError, match=r"export.runtime_options.*spinning=False.*allowed, disabled"):
        load_recipe(bad)
    # the export records it in the manifest, and `inspect` shows it
    ckpt = checkpoint(tmp_path, "plain", (1.0,), n_convs=3, n_feats=8)
    out = tmp_path / "exports"
    args = ["export", str(ckpt), "--target", "onnx", "--input", "1x3x16x24", "--out", str(out)]
    assert main([*args, "--runtime-option", "spinning=disabled"]) == 0
    artifact = out / "plain_x2_w1_16x24_fp32.onnx"
    manifest = json.loads(artifact.with_name(artifact.name + ".json").read_text())
    assert manifest["runtime"] == {"name": "onnxruntime", "options": {"spinning": "disabled"}}
    capsys.readouterr()
    assert main(["inspect", str(artifact)]) == 0
    assert "spinning=disabled" in capsys.readouterr().out
    # `profile run` on it times the setting its manifest names
    assert main(["profile", "run", str(artifact), "--device", "host", "--runs", "2", "--warmup", "1",
                 "--profiles", str(prof)]) == 0  # fmt: skip
    (timed,) = [r for r in device_records("host", prof) if r.artifact == artifact.name]
    assert timed.runtime_options == {"spinning": "disabled"}
    capsys.readouterr()
    phone = ["profile", "run", str(artifact), "--device", "pixel8", "--profiles", str(prof)]
    assert main([*phone, "--runtime-option", "spinning=disabled"]) != 0
    assert "applies to runtimes on this machine, not to adb devices" in capsys.readouterr().err
    assert main([*args, "--force", "--runtime-option", "spinning=allowed,disabled"]) != 0
    assert "one value per --runtime-option" in capsys.readouterr().err
    run = get_exporter("onnx").load(artifact, 1, {"spinning": "disabled"})
    assert run(np.zeros((1, 3, 16, 24), np.float32)).shape == (1, 3, 32, 48)


def test_tune_times_the_variants_with_the_runtime_options(tmp_path, monkeypatch):
    from edgesr.export.onnx import OnnxExporter
    from edgesr.profile.tune import tune_export
    from edgesr.student import load_student

    seen = []
    real = OnnxExporter.load

    def spy(self, path, threads=None, options=None):
        seen.append(options)
        return real(self, path, threads, options)

    monkeypatch.setattr(OnnxExporter, "load", spy)
    student = load_student(checkpoint(tmp_path, "plain", (1.0,), n_convs=3, n_feats=8))
    options = ExportOptions(input_shape=(1, 3, 12, 16), out_dir=tmp_path / "out",
                            runtime_options=(("spinning", "disabled"),))  # fmt: skip

    def timer(run, x, warmup, runs):  # noqa: ANN001
        run(x)
        return 1.0

    result, trials = tune_export(student, "onnx", options, timer=timer, rounds=1)
    timed = [o for o in seen if o is not None]  # None: verification, whose numerics do not depend on it
    assert len(timed) == len(trials) == 3 and all(o == {"spinning": "disabled"} for o in timed)
    assert result.manifest["runtime"]["options"] == {"spinning": "disabled"}
