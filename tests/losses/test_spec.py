"""Losses declare what they read (`Reads`); the trainer and the QAT check derive everything from that."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgesr.losses import LOSSES, DistillBatch, Reads, call_loss, output_losses, reads_of
from edgesr.losses.spec import FIELDS
from edgesr.recipe import Recipe, RecipeError, from_dict, qat_losses


@pytest.fixture
def register():
    """`register(name, cls)`: the one registration line a new loss needs, undone after the test."""
    added: list[str] = []

    def add(name: str, cls: type[nn.Module]) -> None:
        LOSSES.register(name)(cls)
        added.append(name)

    yield add
    for name in added:
        del LOSSES._items[name]  # the registry has no unregister: restore it for the other tests


class OutputToy(nn.Module):
    reads = Reads(("student", "teacher"))

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.weight * (student - teacher).abs().mean()


class FeatureToy(OutputToy):
    reads = Reads(("student_feats", "teacher_feats"))

    def forward(self, s: list[torch.Tensor], t: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return self.weight * sum((a - b).abs().mean() for a, b in zip(s, t, strict=True))


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_declares_valid_reads(name: str) -> None:
    reads = reads_of(LOSSES.get(name))
    assert reads.inputs and set(reads.inputs) <= set(FIELDS)
    assert not reads.channels or reads.features


def test_reads_rejects_what_a_batch_cannot_give() -> None:
    with pytest.raises(ValueError, match="fields"):
        Reads(("student", "logits"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fields"):
        Reads(())
    with pytest.raises(ValueError, match="tapped features"):
        Reads(("student", "hr"), channels=True)
    with pytest.raises(TypeError, match="declares no `reads"):
        reads_of(nn.L1Loss)


def test_call_loss_passes_the_declared_fields_in_order_and_builds_negatives_only_if_read() -> None:
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 8, 8)
    s, t = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    feats = {"a": torch.rand(2, 4, 4, 4), "b": torch.rand(2, 4, 2, 2)}
    batch = DistillBatch(lr, hr, s, t, feats, {k: v + 1 for k, v in feats.items()}, scale=2, negatives_k=1)
    got: list[object] = []

    class Spy(nn.Module):
        reads = Reads(("hr", "student_feats", "teacher_feats", "lr", "generator", "teacher"))

        def forward(self, *args: object) -> torch.Tensor:
            got.extend(args)
            return torch.zeros(())

    call_loss(Spy(), batch, ("b", "a"))
    assert got[0] is hr and got[3] is lr and got[4] is None and got[5] is t
    assert got[1] == [feats["b"], feats["a"]] and [x.shape for x in got[2]] == [(2, 4, 2, 2), (2, 4, 4, 4)]
    assert "negatives" not in batch.__dict__  # the lazy property was never built
    call_loss(LOSSES.get("output_kd")(), batch)
    assert "negatives" not in batch.__dict__
    assert batch.read("negatives") is batch.negatives  # built once, then cached


def _qat_recipe(loss: str) -> Recipe:
    cfg = {
        "name": "qat",
        "scale": 2,
        "model": {"name": "edsr", "args": {"n_resblocks": 1, "n_feats": 16}},
        "train": {"mode": "qat", "widths": [0.5], "init": "teacher", "student_from": "student",
                  "losses": [{"name": loss}]},
    }  # fmt: skip
    return from_dict(Recipe, cfg)


def _qat_accepts(loss: str) -> bool:
    try:
        _qat_recipe(loss)
    except RecipeError as e:
        assert "losses[0].name" in str(e) and "feature" in str(e)
        return False
    return True


@pytest.mark.parametrize("name", LOSSES.names())
def test_qat_eligibility_is_reading_no_features(name: str) -> None:
    output_only = not reads_of(LOSSES.get(name)).features
    assert (name in qat_losses()) == (name in output_losses()) == output_only
    assert _qat_accepts(name) == output_only


def test_qat_losses_follow_a_new_registration_with_no_other_edit(register) -> None:
    import edgesr.recipe

    before = set(edgesr.recipe.qat_losses())
    assert {"l1", "output_kd", "csd"} <= before
    register("toy_out", OutputToy)
    register("toy_feat", FeatureToy)
    assert set(edgesr.recipe.qat_losses()) == before | {"toy_out"}
    assert _qat_accepts("toy_out") and not _qat_accepts("toy_feat")
