"""LSFD and FACD (edgesr's interpretations): the properties docs/distillation.md states, gradient flow."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import Tensor, nn

from edgesr.losses import LOSSES, FACDLoss, LSFDLoss, build_loss, facd_loss, lsfd_loss
from edgesr.losses.facd import info_nce, patch_gate, pool_to_grid
from edgesr.losses.lsfd import local_contrast, selection_weights


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_features(c_out: int, seed: int) -> nn.Module:
    """B x 3 x H x W -> B x c_out x H x W; ends in a nonlinearity so every parameter can be reached."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, c_out, 3, padding=1), nn.LeakyReLU(0.1))


def assert_all_grads_nonzero(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


# ---- LSFD ----


def test_lsfd_zero_when_regressed_student_equals_teacher():
    t = [rand(2, 8, 12, 12, seed=1), rand(2, 8, 6, 6, seed=2)]
    assert lsfd_loss([x.clone() for x in t], t).item() == 0.0


def test_lsfd_invariant_to_per_channel_constant_offsets():
    s, t = rand(2, 8, 10, 10, seed=1), rand(2, 8, 10, 10, seed=2)
    base = lsfd_loss([s], [t])
    # Different offsets on each side: only local contrast is compared, borders included.
    s_off = s + 5 * rand(1, 8, 1, 1, seed=3)
    t_off = t - 3 * rand(1, 8, 1, 1, seed=4)
    torch.testing.assert_close(lsfd_loss([s_off], [t_off]), base, rtol=1e-5, atol=1e-6)
    assert lsfd_loss([s], [t + 1.0]).item() == pytest.approx(base.item(), rel=1e-5)
    # A constant map has no local contrast anywhere, borders included.
    assert local_contrast(torch.full((1, 2, 5, 7), 3.0)).abs().max() < 1e-6


def test_lsfd_attention_weights_regions_that_differ_more():
    t = rand(1, 4, 16, 16, seed=1)
    s = t.clone()
    s[..., :6, :6] += rand(1, 4, 6, 6, seed=2)  # only the top-left 6x6 differs
    error = local_contrast(s - t).abs().mean(dim=1)  # 1 x 16 x 16
    w = selection_weights(error, tau=1.0)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-5)
    inside, outside = w[0, 1:5, 1:5], w[0, 8:, 8:]  # the 3x3 mean reaches 1 pixel past the region
    assert inside.min() > outside.max()
    assert torch.allclose(outside, outside.flatten()[0].expand_as(outside))  # equal error, equal weight
    # The weights grow with the error, so the selective loss exceeds the plain local L1 mean.
    assert lsfd_loss([s], [t]) > error.mean()


def test_lsfd_large_tau_is_plain_local_l1_and_small_tau_selects_the_worst_pixel():
    s, t = rand(2, 6, 9, 9, seed=1), rand(2, 6, 9, 9, seed=2)
    error = local_contrast(s - t).abs().mean(dim=1)
    torch.testing.assert_close(lsfd_loss([s], [t], tau=1e6), error.mean(), rtol=1e-4, atol=0)
    w = selection_weights(error, tau=1e-3)
    assert torch.equal(w.flatten(1).argmax(1), error.flatten(1).argmax(1))
    assert w.flatten(1).max(1).values.min() > 0.99 * 81


def test_lsfd_multiple_taps_are_averaged():
    s = [rand(1, 4, 8, 8, seed=1), rand(1, 4, 4, 4, seed=2)]
    t = [rand(1, 4, 8, 8, seed=3), rand(1, 4, 4, 4, seed=4)]
    per_tap = [lsfd_loss([a], [b]) for a, b in zip(s, t, strict=True)]
    torch.testing.assert_close(lsfd_loss(s, t), (per_tap[0] + per_tap[1]) / 2)


def test_lsfd_module_grad_reaches_student_and_regressor_not_teacher():
    x = torch.rand(2, 3, 12, 12)
    student, teacher = tiny_features(4, 0), tiny_features(16, 1)
    loss_fn = LSFDLoss(student_channels=4, teacher_channels=16, weight=2.0)
    loss = loss_fn([student(x)], [teacher(x)])
    loss.backward()
    assert loss.item() > 0
    assert_all_grads_nonzero(student)
    assert_all_grads_nonzero(loss_fn)  # the regressor weight (LSFD regressors carry no bias)
    assert all(p.grad is None for p in teacher.parameters())
    assert loss_fn.regressors[0].bias is None


def test_lsfd_validates_configuration_and_inputs():
    with pytest.raises(ValueError, match="odd"):
        LSFDLoss(4, 8, kernel=4)
    with pytest.raises(ValueError, match="tau"):
        LSFDLoss(4, 8, tau=0.0)
    with pytest.raises(ValueError, match="pair up"):
        LSFDLoss((4, 4), (8, 8, 8))
    loss_fn = LSFDLoss((4, 4), 8)  # an int broadcasts against a sequence
    assert len(loss_fn.regressors) == 2
    with pytest.raises(ValueError, match="2 taps"):
        loss_fn([rand(1, 4, 8, 8)], [rand(1, 8, 8, 8)])
    with pytest.raises(ValueError, match="equal shapes"):
        lsfd_loss([rand(1, 8, 8, 8)], [rand(1, 8, 6, 6)])
    with pytest.raises(TypeError, match="dicts"):
        lsfd_loss({"body": rand(1, 8, 8, 8)}, {"body": rand(1, 8, 8, 8)})  # type: ignore[arg-type]


# ---- FACD ----


def distinct_cells(n: int, side: int) -> Tensor:
    """n x (side*side) x side x side maps whose cells are one-hot, each on its own channel."""
    p = side * side
    return torch.eye(p).view(p, side, side).unsqueeze(0).repeat(n, 1, 1, 1)


def test_facd_aligned_beats_shuffled_and_random():
    t = rand(2, 16, 8, 8, seed=1)
    aligned = t + 0.1 * rand(2, 16, 8, 8, seed=2)
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    shuffled = aligned.flatten(2)[..., perm].view_as(aligned)  # right vectors, wrong places
    random = rand(2, 16, 8, 8, seed=4)
    l_aligned, l_shuffled, l_random = (facd_loss([s], [t], grid=None) for s in (aligned, shuffled, random))
    assert l_aligned < l_shuffled
    assert l_aligned < l_random


def test_facd_near_its_minimum_when_student_equals_teacher_with_distinct_cells():
    t = distinct_cells(2, 4)  # 16 cells, pairwise orthogonal
    tau = 0.1
    loss = facd_loss([t.clone()], [t], grid=None, tau=tau)
    expected = math.log(1 + 15 * math.exp(-1 / tau))  # positive cos 1, every negative cos 0
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert loss.item() < 1e-3
    assert loss < facd_loss([rand(2, 16, 4, 4, seed=5)], [t], grid=None, tau=tau)


def test_facd_uninformative_student_scores_at_least_log_k():
    # A spatially constant student says nothing about where it is: with K keys per anchor its mean
    # InfoNCE is logsumexp - mean logit >= log K (Jensen), so the bound log K - L on the mutual
    # information is <= 0. An informative (aligned) student goes well below log K.
    t = rand(2, 8, 4, 4, seed=1)
    s = rand(2, 8, 1, 1, seed=2).expand(-1, -1, 4, 4)
    assert facd_loss([s], [t], grid=None).item() >= math.log(16)
    assert facd_loss([s], [t], grid=None, batch_negatives=True).item() >= math.log(32)
    assert facd_loss([t.clone()], [t], grid=None).item() < 0.5 * math.log(16)
    # Equal keys: every logit the same, exactly log K.
    flat = rand(2, 8, 1, 1, seed=3).expand(-1, -1, 4, 4)
    assert facd_loss([s], [flat], grid=None).item() == pytest.approx(math.log(16), rel=1e-5)


def test_facd_gate_stops_gradient_where_student_beats_teacher():
    hr = torch.rand(2, 3, 16, 16)
    noise = rand(2, 3, 16, 16, seed=9)
    student_sr = hr + torch.stack([0.3 * noise[0], 0.01 * noise[1]])  # worse on 0, better on 1
    teacher_sr = hr + 0.1 * noise
    assert patch_gate(student_sr, teacher_sr, hr).tolist() == [1.0, 0.0]
    t = rand(2, 8, 16, 16, seed=1)
    for batch_negatives in (False, True):
        s = rand(2, 8, 16, 16, seed=2).requires_grad_()
        loss = facd_loss([s], [t], student_sr, teacher_sr, hr, grid=4, batch_negatives=batch_negatives)
        (grad,) = torch.autograd.grad(loss, s)
        assert grad[0].abs().sum() > 0
        assert torch.equal(grad[1], torch.zeros_like(grad[1]))
    # Mean over the whole batch: the open patch counts 1/N.
    s = rand(2, 8, 16, 16, seed=2)
    gated = facd_loss([s], [t], student_sr, teacher_sr, hr, grid=4)
    torch.testing.assert_close(gated, facd_loss([s[:1]], [t[:1]], grid=4) / 2)


def test_facd_without_outputs_or_adaptive_off_distils_every_patch():
    hr = torch.rand(2, 3, 8, 8)
    s, t = rand(2, 8, 8, 8, seed=1), rand(2, 8, 8, 8, seed=2)
    plain = facd_loss([s], [t])
    off = facd_loss([s], [t], hr.clone(), hr + 0.1, hr, adaptive=False)  # student perfect, gate off
    torch.testing.assert_close(off, plain)
    assert facd_loss([s], [t], hr.clone(), hr + 0.1, hr).item() == 0.0  # gate closes every patch
    with pytest.raises(ValueError, match="all of"):
        facd_loss([s], [t], student_sr=hr)


def test_facd_module_pools_before_regressing_exactly():
    s, t = rand(2, 4, 13, 11, seed=1), rand(2, 12, 13, 11, seed=2)
    loss_fn = FACDLoss(4, 12, grid=4)
    torch.testing.assert_close(loss_fn([s], [t]), facd_loss([loss_fn.regressors[0](s)], [t], grid=4))


def test_facd_grid_bounds_memory_and_never_upsamples():
    assert pool_to_grid(rand(1, 2, 3, 20), 8).shape == (1, 2, 3, 8)
    s = rand(1, 8, 256, 256, seed=1).requires_grad_()
    t = rand(1, 16, 256, 256, seed=2)
    loss_fn = FACDLoss(8, 16)  # grid 8: 64 cells, a 64 x 64 logit matrix instead of 65536 x 65536
    start = time.perf_counter()
    loss_fn([s], [t]).backward()
    assert time.perf_counter() - start < 5.0
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=">= 2 keys"):
        facd_loss([rand(1, 4, 1, 1)], [rand(1, 4, 1, 1)])


def test_facd_module_grad_reaches_student_and_regressor_not_teacher():
    x = torch.rand(2, 3, 16, 16)
    student, teacher = tiny_features(4, 0), tiny_features(16, 1)
    loss_fn = FACDLoss(student_channels=4, teacher_channels=16, grid=4, adaptive=False)
    loss = loss_fn([student(x)], [teacher(x)])
    loss.backward()
    assert_all_grads_nonzero(student)
    assert_all_grads_nonzero(loss_fn)  # regressor weight and bias
    assert all(p.grad is None for p in teacher.parameters())


def test_info_nce_matches_a_direct_per_anchor_computation():
    a, k = rand(1, 5, 2, 3, seed=1), rand(1, 5, 2, 3, seed=2)
    an = nn.functional.normalize(a.flatten(2)[0].T, dim=1)  # 6 x 5
    kn = nn.functional.normalize(k.flatten(2)[0].T, dim=1)
    sims = an @ kn.T / 0.5
    expected = -(sims.diag() - sims.logsumexp(dim=1)).mean()
    torch.testing.assert_close(info_nce(a, k, tau=0.5)[0], expected)


# ---- registry ----


@pytest.mark.parametrize(("name", "cls"), [("lsfd", LSFDLoss), ("facd", FACDLoss)])
def test_registered_and_buildable(name: str, cls: type[nn.Module]):
    assert name in LOSSES
    loss_fn = build_loss(name, student_channels=[4, 4], teacher_channels=[8, 8], weight=0.5)
    assert isinstance(loss_fn, cls)
    s = [rand(1, 4, 8, 8, seed=1), rand(1, 4, 8, 8, seed=2)]
    t = [rand(1, 8, 8, 8, seed=3), rand(1, 8, 8, 8, seed=4)]
    assert torch.isfinite(loss_fn(s, t))
