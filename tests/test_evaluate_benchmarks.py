"""`edgesr eval CKPT --data benchmarks`: the present benchmark sets under the data root, the papers'
protocol, and the zoo teacher's reported numbers beside the measured ones (served from 127.0.0.1)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from zoo_teachers import serve

from edgesr.cli import main
from edgesr.evaluate import reported_rows
from edgesr.train.checkpoint import convert_official


@pytest.fixture
def data_root(tiny_photos, tmp_path, monkeypatch) -> Path:
    """$EDGESR_DATA with benchmark/Set5 (2 images) and benchmark/Set14 (1), HR only (LR synthesised)."""
    root = tmp_path / "data"
    photos = sorted(tiny_photos["train"].iterdir())
    for name, files in (("Set5", photos[:2]), ("Set14", photos[2:3])):
        (root / "benchmark" / name / "HR").mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / "benchmark" / name / "HR" / f.name)
    monkeypatch.setenv("EDGESR_DATA", str(root))
    return root


def _rows(out: str) -> dict[str, list[str]]:
    """Table rows by method: the cells after the method column."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 1 and cells[0]:
            rows[cells[0]] = cells[1:]
    return rows


def test_eval_benchmarks_prints_a_column_per_present_set_and_the_paper_row(
    data_root, loopback_server, monkeypatch, capsys
) -> None:
    serve(monkeypatch, loopback_server, "edsr_x2")
    assert main(["eval", "zoo:edsr_x2", "--data", "benchmarks"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "Set5" in line)
    assert header.index("Set5") < header.index("Set14") and "B100" not in out  # present sets, in order
    rows = _rows(out)
    assert re.fullmatch(r"[\d.]+ / 0\.\d{4}", rows["teacher (w=1)"][0])  # measured: PSNR-Y / SSIM
    assert rows["zoo:edsr_x2 reported"] == ["38.11", "33.92"]
    assert "zoo:edsr_x2 reported: EDSR paper (Lim et al., CVPRW 2017, arXiv:1707.02921) Table 3" in out
    assert len(loopback_server.requests) == 1

    assert main(["eval", "zoo:edsr_x2", "--data", "benchmarks", "--self-ensemble", "--no-ssim"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["zoo:edsr_x2+ reported"] == ["38.20", "34.02"]  # the paper's "+" row
    assert len(loopback_server.requests) == 1  # the teacher came from the cache


def test_a_converted_zoo_teacher_keeps_its_paper_row(
    data_root, loopback_server, monkeypatch, tmp_path, capsys
):
    serve(monkeypatch, loopback_server, "edsr_baseline_x2")
    ckpt = convert_official("zoo:edsr_baseline_x2", tmp_path / "teacher")
    md = tmp_path / "table.md"
    assert (
        main(["eval", str(ckpt), "--data", "benchmarks", "--data", "builtin:val", "--markdown", str(md)]) == 0
    )
    rows = _rows(capsys.readouterr().out)
    # baseline numbers are a later re-measurement (the authors published none): marked, with their source
    assert rows["zoo:edsr_baseline_x2 re-measured*"][:2] == ["37.98", "33.57"]  # none for builtin:val
    text = md.read_text()
    assert "| zoo:edsr_baseline_x2 re-measured* | 37.98 | 33.57 |  |" in text and "torchSR" in text


def test_no_paper_row_for_other_checkpoints_or_sets() -> None:
    assert reported_rows(None, ["Set5"]) == [] and reported_rows("runs/x", ["Set5"]) == []
    rows = reported_rows("zoo:rcan_x4", ["BSD100", "Manga109", "val"], self_ensemble=True)
    assert [(r.dataset, r.method, r.psnr, r.images) for r in rows] == [
        ("BSD100", "zoo:rcan_x4+ reported", 27.85, 0),
        ("Manga109", "zoo:rcan_x4+ reported", 31.65, 0),
    ]
    # no "+" numbers published: the plain ones, labelled as such
    assert reported_rows("zoo:edsr_baseline_x4", ["Set5"], self_ensemble=True)[0].method == (
        "zoo:edsr_baseline_x4 re-measured*"
    )


def test_eval_benchmarks_without_any_set_says_how_to_fetch_them(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("EDGESR_DATA", str(tmp_path / "empty"))
    assert main(["eval", "runs/none", "--data", "benchmarks"]) == 1
    err = capsys.readouterr().err
    assert "no benchmark sets" in err and "edgesr data fetch benchmarks" in err
