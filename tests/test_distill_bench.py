"""`edgesr bench distill`: baselines always run, tables aggregate seeds honestly."""

from __future__ import annotations

import argparse
import csv
import dataclasses

import pytest

from benchmarks import distill_cost
from edgesr.cli import main
from edgesr.distill_bench import (
    ABLATIONS,
    BASELINES,
    DEFAULT_METHODS,
    METHODS,
    BenchRow,
    _panel,
    bicubic_markdown,
    paired,
    plot_paired,
    run_bench,
    summarise,
    vs_bicubic,
)
from edgesr.errors import DataError

BASE = """\
name: bench_tiny
scale: 2
model: {{name: edsr, args: {{n_resblocks: 3, n_feats: 16}}}}
data: {{train: {train}, val: [{val}], patch_size: 8, batch_size: 2, workers: 0}}
train:
  mode: single
  widths: [0.5]
  steps: 2
  checkpoint_every: 2
  val_every: 100
  log_every: 1
  csd: {{negatives: 1, lambda_cl: 1.0, layers: [relu1_1], layer_weights: [1.0]}}
"""


def test_bench_runs_baselines_and_chosen_methods(tiny_photos, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(BASE.format(train=tiny_photos["train"], val=tiny_photos["val"]))
    out = tmp_path / "bench"
    argv = ["bench", "distill", "--preset", str(base), "--methods", "fakd", "--seeds", "0", "1",
            "--teacher-steps", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert methods == {*BASELINES, "fakd", "bicubic"}
    assert {(r["method"], r["seed"]) for r in rows if r["method"] == "fakd"} == {("fakd", "0"), ("fakd", "1")}
    table = (out / "table.md").read_text()
    assert all(f"| {m} |" in table for m in [*BASELINES, "fakd", "bicubic"]) and "±" in table
    assert (out / "psnr.png").stat().st_size > 1000
    assert (out / "teacher" / "checkpoints" / "latest").is_file()
    # paired statistics: every method against every baseline it is not, over images x both seeds
    with open(out / "per_image.csv") as f:
        per_image = list(csv.DictReader(f))
    n_img = len({r["image"] for r in per_image})
    assert n_img >= 2 and len(per_image) == len(rows) * n_img
    names = {r["image"]: r["name"] for r in per_image}
    assert all(names.values()) and len(set(names.values())) == n_img  # each image index has its file's name
    assert "Paired differences" in table and "95% interval over images and seeds" in table
    vs_bicubic_section = table.split("Against bicubic")[1].split("Paired differences")[0]
    assert "| fakd | " in vs_bicubic_section and f" / {n_img * 2} | " in vs_bicubic_section
    assert "(image " not in vs_bicubic_section  # the worst photo by its name
    assert f"| fakd | slice_l1 | {n_img} x 2 |" in table and f"| scratch | output_kd | {n_img} x 2 |" in table
    assert "| slice_l1 | slice_l1 |" not in table
    assert (out / "paired.png").stat().st_size > 1000
    assert all(r["s_per_step"] for r in rows if r["method"] != "bicubic")
    # runs again without retraining anything: finished runs resume at their last step
    rows2 = run_bench(str(base), out, ["fakd"], [0, 1], teacher_steps=2)
    assert {(r.method, r.seed, f"{r.psnr:.4f}") for r in rows2} == {
        (r["method"], int(r["seed"]), r["psnr_y"]) for r in rows
    }


def test_paired_differences_are_per_image_and_resolve_a_real_gap():
    imgs = [30.0, 31.5, 29.0, 33.0, 28.5, 32.0]
    rows = []
    for seed in (0, 1, 2):
        for m, shift in (("scratch", 0.0), ("slice_l1", 0.0), ("output_kd", 0.01 * seed), ("fakd", 0.2)):
            per = tuple(p + shift + 0.01 * ((i * 7 + seed) % 3) for i, p in enumerate(imgs))
            rows.append(BenchRow(m, seed, "val", sum(per) / len(per), 0.9, per, (0.9,) * len(per)))
    diffs = paired(rows)
    fakd, _ = diffs[("val", "fakd", "slice_l1")]
    assert fakd.resolved and fakd.mean == pytest.approx(0.2, abs=1e-9) and (fakd.images, fakd.seeds) == (6, 3)
    assert not diffs[("val", "slice_l1", "scratch")][0].resolved  # identical per image: 0 [0, 0]
    assert ("val", "scratch", "scratch") not in diffs and len(diffs) == 3 * 4 - 3


def test_an_ablation_runs_only_by_name_and_is_compared_with_its_method(tmp_path):
    """csd_no_cl is CSD with its contrastive term off: not in the default grid; when it ran beside
    csd, the paired table adds csd - csd_no_cl."""
    from edgesr.distill_bench import method_recipe
    from edgesr.recipe import load_recipe, resolve_recipe

    assert set(ABLATIONS) <= set(METHODS) and set(ABLATIONS.values()) <= set(DEFAULT_METHODS)
    assert "csd_no_cl" not in DEFAULT_METHODS and set(DEFAULT_METHODS) | set(ABLATIONS) == set(METHODS)
    path = resolve_recipe("distill_protocol_cpu")
    whole, part = (method_recipe(load_recipe(path), path, m, 0, tmp_path) for m in ("csd", "csd_no_cl"))
    assert (whole.train.mode, part.train.mode) == ("csd", "csd")
    assert whole.train.csd.lambda_cl > 0 and part.train.csd.lambda_cl == 0
    assert dataclasses.replace(whole.train.csd, lambda_cl=0.0) == part.train.csd  # nothing else changes

    imgs = [30.0, 31.5, 29.0, 33.0, 28.5]
    shifts = {"scratch": 0.0, "slice_l1": 0.3, "output_kd": 0.3, "csd": 0.0, "csd_no_cl": 0.3}
    rows = []
    for seed in (0, 1, 2):
        for m, shift in shifts.items():
            per = tuple(p + shift + 0.01 * ((i + seed) % 2) for i, p in enumerate(imgs))
            rows.append(BenchRow(m, seed, "val", sum(per) / len(per), 0.9, per, (0.9,) * len(per)))
    diffs = paired(rows)
    cl, _ = diffs[("val", "csd", "csd_no_cl")]
    assert cl.resolved and cl.mean == pytest.approx(-0.3, abs=1e-9)
    assert ("val", "csd_no_cl", "csd") not in diffs and ("val", "scratch", "csd_no_cl") not in diffs
    without = paired([r for r in rows if r.method != "csd_no_cl"])
    assert not any(base == "csd_no_cl" for _, _, base in without)
    # paired.png gets a last panel for it
    assert [label for label, _ in _panel(diffs, "val", None)] == ["csd - csd_no_cl"]
    assert _panel(without, "val", None) == []
    plot_paired(rows, tmp_path / "paired.png")
    assert (tmp_path / "paired.png").stat().st_size > 1000


def test_ablations_are_left_out_of_every_default_method_list(monkeypatch, tmp_path):
    """`edgesr bench distill` with no --methods, and `distill-cost`'s default, run no ablation."""
    asked = {}

    def fake_run_bench(preset, out, methods, *args, **kwargs):
        asked["methods"] = list(methods)
        raise SystemExit(0)  # stop before the table is read

    monkeypatch.setattr("edgesr.distill_bench.run_bench", fake_run_bench)
    with pytest.raises(SystemExit):
        main(["bench", "distill", "--out", str(tmp_path)])
    assert asked["methods"] == list(DEFAULT_METHODS) and "csd_no_cl" not in asked["methods"]
    sub = argparse.ArgumentParser().add_subparsers()
    distill_cost.add_parser(sub)
    args = sub.choices["distill-cost"].parse_args([])
    assert args.methods == list(DEFAULT_METHODS)
    assert sub.choices["distill-cost"].parse_args(["--methods", "csd_no_cl"]).methods == ["csd_no_cl"]


def test_vs_bicubic_finds_the_smooth_photo_a_good_mean_hides():
    bicubic = (30.0, 31.0, 29.0, 45.0, 32.0, 28.0, 33.0, 30.5)  # image 3: smooth, bicubic scores highest
    rows = [BenchRow("bicubic", 0, "val", 0.0, 0.0, bicubic)]
    for seed in (0, 1):
        drop = -2.0 if seed == 1 else -0.5
        per = tuple(p + (drop if i == 3 else 1.0) for i, p in enumerate(bicubic))
        rows.append(BenchRow("meta_kd", seed, "val", 0.0, 0.0, per))
    rows.append(BenchRow("scratch", 0, "val", 0.0, 0.0, tuple(p + 0.5 for p in bicubic)))
    v = vs_bicubic(rows)[("val", "meta_kd")]
    # 7 of 8 images gain 1 dB, image 3 loses 0.5 / 2.0: the mean is above bicubic, two pairs are not
    assert v.mean == pytest.approx((14 * 1.0 - 2.5) / 16)
    assert (v.below, v.pairs, v.worst) == (2, 16, (-2.0, 3, 1))
    # the easiest quarter (2 of 8 images): image 3 (45 dB) and image 6 (33 dB)
    assert v.easiest == pytest.approx((-0.5 - 2.0 + 1.0 + 1.0) / 4)
    s = vs_bicubic(rows)[("val", "scratch")]
    assert (s.below, s.worst[0], s.easiest) == (0, pytest.approx(0.5), pytest.approx(0.5))
    table = bicubic_markdown(rows)
    assert "| val | meta_kd | +0.72 | -0.12 | 2 / 16 | -2.00 (image 3, seed 1) |" in table
    names = {"val": ("a", "b", "c", "moon", "e", "f", "g", "h")}
    assert "| -2.00 (moon, seed 1) |" in bicubic_markdown(rows, names)
    assert "| -2.00 (image 3, seed 1) |" in bicubic_markdown(rows, {"val": ("a", "b")})  # another image set
    assert bicubic_markdown([BenchRow("scratch", 0, "val", 30.0, 0.9)]) == ""  # no per-image results
    with pytest.raises(DataError, match="meta_kd seed 2 was validated on 3 images of val, bicubic on 8"):
        vs_bicubic([*rows, BenchRow("meta_kd", 2, "val", 0.0, 0.0, (30.0, 31.0, 29.0))])


def test_summary_is_mean_and_sample_std_over_seeds():
    rows = [BenchRow("a", 0, "set", 30.0, 0.9), BenchRow("a", 1, "set", 32.0, 0.8)]
    psnr, psnr_std, ssim, _, n = summarise(rows)[("a", "set")]
    assert (psnr, n) == (31.0, 2) and psnr_std == pytest.approx(2**0.5) and ssim == pytest.approx(0.85)


@pytest.mark.parametrize("preset", ["bench_distill_cpu", "quickstart_student"])
def test_every_method_is_a_valid_recipe(tmp_path, preset):
    """Also from a base recipe that lists losses (quickstart_student): single and csd modes refuse
    `losses`, so their methods clear them."""
    from edgesr.distill_bench import method_recipe
    from edgesr.recipe import load_recipe, resolve_recipe

    path = resolve_recipe(preset)
    base = load_recipe(path)
    for m in METHODS:
        r = method_recipe(base, path, m, seed=3, teacher=tmp_path / "teacher")
        assert r.seed == 3 and r.train.widths == base.train.widths and r.train.steps == base.train.steps
        assert r.train.mode in ("distill", "qat") or not r.train.losses


def test_unknown_method_lists_valid_ones(tmp_path):
    with pytest.raises(KeyError, match=r"unknown method 'fakdd'; valid: .*output_kd"):
        run_bench("cpu", tmp_path, ["fakdd"], [0], teacher=tmp_path)


@pytest.mark.parametrize("method", ["output_kd", "fitnet", "fakd", "lsfd", "facd", "meta_kd"])
@pytest.mark.parametrize("size", ["quickstart", "paper"])
def test_shipped_method_recipes_match_the_bench_definitions(method, size):
    """recipes/distill/<method>_<size>.yaml is METHODS[method] applied to its base: they cannot drift."""
    from edgesr.recipe import load_recipe, resolve_recipe

    shipped = load_recipe(resolve_recipe(f"{method}_{size}"))
    base = "quickstart_student" if size == "quickstart" else "bench_distill_gpu"
    teacher = "runs/quickstart/teacher" if size == "quickstart" else "runs/rcan_x4_teacher"
    overrides = [o.replace("{teacher}", teacher) for o in METHODS[method][1]]
    expected = load_recipe(resolve_recipe(base), overrides)
    assert shipped.train.losses == expected.train.losses and shipped.train.mode == expected.train.mode
    assert (shipped.model, shipped.data, shipped.scale) == (expected.model, expected.data, expected.scale)
    assert shipped.train.init == teacher and shipped.train.steps == expected.train.steps
