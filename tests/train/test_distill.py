"""Distill mode: every registered loss trains a student from a frozen teacher, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from edgesr.losses import LOSSES, Reads
from edgesr.models.taps import run_with_taps
from edgesr.recipe import Recipe, from_dict
from edgesr.train.checkpoint import resolve_checkpoint
from edgesr.train.objectives import extra_state
from edgesr.train.trainer import build_objective, train

# output_kd with alpha 1 is L1(S, T) alone: its own L1(S, HR) part must not hide a cut-off KD term
LOSS_ARGS = {
    "csd": {"layers": ["relu1_1"], "layer_weights": [1.0]},
    "fakd": {"max_positions": 16},
    "output_kd": {"alpha": 1.0},
}


def recipe_for(photos: dict[str, Path], teacher: Path | None, losses: list[dict], **train: object) -> Recipe:
    cfg = {
        "name": "distill",
        "scale": 2,
        "model": {"name": "edsr", "args": {"n_resblocks": 3, "n_feats": 16}},
        "data": {"train": str(photos["train"]), "val": [str(photos["val"])], "patch_size": 8,
                 "batch_size": 2, "workers": 0},
        "train": {"mode": "distill", "widths": [0.5], "init": str(teacher), "losses": losses, "steps": 4,
                  "checkpoint_every": 2, "val_every": 4, "log_every": 1, "optim": {"lr": 1e-3},
                  "csd": {"negatives": 1}, **train},
    }  # fmt: skip
    return from_dict(Recipe, cfg)


@pytest.fixture(scope="module")
def teacher(tiny_photos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "run"
    single = {"mode": "single", "widths": [1.0], "init": None, "steps": 2}
    train(recipe_for(tiny_photos, None, [], **single), run)
    return run


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_reaches_the_student_in_a_distill_step(tiny_photos, teacher, name):
    losses = [{"name": "l1"}, {"name": name, "args": LOSS_ARGS.get(name, {})}]
    objective, width = build_objective(recipe_for(tiny_photos, teacher, losses))
    assert width == 0.5
    objective.train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    # isolate the term under test: backward through it alone
    objective.losses[0].weight = 0.0
    loss, terms = objective(lr, hr, step=1)
    expected = {"l10", "l11", "total"} if name == "l1" else {"l1", name, "total"}
    assert set(terms) == expected
    loss.backward()
    for p_name, p in objective.net.named_parameters():
        if p.requires_grad and p_name.startswith(("head", "body.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reached {p_name}"
    assert all(p.grad is None for p in objective.teacher.parameters()), f"{name} sent gradient to the teacher"
    for p_name, p in objective.losses.named_parameters():
        if p.requires_grad:  # regressors learn with the student
            assert p.grad is not None and p.grad.abs().sum() > 0, (
                f"{name}: regressor {p_name} got no gradient"
            )


class ToyLoss(nn.Module):
    """A new loss as a user would add it: one class (with its `reads`) and one registration."""

    reads = Reads(("student_feats", "teacher_feats", "student", "teacher", "hr", "generator"), channels=True)

    def __init__(self, student_channels: list[int], teacher_channels: list[int], weight: float = 1.0,
                 gain: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        self.channels = (list(student_channels), list(teacher_channels))
        self.regressors = nn.ModuleList(
            nn.Conv2d(cs, ct, 1) for cs, ct in zip(student_channels, teacher_channels, strict=True)
        )
        self.weight, self.gain = weight, gain
        self.seen: dict[str, object] = {}

    def forward(self, s_feats: list[Tensor], t_feats: list[Tensor], student: Tensor, teacher: Tensor,
                hr: Tensor, generator: torch.Generator | None) -> Tensor:  # fmt: skip
        self.seen = {"s_feats": s_feats, "t_feats": t_feats, "student": student, "teacher": teacher,
                     "hr": hr, "generator": generator}  # fmt: skip
        feat = sum(F.l1_loss(r(s), t) for r, s, t in zip(self.regressors, s_feats, t_feats, strict=True))
        return self.weight * self.gain * (feat + F.l1_loss(student, teacher))


@pytest.fixture
def toy_loss():
    LOSSES.register("toy")(ToyLoss)  # the one registration; no other table to edit
    yield ToyLoss
    del LOSSES._items["toy"]  # the registry has no unregister: restore it for the other tests


def test_a_newly_registered_loss_is_dispatched_from_its_declaration(tiny_photos, teacher, toy_loss):
    losses = [{"name": "toy", "taps": ["stage3", "stage1"], "weight": 2.0, "args": {"gain": 0.5}}]
    objective, _ = build_objective(recipe_for(tiny_photos, teacher, losses))
    (toy,) = objective.losses
    assert isinstance(toy, ToyLoss) and (toy.weight, toy.gain) == (2.0, 0.5)
    assert toy.channels == ([8, 8], [16, 16])  # per tap, from the width-0.5 student and the teacher
    objective.train()
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    loss, terms = objective(lr, hr, step=1)
    assert set(terms) == {"toy", "total"}
    seen = toy.seen
    assert seen["hr"] is hr and isinstance(seen["generator"], torch.Generator)
    assert seen["student"].shape == seen["teacher"].shape == (2, 3, 16, 16)
    assert seen["student"].requires_grad and not seen["teacher"].requires_grad
    assert [f.shape[1] for f in seen["s_feats"]] == [8, 8]
    with torch.no_grad():  # features arrive in the recipe's tap order (stage3, then stage1)
        t_out, t_feats = run_with_taps(objective.teacher, lr, objective.teacher_taps)
    torch.testing.assert_close(seen["teacher"], t_out)
    assert len(seen["t_feats"]) == 2
    for got, tap in zip(seen["t_feats"], ["stage3", "stage1"], strict=True):
        torch.testing.assert_close(got, t_feats[tap])
    loss.backward()
    for p_name, p in [*objective.net.named_parameters(), *objective.losses.named_parameters()]:
        if p.requires_grad and p_name.startswith(("head", "body.", "regressors")):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"toy: no gradient reached {p_name}"
    assert all(p.grad is None for p in objective.teacher.parameters())


def test_distill_student_starts_as_teacher_slice_and_trains(tiny_photos, teacher, tmp_path):
    from edgesr.train.checkpoint import load_model

    t, _ = load_model(teacher)
    recipe = recipe_for(tiny_photos, teacher, [{"name": "output_kd"}, {"name": "fakd", "weight": 10}])
    objective, _ = build_objective(recipe)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(objective.net(x), t(x, width=0.5))
    scratch, _ = build_objective(recipe_for(tiny_photos, teacher, [{"name": "l1"}], student_init="scratch"))
    assert not torch.allclose(scratch.net(x), t(x, width=0.5))
    result = train(recipe, tmp_path / "run")
    assert result.steps == 4 and {r.method for r in result.rows} == {"bicubic", "student w=0.5"}


def test_distill_resume_restores_regressors(tiny_photos, teacher, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        recipe = recipe_for(tiny_photos, teacher, [{"name": "l1"}, {"name": "fitnet", "weight": 0.5}])
        train(recipe, tmp_path / "full")
        train(recipe, tmp_path / "part", stop_at=2)
        train(recipe, tmp_path / "part", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = load_file(resolve_checkpoint(tmp_path / "full")), load_file(resolve_checkpoint(tmp_path / "part"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    objective, _ = build_objective(recipe)
    assert extra_state(objective), "FitNet regressors should be part of the resume state"


def test_official_checkpoint_as_teacher(tiny_photos, tmp_path):
    """A teacher from an official EDSR file (0..255 weights, official keys) distils like any other."""
    from edgesr.models import build_model

    ours = build_model("edsr", scale=2, n_resblocks=3, n_feats=16)
    official = {"head.0.weight": ours.head.weight, "head.0.bias": ours.head.bias * 255}
    for i, block in enumerate(ours.body):
        official |= {
            f"body.{i}.body.0.weight": block.conv1.weight,
            f"body.{i}.body.0.bias": block.conv1.bias * 255,
            f"body.{i}.body.2.weight": block.conv2.weight,
            f"body.{i}.body.2.bias": block.conv2.bias * 255,
        }
    official |= {"body.3.weight": ours.body_end.weight, "body.3.bias": ours.body_end.bias * 255,
                 "tail.0.0.weight": ours.upsample[0].weight, "tail.0.0.bias": ours.upsample[0].bias * 255,
                 "tail.1.weight": ours.tail.weight, "tail.1.bias": ours.tail.bias * 255}  # fmt: skip
    path = tmp_path / "edsr_x2.pt"
    torch.save({k: v.detach().clone() for k, v in official.items()}, path)
    objective, _ = build_objective(recipe_for(tiny_photos, path, [{"name": "output_kd"}]))
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(objective.teacher(x), ours(x), rtol=1e-4, atol=1e-5)
