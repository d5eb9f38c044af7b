"""FACD: feature-domain adaptive contrastive distillation (edgesr's interpretation).

Moon et al., "Feature-Domain Adaptive Contrastive Distillation for Efficient Single Image
Super-Resolution", IEEE Access 2023. Only the abstract could be read (no code found): instead of an
L1/L2 feature distance, a contrastive loss between teacher and student feature maps maximises their
mutual information; "adaptive": distillation is applied selectively, depending on the condition of
each training patch. The formula below is edgesr's reading; docs/distillation.md gives every choice.

For one tap, with R = regressor(S) (1x1 conv, student -> teacher channels) and T the detached teacher,
both average-pooled to a g x g grid of P = g*g cells and L2-normalised over channels per cell:

    l_n(i) = -log( exp(r_ni . t_ni / tau) / sum_j exp(r_ni . t_nj / tau) )   InfoNCE, anchor cell i
    gate_n = 1 if mean|S_sr_n - HR_n| > mean|T_sr_n - HR_n| else 0         per patch, detached
    FACD   = mean_n gate_n * mean_i l_n(i)

averaged over taps. The positive of a student cell is the teacher cell at the same place; the
negatives are the teacher's other cells of the same image (or of the whole batch with
`batch_negatives=True`). InfoNCE bounds the mutual information between the paired cells from below,
I(R; T) >= log(K) - l with K keys per anchor, so minimising it maximises that bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.feature import apply_regressors, regressors
from edgesr.losses.lsfd import check_paired_taps
from edgesr.losses.spec import Reads


def pool_to_grid(x: Tensor, grid: int | None) -> Tensor:
    """Average-pool N x C x H x W to N x C x min(g, H) x min(g, W); None keeps every pixel.

    Never upsamples: repeated cells would be positives and negatives at once.
    """
    if grid is None:
        return x
    if grid < 1:
        raise ValueError(f"grid must be >= 1 or None, got {grid}")
    return F.adaptive_avg_pool2d(x, (min(grid, x.shape[-2]), min(grid, x.shape[-1])))


def patch_gate(student_sr: Tensor, teacher_sr: Tensor, hr: Tensor) -> Tensor:
    """1.0 where the student's L1 error to HR exceeds the teacher's, else 0.0: N x 3 x H x W -> N.

    A patch the student already reconstructs at least as well as the teacher is not distilled:
    pulling the student toward a worse teacher there would only cost accuracy.
    """
    if not (student_sr.shape == teacher_sr.shape == hr.shape):
        raise ValueError(
            f"student_sr {tuple(student_sr.shape)}, teacher_sr {tuple(teacher_sr.shape)} and "
            f"hr {tuple(hr.shape)} must have equal shapes"
        )
    with torch.no_grad():
        e_s = (student_sr - hr).abs().flatten(1).mean(dim=1)
        e_t = (teacher_sr - hr).abs().flatten(1).mean(dim=1)
        return (e_s > e_t).to(student_sr.dtype)


def info_nce(anchors: Tensor, keys: Tensor, tau: float, batch_negatives: bool = False) -> Tensor:
    """InfoNCE per anchor cell, averaged per sample: N x C x h x w (twice) -> N.

    Cell i of `anchors` has cell i of `keys` (same sample) as its positive. Both are L2-normalised
    over C here, so the logits are cosine similarities / tau.
    """
    n, c, h, w = anchors.shape
    p = h * w
    a = F.normalize(anchors.flatten(2).transpose(1, 2), dim=-1)  # N x P x C
    k = F.normalize(keys.flatten(2).transpose(1, 2), dim=-1)  # N x P x C
    if batch_negatives:
        logits = a.reshape(n * p, c) @ k.reshape(n * p, c).T / tau  # NP x NP
        target = torch.arange(n * p, device=a.device)
    else:
        logits = (a @ k.transpose(1, 2) / tau).reshape(n * p, p)  # NP x P, row (n, i) vs cells of n
        target = torch.arange(p, device=a.device).repeat(n)
    return F.cross_entropy(logits, target, reduction="none").view(n, p).mean(dim=1)


def facd_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    student_sr: Tensor | None = None,
    teacher_sr: Tensor | None = None,
    hr: Tensor | None = None,
    tau: float = 0.1,
    grid: int | None = 8,
    adaptive: bool = True,
    batch_negatives: bool = False,
) -> Tensor:
    """FACD over paired taps; a scalar.

    student_feats[l]: N x C_l x H_l x W_l, already regressed to the teacher's channels
                      (`FACDLoss` applies the 1x1 regressors); gradients flow through these.
    teacher_feats[l]: N x C_l x H_l x W_l, detached here: FACD moves only the student.
    student_sr, teacher_sr, hr: N x 3 x H x W SR outputs and ground truth for the per-patch gate;
        all three or none. Without them, or with adaptive=False, every patch is distilled.
    grid: cells per side after average pooling (memory O(N * grid^4)); None uses every pixel
        (memory O(N * (HW)^2): small maps only).
    The batch mean divides by N, not by the number of gated patches: the signal fades as the
    student overtakes the teacher on more patches, and a batch with one open gate is not amplified.
    """
    check_paired_taps(student_feats, teacher_feats)
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    given = [x is not None for x in (student_sr, teacher_sr, hr)]
    if any(given) and not all(given):
        raise ValueError("pass all of student_sr, teacher_sr, hr for the adaptive gate, or none")
    gate = None
    if adaptive and all(given):
        assert student_sr is not None and teacher_sr is not None and hr is not None
        gate = patch_gate(student_sr, teacher_sr, hr)
        if gate.shape[0] != student_feats[0].shape[0]:
            raise ValueError(f"SR batch {gate.shape[0]} != feature batch {student_feats[0].shape[0]}")

    terms: list[Tensor] = []
    for s, t in zip(student_feats, teacher_feats, strict=True):
        s, t = pool_to_grid(s, grid), pool_to_grid(t.detach(), grid)
        keys = s.shape[0] * s[0, 0].numel() if batch_negatives else s[0, 0].numel()
        if keys < 2:
            raise ValueError(
                f"InfoNCE needs >= 2 keys per anchor, got {keys} (pooled shape {tuple(s.shape)})"
            )
        per_sample = info_nce(s, t, tau, batch_negatives)  # N
        terms.append((per_sample if gate is None else gate * per_sample).mean())
    # torch.stack keeps every tap in the graph; torch.tensor([...]) would make a gradient-free leaf.
    return torch.stack(terms).mean()


class FACDLoss(nn.Module):
    """`forward(student_feats, teacher_feats, student_sr=None, teacher_sr=None, hr=None)`.

    Returns weight * facd_loss(regressed student, teacher, ...). student_channels / teacher_channels:
    per tap (an int is one tap or broadcast). The student is pooled *before* its 1x1 regressor:
    average pooling and a 1x1 conv are both affine per pixel, so they commute exactly, and the
    regressor then runs on g x g cells instead of the full map.
    """

    reads: ClassVar[Reads] = Reads(
        ("student_feats", "teacher_feats", "student", "teacher", "hr"), channels=True
    )

    def __init__(
        self,
        student_channels: int | Sequence[int],
        teacher_channels: int | Sequence[int],
        tau: float = 0.1,
        grid: int | None = 8,
        adaptive: bool = True,
        weight: float = 1.0,
        batch_negatives: bool = False,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if grid is not None and grid < 1:
            raise ValueError(f"grid must be >= 1 or None, got {grid}")
        self.regressors = regressors(student_channels, teacher_channels, bias=True)
        self.tau = tau
        self.grid = grid
        self.adaptive = adaptive
        self.weight = weight
        self.batch_negatives = batch_negatives

    def forward(
        self,
        student_feats: Sequence[Tensor],
        teacher_feats: Sequence[Tensor],
        student_sr: Tensor | None = None,
        teacher_sr: Tensor | None = None,
        hr: Tensor | None = None,
    ) -> Tensor:
        pooled = [pool_to_grid(s, self.grid) for s in student_feats]
        regressed = apply_regressors(self.regressors, pooled)
        teacher = [pool_to_grid(t.detach(), self.grid) for t in teacher_feats]
        return self.weight * facd_loss(
            regressed,
            teacher,
            student_sr,
            teacher_sr,
            hr,
            tau=self.tau,
            grid=self.grid,
            adaptive=self.adaptive,
            batch_negatives=self.batch_negatives,
        )
