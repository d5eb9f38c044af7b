"""The CLI as a user runs it: train -> eval -> upscale, recipes, and errors that name the culprit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesr.cli import main

TINY = """\
name: tiny
scale: 2
model: {{name: edsr, args: {{n_resblocks: 1, n_feats: 16}}}}
data: {{train: {train}, val: [{val}], patch_size: 8, batch_size: 2, workers: 0}}
train:
  mode: csd
  widths: [0.5]
  steps: 2
  checkpoint_every: 2
  val_every: 2
  log_every: 1
  csd: {{negatives: 1, lambda_cl: 1.0, layers: [relu1_1], layer_weights: [1.0]}}
"""


@pytest.fixture
def recipe(tiny_photos, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(train=tiny_photos["train"], val=tiny_photos["val"]))
    return path


def test_train_eval_upscale(recipe, tiny_photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(recipe), "train.steps=2", "--run-dir", str(run)]) == 0
    out = capsys.readouterr()
    assert "student w=0.5" in out.out and "bicubic" in out.out and str(run) in out.err
    assert json.loads((run / "status.json").read_text())["state"] == "completed"

    md = tmp_path / "table.md"
    assert (
        main(["eval", str(run), "--data", str(tiny_photos["val"]), "--width", "0.5", "--markdown", str(md)])
        == 0
    )
    table = md.read_text()
    assert "| bicubic |" in table and "| student w=0.5 |" in table and "| teacher (w=1) |" in table

    img = tiny_photos["val"] / "img4.png"
    out_png = tmp_path / "up.png"
    argv = ["upscale", str(img), "--checkpoint", str(run), "--out", str(out_png), "--tile", "16"]
    assert main(argv) == 0
    assert np.asarray(Image.open(out_png)).shape == (96, 96, 3)
    assert main(argv) == 1 and "--force" in capsys.readouterr().err  # not overwritten silently
    assert main([*argv, "--force"]) == 0


def test_overrides_may_follow_options(recipe) -> None:
    """`edgesr train RECIPE --run-dir X a.b=v` (argparse alone rejects overrides after an option)."""
    from edgesr.cli import parse

    args = parse(["train", str(recipe), "train.steps=3", "--run-dir", "x", "data.batch_size=4", "seed=1"])
    assert str(args.run_dir) == "x" and args.overrides == ["train.steps=3", "data.batch_size=4", "seed=1"]
    for stray in (["--bogus"], ["plainword"]):
        with pytest.raises(SystemExit):
            parse(["train", str(recipe), "--run-dir", "x", *stray])
    with pytest.raises(SystemExit):  # a command without overrides takes none
        parse(["inspect", "a.pte", "a.b=1"])


def test_resume_via_cli(recipe, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(recipe), "train.steps=4", "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run)]) == 0  # already complete: resumes at 4 and finishes
    assert main(["train", "--resume", str(run), "train.steps=8"]) == 1


def test_typo_in_recipe_names_file_and_key_and_leaves_no_run_dir(recipe, tmp_path, capsys):
    recipe.write_text(recipe.read_text().replace("steps: 2", "stpes: 2"))
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "tiny.yaml" in err and "train.stpes" in err and "train.steps" in err
    assert not (tmp_path / "run").exists()


def test_recipes_ls_and_validate(capsys, recipe):
    assert main(["recipes", "ls"]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["recipes", "validate"]) == 0
    recipe.write_text(recipe.read_text().replace("scale: 2", "scale: 5"))
    assert main(["recipes", "validate", str(recipe)]) == 1
    assert "scale" in capsys.readouterr().err


def test_unknown_recipe_name_lists_shipped_ones(capsys):
    assert main(["train", "quikstart"]) == 1
    assert "quickstart" in capsys.readouterr().err
