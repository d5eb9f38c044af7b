"""Meta-knowledge distillation with knowledge representation networks (KRNets) - edgesr's interpretation.

Source: H. Zhu, Z. Chen, S. Liu, "Learning Knowledge Representation with Meta Knowledge
Distillation for Single Image Super-Resolution", arXiv 2207.08356 (2022). Only the abstract could be
read: the teacher's intermediate outputs are turned into the knowledge the student is taught by
KRNets with learnable parameters that look at the student's features and the teacher-student
correlation; they generate texture-aware dynamic kernels that extract texture features of the
student and the matching teacher guidance (texture-wise supervision, for high-frequency detail);
the KRNets are optimized "in a meta-learning manner" so that the transfer improves the student's
reconstruction. No official code was found. Everything below the abstract's level is edgesr's
(docs/distillation.md, "Meta-knowledge distillation"):

Per tap, with the student feature S (Cs channels) and the teacher feature T (Ct channels):

    P_s = 1x1 conv(S) -> C,  P_t = 1x1 conv(T) -> C                       (C = Cs)
    d   = [mean_xy(P_s * P_t), mean_xy |P_s - P_t|]                        correlation descriptor, N x 2C
    k   = MLP(d) -> K 3x3 kernels per sample, each zero-mean and unit-L2       (high-pass "texture" filters)
    L_kd(S, T; theta) = sum_k mean |k_k * P_s - k_k * P_t|                 depthwise, per sample

The student is trained on L_kd with the KRNet parameters theta held fixed (detached). The KRNet is
trained on the meta objective only: a small step of the student's feature along -grad_S L_kd should
also lower the student's HR loss, i.e. (first order) grad_S L_kd should point where grad_S L1(SR, HR)
does:

    L_meta(theta) = 1 - cos(grad_S L_kd(S, T; theta), grad_S L1(SR, HR))        per sample, averaged

so theta gets no gradient from L_kd (which it could zero by shrinking or disabling its kernels), and
the student gets none from L_meta. The paper's bilevel update is on the student's weights (a virtual
SGD step, then the HR loss); edgesr takes that step on the tapped feature instead, where the
first-order change of the HR loss is -lr * <grad_S L_kd, grad_S L1>: one extra backward pass from
the output to the tap, no second student forward, and it fits the one-optimizer trainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.feature import tap_channel_pairs
from edgesr.losses.spec import Reads

EPS = 1e-12


class KRNet(nn.Module):
    """One tap's knowledge representation network: projections and the dynamic-kernel generator."""

    def __init__(self, student_channels: int, teacher_channels: int, kernels: int = 4, size: int = 3,
                 hidden: int = 32) -> None:  # fmt: skip
        super().__init__()
        if kernels < 1 or size < 2 or size % 2 == 0:
            raise ValueError(f"need kernels >= 1 and an odd kernel size >= 3, got {kernels} and {size}")
        c = student_channels
        self.kernels, self.size = kernels, size
        self.student_proj = nn.Conv2d(student_channels, c, 1)
        self.teacher_proj = nn.Conv2d(teacher_channels, c, 1)
        self.generator = nn.Sequential(
            nn.Linear(2 * c, hidden), nn.ReLU(), nn.Linear(hidden, kernels * size * size)
        )

    def _params(self, detach: bool) -> dict[str, Tensor]:
        return {n: (p.detach() if detach else p) for n, p in self.named_parameters()}

    def texture_kernels(self, ps: Tensor, pt: Tensor, params: dict[str, Tensor]) -> Tensor:
        """N x K x size x size dynamic kernels, each zero-mean with unit L2 norm (a high-pass filter)."""
        desc = torch.cat([(ps * pt).mean((2, 3)), (ps - pt).abs().mean((2, 3))], dim=1)
        h = F.relu(F.linear(desc, params["generator.0.weight"], params["generator.0.bias"]))
        k = F.linear(h, params["generator.2.weight"], params["generator.2.bias"])
        k = k.view(desc.shape[0], self.kernels, self.size * self.size)
        k = k - k.mean(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(EPS)
        return k.view(desc.shape[0], self.kernels, self.size, self.size)

    def distance(self, s: Tensor, t: Tensor, detach_params: bool) -> Tensor:
        """L_kd for one tap: mean |k * P_s - k * P_t| summed over the K texture kernels."""
        p = self._params(detach_params)
        ps = F.conv2d(s, p["student_proj.weight"], p["student_proj.bias"])
        pt = F.conv2d(t, p["teacher_proj.weight"], p["teacher_proj.bias"])
        k = self.texture_kernels(ps, pt, p)
        return self.kernels * F.l1_loss(texture(ps, k), texture(pt, k))


def texture(x: Tensor, k: Tensor) -> Tensor:
    """Each sample's channels filtered by that sample's K kernels: N x C x H x W, N x K x s x s ->
    N x C*K x H x W (replicate padding, so a constant map has no texture, borders included)."""
    n, c, h, w = x.shape
    kk, size = k.shape[1], k.shape[-1]
    weight = k.unsqueeze(1).expand(n, c, kk, size, size).reshape(n * c * kk, 1, size, size)
    pad = size // 2
    y = F.conv2d(F.pad(x.reshape(1, n * c, h, w), (pad,) * 4, mode="replicate"), weight, groups=n * c)
    return y.view(n, c * kk, h, w)


def gradient_agreement(g_kd: Tensor, g_hr: Tensor) -> Tensor:
    """Mean over samples of 1 - cos(g_kd, g_hr), each flattened: 0 when they point the same way, 2
    when opposite; a sample whose HR gradient is zero contributes 1 (no direction to agree with)."""
    a, b = g_kd.flatten(1), g_hr.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(EPS)
    return (1 - cos).mean()


class MetaKDLoss(nn.Module):
    """`forward(student_sr, hr, student_feats, teacher_feats) -> weight * sum_taps L_kd + meta_weight *
    sum_taps L_meta` (module docstring). The KRNets are trained by the same optimizer as the student,
    through L_meta only; a trainer must add `self.parameters()` to it (edgesr's does)."""

    reads: ClassVar[Reads] = Reads(("student", "hr", "student_feats", "teacher_feats"), channels=True)

    def __init__(
        self,
        student_channels: Sequence[int],
        teacher_channels: Sequence[int],
        weight: float = 1.0,
        meta_weight: float = 1.0,
        kernels: int = 4,
        size: int = 3,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        self.weight, self.meta_weight = weight, meta_weight
        self.krnets = nn.ModuleList(
            KRNet(cs, ct, kernels, size, hidden)
            for cs, ct in tap_channel_pairs(student_channels, teacher_channels)
        )

    def forward(
        self, student_sr: Tensor, hr: Tensor, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]
    ) -> Tensor:
        if len(student_feats) != len(self.krnets) or len(teacher_feats) != len(self.krnets):
            raise ValueError(
                f"expected {len(self.krnets)} taps, got {len(student_feats)} and {len(teacher_feats)}"
            )
        kd = student_sr.new_zeros(())
        meta = student_sr.new_zeros(())
        need_meta = self.meta_weight != 0 and torch.is_grad_enabled() and student_sr.requires_grad
        if need_meta:
            # where each tap's feature should move for the HR loss; the graph is kept for the trainer's
            # backward, and nothing flows back from here into the student
            g_hr = torch.autograd.grad(F.l1_loss(student_sr, hr), list(student_feats), retain_graph=True,
                                       allow_unused=True)  # fmt: skip
        for i, (net, s, t) in enumerate(zip(self.krnets, student_feats, teacher_feats, strict=True)):
            t = t.detach()
            kd = kd + net.distance(s, t, detach_params=True)  # the student's term: KRNet fixed
            if need_meta and g_hr[i] is not None:
                probe = s.detach().requires_grad_(True)
                (g_kd,) = torch.autograd.grad(
                    net.distance(probe, t, detach_params=False), probe, create_graph=True
                )
                meta = meta + gradient_agreement(g_kd, g_hr[i].detach())
        return self.weight * kd + self.meta_weight * meta
