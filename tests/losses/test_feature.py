"""Feature distillation (FitNet, FAKD): every term trains the student, zero at a perfect student,
FAKD equals a hand-written reference and stays within its memory bound."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import edgesr.losses.feature as feature
from edgesr.losses import (
    LOSSES,
    FAKDLoss,
    FitNetLoss,
    build_loss,
    fakd_loss,
    fitnet_loss,
    spatial_affinity,
)
from edgesr.models import build_model, materialize
from edgesr.models.taps import default_taps, pair_taps, run_with_taps

STAGES = ["stage1", "stage2", "stage3"]


def rand(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def teacher_student() -> tuple[nn.Module, nn.Module, list[tuple[str, str, str]]]:
    """EDSR teacher (6 blocks x 32) and a materialized width-0.5 student (3 blocks x 16)."""
    torch.manual_seed(0)
    teacher = build_model("edsr", scale=2, n_resblocks=6, n_feats=32)
    torch.manual_seed(1)
    student = materialize(build_model("edsr", scale=2, n_resblocks=3, n_feats=32), 0.5)
    return teacher, student, pair_taps(default_taps(teacher), default_taps(student), STAGES)


def tapped_features() -> tuple[nn.Module, nn.Module, list[Tensor], list[Tensor]]:
    teacher, student, pairs = teacher_student()
    lr = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    _, t = run_with_taps(teacher, lr, {n: p for n, p, _ in pairs})
    _, s = run_with_taps(student, lr, {n: p for n, _, p in pairs})
    return teacher, student, [s[n] for n in STAGES], [t[n] for n in STAGES]


def assert_upstream_grads(student: nn.Module) -> None:
    """Head and every body block feed the taps; body_end, upsampler and tail do not."""
    upstream = [student.head, student.body]
    for module in upstream:
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name
    for module in (student.body_end, student.upsample, student.tail):
        assert all(p.grad is None for p in module.parameters())


# --------------------------------------------------------------------------------------------
# gradient flow: the torch.tensor([...]) pitfall must never come back
# --------------------------------------------------------------------------------------------


def test_fitnet_trains_student_and_regressors_not_teacher() -> None:
    teacher, student, s, t = tapped_features()
    loss_fn = FitNetLoss([16, 16, 16], [32, 32, 32], p=2, weight=0.5)
    loss = loss_fn(s, t)
    assert loss.requires_grad and loss.item() > 0
    loss.backward()
    assert_upstream_grads(student)
    for p in loss_fn.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_fakd_trains_student_not_teacher() -> None:
    teacher, student, s, t = tapped_features()
    loss = FAKDLoss(max_positions=64, weight=10.0)(s, t, torch.Generator().manual_seed(0))
    assert loss.requires_grad and loss.item() > 0
    loss.backward()
    assert_upstream_grads(student)
    assert all(p.grad is None for p in teacher.parameters())


def test_shared_weights_sliced_student_gets_gradient_only_through_its_own_path() -> None:
    """JointSR: teacher and student are one model; the teacher features are detached inside."""
    torch.manual_seed(0)
    model = build_model("edsr", scale=2, n_resblocks=3, n_feats=32)
    taps = {n: default_taps(model)[n] for n in STAGES}
    lr = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    _, t = run_with_taps(model, lr, taps)
    _, s = run_with_taps(model, lr, taps, width=0.5)
    fakd_loss([s[n] for n in STAGES], [t[n] for n in STAGES]).backward()
    grad = model.head.weight.grad
    assert grad[:16].abs().sum() > 0
    assert grad[16:].abs().sum() == 0  # teacher-only channels receive nothing


# --------------------------------------------------------------------------------------------
# FitNet
# --------------------------------------------------------------------------------------------


def test_fitnet_identity_regressor_and_equal_features_is_zero() -> None:
    f = [rand(2, 8, 5, 5, seed=i) for i in range(3)]
    loss_fn = FitNetLoss([8, 8, 8], [8, 8, 8], identity_when_equal=True)
    assert all(isinstance(r, nn.Identity) for r in loss_fn.regressors)
    assert loss_fn(f, [x.clone() for x in f]).item() == 0.0
    assert fitnet_loss(f, f, None).item() == 0.0
    # FitNet convention: a regressor even for equal widths unless asked otherwise
    assert all(isinstance(r, nn.Conv2d) for r in FitNetLoss([8], [8]).regressors)


@pytest.mark.parametrize("p", [1, 2])
def test_fitnet_matches_formula(p: int) -> None:
    s = [rand(2, 4, 3, 3, seed=1), rand(2, 6, 3, 3, seed=2)]
    t = [rand(2, 8, 3, 3, seed=3), rand(2, 8, 3, 3, seed=4)]
    loss_fn = FitNetLoss([4, 6], [8, 8], p=p, weight=2.0)
    expected = (
        sum((r(a) - b).abs().pow(p).mean() for r, a, b in zip(loss_fn.regressors, s, t, strict=True)) / 2
    )
    torch.testing.assert_close(loss_fn(s, t), 2.0 * expected)


def test_fitnet_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="p must be"):
        FitNetLoss([8], [8], p=3)
    with pytest.raises(ValueError, match="one teacher channel count"):
        FitNetLoss([8, 8], [8])
    with pytest.raises(ValueError, match="student maps to"):
        fitnet_loss([rand(1, 4, 3, 3, seed=0)], [rand(1, 8, 3, 3, seed=1)], None)
    with pytest.raises(TypeError, match="not dicts"):
        fitnet_loss({"a": rand(1, 4, 3, 3, seed=0)}, {"a": rand(1, 4, 3, 3, seed=0)}, None)


# --------------------------------------------------------------------------------------------
# FAKD
# --------------------------------------------------------------------------------------------


def reference_fakd(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """FAKD written with loops, straight from the paper's definition."""
    total = torch.zeros(())
    for s, t in zip(student, teacher, strict=True):
        n, _, h, w = s.shape
        diff = torch.zeros(())
        for b in range(n):
            ps = [s[b, :, i, j] / s[b, :, i, j].norm() for i in range(h) for j in range(w)]
            pt = [t[b, :, i, j] / t[b, :, i, j].norm() for i in range(h) for j in range(w)]
            for a in range(h * w):
                for c in range(h * w):
                    diff = diff + (ps[a] @ ps[c] - pt[a] @ pt[c]).abs()
        total = total + diff / (n * (h * w) ** 2)
    return total


def test_fakd_equals_hand_written_reference() -> None:
    s = [rand(2, 4, 3, 3, seed=1), rand(2, 6, 2, 3, seed=2)]
    t = [rand(2, 8, 3, 3, seed=3), rand(2, 8, 2, 3, seed=4)]
    torch.testing.assert_close(fakd_loss(s, t, max_positions=None), reference_fakd(s, t))
    torch.testing.assert_close(FAKDLoss(weight=10.0)(s, t), 10 * reference_fakd(s, t))


def test_affinity_is_cosine_similarity_and_per_pixel_scale_invariant() -> None:
    f = rand(2, 5, 4, 3, seed=0)
    a = spatial_affinity(f)
    assert a.shape == (2, 12, 12)
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 12))
    torch.testing.assert_close(spatial_affinity(2 * f), a)
    scale = rand(2, 1, 4, 3, seed=1).abs() + 0.1  # a positive scale per pixel
    torch.testing.assert_close(spatial_affinity(f * scale), a)


def test_fakd_is_zero_when_student_reproduces_teacher_even_with_other_width() -> None:
    t = [rand(2, 8, 6, 6, seed=i) for i in range(3)]
    scale = rand(2, 1, 6, 6, seed=9).abs() + 0.1
    # 16 channels: the teacher's 8 twice, times a per-pixel scale; the affinity cannot tell
    s = [torch.cat([x, x], dim=1) * scale for x in t]
    assert fakd_loss(s, t, max_positions=None).item() == pytest.approx(0.0, abs=1e-6)
    # also when sub-sampling: student and teacher use the same positions
    assert fakd_loss(s, t, max_positions=10).item() == pytest.approx(0.0, abs=1e-6)


def test_fakd_subsampling_is_deterministic_with_a_seeded_generator() -> None:
    s, t = [rand(1, 4, 16, 16, seed=1)], [rand(1, 6, 16, 16, seed=2)]

    def loss(seed: int) -> Tensor:
        return fakd_loss(s, t, max_positions=32, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(loss(0), loss(0))
    assert not torch.equal(loss(0), loss(1))
    # a sub-sample is an estimate of the full loss: same scale
    full = fakd_loss(s, t, max_positions=None)
    assert 0.5 * full < loss(0) < 2 * full


def test_sample_positions_are_distinct_and_bounded() -> None:
    idx = feature._sample_positions(65536, 1024, torch.Generator().manual_seed(0))
    assert idx.shape == (1024,) and idx.unique().numel() == 1024
    assert int(idx.min()) >= 0 and int(idx.max()) < 65536


def test_fakd_memory_bound_on_a_large_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 x 256 x 256 features are 65536 positions: the full affinity would be 16 GiB per map."""
    shapes: list[tuple[int, ...]] = []
    real = feature.spatial_affinity

    def recording(f: Tensor, eps: float = 1e-12) -> Tensor:
        shapes.append(tuple(f.shape))
        out = real(f, eps)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(feature, "spatial_affinity", recording)
    s = rand(1, 8, 256, 256, seed=0).requires_grad_()
    t = rand(1, 16, 256, 256, seed=1)
    loss = fakd_loss([s], [t], max_positions=1024, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert shapes == [(1, 8, 1024), (1, 1024, 1024), (1, 16, 1024), (1, 1024, 1024)]
    assert torch.isfinite(loss) and s.grad is not None
    assert (s.grad.flatten(2).abs().sum(1) > 0).sum() == 1024  # only sampled pixels get gradient


def test_fakd_rejects_mismatched_maps() -> None:
    with pytest.raises(ValueError, match="equal N, H, W"):
        fakd_loss([rand(1, 4, 3, 3, seed=0)], [rand(1, 4, 3, 4, seed=1)])
    with pytest.raises(ValueError, match="same non-zero number"):
        fakd_loss([], [])
    with pytest.raises(ValueError, match="max_positions"):
        FAKDLoss(max_positions=0)


def test_feature_losses_are_registered() -> None:
    assert {"fitnet", "fakd"} <= set(LOSSES.names())
    assert isinstance(build_loss("fakd", max_positions=128), FAKDLoss)
    fitnet = build_loss("fitnet", student_channels=[8], teacher_channels=[16])
    assert isinstance(fitnet, FitNetLoss) and fitnet.regressors[0].weight.shape == (16, 8, 1, 1)
