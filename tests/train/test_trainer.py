"""Trainer: kill-and-resume equality, NaN stop, bad input before any run dir, init modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from edgesr.models import build_model, materialize
from edgesr.recipe import Recipe, from_dict
from edgesr.train import objectives
from edgesr.train import trainer as trainer_mod
from edgesr.train.checkpoint import load_model, resolve_checkpoint
from edgesr.train.trainer import TrainingError, build_objective, train


def tiny_recipe(photos: dict[str, Path], **train: object) -> Recipe:
    cfg = {
        "name": "tiny",
        "scale": 2,
        "model": {"name": "edsr", "args": {"n_resblocks": 1, "n_feats": 16}},
        "data": {
            "train": str(photos["train"]),
            "val": [str(photos["val"])],
            "patch_size": 8,
            "batch_size": 2,
            "workers": 0,
        },
        "train": {
            "mode": "csd",
            "widths": [0.5],
            "steps": 4,
            "checkpoint_every": 2,
            "val_every": 2,
            "log_every": 1,
            "optim": {"lr": 1e-3},
            "csd": {"negatives": 1, "lambda_cl": 1.0, "layers": ["relu1_1"], "layer_weights": [1.0]},
            **train,
        },
    }
    return from_dict(Recipe, cfg)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(resolve_checkpoint(run_dir))


def test_killed_and_resumed_run_equals_uninterrupted(tiny_photos, tmp_path):
    recipe = tiny_recipe(tiny_photos)
    full = train(recipe, tmp_path / "full")
    assert full.steps == 4
    part = train(recipe, tmp_path / "part", stop_at=2)
    assert part.steps == 2 and json.loads((tmp_path / "part/status.json").read_text())["state"] == "stopped"
    resumed = train(recipe, tmp_path / "part", resume=True)
    assert resumed.steps == 4
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run really trained: every weight moved away from the seeded initialisation
    torch.manual_seed(recipe.seed)
    init = build_model("edsr", scale=2, n_resblocks=1, n_feats=16).state_dict()
    assert all(not torch.equal(a[k], init[k]) for k in a)


def test_resume_restores_optimizer_state_not_just_weights(tiny_photos, tmp_path, monkeypatch):
    """Resuming with a fresh optimizer would give different weights; prove the state matters."""
    recipe = tiny_recipe(tiny_photos)
    train(recipe, tmp_path / "full")
    train(recipe, tmp_path / "part", stop_at=2)
    monkeypatch.setattr(
        trainer_mod, "load_training_state", _fresh_optimizer_state(trainer_mod.load_training_state)
    )
    train(recipe, tmp_path / "part", resume=True)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _fresh_optimizer_state(load):
    def patched(path):
        state = load(path)
        state["optimizer"]["state"] = {}
        return state

    return patched


def test_completed_run_writes_results_and_checkpoint(tiny_photos, tmp_path):
    result = train(tiny_recipe(tiny_photos), tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "recipe.yaml").is_file() and (run / "log.jsonl").is_file()
    results = json.loads((run / "results.json").read_text())
    methods = {r["method"] for r in results["rows"]}
    assert methods == {"bicubic", "teacher (w=1)", "student w=0.5"}
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("val_psnr_y" in r for r in records) and any("loss/total" in r for r in records)
    model, meta = load_model(result.checkpoint)
    assert meta.step == 4 and meta.widths == (1.0, 0.5) and meta.scale == 2
    # only the last two checkpoints are kept, and `latest` points at the newest
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tiny_photos, tmp_path, monkeypatch):
    recipe = tiny_recipe(tiny_photos, mode="single", widths=[1.0], steps=6)
    real_l1, calls = objectives.l1, {"n": 0}

    def l1_nan_at_step_3(pred, target):
        calls["n"] += 1
        loss = real_l1(pred, target)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(objectives, "l1", l1_nan_at_step_3)
    with pytest.raises(TrainingError, match="at step 3"):
        train(recipe, tmp_path / "run")
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["state"] == "diverged" and status["step"] == 3
    model, meta = load_model(tmp_path / "run")  # the step-2 checkpoint, intact and finite
    assert meta.step == 2
    assert all(torch.isfinite(p).all() for p in model.state_dict().values())


@pytest.mark.parametrize("problem", ["corrupt", "missing", "small", "empty"])
def test_bad_training_data_fails_before_any_run_dir(tiny_photos, tmp_path, problem):
    data = tmp_path / "data"
    data.mkdir()
    if problem == "corrupt":
        for p in tiny_photos["train"].glob("*.png"):
            (data / p.name).write_bytes(p.read_bytes())
        (data / "broken.png").write_bytes((data / "img0.png").read_bytes()[:200])
        culprit = "broken.png"
    elif problem == "missing":
        data = tmp_path / "nowhere"
        culprit = "nowhere"
    elif problem == "small":
        Image.new("RGB", (6, 6)).save(data / "tiny.png")
        culprit = "tiny.png"
    else:
        culprit = "no image"
    recipe = from_dict(
        Recipe,
        {
            **_as_dict(tiny_recipe(tiny_photos)),
            "data": {
                "train": str(data),
                "val": [str(tiny_photos["val"])],
                "patch_size": 8,
                "batch_size": 2,
                "workers": 0,
            },
        },
    )
    with pytest.raises(ValueError, match=culprit):
        train(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _as_dict(recipe: Recipe) -> dict:
    from edgesr.recipe import recipe_to_dict

    return recipe_to_dict(recipe)


def test_refuses_to_reuse_a_non_empty_run_dir(tiny_photos, tmp_path):
    recipe = tiny_recipe(tiny_photos, steps=2)
    train(recipe, tmp_path / "run")
    with pytest.raises(TrainingError, match="--resume"):
        train(recipe, tmp_path / "run")


def test_resume_refuses_a_changed_recipe(tiny_photos, tmp_path):
    train(tiny_recipe(tiny_photos), tmp_path / "run", stop_at=2)
    with pytest.raises(TrainingError, match="recipe differs"):
        train(tiny_recipe(tiny_photos, steps=6), tmp_path / "run", resume=True)


def test_single_mode_student_is_the_teacher_slice_or_a_fresh_narrow_net(tiny_photos, tmp_path):
    teacher_run = train(tiny_recipe(tiny_photos, mode="single", widths=[1.0], steps=2), tmp_path / "teacher")
    teacher, _ = load_model(teacher_run.run_dir)
    sliced = tiny_recipe(tiny_photos, mode="single", widths=[0.5], init=str(teacher_run.run_dir))
    objective, width = build_objective(sliced)
    net = objective.net
    assert width == 0.5
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(net(x), teacher(x, width=0.5))
    torch.testing.assert_close(net(x), materialize(teacher, 0.5)(x))
    scratch = build_objective(tiny_recipe(tiny_photos, mode="single", widths=[0.5]))[0].net
    assert not torch.allclose(scratch(x), net(x))
    # a stand-alone student checkpoint reloads as a narrow model
    run = train(sliced, tmp_path / "student")
    student, meta = load_model(run.run_dir)
    assert meta.materialized_width == 0.5 and getattr(student, "materialized_width", None) == 0.5


def test_init_from_a_checkpoint_of_another_architecture_is_refused(tiny_photos, tmp_path):
    other = train(tiny_recipe(tiny_photos, mode="single", widths=[1.0], steps=2), tmp_path / "teacher")
    bigger = from_dict(
        Recipe,
        {
            **_as_dict(tiny_recipe(tiny_photos, init=str(other.run_dir))),
            "model": {"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 16}},
        },
    )
    with pytest.raises(TrainingError, match="train.init"):
        build_objective(bigger)


def test_train_or_continue_restarts_a_run_stopped_before_its_first_checkpoint(tiny_photos, tmp_path):
    from edgesr.recipe import dump_recipe
    from edgesr.train.trainer import run_status, train_or_continue

    recipe = tiny_recipe(tiny_photos)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(dump_recipe(recipe))
    (run / "status.json").write_text('{"state": "running"}')  # killed before step 2 was saved
    rows = train_or_continue(recipe, run)
    assert run_status(run) == "completed" and {r.method for r in rows} >= {"bicubic", "student w=0.5"}
    assert train_or_continue(recipe, run) == rows  # completed: reused, not retrained
    with pytest.raises(TrainingError, match="different recipe"):
        train_or_continue(tiny_recipe(tiny_photos, steps=6), run)


def test_stop_at_must_be_after_the_current_step(tiny_photos, tmp_path):
    recipe = tiny_recipe(tiny_photos)
    train(recipe, tmp_path / "run", stop_at=2)
    with pytest.raises(TrainingError, match="stop_at=2"):
        train(recipe, tmp_path / "run", resume=True, stop_at=2)


def test_two_val_folders_with_one_name_are_an_error(tiny_photos, tmp_path):
    import shutil

    for parent in ("Set5", "Set14"):
        shutil.copytree(tiny_photos["val"], tmp_path / parent / "HR")
    from edgesr.data import eval_sets

    assert list(eval_sets([str(tmp_path / "Set5/HR"), str(tmp_path / "Set14/HR")], 2)) == ["Set5", "Set14"]
    shutil.copytree(tiny_photos["val"], tmp_path / "a" / "val")
    shutil.copytree(tiny_photos["val"], tmp_path / "b" / "val")
    with pytest.raises(ValueError, match="both named 'val'"):
        eval_sets([str(tmp_path / "a/val"), str(tmp_path / "b/val")], 2)


def test_csd_without_contrastive_term_builds_no_vgg_and_no_negatives(tiny_photos, monkeypatch):
    """lambda_cl 0 ("joint training, no CL"): the objective is the L1 terms alone, and nothing is
    spent on a VGG or on negatives that no term reads."""
    recipe = tiny_recipe(tiny_photos, csd={"lambda_cl": 0.0})
    objective, _ = build_objective(recipe)
    assert objective.cl is None
    monkeypatch.setattr(objectives, "negative_set", lambda *a, **k: pytest.fail("negatives were made"))
    loss, terms = objective(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), step=1)
    loss.backward()
    assert set(terms) == {"l1_student_w0.5", "l1_teacher", "total"}
    assert all(p.grad is not None for p in objective.net.parameters() if p.requires_grad)
