"""LSFD: local-selective feature distillation (edgesr's interpretation).

Park and Kwak, "Local-Selective Feature Distillation for Single Image Super-Resolution", 2021.
Only the abstract could be read: FitNet-style feature distillation (FD) works poorly for SR, so
LSFD makes FD focus on *local* feature information and adds a *soft feature attention*, computed
from the teacher-student difference, that selects the pixel locations to distil. The formula below
is edgesr's reading of that; docs/distillation.md gives every choice and why.

For one tap, with R = regressor(S) (1x1 conv, student -> teacher channels) and T the detached teacher:

    loc(F)  = F - avgpool_k(F)                       k x k mean, stride 1, borders: valid pixels only
    e(p)    = mean_c |loc(R)(c, p) - loc(T)(c, p)|   N x H x W, per-pixel local error
    a(p)    = H*W * softmax_p( e(p) / (tau * mean_p e) )   detached, mean 1 per sample
    LSFD    = mean_{n, p} a(p) * e(p)

averaged over taps. loc() removes every per-channel, spatially constant offset, so the loss only
sees local contrast (edges, texture: what SR must reconstruct). tau -> inf gives a = 1 (plain local
L1 FD); tau -> 0 puts all weight on the worst pixel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.feature import apply_regressors, regressors
from edgesr.losses.spec import Reads


def local_contrast(x: Tensor, kernel: int = 3) -> Tensor:
    """x minus its k x k local mean: N x C x H x W -> N x C x H x W.

    At the borders the mean is over the pixels inside the map (count_include_pad=False): zero
    padding would leak the absolute level into the border pixels and break offset invariance.
    """
    _check_kernel(kernel)
    return x - F.avg_pool2d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


def _check_kernel(kernel: int) -> None:
    if kernel < 3 or kernel % 2 == 0:
        raise ValueError(f"kernel must be odd and >= 3, got {kernel}")


def selection_weights(error: Tensor, tau: float = 1.0, eps: float = 1e-12) -> Tensor:
    """LSFD's soft attention over pixels: N x H x W error -> N x H x W weights, mean 1 per sample.

    The error is divided by its per-sample mean before the softmax, so tau is unit-free: the same
    tau means the same selectivity at every tap and every stage of training (feature magnitudes
    differ by orders of magnitude between taps). An all-zero error gives uniform weights.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    flat = error.flatten(1)  # N x HW
    z = flat / (flat.mean(dim=1, keepdim=True) + eps)
    return (flat.shape[1] * torch.softmax(z / tau, dim=1)).view_as(error)


def lsfd_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    kernel: int = 3,
    tau: float = 1.0,
) -> Tensor:
    """LSFD over paired taps; a scalar.

    student_feats[l]: N x C_l x H_l x W_l, already regressed to the teacher's channels
                      (`LSFDLoss` applies the 1x1 regressors); gradients flow through these.
    teacher_feats[l]: N x C_l x H_l x W_l, detached here: FD moves only the student.
    The attention is detached too: it chooses where to distil, it is not itself a target.
    """
    check_paired_taps(student_feats, teacher_feats)
    terms: list[Tensor] = []
    for s, t in zip(student_feats, teacher_feats, strict=True):
        error = local_contrast(s - t.detach(), kernel).abs().mean(dim=1)  # N x H x W; loc() is linear
        weights = selection_weights(error.detach(), tau)
        terms.append((weights * error).mean())
    # torch.stack keeps every tap in the graph; torch.tensor([...]) would make a gradient-free leaf.
    return torch.stack(terms).mean()


def check_paired_taps(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> None:
    # A dict would iterate its keys (strings); taps are paired by name before the loss.
    if isinstance(student_feats, Mapping) or isinstance(teacher_feats, Mapping):
        raise TypeError("pass lists of tensors in tap order, not dicts (see edgesr.models.taps.pair_taps)")
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"need >= 1 paired taps, got {len(student_feats)} student, {len(teacher_feats)} teacher"
        )
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats, strict=True)):
        if s.dim() != 4 or s.shape != t.shape:
            raise ValueError(
                f"tap {i}: regressed student {tuple(s.shape)} and teacher {tuple(t.shape)} must both be "
                "N x C x H x W with equal shapes"
            )


class LSFDLoss(nn.Module):
    """`forward(student_feats, teacher_feats) -> weight * lsfd_loss(regressed student, teacher)`.

    student_channels / teacher_channels: per tap (an int is one tap or broadcast). The regressors
    have no bias: loc() removes any constant offset, so a bias would never get a gradient.
    """

    reads: ClassVar[Reads] = Reads(("student_feats", "teacher_feats"), channels=True)

    def __init__(
        self,
        student_channels: int | Sequence[int],
        teacher_channels: int | Sequence[int],
        kernel: int = 3,
        tau: float = 1.0,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        _check_kernel(kernel)
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.regressors = regressors(student_channels, teacher_channels, bias=False)
        self.kernel = kernel
        self.tau = tau
        self.weight = weight

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        regressed = apply_regressors(self.regressors, student_feats)
        return self.weight * lsfd_loss(regressed, teacher_feats, self.kernel, self.tau)
