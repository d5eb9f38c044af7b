"""The edge loss (after EFDN): known answers, what it ignores, gradient to the student, use in a recipe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from edgesr.errors import RecipeError
from edgesr.losses import (
    LOSSES,
    DistillBatch,
    EdgeDistillationLoss,
    EdgeLoss,
    build_loss,
    call_loss,
    edge_loss,
    output_losses,
    standalone_losses,
)
from edgesr.losses.edge import EDGE_FILTERS, edge_kernels, gradient_maps
from edgesr.models import build_model
from edgesr.recipe import load_recipe, qat_losses


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def step_edge(n: int = 8, amplitude: float = 1.0) -> Tensor:
    """1 x 1 x n x n: 0 left of column n/2, `amplitude` from it on (an edge across x)."""
    x = torch.zeros(1, 1, n, n)
    x[..., n // 2 :] = amplitude
    return x


# ---- known answers ----


def test_constant_images_have_zero_gradient_so_zero_loss():
    a, b = torch.full((2, 3, 9, 7), 0.25), torch.full((2, 3, 9, 7), 0.75)  # binary-exact: exact zeros
    assert gradient_maps(a, edge_kernels()).abs().max().item() == 0.0  # borders too (replicate padding)
    assert edge_loss(a, b).item() == 0.0
    assert EdgeLoss()(a, b).item() == 0.0 and EdgeDistillationLoss()(a, b).item() == 0.0


def test_step_edge_known_values_per_filter():
    # Sobel-x answers 1+2+1 = 4 per unit step on the two columns beside the step, 0 elsewhere;
    # the Laplacian +1 and -1 on those columns; Sobel-y 0. Against a flat image (gradient 0),
    # each term is the mean |response|: 4 * 2/8, 0 and 1 * 2/8.
    x, flat = step_edge(8), torch.full((1, 1, 8, 8), 0.5)
    maps = gradient_maps(x, edge_kernels())[0]  # sobel_x, sobel_y, laplacian
    assert maps[0, 3].tolist() == [0, 0, 0, 4, 4, 0, 0, 0]
    assert maps[1].abs().max().item() == 0.0
    assert maps[2, 5].tolist() == [0, 0, 0, 1, -1, 0, 0, 0]
    assert edge_loss(x, flat, ["sobel_x"]).item() == pytest.approx(1.0)
    assert edge_loss(x, flat, ["sobel_y"]).item() == 0.0
    assert edge_loss(x, flat, ["laplacian"]).item() == pytest.approx(0.25)
    assert edge_loss(x, flat).item() == pytest.approx(1.25)  # the default sums the three terms
    # Linear in the step's height; a step across y is the transposed answer.
    assert edge_loss(step_edge(8, 0.3), flat, "sobel_x").item() == pytest.approx(0.3)
    assert edge_loss(x.transpose(-1, -2), flat, ["sobel_y"]).item() == pytest.approx(1.0)


def test_symmetric_and_zero_exactly_when_gradients_agree():
    a, b = rand(2, 3, 12, 12, seed=1), rand(2, 3, 12, 12, seed=2)
    assert edge_loss(a, b).item() == pytest.approx(edge_loss(b, a).item(), rel=1e-6)
    assert edge_loss(a, b).item() > 0
    # Same gradients (a per-channel constant offset): zero; blind to what a pixel loss sees.
    offset = torch.tensor([0.3, -0.2, 0.5]).view(1, 3, 1, 1)
    assert edge_loss(a, a + offset).item() == pytest.approx(0.0, abs=1e-6)
    # One changed pixel changes the gradients around it: positive.
    bumped = a.clone()
    bumped[1, 2, 6, 6] += 0.1
    assert edge_loss(a, bumped).item() > 0


def test_luma_sees_luminance_edges_only():
    # A red | green edge whose two sides have equal Rec.601 luma: an edge in RGB, none in luma.
    n = 8
    x = torch.zeros(1, 3, n, n)
    x[:, 0, :, : n // 2] = 0.587
    x[:, 1, :, n // 2 :] = 0.299
    flat = torch.full_like(x, 0.4)
    assert edge_loss(x, flat).item() > 0
    assert edge_loss(x, flat, luma=True).item() == pytest.approx(0.0, abs=1e-6)
    grey = step_edge(n).expand(1, 3, n, n)  # equal R, G, B: luma is that value, as is the RGB mean
    assert edge_loss(grey, flat, luma=True).item() == pytest.approx(edge_loss(grey, flat).item())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sobel_x"):
        edge_kernels(["sobel_z"])
    with pytest.raises(ValueError, match="duplicates"):
        edge_kernels(["laplacian", "laplacian"])
    with pytest.raises(ValueError, match="at least one"):
        edge_kernels([])
    with pytest.raises(ValueError, match="equal shapes"):
        edge_loss(rand(1, 3, 8, 8), rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="RGB"):
        edge_loss(rand(1, 1, 8, 8), rand(1, 1, 8, 8), luma=True)


# ---- the module: registry, state, targets ----


def test_registered_edge_usable_everywhere_edge_kd_where_a_teacher_runs():
    assert LOSSES.get("edge") is EdgeLoss and LOSSES.get("edge_kd") is EdgeDistillationLoss
    assert {"edge", "edge_kd"} <= set(output_losses()) and {"edge", "edge_kd"} <= set(qat_losses())
    # `edge` reads the student's output and HR only: a single or csd run may add it to its L1
    assert "edge" in standalone_losses() and "edge_kd" not in standalone_losses()
    loss = build_loss("edge", weight=0.1, filters=["sobel_x", "sobel_y"])
    assert loss.filters == ("sobel_x", "sobel_y") and loss.kernels.shape == (2, 1, 3, 3)
    assert set(EDGE_FILTERS) == {"sobel_x", "sobel_y", "laplacian"}


def test_filters_are_a_non_persistent_buffer_that_follows_the_module():
    loss = EdgeLoss()
    assert loss.state_dict() == {} and list(loss.parameters()) == []  # checkpoints unchanged
    assert loss.to(torch.float64).kernels.dtype == torch.float64
    a, b = rand(1, 3, 8, 8, seed=1).double(), rand(1, 3, 8, 8, seed=2).double()
    assert loss(a, b).dtype == torch.float64


def test_weight_and_the_class_choose_what_is_compared():
    s, t, hr = rand(2, 3, 10, 10, seed=1), rand(2, 3, 10, 10, seed=2), rand(2, 3, 10, 10, seed=3)
    assert EdgeLoss(weight=0.1)(s, hr).item() == pytest.approx(0.1 * edge_loss(s, hr).item(), rel=1e-6)
    kd = EdgeDistillationLoss(weight=0.5)(s, t)
    assert kd.item() == pytest.approx(0.5 * edge_loss(s, t).item(), rel=1e-6)
    # Called the way the trainers call them: from their `reads` declarations.
    batch = DistillBatch(torch.zeros(2, 3, 5, 5), hr, s, t, scale=2)
    assert call_loss(EdgeLoss(), batch).item() == pytest.approx(edge_loss(s, hr).item(), rel=1e-6)
    assert call_loss(EdgeDistillationLoss(), batch).item() == pytest.approx(edge_loss(s, t).item(), rel=1e-6)
    # a step without a teacher (single / csd) serves `edge`, and names the stage `edge_kd` needs
    alone = DistillBatch(torch.zeros(2, 3, 5, 5), hr, s, None)
    assert call_loss(EdgeLoss(), alone).item() == pytest.approx(edge_loss(s, hr).item(), rel=1e-6)
    with pytest.raises(ValueError, match="distill or qat"):
        call_loss(EdgeDistillationLoss(), alone)


# ---- gradient flow ----


@pytest.mark.parametrize("name", ["edge", "edge_kd"])
def test_gradient_reaches_every_trainable_student_parameter(name: str):
    torch.manual_seed(0)
    student = build_model("plain", scale=2, n_convs=3, n_feats=8)
    teacher_sr = rand(2, 3, 16, 16, seed=5).requires_grad_(True)  # must get nothing back
    lr, hr = rand(2, 3, 8, 8, seed=1), rand(2, 3, 16, 16, seed=2)
    batch = DistillBatch(lr, hr, student(lr), teacher_sr)
    loss = call_loss(build_loss(name), batch)
    loss.backward()
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    assert {n for n, _ in trainable} >= {"last.weight", "last.bias"}
    for name, p in trainable:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    assert teacher_sr.grad is None  # the teacher's output is a fixed target


def test_a_bias_that_only_shifts_the_whole_output_gets_no_edge_gradient():
    # EDSR's last conv runs after the upsampler: its bias adds one constant per RGB channel, which
    # the zero-sum filters cannot see (float noise only). A pixel loss next to it trains that bias.
    # (The plain net's last conv runs before PixelShuffle: each bias entry shifts one sub-pixel
    # phase, a pattern with edges, so there every parameter gets an edge gradient, as tested above.)
    torch.manual_seed(0)
    net = build_model("edsr", scale=2, n_resblocks=1, n_feats=16)
    lr, hr = rand(2, 3, 8, 8, seed=1), rand(2, 3, 16, 16, seed=2)
    EdgeLoss()(net(lr), hr).backward()
    assert net.tail.bias.grad.abs().max().item() < 1e-6
    assert net.head.weight.grad.abs().sum().item() > 1e-3


# ---- in a recipe ----

RECIPE = """\
name: {name}
scale: 2
model:
  name: plain
  args: {{n_convs: 3, n_feats: 8}}
  width_multiple: 4
data: {{train: "builtin:train", val: ["builtin:val"], patch_size: 8, batch_size: 2, workers: 0}}
train:
  mode: {mode}
  widths: [{width}]
  init: {init}
  losses: {losses}
  steps: 2
  checkpoint_every: 2
  val_every: 2
  log_every: 1
  optim: {{lr: 1.0e-3}}
"""


def _logged(run: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [row[f"loss/{key}"] for row in rows if f"loss/{key}" in row]


def test_edge_losses_train_in_every_mode_from_a_recipe(tmp_path: Path):
    from edgesr.train.trainer import train  # the trainer sits above the losses

    def recipe(name: str, **fields: object) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(RECIPE.format(name=name, **fields), encoding="utf-8")
        return path

    # single: the edge term is added to the mode's own L1
    teacher = tmp_path / "teacher"
    edge = "[{name: edge, weight: 0.1}]"
    r = load_recipe(recipe("teacher", mode="single", width=1.0, init="null", losses=edge))
    assert train(r, teacher).state == "completed"
    assert len(_logged(teacher, "edge")) == 2 and all(v > 0 for v in _logged(teacher, "l1"))
    # csd: on every width, the teacher's weighted like its L1
    csd = tmp_path / "csd"
    r = load_recipe(recipe("csd", mode="csd", width=0.5, init="null", losses=edge))
    assert train(r, csd).state == "completed"
    for key in ("edge_student_w0.5", "edge_teacher", "l1_student_w0.5", "l1_teacher"):
        assert len(_logged(csd, key)) == 2 and all(v > 0 for v in _logged(csd, key)), key
    # distill: to HR and to the teacher's output, beside a pixel loss
    losses = "[{name: l1}, {name: edge, weight: 0.1}, {name: edge_kd, weight: 0.1}]"
    r = load_recipe(recipe("edge", mode="distill", width=0.5, init=teacher, losses=losses))
    assert [(c.name, c.weight) for c in r.train.losses] == [("l1", 1.0), ("edge", 0.1), ("edge_kd", 0.1)]
    assert train(r, tmp_path / "student").state == "completed"
    for key in ("edge", "edge_kd"):
        values = _logged(tmp_path / "student", key)
        assert len(values) == 2 and all(v > 0 for v in values), key


@pytest.mark.parametrize(
    ("mode", "losses", "message"),
    [
        ("single", "[{name: edge_kd}]", "needs a teacher or tapped features: use mode: distill"),
        ("csd", "[{name: output_kd}]", "needs a teacher or tapped features: use mode: distill"),
        ("csd", "[{name: fakd}]", "needs a teacher or tapped features"),
        ("single", "[{name: edge}, {name: l1}]", "already trains with L1 to HR"),
    ],
)
def test_single_and_csd_refuse_losses_that_need_a_teacher_or_repeat_l1(
    tmp_path: Path, mode: str, losses: str, message: str
):
    path = tmp_path / "r.yaml"
    width = 0.5 if mode == "csd" else 1.0
    path.write_text(RECIPE.format(name="r", mode=mode, width=width, init="null", losses=losses))
    with pytest.raises(RecipeError, match="train.losses") as err:
        load_recipe(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_csd_adds_the_edge_term_to_every_width_the_teacher_weighted_like_its_l1(tmp_path: Path):
    from edgesr.train.modes import build_objective  # the trainer sits above the losses

    path = tmp_path / "csd.yaml"
    path.write_text(
        RECIPE.format(name="csd", mode="csd", width=0.5, init="null", losses="[{name: edge, weight: 0.3}]")
    )
    recipe = load_recipe(path)
    csd = replace(recipe.train.csd, lambda_cl=0.0, lambda_teacher=2.0)
    recipe = replace(recipe, train=replace(recipe.train, csd=csd))
    objective, _ = build_objective(recipe)
    lr, hr = rand(2, 3, 8, 8, seed=1), rand(2, 3, 16, 16, seed=2)
    total, terms = objective(lr, hr, step=1)
    net = objective.net
    s, t = net(lr, width=0.5), net(lr, width=1.0)
    expected = (
        (s - hr).abs().mean()
        + 2.0 * (t - hr).abs().mean()
        + 0.3 * edge_loss(s, hr)
        + 2.0 * 0.3 * edge_loss(t, hr)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["edge_teacher"] == pytest.approx(0.3 * edge_loss(t, hr).item(), rel=1e-5)
    assert terms["total"] == pytest.approx(expected.item(), rel=1e-5)


def test_a_recipe_with_the_old_target_argument_gets_one_line_naming_edge_kd(tmp_path: Path):
    # `edge` took `target: teacher|hr` before `edge_kd` existed; such a recipe fails at load, not as a
    # traceback when the trainer builds the loss
    path = tmp_path / "old.yaml"
    losses = "[{name: l1}, {name: edge, args: {target: teacher}}]"
    path.write_text(RECIPE.format(name="old", mode="distill", width=0.5, init=tmp_path, losses=losses))
    with pytest.raises(RecipeError, match=r"train\.losses\[1\]\.args\.target: .*name: edge_kd"):
        load_recipe(path)
    path.write_text(path.read_text().replace("target: teacher", "filterz: [sobel_x]"))
    with pytest.raises(RecipeError, match=r"unknown key 'train\.losses\[1\]\.args\.filterz'.*filters"):
        load_recipe(path)
