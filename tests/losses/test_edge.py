"""The edge loss (after EFDN): known answers, what it ignores, gradient to the student, use in a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from edgesr.losses import LOSSES, DistillBatch, EdgeLoss, build_loss, call_loss, edge_loss, output_losses
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
    assert EdgeLoss()(a, b, b).item() == 0.0


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
    with pytest.raises(ValueError, match="target"):
        EdgeLoss(target="lr")
    with pytest.raises(ValueError, match="equal shapes"):
        edge_loss(rand(1, 3, 8, 8), rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="RGB"):
        edge_loss(rand(1, 1, 8, 8), rand(1, 1, 8, 8), luma=True)


# ---- the module: registry, state, targets ----


def test_registered_as_an_output_loss_usable_in_qat():
    assert LOSSES.get("edge") is EdgeLoss
    assert "edge" in output_losses() and "edge" in qat_losses()
    loss = build_loss("edge", weight=0.1, filters=["sobel_x", "sobel_y"])
    assert loss.filters == ("sobel_x", "sobel_y") and loss.kernels.shape == (2, 1, 3, 3)
    assert set(EDGE_FILTERS) == {"sobel_x", "sobel_y", "laplacian"}


def test_filters_are_a_non_persistent_buffer_that_follows_the_module():
    loss = EdgeLoss()
    assert loss.state_dict() == {} and list(loss.parameters()) == []  # checkpoints unchanged
    assert loss.to(torch.float64).kernels.dtype == torch.float64
    a, b = rand(1, 3, 8, 8, seed=1).double(), rand(1, 3, 8, 8, seed=2).double()
    assert loss(a, b, b).dtype == torch.float64


def test_weight_and_target_choose_what_is_compared():
    s, t, hr = rand(2, 3, 10, 10, seed=1), rand(2, 3, 10, 10, seed=2), rand(2, 3, 10, 10, seed=3)
    assert EdgeLoss(weight=0.1)(s, t, hr).item() == pytest.approx(0.1 * edge_loss(s, hr).item(), rel=1e-6)
    assert EdgeLoss(target="teacher")(s, t, hr).item() == pytest.approx(edge_loss(s, t).item(), rel=1e-6)
    # Called the way the trainer calls it: from its `reads` declaration.
    batch = DistillBatch(torch.zeros(2, 3, 5, 5), hr, s, t, scale=2)
    assert call_loss(EdgeLoss(), batch).item() == pytest.approx(edge_loss(s, hr).item(), rel=1e-6)


# ---- gradient flow ----


@pytest.mark.parametrize("target", ["hr", "teacher"])
def test_gradient_reaches_every_trainable_student_parameter(target: str):
    torch.manual_seed(0)
    student = build_model("plain", scale=2, n_convs=3, n_feats=8)
    teacher_sr = rand(2, 3, 16, 16, seed=5).requires_grad_(True)  # must get nothing back
    lr, hr = rand(2, 3, 8, 8, seed=1), rand(2, 3, 16, 16, seed=2)
    loss = EdgeLoss(target=target)(student(lr), teacher_sr, hr)
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
    EdgeLoss()(net(lr), hr, hr).backward()
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
  losses:
    - {{name: l1}}
    - {{name: edge, weight: 0.1}}
  steps: 2
  checkpoint_every: 2
  val_every: 2
  log_every: 1
  optim: {{lr: 1.0e-3}}
"""


def test_edge_loss_trains_a_student_from_a_recipe(tmp_path: Path):
    from edgesr.train.trainer import train  # the trainer sits above the losses

    def recipe(name: str, **fields: object) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(RECIPE.format(name=name, **fields), encoding="utf-8")
        return path

    teacher = tmp_path / "teacher"
    # single mode trains with L1 alone and refuses a `losses` list (it would be ignored)
    teacher_recipe = recipe("teacher", mode="single", width=1.0, init="null")
    teacher_recipe.write_text(teacher_recipe.read_text().replace(
        "  losses:\n    - {name: l1}\n    - {name: edge, weight: 0.1}\n", ""
    ))  # fmt: skip
    train(load_recipe(teacher_recipe), teacher)
    r = load_recipe(recipe("edge", mode="distill", width=0.5, init=teacher))
    assert [(c.name, c.weight) for c in r.train.losses] == [("l1", 1.0), ("edge", 0.1)]
    result = train(r, tmp_path / "student")
    assert result.state == "completed" and result.steps == 2
    logged = [json.loads(line) for line in (tmp_path / "student" / "log.jsonl").read_text().splitlines()]
    edge = [row["loss/edge"] for row in logged if "loss/edge" in row]
    assert len(edge) == 2 and all(v > 0 for v in edge)
