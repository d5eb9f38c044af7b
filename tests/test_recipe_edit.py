"""`select-width --write`: editing one number of a recipe file, every other byte (CRLF, mode) kept."""

from __future__ import annotations

import shutil

import pytest

from edgesr.recipe import RECIPES_DIR, RecipeError, load_recipe
from edgesr.recipe_edit import write_recipe_width


def test_write_changes_only_the_width_characters(tmp_path):
    src = RECIPES_DIR / "quickstart_student.yaml"
    dst = tmp_path / "student.yaml"
    shutil.copy(src, dst)
    before = dst.read_bytes()
    old, _ = write_recipe_width(dst, 0.375)
    after = dst.read_bytes()
    assert old == 0.25
    i = before.index(b"widths: [0.25]") + len(b"widths: [")
    assert after == before[:i] + b"0.375" + before[i + len(b"0.25") :]  # every other byte identical
    assert load_recipe(dst).train.widths == (0.375,)


def test_write_keeps_crlf_line_endings_and_the_file_mode(tmp_path):
    dst = tmp_path / "student.yaml"
    before = (RECIPES_DIR / "quickstart_student.yaml").read_bytes().replace(b"\n", b"\r\n")
    dst.write_bytes(before)
    dst.chmod(0o640)
    write_recipe_width(dst, 0.375)
    i = before.index(b"widths: [0.25]") + len(b"widths: [")
    assert dst.read_bytes() == before[:i] + b"0.375" + before[i + len(b"0.25") :]
    assert dst.stat().st_mode & 0o777 == 0o640


def test_write_follows_eval_widths_and_block_lists(tmp_path):
    f = tmp_path / "r.yaml"
    text = (
        "# a comment that must survive\nname: r\nscale: 2\nmodel:\n  name: edsr\n  args: {n_feats: 32}\n"
        "train:\n  mode: single\n  widths:\n    - 0.5   # student\n  steps: 10\neval:\n  widths: [0.5]\n"
    )
    f.write_text(text)
    write_recipe_width(f, 0.25)
    assert f.read_text() == text.replace("- 0.5 ", "- 0.25 ").replace("widths: [0.5]", "widths: [0.25]")


def test_write_refuses_ambiguous_or_invalid_edits(tmp_path):
    f = tmp_path / "csd.yaml"
    f.write_text("name: c\ntrain:\n  widths: [0.25, 0.5]\n")
    with pytest.raises(RecipeError, match=r"csd\.yaml: .*exactly one student width"):
        write_recipe_width(f, 0.375)
    g = tmp_path / "teacher.yaml"
    g.write_text("name: t\ntrain:\n  mode: csd\n  widths: [0.25]\n")
    before = g.read_text()
    with pytest.raises(RecipeError, match="csd student widths must be < 1"):
        write_recipe_width(g, 1.0)
    assert g.read_text() == before  # validated before writing: the file is untouched
