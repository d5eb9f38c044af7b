"""Choosing the whole configuration (width x runtime x precision x export variant): the rule on
synthetic profiles, the sweep's variants and int8 drop on real runtimes, `--search --write` and the
export stage reading the recipe's export section."""

from __future__ import annotations

import argparse
import math
import shutil
from dataclasses import replace

import pytest
import yaml

from edgesr.cli import main
from edgesr.cli.export import _from_recipe
from edgesr.devices import load_device, parse_resolution
from edgesr.errors import UsageError
from edgesr.fingerprint import Machine
from edgesr.models import build_model
from edgesr.profile.host import profile_module
from edgesr.profile.store import ModelInfo, Record, Stats, device_records, save_records
from edgesr.profile.sweep import sweep_configs
from edgesr.recipe import RECIPES_DIR, load_recipe
from edgesr.recipe_edit import write_recipe_width
from edgesr.schema import RecipeError
from edgesr.selection import config_table, select_config

ARCH = build_model("edsr", scale=2, n_resblocks=1, n_feats=32).arch  # widths 0.25 .. 1 (8 .. 32 ch)
RES = "16x12"
HOST = load_device("host")
THIS = Machine(cpu="this cpu", arch="x86_64", isa=("avx2",), os="Linux")
OTHER = Machine(cpu="another cpu", arch="x86_64", isa=("avx2", "avx512f"), os="Linux")


def _rec(runtime, precision, width, ms, upsampler="pixelshuffle", activations=None, drop=None, machine=THIS):
    return Record(
        artifact=f"{runtime}-{precision}-{upsampler}-{activations}-w{width}",
        runtime=runtime, delegate="cpu" if runtime == "onnxruntime" else "xnnpack", precision=precision,
        resolution=RES, stats=Stats(median_ms=ms, p90_ms=ms * 1.1, count=5),
        measured_at="2026-12-02T00:00:00Z", method="host", threads=HOST.threads,
        model=ModelInfo(ARCH, width, round(32 * width), 1, 1), machine=machine,
        upsampler=upsampler, activations=activations, int8_drop_db=drop,
    )  # fmt: skip


def _select(root, budget, psnr=None, machine=THIS, tolerance=0.05):
    return select_config(HOST, budget, ARCH, parse_resolution(RES), psnr=psnr, root=root, machine=machine,
                         tolerance_db=tolerance)  # fmt: skip


PSNR = {0.25: 30.0, 0.5: 31.0, 1.0: 31.5}


def _profiles(root):
    save_records("host", [
        _rec("onnxruntime", "fp32", 0.25, 4.0), _rec("onnxruntime", "fp32", 0.5, 12.0),
        _rec("onnxruntime", "fp32", 1.0, 40.0),
        _rec("litert", "fp32", 0.5, 9.0, "depth_to_space"),
        # int8 at width 1 is fast but loses 0.6 dB: 30.9, below width 0.5 in float (31.0)
        _rec("litert", "int8", 1.0, 10.0, "depth_to_space", "int8", drop=0.6),
        # int8 at width 0.5 loses 0.02 dB: a tie with float 0.5 within 0.05 dB, and faster
        _rec("litert", "int8", 0.5, 6.0, "depth_to_space", "int8", drop=0.02),
        _rec("litert", "int8", 0.5, 7.0, "transposed_conv", "float-ends", drop=0.0),
    ], "m", root)  # fmt: skip


def test_most_accurate_within_budget_and_ties_go_to_the_fastest(tmp_path):
    _profiles(tmp_path)
    sel = _select(tmp_path, 15.0, PSNR)
    assert len(sel.configs) == 7 and [c.latency_ms for c in sel.configs] == sorted(
        c.latency_ms for c in sel.configs
    )
    c = sel.chosen
    # width 0.5: float 31.0 on ORT (12 ms) / LiteRT (9 ms), int8 30.98 (6 ms), 31.0 float-ends (7 ms):
    # all within 0.05 dB of the best, so the fastest wins
    assert (c.runtime, c.precision, c.upsampler, c.activations, c.width) == (
        "litert",
        "int8",
        "depth_to_space",
        "int8",
        0.5,
    )
    assert c.psnr_db == pytest.approx(30.98)
    assert c.export_section() == {"target": "tflite", "precision": "int8", "upsampler": "depth_to_space",
                                  "activations": "int8"}  # fmt: skip
    # no tolerance: the exact best (31.0) wins, the fastest among those
    exact = _select(tmp_path, 15.0, PSNR, tolerance=0.0).chosen
    assert (exact.precision, exact.upsampler, exact.activations, exact.latency_ms) == (
        "int8",
        "transposed_conv",
        "float-ends",
        7.0,
    )
    # a budget wide enough for width 1: float width 1 (31.5 dB, 40 ms) beats its int8 (30.9)
    wide = _select(tmp_path, 50.0, PSNR).chosen
    assert (wide.width, wide.precision, wide.runtime) == (1.0, "fp32", "onnxruntime")
    header, rows = config_table(sel)
    assert header[:3] == ["runtime", "precision", "variant"]
    assert sum("<- chosen" in r[-1] for r in rows) == 1


def test_nothing_fits_names_the_fastest(tmp_path):
    _profiles(tmp_path)
    sel = _select(tmp_path, 1.0, PSNR)
    assert sel.chosen is None
    assert any("no configuration meets 1 ms; the fastest is onnxruntime fp32" in n for n in sel.notes)


def test_without_psnr_the_widest_float_wins_and_says_so(tmp_path):
    _profiles(tmp_path)
    sel = _select(tmp_path, 15.0)
    assert (sel.chosen.width, sel.chosen.precision, sel.chosen.latency_ms) == (1.0, "int8", 10.0)  # widest
    sel = _select(tmp_path, 9.5)  # width 0.5: LiteRT fp32 (9 ms) before the faster int8 forms
    assert (sel.chosen.width, sel.chosen.precision, sel.chosen.latency_ms) == (0.5, "fp32", 9.0)
    assert any("chosen by width, float before int8" in n for n in sel.notes)


def test_int8_without_a_measured_drop_is_unrated_not_guessed(tmp_path):
    recs = [_rec("onnxruntime", "fp32", 0.25, 4.0), _rec("litert", "int8", 1.0, 5, "depth_to_space", "int8")]
    save_records("host", recs, "m", tmp_path)
    sel = _select(tmp_path, 10.0, PSNR)
    int8 = next(c for c in sel.configs if c.precision == "int8")
    assert int8.psnr_db is None
    assert sel.chosen.precision == "fp32"  # the only rated configuration that fits
    assert any("no measured int8 drop" in n and "litert" in n for n in sel.notes)


def test_measurements_from_another_machine_are_not_used(tmp_path):
    _profiles(tmp_path)
    save_records("host", [_rec("onnxruntime", "fp32", 1.0, 2.0, machine=OTHER)], "other", tmp_path)
    sel = _select(tmp_path, 15.0, PSNR)
    assert all(c.latency_ms != 2.0 for c in sel.configs)
    assert any("another machine" in n and "edgesr profile sweep" in n for n in sel.notes)


def test_sweep_configs_expand_all_and_name_what_a_target_refuses():
    configs, refused = sweep_configs(["onnx", "tflite"], ["fp32", "int8"], ["all"], ["all"])
    assert ("tflite", "int8", "depth_to_space", "int8") in configs
    assert ("onnx", "fp32", "transposed_conv", None) in configs  # float: no activations policy
    assert not any(c[3] == "int16" for c in configs if c[0] == "onnx")  # ORT has no int16 kernels
    assert refused == []  # "all" expands to what each target takes, silently
    configs, refused = sweep_configs(["onnx"], ["int8"], ["depth_to_space"], ["int16"])
    assert configs == [] and "onnx int8 depth_to_space int16" in refused[0] and "float-ends" in refused[0]
    configs, refused = sweep_configs(["pytorch"], ["fp32", "int8"])
    assert configs == [("pytorch", "fp32", None, None)] and "eager PyTorch" in refused[0]


def test_a_swept_int8_record_says_its_variant_and_its_drop():
    """A real export and timing on ONNX Runtime: the record names the variant it timed and, for a
    model with its own weights, the int8 drop measured on the gate photos."""
    import torch

    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_resblocks=1, n_feats=8)
    info = ModelInfo(model.arch, 1.0, 8, 1, 1)
    rec = profile_module(model, "onnx", (1, 3, 12, 16), "t", 1, 0, 2, info, precision="int8", scale=2,
                         upsampler="depth_to_space", activations="int8", quality=True)  # fmt: skip
    assert (rec.upsampler, rec.activations, rec.precision) == ("depth_to_space", "int8", "int8")
    assert rec.variant == "depth_to_space, activations int8"
    assert rec.int8_drop_db is not None and math.isfinite(rec.int8_drop_db)
    fp32 = profile_module(model, "onnx", (1, 3, 12, 16), "t", 1, 0, 2, info, upsampler="transposed_conv")
    assert (fp32.upsampler, fp32.activations, fp32.int8_drop_db) == ("transposed_conv", None, None)


def test_cli_sweeps_variants_then_search_writes_width_and_export_section(tmp_path, capsys):
    recipe = tmp_path / "student.yaml"
    shutil.copyfile(RECIPES_DIR / "quickstart_student.yaml", recipe)
    prof = tmp_path / "profiles"
    argv = ["profile", "sweep", str(recipe), "--device", "host", "--profiles", str(prof), "--target", "onnx",
            "--precision", "fp32", "int8", "--upsampler", "pixelshuffle", "depth_to_space",
            "--widths", "0.25", "--resolution", "32x24", "--runs", "2", "--warmup", "0"]  # fmt: skip
    assert main(argv) == 0
    recs = device_records("host", prof)
    assert {(r.precision, r.upsampler) for r in recs} == {
        ("fp32", "pixelshuffle"),
        ("fp32", "depth_to_space"),
        ("int8", "pixelshuffle"),
        ("int8", "depth_to_space"),
    }
    # a recipe has fresh weights: no int8 drop is claimed
    assert all(r.int8_drop_db is None for r in recs)
    out = tmp_path / "chosen.yaml"
    capsys.readouterr()
    rc = main(["select-width", "--device", "host", "--profiles", str(prof), "--recipe", str(recipe),
               "--resolution", "32x24", "--budget-ms", "10000", "--search", "--write", str(out),
               "--plot", str(tmp_path / "c.png")])  # fmt: skip
    text = capsys.readouterr()
    assert rc == 0, text
    assert "chosen: onnxruntime fp32" in text.out + text.err  # unrated int8 loses to float by width
    written = load_recipe(out)
    assert written.train.widths == (0.25,)
    assert written.export.target == "onnx" and written.export.precision == "fp32"
    assert written.export.upsampler in ("pixelshuffle", "depth_to_space")
    assert (tmp_path / "c.png").stat().st_size > 0
    # the flags a plain select-width takes are refused with --search, in one line
    rc = main(["select-width", "--device", "host", "--profiles", str(prof), "--recipe", str(recipe),
               "--search", "--runtime", "onnxruntime"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0 and "--search compares every runtime and precision measured: drop --runtime" in err
    assert "Traceback" not in err


def test_export_stage_reads_the_runs_export_section(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recipe = tmp_path / "r.yaml"
    shutil.copyfile(RECIPES_DIR / "quickstart_student.yaml", recipe)
    section = {"target": "tflite", "precision": "int8", "upsampler": "depth_to_space"}
    write_recipe_width(recipe, 0.25, run / "recipe.yaml", export=section)

    def args(**kw):
        base = {
            "checkpoint": str(run),
            "target": None,
            "precision": None,
            "upsampler": None,
            "activations": None,
        }
        base |= {"delegate": None, "fully_integer": False, "weight_only": False, "tune": False,
                 "runtime_option": []}  # fmt: skip
        return argparse.Namespace(**{**base, **kw})

    class Out:
        lines: list[str] = []

        def print(self, line, **_):
            self.lines.append(line)

    a = args()
    _from_recipe(a, Out())
    assert (a.target, a.precision, a.upsampler, a.activations) == ("tflite", "int8", "depth_to_space", None)
    a = args(precision="fp32")  # the command line wins; the section's variant is its int8 one
    _from_recipe(a, Out())
    assert (a.target, a.precision, a.upsampler) == ("tflite", "fp32", None)
    a = args(fully_integer=True)  # sets the precision itself: the section's is not forced on it
    _from_recipe(a, Out())
    assert (a.precision, a.upsampler) == (None, None)
    a = args(weight_only=True)
    _from_recipe(a, Out())
    assert (a.precision, a.upsampler) == (None, None)
    a = args(tune=True)  # --tune searches the variants: only target and precision are taken
    _from_recipe(a, Out())
    assert (a.target, a.precision, a.upsampler) == ("tflite", "int8", None)
    a = args(target="onnx")  # another target: the section's variant belongs to tflite, not used
    _from_recipe(a, Out())
    assert (a.target, a.precision, a.upsampler) == ("onnx", None, None)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(recipe, bare / "recipe.yaml")
    with pytest.raises(UsageError, match=r"--target is needed .*has no export section"):
        _from_recipe(args(checkpoint=str(bare)), Out())


def test_export_section_edit_replaces_a_block_section_and_keeps_the_rest(tmp_path):
    path = tmp_path / "r.yaml"
    text = (RECIPES_DIR / "quickstart_student.yaml").read_text()
    path.write_text(text + "export:\n  target: onnx\n  precision: fp32\n# a comment after it stays\n")
    _, new = write_recipe_width(path, 0.5, export={"target": "executorch", "precision": "int8"})
    assert new.startswith(text.replace("widths: [0.25]", "widths: [0.5]"))
    assert yaml.safe_load(new)["export"] == {"target": "executorch", "precision": "int8"}
    assert new.endswith("# a comment after it stays\n")
    assert load_recipe(path).export.target == "executorch"


def test_export_section_names_are_checked_when_the_recipe_loads(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        (RECIPES_DIR / "quickstart_student.yaml").read_text() + "export: {target: tflite, upsampler: bogus}\n"
    )
    with pytest.raises(RecipeError, match=r"export\.upsampler: .*pixelshuffle, depth_to_space"):
        load_recipe(path)
    path.write_text((RECIPES_DIR / "quickstart_student.yaml").read_text() + "export: {target: tensorrt}\n")
    with pytest.raises(RecipeError, match=r"export\.target: must be one of"):
        load_recipe(path)


def test_recipes_without_an_export_section_keep_their_hash():
    from edgesr.recipe import dump_recipe, recipe_hash

    r = load_recipe(RECIPES_DIR / "quickstart.yaml")
    assert "export" not in yaml.safe_load(dump_recipe(r))
    assert recipe_hash(r) == "9788ced29638570e"  # measured before the section existed
    # how a student ships does not change its training: a written section keeps runs resumable
    assert recipe_hash(replace(r, export=replace(r.export, target="onnx"))) == recipe_hash(r)


def test_eager_pytorch_is_not_a_configuration(tmp_path):
    _profiles(tmp_path)
    save_records("host", [_rec("pytorch", "fp32", 0.5, 1.0, upsampler=None)], "eager", tmp_path)
    sel = _select(tmp_path, 15.0, PSNR)
    assert all(c.runtime != "pytorch" for c in sel.configs) and sel.chosen.runtime == "litert"
    assert any("pytorch" in n and "left out" in n for n in sel.notes)


def test_executorch_choice_names_its_delegate():
    from edgesr.selection import Config

    c = Config("executorch", "xnnpack", "int8", "pixelshuffle", "pixelshuffle", "float-ends", 0.5, 16, 5.0)
    assert c.export_section() == {"target": "executorch", "precision": "int8", "delegate": "xnnpack",
                                  "upsampler": "pixelshuffle", "activations": "float-ends"}  # fmt: skip
    section = "export=" + str(c.export_section())
    assert load_recipe(RECIPES_DIR / "quickstart_student.yaml", [section]).export.delegate == "xnnpack"


def test_a_named_refusal_is_reported_even_beside_all():
    configs, refused = sweep_configs(["onnx"], ["int8"], ["all"], ["int16"])
    assert configs == [] and len(refused) == 1 and "16-bit" in refused[0]


def test_plain_select_width_compares_the_default_variant_only(tmp_path):
    from edgesr.selection import select_width

    save_records("host", [
        _rec("onnxruntime", "fp32", 0.5, 12.0, "pixelshuffle"),  # ONNX's default form
        _rec("onnxruntime", "fp32", 1.0, 30.0, "pixelshuffle"),
        _rec("onnxruntime", "fp32", 1.0, 9.0, "transposed_conv"),  # faster, but another graph
    ], "m", tmp_path)  # fmt: skip
    sel = select_width(HOST, 15.0, ARCH, "onnxruntime", parse_resolution(RES), threads=HOST.threads,
                       root=tmp_path, machine=THIS)  # fmt: skip
    assert sel.chosen.width == 0.5 and sel.chosen.latency_ms == 12.0


def test_a_qat_checkpoint_trained_with_another_weight_range_is_refused():
    from edgesr.errors import CheckpointError
    from edgesr.quant.state import fake_quant_model, quant_entry

    entry = quant_entry("onnxruntime", False)
    assert entry["weight_max"] == 63
    old = {k: v for k, v in entry.items() if k != "weight_max"}  # written before 7-bit ORT weights
    with pytest.raises(CheckpointError, match=r"\[-127, 127\].*\[-63, 63\].*run its QAT stage again"):
        fake_quant_model(build_model("plain", scale=2, n_convs=2, n_feats=4), old)


def test_profile_show_names_each_records_variant_and_runtime_settings(tmp_path, capsys) -> None:
    save_records("host", [
        _rec("onnxruntime", "fp32", 0.5, 12.0),
        replace(_rec("onnxruntime", "fp32", 0.5, 10.0), runtime_options={"spinning": "disabled"}),
        _rec("litert", "int8", 0.5, 5.0, "depth_to_space", activations="int8"),
    ], "m", tmp_path)  # fmt: skip
    assert main(["profile", "show", "--device", "host", "--profiles", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "w0.5" in line]
    assert len(rows) == 3
    assert any("pixelshuffle; spinning=disabled" in r for r in rows)
    assert any("depth_to_space, activations int8" in r for r in rows)
    assert sum("pixelshuffle" in r and "spinning" not in r for r in rows) == 1
