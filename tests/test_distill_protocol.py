"""The real-photo distillation protocol: refuses overlapping sets, and its smoke preset runs end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.__main__ import main as bench_main
from benchmarks.distill_protocol import (
    OverlapError,
    below_bicubic,
    check_disjoint,
    last_gain,
    stale_students,
    teacher_note,
    training_seconds,
)
from edgesr.data.bicubic import imresize
from edgesr.data.images import write_image
from edgesr.distill_bench import BenchRow
from edgesr.errors import OutputExistsError


def _photo(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> Path:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    img = 120 + 60 * np.sin(xx / (3 + seed)) + 40 * np.cos(yy / (5 + seed)) + g.normal(0, 4, size)
    write_image(path, np.clip(np.repeat(img[..., None], 3, axis=2), 0, 255).astype(np.uint8))
    return path


def test_overlap_is_refused_by_pixels_and_by_picture(tmp_path: Path):
    train = [_photo(tmp_path / f"t{i}.png", i) for i in range(3)]
    val = [_photo(tmp_path / f"v{i}.png", 10 + i) for i in range(2)]
    check_disjoint(train, val)  # disjoint: fine
    with pytest.raises(OverlapError, match=r"v_copy.png is training photo .*t1.png \(same pixels\)"):
        check_disjoint(train, [*val, Path(_copy(train[1], tmp_path / "v_copy.png"))])
    small = tmp_path / "v_small.png"
    from edgesr.data.images import read_image

    write_image(small, imresize(read_image(train[2]), scale=0.5))
    with pytest.raises(OverlapError, match=r"v_small.png looks like training photo .*t2.png"):
        check_disjoint(train, [small])


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_smoke_preset_runs_teacher_and_paired_tables(tmp_path: Path):
    photos = tmp_path / "photos"
    (photos / "calib").mkdir(parents=True)
    (photos / "quant-eval").mkdir()
    _photo(photos / "calib" / "c0.png", 1, (96, 128))
    for i in range(3):
        _photo(photos / "quant-eval" / f"q{i}.png", 20 + i)
    out = tmp_path / "out"
    argv = ["distill-protocol", "--preset", "smoke", "--photos", str(photos), "--seeds", "0", "1",
            "--widths", "0.5", "--out", str(out)]  # fmt: skip
    assert bench_main(argv) == 0
    stages = json.loads((out / "teacher" / "stages.json").read_text())
    assert [s["stage"] for s in stages] == [1] and stages[0]["val_psnr"] > 0
    table = (out / "w0.5" / "table.md").read_text()
    assert "| fakd | slice_l1 | 3 x 2 |" in table  # 3 held-back photos x 2 seeds, paired
    assert sorted(p.name for p in (out / "data" / "val").iterdir()) == ["q0.png", "q1.png", "q2.png"]
    summary = (out / "summary.md").read_text()
    assert "distill-protocol" in summary and "- width 0.5:" in summary and "- total:" in summary
    assert "its 1 stages took" in summary and "all its runs trained for" in summary
    # 2 steps from scratch cannot beat bicubic: the summary must say so, per run
    assert "scratch seed 0:" in summary and "< bicubic" in summary
    assert "one stage only: not tested for a plateau (the smoke preset trains one stage)" in summary
    # run again: every run is reused, and the teacher keeps the seconds it took the first time
    before = (out / "teacher" / "stages.json").read_text()
    assert bench_main(argv) == 0
    assert (out / "teacher" / "stages.json").read_text() == before
    assert "runs finished in OUT before it are reused" in (out / "summary.md").read_text()
    # students of another teacher stage stop the run before anything trains, and are kept
    _student_run(out / "w0.5", "csd-s0", ["train.mode=csd", f"train.init={out / 'teacher' / 'stage-9'}"])
    stale = (
        r"from teacher stage-9, but the teacher is now stage-1; move them aside \(mv \S+w0\.5 \S+-stage-9;"
    )
    with pytest.raises(OutputExistsError, match=stale):
        bench_main(argv)
    assert (out / "w0.5" / "runs" / "csd-s0" / "recipe.yaml").is_file()
    shutil.rmtree(out / "w0.5" / "runs" / "csd-s0")
    # the protocol refuses to start when a validation photo is a training one
    _copy(photos / "calib" / "c0.png", photos / "quant-eval" / "c0_again.png")
    with pytest.raises(OverlapError):
        bench_main([*argv[:-1], str(tmp_path / "out2")])


def test_below_bicubic_names_each_run_under_its_data_sets_bicubic():
    rows = [BenchRow("bicubic", 0, "val", 30.0, 0.9), BenchRow("scratch", 0, "val", 29.9, 0.9),
            BenchRow("scratch", 1, "val", 30.1, 0.9), BenchRow("csd", 0, "other", 10.0, 0.5)]  # fmt: skip
    assert below_bicubic(rows) == ["scratch seed 0: 29.90 dB < bicubic 30.00 dB on val"]


def test_teacher_note_says_whether_the_staged_teacher_plateaued():
    def log(*psnrs):
        return [{"stage": k + 1, "val_psnr": v} for k, v in enumerate(psnrs)]

    assert last_gain(log(30.0)) is None
    assert last_gain(log(30.0, 30.4, 30.43)) == pytest.approx(0.03)
    assert last_gain(log(30.0, 30.4, 30.2)) == pytest.approx(-0.2)  # against the best earlier stage
    assert teacher_note(log(30.0, 30.4, 30.43), 0.05) == "plateau: stage 3 gained +0.030 dB < 0.05 dB"
    assert teacher_note(log(30.0, 30.4), 0.05).startswith("NOT at a plateau: stage 2 still gained +0.400 dB")
    assert teacher_note(log(30.0, 30.4, 30.2), 0.05).startswith("plateau: stage 3 gained -0.200 dB")
    assert teacher_note(log(30.0), 0.05) == "one stage only: not tested for a plateau (raise --max-stages)"
    with pytest.raises(SystemExit):  # argparse: "needs at least 1 teacher stage, got 0"
        bench_main(["distill-protocol", "--max-stages", "0"])


def _student_run(width_dir: Path, name: str, overrides: list[str]) -> None:
    from edgesr.recipe import dump_recipe, load_recipe, resolve_recipe

    (width_dir / "runs" / name).mkdir(parents=True)
    recipe = load_recipe(resolve_recipe("distill_protocol_cpu"), overrides)
    (width_dir / "runs" / name / "recipe.yaml").write_text(dump_recipe(recipe))


def test_students_of_an_earlier_teacher_stage_are_named_with_the_mv_that_keeps_them(tmp_path: Path):
    width_dir, teacher = tmp_path / "w0.25", tmp_path / "teacher" / "stage-5"
    _student_run(width_dir, "scratch-s0", ["train.init=null"])
    _student_run(width_dir, "slice_l1-s0", [f"train.init={teacher}"])
    assert stale_students(width_dir, teacher) is None  # scratch has no teacher; slice_l1 has this one
    assert stale_students(tmp_path / "w0.5", teacher) is None  # nothing trained yet
    _student_run(width_dir, "csd-s0", ["train.mode=csd", f"train.init={tmp_path / 'teacher' / 'stage-1'}"])
    line = stale_students(width_dir, teacher)
    assert line is not None
    assert "from teacher stage-1, but the teacher is now stage-5" in line
    assert f"mv {width_dir} {tmp_path / 'w0.25-teacher-stage-1'};" in line
    (tmp_path / "w0.25-teacher-stage-1").mkdir()  # moved aside before: never mv into it
    assert f"mv {width_dir} {tmp_path / 'w0.25-teacher-stage-1-2'};" in stale_students(width_dir, teacher)
    # the same stage name in another folder (a relative init read from elsewhere): full paths
    other = tmp_path / "elsewhere" / "stage-5"
    line = stale_students(width_dir, other)
    assert line is not None and f"{teacher}, but the teacher is now {other};" in line


def test_training_seconds_counts_each_run_once_across_data_sets():
    rows = [
        BenchRow("scratch", 0, "val", 30.0, 0.9, step_s=0.5),
        BenchRow("scratch", 0, "b100", 29.0, 0.9, step_s=0.5),  # the same run on a second data set
        BenchRow("csd", 0, "val", 30.0, 0.9, step_s=2.0),
        BenchRow("csd", 1, "val", 30.0, 0.9, step_s=3.0),
        BenchRow("bicubic", 0, "val", 28.0, 0.8),
    ]
    assert training_seconds(rows, 100) == 100 * (0.5 + 2.0 + 3.0)
