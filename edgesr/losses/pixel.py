"""Pixel losses: pure functions on tensors, plus thin modules that only hold configuration."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.spec import Reads


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every element; pred, target: B x C x H x W -> scalar."""
    return F.l1_loss(pred, target)


def output_distillation(student: Tensor, teacher: Tensor, hr: Tensor, alpha: float = 0.5) -> Tensor:
    """Output ("logits") distillation: (1 - alpha) * L1(S, HR) + alpha * L1(S, T); a scalar.

    The teacher output is detached: this term trains the student only.
    """
    return (1.0 - alpha) * l1(student, hr) + alpha * l1(student, teacher.detach())


class L1Loss(nn.Module):
    """`forward(pred, target) -> weight * l1(pred, target)`."""

    reads: ClassVar[Reads] = Reads(("student", "hr"))

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.weight * l1(pred, target)


class OutputDistillationLoss(nn.Module):
    """`forward(student_sr, teacher_sr, hr) -> weight * output_distillation(...)`."""

    reads: ClassVar[Reads] = Reads(("student", "teacher", "hr"))

    def __init__(self, alpha: float = 0.5, weight: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.weight = weight

    def forward(self, student_sr: Tensor, teacher_sr: Tensor, hr: Tensor) -> Tensor:
        return self.weight * output_distillation(student_sr, teacher_sr, hr, self.alpha)
