"""Feature taps: named features from one forward, for any width or depth, hooks always removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgesr.models import build_model, materialize, model_signature, snap_channels
from edgesr.models.taps import FeatureTaps, _stage_indices, default_taps, pair_taps, run_with_taps

TINY = {"n_feats": 32, "n_resblocks": 3, "n_resgroups": 3, "n_convs": 5, "reduction": 4, "n_intermediate": 3,
        "n_gblocks": 3}  # fmt: skip
NAMES = ["edsr", "rcan", "plain", "quicksrnet_small", "quicksrnet_large", "xlsr"]
HW = 12


def tiny_model(name: str, **override: int | float | bool) -> nn.Module:
    params = model_signature(name).parameters
    args = {k: v for k, v in TINY.items() if k in params} | override
    torch.manual_seed(0)
    return build_model(name, scale=2, **args)


def lr_image(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, HW, HW, generator=torch.Generator().manual_seed(1))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------------------------
# default taps
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, {"stage3": 0}),
        (2, {"stage2": 0, "stage3": 1}),
        (3, {"stage1": 0, "stage2": 1, "stage3": 2}),
        (6, {"stage1": 1, "stage2": 3, "stage3": 5}),
        (16, {"stage1": 4, "stage2": 9, "stage3": 15}),
    ],
)
def test_stage_indices_spread_over_depth_and_dedupe(n: int, expected: dict[str, int]) -> None:
    assert _stage_indices(n) == expected


def test_default_taps_per_architecture() -> None:
    assert default_taps(tiny_model("edsr", n_resblocks=6)) == {
        "stage1": "body.1", "stage2": "body.3", "stage3": "body.5", "body": "body_end",
    }  # fmt: skip
    assert default_taps(tiny_model("rcan")) == {
        "stage1": "body.0", "stage2": "body.1", "stage3": "body.2", "body": "body_end",
    }  # fmt: skip
    plain = tiny_model("plain", n_convs=5)  # body: conv relu x4 -> ReLUs at 1, 3, 5, 7
    taps = default_taps(plain)
    assert taps == {"stage1": "body.1", "stage2": "body.3", "stage3": "body.7", "body": "body.7"}
    assert all(isinstance(plain.get_submodule(p), nn.ReLU) for p in taps.values())
    quick = tiny_model("quicksrnet_medium", n_intermediate=5)  # conv, clip x6 -> clips at 1, 3, .., 11
    taps = default_taps(quick)
    assert taps == {"stage1": "body.3", "stage2": "body.7", "stage3": "body.11", "body": "body.11"}
    assert all(isinstance(quick.get_submodule(p), nn.Hardtanh) for p in taps.values())
    assert default_taps(tiny_model("xlsr")) == {
        "stage1": "gblocks.0", "stage2": "gblocks.1", "stage3": "gblocks.2", "body": "fuse",
    }  # fmt: skip


def test_default_taps_needs_a_known_arch() -> None:
    with pytest.raises(ValueError, match="arch"):
        default_taps(nn.Conv2d(3, 3, 1))
    model = tiny_model("edsr")
    model.arch = {"name": "mystery", "args": {}}
    with pytest.raises(ValueError, match="mystery"):
        default_taps(model)


# --------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("name", NAMES)
def test_taps_shapes_at_width_and_hooks_removed(name: str, width: float) -> None:
    model = tiny_model(name)
    before = hook_count(model)
    out, feats = run_with_taps(model, lr_image(), default_taps(model), width=width)
    assert out.shape == (2, 3, 2 * HW, 2 * HW)
    assert set(feats) == {"stage1", "stage2", "stage3", "body"}
    f = snap_channels(32, width)
    for feat in feats.values():
        assert feat.shape == (2, f, HW, HW)
    assert hook_count(model) == before == 0


@pytest.mark.parametrize("name", NAMES)
def test_materialized_student_has_the_same_taps_and_features(name: str) -> None:
    model = tiny_model(name)
    narrow = materialize(model, 0.5)
    taps = default_taps(narrow)
    assert taps == default_taps(model)
    with torch.no_grad():
        _, sliced = run_with_taps(model, lr_image(), taps, width=0.5)
        _, materialized = run_with_taps(narrow, lr_image(), taps)
    for k in taps:
        torch.testing.assert_close(materialized[k], sliced[k], rtol=1e-5, atol=1e-5)


def test_taps_are_the_module_outputs() -> None:
    model = tiny_model("edsr")
    x = lr_image()
    with torch.no_grad():
        _, feats = run_with_taps(model, x, {"head": "head", "b0": "body.0"})
        head = model.head(model.sub_mean(x))
        torch.testing.assert_close(feats["head"], head)
        torch.testing.assert_close(feats["b0"], model.body[0](head))


def test_exception_in_forward_still_removes_hooks() -> None:
    model = tiny_model("edsr")
    with pytest.raises(RuntimeError):
        run_with_taps(model, torch.rand(1, 5, HW, HW), default_taps(model))  # 5 channels: conv fails
    with pytest.raises(ZeroDivisionError), FeatureTaps(model, {"s": "body.0"}):
        1 / 0  # noqa: B018
    assert hook_count(model) == 0


def test_unknown_path_is_named_with_close_matches() -> None:
    model = tiny_model("edsr")
    with pytest.raises(ValueError, match=r"'body\.9'.*close matches: body\.") as err:
        run_with_taps(model, lr_image(), {"stage": "body.9"})
    assert "body.0" in str(err.value)
    assert hook_count(model) == 0


def test_tap_that_does_not_run_raises() -> None:
    model = tiny_model("edsr")
    model.unused = nn.Identity()
    with pytest.raises(RuntimeError, match="unused"):
        run_with_taps(model, lr_image(), {"unused": "unused"})
    assert hook_count(model) == 0


def test_one_context_two_forwards_gives_separate_features() -> None:
    """JointSR use: teacher (width 1) then student (width 0.5) within one `with`."""
    model = tiny_model("edsr")
    with FeatureTaps(model, default_taps(model)) as taps:
        model(lr_image())
        teacher = taps.features
        model(lr_image(), width=0.5)
        student = taps.features
    assert teacher is not student
    assert teacher["stage1"].shape[1] == 32 and student["stage1"].shape[1] == 16
    assert hook_count(model) == 0


def test_gradient_flows_from_a_tap_to_upstream_parameters_only() -> None:
    model = tiny_model("edsr")
    _, feats = run_with_taps(model, lr_image(), {"b0": "body.0"}, width=0.5)
    feats["b0"].square().mean().backward()
    upstream = [model.head.weight, model.body[0].conv1.weight, model.body[0].conv2.weight]
    for p in upstream:
        assert p.grad is not None and p.grad.abs().sum() > 0 and torch.isfinite(p.grad).all()
    # width 0.5 uses only the leading 16 of 32 output channels
    assert model.head.weight.grad[16:].abs().sum() == 0
    for p in [model.body[1].conv1.weight, model.body_end.weight, model.tail.weight]:
        assert p.grad is None


def test_teacher_and_student_of_different_depths_pair_by_name() -> None:
    teacher = tiny_model("edsr", n_resblocks=6)
    student = materialize(tiny_model("edsr", n_resblocks=3), 0.5)
    pairs = pair_taps(default_taps(teacher), default_taps(student), ["stage1", "stage2", "stage3"])
    assert pairs == [
        ("stage1", "body.1", "body.0"), ("stage2", "body.3", "body.1"), ("stage3", "body.5", "body.2"),
    ]  # fmt: skip
    t_taps = {n: t for n, t, _ in pairs}
    s_taps = {n: s for n, _, s in pairs}
    with torch.no_grad():
        _, t_feats = run_with_taps(teacher, lr_image(), t_taps)
    _, s_feats = run_with_taps(student, lr_image(), s_taps)
    for name, _, _ in pairs:
        assert t_feats[name].shape == (2, 32, HW, HW)
        assert s_feats[name].shape == (2, 16, HW, HW)


def test_pair_taps_defaults_to_shared_names_and_lists_missing() -> None:
    shallow = default_taps(tiny_model("edsr", n_resblocks=2))  # stage2, stage3, body
    deep = default_taps(tiny_model("edsr", n_resblocks=6))
    assert [n for n, _, _ in pair_taps(deep, shallow)] == ["stage2", "stage3", "body"]
    with pytest.raises(ValueError, match=r"'stage1' \(student\)"):
        pair_taps(deep, shallow, ["stage1", "stage3"])
    with pytest.raises(ValueError, match="share no name"):
        pair_taps({"a": "head"}, {"b": "head"})
