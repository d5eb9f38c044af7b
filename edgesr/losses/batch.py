"""The data one distillation step offers its losses, and the one way to call any registered loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor, nn

from edgesr.losses.contrastive import Negatives, negative_set
from edgesr.losses.spec import FIELDS, Field, reads_of


@dataclass
class DistillBatch:
    """Everything a distillation loss may look at for one step (the fields `Reads` names)."""

    lr: Tensor
    hr: Tensor
    student: Tensor  # N x 3 x sH x sW
    teacher: Tensor | None  # N x 3 x sH x sW, no grad; None where no teacher runs (standalone losses)
    student_feats: dict[str, Tensor] = field(default_factory=dict)  # tap name -> N x Cs x H x W
    teacher_feats: dict[str, Tensor] = field(default_factory=dict)  # tap name -> N x Ct x H x W
    generator: torch.Generator | None = None
    scale: int = 1
    negatives_k: int = 10

    @cached_property
    def negatives(self) -> Negatives:  # CSD-style negatives, built only if a loss reads them
        return negative_set(self.lr, self.scale, self.negatives_k, self.generator)

    def read(self, name: Field, taps: Sequence[str] = ()) -> object:
        """One field; tapped features as a list in `taps` order."""
        if name == "student_feats":
            return [self.student_feats[t] for t in taps]
        if name == "teacher_feats":
            return [self.teacher_feats[t] for t in taps]
        if name not in FIELDS:
            raise KeyError(f"a DistillBatch has no field {name!r}; fields: {', '.join(FIELDS)}")
        if name == "teacher" and self.teacher is None:
            raise ValueError(
                "this step runs no teacher: a loss that reads `teacher` needs a distill or qat stage"
            )
        return getattr(self, name)


def call_loss(loss: nn.Module, batch: DistillBatch, taps: Sequence[str] = ()) -> Tensor:
    """`loss(*inputs)` with the inputs its class declares (`reads`), features paired by `taps`."""
    return loss(*(batch.read(f, taps) for f in reads_of(loss).inputs))
