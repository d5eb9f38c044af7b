"""Feature distillation: FitNet hints and FAKD spatial affinity, on features from ``run_with_taps``.

Pure functions on lists of tensors (one per tap, student and teacher in the same order), plus thin
modules that hold configuration (and, for FitNet, the regressors). Teacher features are always
detached: these terms train the student only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.spec import Reads

__all__ = ["FAKDLoss", "FitNetLoss", "fakd_loss", "fitnet_loss", "spatial_affinity"]


def _check_pairs(student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], loss: str) -> None:
    # A dict would iterate its keys (strings); taps must be paired by name before the loss.
    if isinstance(student_feats, Mapping) or isinstance(teacher_feats, Mapping):
        raise TypeError(f"{loss}: pass lists of tensors in tap order, not dicts (see pair_taps)")
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(
            f"{loss}: need the same non-zero number of student and teacher features, "
            f"got {len(student_feats)} and {len(teacher_feats)}"
        )


# ---------------------------------------------------------------------------------------------
# FitNet
# ---------------------------------------------------------------------------------------------


def fitnet_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    regressors: nn.ModuleList | Sequence[nn.Module] | None,
    p: int = 2,
) -> Tensor:
    """FitNet hint loss, averaged over taps; a scalar.

    Each student feature ``(N, Cs, H, W)`` passes its regressor (a 1x1 conv ``Cs -> Ct``) and is
    compared with the detached teacher feature ``(N, Ct, H, W)``: mean squared error for ``p=2``,
    mean absolute error for ``p=1``. ``regressors=None`` compares the features directly (needs
    ``Cs == Ct``).
    """
    _check_pairs(student_feats, teacher_feats, "fitnet_loss")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 (L1) or 2 (L2), got {p}")
    if regressors is not None and len(regressors) != len(student_feats):
        raise ValueError(f"fitnet_loss: {len(regressors)} regressors for {len(student_feats)} taps")
    distance = F.mse_loss if p == 2 else F.l1_loss
    terms = []
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats, strict=True)):
        hint = s if regressors is None else regressors[i](s)  # (N, Ct, H, W)
        if hint.shape != t.shape:
            raise ValueError(
                f"fitnet_loss tap {i}: student maps to {tuple(hint.shape)}, teacher is {tuple(t.shape)}"
            )
        terms.append(distance(hint, t.detach()))
    # torch.stack keeps every term in the graph (torch.tensor([...]) would be a gradient-free leaf).
    return torch.stack(terms).mean()


def tap_channel_pairs(
    student_channels: Sequence[int], teacher_channels: Sequence[int]
) -> list[tuple[int, int]]:
    """(student, teacher) channel counts per tap, as feature losses are built with them; ValueError
    unless there is exactly one teacher count per student tap (and at least one tap)."""
    if len(student_channels) != len(teacher_channels) or not student_channels:
        raise ValueError(
            f"need one teacher channel count per student tap, got {list(student_channels)} "
            f"and {list(teacher_channels)}"
        )
    return list(zip(student_channels, teacher_channels, strict=True))


def regressors(
    student_channels: int | Sequence[int], teacher_channels: int | Sequence[int], bias: bool
) -> nn.ModuleList:
    """One trainable 1x1 conv per tap, student -> teacher channels (FitNet's regressor).

    An int is one tap, or is broadcast against a sequence. The regressors belong to the loss, not
    to the student: they are not in the student's state_dict and are dropped at export, but the
    optimizer must be given the loss module's parameters too.
    """
    s = (student_channels,) if isinstance(student_channels, int) else tuple(student_channels)
    t = (teacher_channels,) if isinstance(teacher_channels, int) else tuple(teacher_channels)
    if len(s) == 1 and len(t) > 1:
        s = s * len(t)
    if len(t) == 1 and len(s) > 1:
        t = t * len(s)
    if len(s) != len(t) or not s:
        raise ValueError(f"student_channels {s} and teacher_channels {t} must pair up tap by tap")
    return nn.ModuleList(nn.Conv2d(cs, ct, 1, bias=bias) for cs, ct in zip(s, t, strict=True))


def apply_regressors(regs: nn.ModuleList, student_feats: Sequence[Tensor]) -> list[Tensor]:
    if len(student_feats) != len(regs):
        raise ValueError(f"loss was built for {len(regs)} taps, got {len(student_feats)} student features")
    return [r(s) for r, s in zip(regs, student_feats, strict=True)]


class FitNetLoss(nn.Module):
    """``forward(student_feats, teacher_feats) -> weight * fitnet_loss(...)``, holding the regressors.

    One 1x1 conv (with bias) per tap maps ``student_channels[i] -> teacher_channels[i]``; by FitNet
    convention there is a regressor even when the counts are equal, unless ``identity_when_equal``.
    The regressors are trained with the student, so a trainer must add ``self.parameters()`` to its
    optimizer; they are not part of the student and are dropped at export.
    """

    reads: ClassVar[Reads] = Reads(("student_feats", "teacher_feats"), channels=True)

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        p: int = 2,
        weight: float = 1.0,
        identity_when_equal: bool = False,
    ) -> None:
        super().__init__()
        pairs = tap_channel_pairs(student_channels, teacher_channels)
        if p not in (1, 2):
            raise ValueError(f"p must be 1 (L1) or 2 (L2), got {p}")
        self.p = p
        self.weight = weight
        self.regressors = regressors(student_channels, teacher_channels, bias=True)
        if identity_when_equal:
            for i, (cs, ct) in enumerate(pairs):
                if cs == ct:
                    self.regressors[i] = nn.Identity()

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        return self.weight * fitnet_loss(student_feats, teacher_feats, self.regressors, self.p)


# ---------------------------------------------------------------------------------------------
# FAKD (He et al., ICIP 2020)
# ---------------------------------------------------------------------------------------------


def spatial_affinity(f: Tensor, eps: float = 1e-12) -> Tensor:
    """Spatial affinity ``A = F^T F`` of a feature map whose pixel vectors have unit L2 length.

    ``f``: ``(N, C, H, W)`` or ``(N, C, P)`` (P positions) -> ``(N, P, P)``, ``P = H*W``; entries are
    cosine similarities between pixels, so ``A`` does not depend on ``C`` nor on a per-pixel scale.
    All-zero pixels (``norm < eps``) give zero rows.
    """
    f = F.normalize(f.flatten(2), dim=1, eps=eps)  # (N, C, P)
    return f.transpose(1, 2) @ f  # (N, P, P)


def _sample_positions(n_positions: int, k: int, generator: torch.Generator | None) -> Tensor:
    """``k`` distinct positions out of ``n_positions`` (sorted LongTensor, CPU), drawn from ``generator``."""
    return torch.randperm(n_positions, generator=generator)[:k].sort().values


def fakd_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    max_positions: int | None = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """FAKD affinity term: ``sum over taps of mean |A(S) - A(T)|``; a scalar.

    Student ``(N, Cs, H, W)`` and teacher ``(N, Ct, H, W)`` must share ``N, H, W``; the channel
    counts may differ (no regressor needed). The teacher is detached.

    Memory: ``A`` is ``(N, HW, HW)``. When ``H*W > max_positions``, the same ``max_positions``
    random pixel positions (drawn from ``generator``, a CPU generator; the global RNG when None)
    are used for student and teacher and for every sample of the batch, so each affinity is
    ``(N, max_positions, max_positions)``; each tap draws its own positions. That is a Monte-Carlo
    estimate of the full loss. ``None`` never sub-samples (48x48 LR patches are 2304 positions).
    """
    _check_pairs(student_feats, teacher_feats, "fakd_loss")
    if max_positions is not None and max_positions < 1:
        raise ValueError(f"max_positions must be >= 1 or None, got {max_positions}")
    terms = []
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats, strict=True)):
        if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ValueError(
                f"fakd_loss tap {i}: need (N, C, H, W) maps with equal N, H, W, "
                f"got {tuple(s.shape)} and {tuple(t.shape)}"
            )
        s, t = s.flatten(2), t.detach().flatten(2)  # (N, C, P)
        n_pos = s.shape[2]
        if max_positions is not None and n_pos > max_positions:
            idx = _sample_positions(n_pos, max_positions, generator).to(s.device)
            s, t = s.index_select(2, idx), t.index_select(2, idx)  # (N, C, max_positions)
        terms.append(F.l1_loss(spatial_affinity(s), spatial_affinity(t)))
    return torch.stack(terms).sum()


class FAKDLoss(nn.Module):
    """``forward(student_feats, teacher_feats, generator=None) -> weight * fakd_loss(...)``.

    This is only the affinity term. FAKD's full objective (He et al., ICIP 2020) is
    ``0.5 * L1(S, HR) + 0.5 * L1(S, T) + 10 * sum_l L1(A_S^l, A_T^l)`` over three body-stage taps
    (``default_taps``' "stage1..3"); the trainer combines the terms, so the paper's setting is
    ``weight=10`` next to ``OutputDistillationLoss(alpha=0.5)``.
    """

    reads: ClassVar[Reads] = Reads(("student_feats", "teacher_feats", "generator"))

    def __init__(self, max_positions: int | None = 4096, weight: float = 1.0) -> None:
        super().__init__()
        if max_positions is not None and max_positions < 1:
            raise ValueError(f"max_positions must be >= 1 or None, got {max_positions}")
        self.max_positions = max_positions
        self.weight = weight

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return self.weight * fakd_loss(student_feats, teacher_feats, self.max_positions, generator)
