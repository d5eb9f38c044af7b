"""CSD losses: every term reaches the student, CL's properties, the VGG19 embedding, negatives."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from edgesr.losses import (
    LOSSES,
    ContrastiveLoss,
    VGG19Features,
    build_loss,
    contrastive_ratio,
    csd_objective,
    l1,
    load_vgg19_weights,
    make_negatives,
    negative_set,
    output_distillation,
)
from edgesr.losses.contrastive import negative_distances, pairwise_l1
from edgesr.losses.vgg import CONV_SHAPES, build_vgg19_layers

SCALE = 2
LAYERS = ("relu1_1", "relu2_1")
WEIGHTS = (1 / 32, 1 / 16)


def tiny_sr(seed: int) -> nn.Module:
    """x2 upsampler: B x 3 x h x w -> B x 3 x 2h x 2w."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 3 * SCALE * SCALE, 3, padding=1),
        nn.PixelShuffle(SCALE),
    )


def rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def cl() -> ContrastiveLoss:
    return ContrastiveLoss(layers=LAYERS, layer_weights=WEIGHTS, num_negatives=3)


@pytest.fixture
def batch() -> dict[str, Tensor]:
    lr = rand(4, 3, 8, 8, seed=1)
    hr = rand(4, 3, 16, 16, seed=2)
    neg = make_negatives(lr, SCALE, 3, torch.Generator().manual_seed(3))
    return {"lr": lr, "hr": hr, "neg": neg}


def assert_all_grads_nonzero(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def flat_grads(params: list[nn.Parameter], loss: Tensor) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads, strict=True)]
    )


# ---- gradient flow: every term must reach the student ----


def test_l1_sends_grad_to_student(batch):
    student = tiny_sr(0)
    l1(student(batch["lr"]), batch["hr"]).backward()
    assert_all_grads_nonzero(student)


def test_output_distillation_sends_grad_to_student_not_teacher(batch):
    student, teacher = tiny_sr(0), tiny_sr(1)
    output_distillation(student(batch["lr"]), teacher(batch["lr"]), batch["hr"], alpha=0.5).backward()
    assert_all_grads_nonzero(student)
    assert all(p.grad is None for p in teacher.parameters())


def test_output_distillation_alpha_one_is_pure_teacher_term(batch):
    s, t = rand(2, 3, 16, 16, seed=5), rand(2, 3, 16, 16, seed=6)
    assert torch.equal(output_distillation(s, t, batch["hr"][:2], alpha=1.0), l1(s, t))


def test_cl_sends_grad_to_student_only(cl, batch):
    student, teacher = tiny_sr(0), tiny_sr(1)
    cl(student(batch["lr"]), teacher(batch["lr"]), batch["neg"]).backward()
    assert_all_grads_nonzero(student)
    assert all(p.grad is None for p in teacher.parameters()), "CL must detach the teacher"
    assert all(p.grad is None and not p.requires_grad for p in cl.embedding.parameters())


def test_csd_objective_sends_grad_to_every_student(cl, batch):
    student, teacher = tiny_sr(0), tiny_sr(1)
    # Two "widths" as two independent students: each must receive gradient from its own terms.
    other = tiny_sr(2)
    srs = {1.0: teacher(batch["lr"]), 0.5: student(batch["lr"]), 0.25: other(batch["lr"])}
    total, terms = csd_objective(
        {0.5: srs[0.5], 0.25: srs[0.25]}, srs[1.0], batch["hr"], batch["neg"], 1.0, 200.0, cl
    )
    total.backward()
    assert_all_grads_nonzero(student)
    assert_all_grads_nonzero(other)
    assert_all_grads_nonzero(teacher)  # joint training: the teacher learns from its own L1 term
    assert set(terms) == {"l1_student_w0.5", "l1_student_w0.25", "l1_teacher", "cl_w0.5", "cl_w0.25", "total"}
    assert all(isinstance(v, float) for v in terms.values())
    assert terms["total"] == pytest.approx(total.item())


def test_csd_objective_grad_is_sum_of_term_grads(cl, batch):
    """Catches `torch.sum(torch.tensor([l1, l2]))`: the total's grad must equal the terms' sum."""
    student, teacher = tiny_sr(0), tiny_sr(1)
    s, t = student(batch["lr"]), teacher(batch["lr"])
    lam_t, lam_cl = 1.0, 200.0
    total, _ = csd_objective({0.5: s}, t, batch["hr"], batch["neg"], lam_t, lam_cl, cl)
    assert total.requires_grad and total.grad_fn is not None

    params = [*student.parameters(), *teacher.parameters()]
    g_total = flat_grads(params, total)
    g_terms = (
        flat_grads(params, l1(s, batch["hr"]))
        + lam_t * flat_grads(params, l1(t, batch["hr"]))
        + lam_cl * flat_grads(params, cl(s, t, batch["neg"]))
    )
    assert g_total.abs().sum() > 0
    torch.testing.assert_close(g_total, g_terms, rtol=1e-4, atol=1e-6)

    # The teacher's gradient comes from its L1 term alone: CL adds nothing to it.
    n_s = sum(p.numel() for p in student.parameters())
    torch.testing.assert_close(g_total[n_s:], lam_t * flat_grads(params, l1(t, batch["hr"]))[n_s:])


def test_csd_objective_without_cl_skips_embedding(batch):
    s, t = rand(4, 3, 16, 16, seed=7).requires_grad_(), rand(4, 3, 16, 16, seed=8)
    total, terms = csd_objective({0.25: s}, t, batch["hr"], None, 1.0, 0.0, None)
    assert set(terms) == {"l1_student_w0.25", "l1_teacher", "total"}
    total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ContrastiveLoss"):
        csd_objective({0.25: s}, t, batch["hr"], None, 1.0, 200.0, None)


# ---- CL properties ----


def test_cl_zero_when_student_equals_teacher(cl, batch):
    t = rand(4, 3, 16, 16, seed=9)
    assert cl(t.clone(), t, batch["neg"]).item() == pytest.approx(0.0, abs=1e-6)
    feats = cl.embedding(t)
    neg = cl.embedding(batch["neg"].flatten(0, 1))
    assert contrastive_ratio(feats, feats, neg, WEIGHTS).item() == 0.0


def test_cl_decreases_as_student_moves_from_negative_to_teacher(cl, batch):
    t = rand(4, 3, 16, 16, seed=10)
    n0 = batch["neg"][0]
    losses = [cl((1 - a) * n0 + a * t, t, batch["neg"]).item() for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(x > y for x, y in itertools.pairwise(losses)), losses
    assert losses[-1] == pytest.approx(0.0, abs=1e-6)


def test_cl_invariant_to_order_of_negatives(cl, batch):
    s, t = rand(4, 3, 16, 16, seed=11), rand(4, 3, 16, 16, seed=12)
    neg = batch["neg"]
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(cl(s, t, neg), cl(s, t, neg[perm]))


def test_contrastive_ratio_detaches_positive_and_negatives():
    a = rand(2, 4, 3, 3, seed=13).requires_grad_()
    p = rand(2, 4, 3, 3, seed=14).requires_grad_()
    n = rand(6, 4, 3, 3, seed=15).requires_grad_()
    contrastive_ratio([a], [p], [n], [1.0]).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert p.grad is None and n.grad is None


def test_contrastive_ratio_matches_formula():
    a, p = rand(2, 4, 3, 3, seed=16), rand(2, 4, 3, 3, seed=17)
    n = rand(3, 2, 4, 3, 3, seed=18)  # K x B x ...
    got = contrastive_ratio([a], [p], [n.flatten(0, 1)], [0.5], eps=0.0)
    want = torch.stack(
        [(p[b] - a[b]).abs().mean() / sum((n[k, b] - a[b]).abs().mean() for k in range(3)) for b in range(2)]
    ).mean()
    torch.testing.assert_close(got, 0.5 * want)


def test_pairwise_l1_is_the_mean_absolute_difference_of_every_pair():
    a, f = rand(3, 5, 4, 6, seed=40).double(), rand(4, 5, 4, 6, seed=41).double()
    want = torch.tensor([[(a[i] - f[j]).abs().mean().item() for j in range(4)] for i in range(3)])
    torch.testing.assert_close(pairwise_l1(a, f), want.double())


def test_indexed_negatives_give_the_expanded_ratio_and_gradient():
    """The cheap path (distinct negative features + K x B index, pairwise_l1) is the same loss, with
    the same gradient to the student, as the K*B copies; negatives may repeat and include a row
    no anchor uses."""
    a = rand(3, 4, 5, 5, seed=42).requires_grad_()
    p, images = rand(3, 4, 5, 5, seed=43), rand(4, 4, 5, 5, seed=44)
    index = torch.tensor([[1, 0, 0], [2, 2, 1], [2, 0, 1]])  # K=3 x B=3 rows of `images`
    fast = contrastive_ratio([a], [p], [images], [0.7], negative_index=index)
    (g_fast,) = torch.autograd.grad(fast, a)
    slow = contrastive_ratio([a], [p], [images[index.flatten()]], [0.7])
    (g_slow,) = torch.autograd.grad(slow, a)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(g_fast, g_slow)
    assert g_fast.abs().sum() > 0
    # the copies path (what CUDA takes) gives the same distances as the pairwise one
    both = [negative_distances(a, images, index, pairwise=flag) for flag in (True, False)]
    torch.testing.assert_close(*both)
    with pytest.raises(ValueError, match="negative index"):
        contrastive_ratio([a], [p], [images], [0.7], negative_index=index[:, :2])


# ---- VGG19 embedding ----


def _torchvision_style_state() -> dict[str, Tensor]:
    full = build_vgg19_layers(seed=123).state_dict()
    state = {f"features.{k}": v for k, v in full.items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg_loads_torchvision_layout(tmp_path, suffix):
    state = _torchvision_style_state()
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    loaded = load_vgg19_weights(path)
    assert "classifier.0.weight" not in loaded and "0.weight" in loaded
    vgg = VGG19Features(LAYERS, weights=path)
    x = rand(1, 3, 16, 16, seed=19)
    reference = build_vgg19_layers(seed=123)
    want = [reference[:2](x * 255.0), reference[:7](x * 255.0)]
    for got, exp in zip(vgg(x), want, strict=True):
        torch.testing.assert_close(got, exp)
    # Bare `N.weight` keys load too.
    bare = VGG19Features(LAYERS, weights=loaded)
    torch.testing.assert_close(bare(x)[1], want[1])


def test_vgg_missing_key_names_key_and_file(tmp_path):
    state = _torchvision_style_state()
    del state["features.2.weight"]
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"broken\.pth.*2\.weight"):
        load_vgg19_weights(path)


def test_vgg_extra_or_misshaped_key_is_an_error(tmp_path):
    state = _torchvision_style_state()
    state["features.36.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth.*36\.weight"):
        load_vgg19_weights(tmp_path / "extra.pth")
    state = _torchvision_style_state()
    state["features.5.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth.*5\.bias"):
        load_vgg19_weights(tmp_path / "shape.pth")


def test_vgg_layout_matches_torchvision_indices():
    full = build_vgg19_layers()
    convs = [i for i, m in enumerate(full) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34] == sorted(CONV_SHAPES)
    assert len(full) == 37 and isinstance(full[36], nn.MaxPool2d)


def test_vgg_runs_only_up_to_deepest_tap():
    vgg = VGG19Features(("relu1_1",))
    assert len(vgg.features) == 2
    calls = []
    for m in vgg.features:
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda *_: calls.append(1))
    (out,) = vgg(rand(1, 3, 8, 8, seed=20))
    assert len(calls) == 1 and out.shape == (1, 64, 8, 8)
    assert len(VGG19Features(("relu2_1", "relu1_1")).features) == 7


def test_vgg_default_is_seeded_and_prefix_consistent():
    x = rand(1, 3, 16, 16, seed=21)
    a, b = VGG19Features(LAYERS), VGG19Features(LAYERS)
    for fa, fb in zip(a(x), b(x), strict=True):
        assert torch.equal(fa, fb)
    # A shallower stack has exactly the leading weights of a deeper one.
    torch.testing.assert_close(VGG19Features(("relu1_1",))(x)[0], a(x)[0])


def test_vgg_is_frozen():
    vgg = VGG19Features(("relu1_1",))
    parent = nn.Sequential(vgg)
    parent.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    assert not any(p.requires_grad for p in vgg.parameters())
    with pytest.raises(ValueError, match="relu1_1"):
        VGG19Features(("relu9_9",))


# ---- negatives ----


def test_make_negatives_shape_range_and_excludes_self():
    lr = torch.stack([torch.full((3, 4, 4), v / 10) for v in range(5)])  # image b is constant b/10
    neg = make_negatives(lr, SCALE, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 5, 3, 8, 8)
    assert neg.min() >= 0 and neg.max() <= 1
    ids = (neg[:, :, 0, 0, 0] * 10).round().long()  # K x B: which image each negative came from
    for b in range(5):
        assert b not in ids[:, b].tolist()
        assert len(set(ids[:, b].tolist())) == 3  # B - 1 >= K: distinct


def test_make_negatives_with_replacement_when_batch_small():
    lr = torch.stack([torch.full((3, 4, 4), v / 10) for v in range(2)])
    neg = make_negatives(lr, SCALE, 4, torch.Generator().manual_seed(0))
    ids = (neg[:, :, 0, 0, 0] * 10).round().long()
    assert ids[:, 0].tolist() == [1] * 4 and ids[:, 1].tolist() == [0] * 4


def test_make_negatives_is_deterministic_and_bicubic():
    lr = rand(6, 3, 4, 4, seed=22)
    a = make_negatives(lr, SCALE, 3, torch.Generator().manual_seed(7))
    b = make_negatives(lr, SCALE, 3, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    up = torch.nn.functional.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
    up = up.clamp(0, 1)
    assert any(torch.equal(a[0, 0], up[j]) for j in range(1, 6))


# ---- registry ----


def test_registry_builds_losses():
    assert {"csd", "l1", "output_kd"} <= set(LOSSES.names())
    assert build_loss("output_kd", alpha=0.3).alpha == 0.3
    assert isinstance(build_loss("csd", layers=("relu1_1",), layer_weights=(1.0,)), ContrastiveLoss)
    with pytest.raises(KeyError, match="output_kd"):
        build_loss("output_kdd")


def test_negative_set_gives_the_same_cl_as_expanded_negatives(cl):
    """The cheap path (embed B images once, index features) equals embedding all K*B copies."""
    lr = rand(5, 3, 8, 8, seed=30)
    s, t = rand(5, 3, 16, 16, seed=31), rand(5, 3, 16, 16, seed=32)
    negs = negative_set(lr, SCALE, 3, torch.Generator().manual_seed(4))
    torch.testing.assert_close(cl(s, t, negs), cl(s, t, negs.expand()))
    assert negs.images.shape == (5, 3, 16, 16) and negs.index.shape == (3, 5)
