"""Meta-knowledge distillation (KRNets, edgesr's interpretation): what trains what, kernel properties,
the meta objective, and a recipe run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgesr.losses import LOSSES, DistillBatch, KRNet, MetaKDLoss, call_loss
from edgesr.losses.meta_kd import gradient_agreement, texture
from edgesr.models import build_model, materialize
from edgesr.models.taps import default_taps, run_with_taps

TAPS = ["stage1", "stage2", "stage3"]


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    teacher = build_model("edsr", scale=2, n_resblocks=3, n_feats=16).eval().requires_grad_(False)
    student = materialize(build_model("edsr", scale=2, n_resblocks=3, n_feats=16), 0.5)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        t_sr, t_feats = run_with_taps(teacher, lr, {n: default_taps(teacher)[n] for n in TAPS})
    s_sr, s_feats = run_with_taps(student, lr, {n: default_taps(student)[n] for n in TAPS})
    batch = DistillBatch(lr, hr, s_sr, t_sr, s_feats, t_feats)
    channels = [s_feats[n].shape[1] for n in TAPS], [t_feats[n].shape[1] for n in TAPS]
    return teacher, student, batch, channels


def _trained(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_registered_and_gradient_reaches_the_student_and_every_krnet_parameter_never_the_teacher():
    assert LOSSES.get("meta_kd") is MetaKDLoss
    teacher, student, batch, (cs, ct) = _setup()
    loss = MetaKDLoss(cs, ct)
    call_loss(loss, batch, TAPS).backward()
    assert _trained(loss) == {n for n, _ in loss.named_parameters()}  # every KRNet weight
    before_last_tap = {n for n, _ in student.named_parameters() if n.startswith(("head", "body."))}
    assert before_last_tap and before_last_tap <= _trained(student)
    assert all(p.grad is None for p in teacher.parameters())


def test_the_krnet_learns_only_from_the_meta_objective_and_the_student_only_from_l_kd():
    # meta_weight 0: L_kd alone, with the KRNet held fixed: the KRNet gets nothing
    _, student, batch, (cs, ct) = _setup()
    only_kd = MetaKDLoss(cs, ct, meta_weight=0.0)
    call_loss(only_kd, batch, TAPS).backward()
    assert _trained(only_kd) == set() and _trained(student)
    # weight 0: the meta objective alone: the KRNet learns, the student gets nothing
    _, student, batch, (cs, ct) = _setup()
    only_meta = MetaKDLoss(cs, ct, weight=0.0)
    call_loss(only_meta, batch, TAPS).backward()
    assert _trained(only_meta) == {n for n, _ in only_meta.named_parameters()} and _trained(student) == set()


def test_dynamic_kernels_are_zero_mean_unit_norm_and_see_no_texture_in_a_flat_map():
    net = KRNet(8, 16, kernels=5)
    p = {n: q for n, q in net.named_parameters()}
    k = net.texture_kernels(torch.rand(3, 8, 6, 6), torch.rand(3, 8, 6, 6), p)
    assert k.shape == (3, 5, 3, 3)
    assert k.sum((2, 3)).abs().max() < 1e-5 and torch.allclose(k.flatten(2).norm(dim=2), torch.ones(3, 5))
    assert texture(torch.full((3, 8, 7, 5), 0.3), k).abs().max() < 1e-5  # borders too (replicate pad)
    # each sample is filtered by its own kernels
    x = torch.rand(3, 8, 7, 5)
    one = texture(x[1:2], k[1:2])
    assert torch.allclose(texture(x, k)[1:2], one, atol=1e-6)


def test_l_kd_is_zero_when_the_projected_features_agree():
    net = KRNet(8, 8)
    with torch.no_grad():
        net.teacher_proj.weight.copy_(net.student_proj.weight)
        net.teacher_proj.bias.copy_(net.student_proj.bias)
    f = torch.rand(2, 8, 6, 6)
    assert net.distance(f, f, detach_params=True).item() == pytest.approx(0.0, abs=1e-7)
    assert net.distance(f, torch.rand(2, 8, 6, 6), detach_params=True).item() > 0


def test_gradient_agreement_known_values():
    g = torch.randn(4, 3, 5, 5)
    assert gradient_agreement(g, 2 * g).item() == pytest.approx(0.0, abs=1e-6)
    assert gradient_agreement(g, -g).item() == pytest.approx(2.0, abs=1e-6)
    assert gradient_agreement(g, torch.zeros_like(g)).item() == pytest.approx(1.0)


def test_the_meta_objective_can_be_lowered_by_training_the_krnet():
    _, _, batch, (cs, ct) = _setup(1)
    loss = MetaKDLoss(cs, ct, weight=0.0)
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    values = []
    for _ in range(30):
        v = call_loss(loss, batch, TAPS)
        opt.zero_grad()
        v.backward(retain_graph=True)
        opt.step()
        values.append(v.item())
    assert values[-1] < values[0] - 0.05, values


def test_without_grad_only_l_kd_is_computed():
    _, _, batch, (cs, ct) = _setup()
    loss = MetaKDLoss(cs, ct)
    with torch.no_grad():
        v = call_loss(loss, batch, TAPS)
    ref = MetaKDLoss(cs, ct, meta_weight=0.0)
    ref.load_state_dict(loss.state_dict())
    assert v.item() == pytest.approx(call_loss(ref, batch, TAPS).item(), rel=1e-6)
    with pytest.raises(ValueError, match="one teacher channel count per student tap"):
        MetaKDLoss([8, 8], [16])


RECIPE = """\
name: {name}
scale: 2
model: {{name: edsr, args: {{n_resblocks: 3, n_feats: 16}}}}
data: {{train: "builtin:train", val: ["builtin:val"], patch_size: 8, batch_size: 2, workers: 0}}
train:
  mode: {mode}
  widths: [{width}]
  init: {init}
  losses: {losses}
  steps: {steps}
  checkpoint_every: 2
  val_every: 100
  log_every: 1
"""


def test_meta_kd_trains_from_a_recipe_and_its_krnets_are_checkpointed(tmp_path: Path):
    from edgesr.recipe import load_recipe
    from edgesr.train.trainer import train  # the trainer sits above the losses

    def recipe(name: str, steps: int = 2, **fields: object) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(RECIPE.format(name=name, steps=steps, **fields))
        return path

    teacher = tmp_path / "teacher"
    train(load_recipe(recipe("t", mode="single", width=1.0, init="null", losses="[]")), teacher)
    losses = "[{name: l1}, {name: meta_kd, weight: 1.0}]"
    r = load_recipe(recipe("s", mode="distill", width=0.5, init=teacher, losses=losses))
    assert train(r, tmp_path / "s").state == "completed"
    rows = [json.loads(line) for line in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    assert [row["loss/meta_kd"] > 0 for row in rows if "loss/meta_kd" in row] == [True, True]
    # the KRNets are trainable state outside the student: checkpointed for an exact resume
    from edgesr.train.modes import build_objective
    from edgesr.train.objectives import extra_state

    keys = set(extra_state(build_objective(r)[0]))
    assert keys and all(".krnets." in k for k in keys) and any("generator" in k for k in keys)
