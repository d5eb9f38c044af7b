"""CSD's contrastive loss (CL): pull the student toward the teacher, push it from blurry negatives.

Wang et al., "Towards Compact Single Image Super-Resolution via Contrastive Self-distillation",
IJCAI 2021. For each embedding level j (VGG19 relu1_1 .. relu5_1, weights 1/32 .. 1):

    CL = sum_j w_j * mean_b [ d(phi_j(T_b), phi_j(S_b)) / (sum_k d(phi_j(N_kb), phi_j(S_b)) + eps) ]

with d = mean absolute difference over C, H, W of one sample. The positive is the teacher output T,
the negatives N_k are bicubic-upsampled LR images of other images of the batch.

Interpretation notes (edgesr's, documented because the paper's wording leaves room):
- The ratio is formed per sample and then averaged over the batch. The official code takes the
  ratio of batch means; the two agree for B = 1 and differ only in how samples are weighted.
- Negatives are summed over k (as in the paper's formula), so the loss scales roughly as 1/K.
- Each anchor gets its own K negatives drawn from the *other* batch images (`make_negatives`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.spec import Reads
from edgesr.losses.vgg import TAPS, VGG19Features

DEFAULT_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_LAYER_WEIGHTS: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _per_sample_l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean |a - b| over every dim but the first: ... x C x H x W -> ... (leading dims kept)."""
    return (a - b).abs().flatten(start_dim=-3).mean(dim=-1)


def pairwise_l1(a: Tensor, f: Tensor) -> Tensor:
    """A x F matrix of mean |a_i - f_j| over C, H, W, for a: A x C x H x W and f: F x C x H x W,
    without forming any difference tensor on the CPU: `torch.cdist(p=1)` per channel plane, summed
    over the planes (one cdist over the whole C*H*W vector accumulates visibly more float32 error).
    With it a CSD step at x4 took 1.21 / 1.35 s instead of 1.87 / 1.75 s with the K*B copies
    (docs/distillation.md). On CUDA, cdist's backward holds an A x F buffer of feature maps, more
    than CSD's K*B copies, so `negative_distances` uses this on the CPU only.
    """
    if a.dim() != 4 or a.shape[1:] != f.shape[1:]:
        raise ValueError(
            f"pairwise_l1 needs A x C x H x W and F x C x H x W, got {tuple(a.shape)} and {tuple(f.shape)}"
        )
    return torch.cdist(a.flatten(2).transpose(0, 1), f.flatten(2).transpose(0, 1), p=1).sum(0) / a[0].numel()


def negative_distances(a: Tensor, n: Tensor, index: Tensor, pairwise: bool | None = None) -> Tensor:
    """B-vector d[b] = sum_k mean |n[index[k, b]] - a[b]| for anchors a: B x C x H x W, distinct
    negatives n: M x C x H x W and index: K x B. `pairwise` (default: on the CPU) takes the A x M
    distances of `pairwise_l1` and each anchor's K entries; otherwise the K*B copies are made,
    which on CUDA hold less memory than cdist's backward."""
    if pairwise is None:
        pairwise = a.device.type == "cpu"
    if pairwise:
        return pairwise_l1(a, n).gather(1, index.t()).sum(dim=1)
    return _per_sample_l1(n[index], a.unsqueeze(0)).sum(dim=0)  # K x B -> B


def contrastive_ratio(
    anchor_feats: Sequence[Tensor],
    positive_feats: Sequence[Tensor],
    negative_feats: Sequence[Tensor],
    weights: Sequence[float],
    eps: float = 1e-7,
    negative_index: Tensor | None = None,
) -> Tensor:
    """CSD's CL from precomputed embeddings; a scalar.

    anchor_feats[j]:   B x C_j x H_j x W_j   student features (gradients flow through these)
    positive_feats[j]: B x C_j x H_j x W_j   teacher features
    negative_feats[j]: K*B x C_j x H_j x W_j negatives, k-major: row k*B + b is negative k of
                       anchor b (i.e. `make_negatives(...)` output flattened with `.flatten(0, 1)`);
                       or, with `negative_index` (K x B, `Negatives.index`), the M x C_j x H_j x W_j
                       features of the distinct negative images, row index[k, b] being negative k
                       of anchor b: on the CPU no K*B copies (distances by `pairwise_l1`)

    Positives and negatives are detached here: CSD detaches the teacher inside CL so that CL only
    moves the student; the teacher is trained by its own L1 term and must not be pulled toward
    the (worse) student or pushed toward the negatives.
    """
    if not (len(anchor_feats) == len(positive_feats) == len(negative_feats) == len(weights)):
        raise ValueError(
            f"levels differ: anchor {len(anchor_feats)}, positive {len(positive_feats)}, "
            f"negative {len(negative_feats)}, weights {len(weights)}"
        )
    terms: list[Tensor] = []
    for a, p, n, w in zip(anchor_feats, positive_feats, negative_feats, weights, strict=True):
        b = a.shape[0]
        if p.shape != a.shape:
            raise ValueError(f"positive shape {tuple(p.shape)} != anchor shape {tuple(a.shape)}")
        d_pos = _per_sample_l1(p.detach(), a)  # B
        if negative_index is not None:
            if negative_index.dim() != 2 or negative_index.shape[1] != b or n.shape[1:] != a.shape[1:]:
                raise ValueError(
                    f"negative index {tuple(negative_index.shape)} is not K x {b}, or negative features "
                    f"{tuple(n.shape)} are not M x {tuple(a.shape[1:])}"
                )
            d_neg = negative_distances(a, n.detach(), negative_index)
        else:
            if n.shape[0] % b or n.shape[1:] != a.shape[1:]:
                raise ValueError(f"negative shape {tuple(n.shape)} is not K*B x {tuple(a.shape[1:])} (B={b})")
            n = n.detach().view(n.shape[0] // b, b, *a.shape[1:])  # K x B x C x H x W
            d_neg = _per_sample_l1(n, a.unsqueeze(0)).sum(dim=0)  # K x B -> B
        terms.append(w * (d_pos / (d_neg + eps)).mean())
    return torch.stack(terms).sum()


class Negatives(NamedTuple):
    """CSD's negatives without copies: B distinct images and which of them each anchor uses.

    images: B x 3 x H x W bicubic-upsampled LR of the batch, in [0, 1].
    index:  K x B long tensor; negative k of anchor b is images[index[k, b]].
    Embedding `images` once costs B VGG passes instead of K*B.
    """

    images: Tensor
    index: Tensor

    def expand(self) -> Tensor:
        """K x B x 3 x H x W tensor of every negative (copies; for tests and small batches)."""
        return self.images[self.index]


def negative_set(lr: Tensor, scale: int, k: int, generator: torch.Generator | None = None) -> Negatives:
    """Bicubic-upsampled LR images of *other* batch images, as CSD's negatives.

    lr: B x 3 x h x w in [0, 1]. For B > 1 anchor b never gets itself; its K images are distinct
    when B - 1 >= K, else drawn with replacement. For B == 1 the only image is itself (CL then
    pushes the student away from the bicubic upsampling of its own input). Indices come from
    `generator` on the CPU, so the result is deterministic for a seeded generator.
    """
    if k < 1:
        raise ValueError(f"need k >= 1 negatives, got {k}")
    index = negative_indices(lr.shape[0], k, generator).to(lr.device)  # K x B
    up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    return Negatives(up, index)


def make_negatives(lr: Tensor, scale: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """`negative_set(...).expand()`: K x B x 3 x (h*scale) x (w*scale); entry [k, b] is negative k of b."""
    return negative_set(lr, scale, k, generator).expand()


def negative_indices(batch: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """K x B long tensor: column b lists the batch images used as negatives for anchor b."""
    if batch == 1:
        return torch.zeros(k, 1, dtype=torch.long)
    cols = []
    for b in range(batch):
        others = torch.cat([torch.arange(b), torch.arange(b + 1, batch)])  # B - 1
        if batch - 1 >= k:
            pick = torch.randperm(batch - 1, generator=generator)[:k]
        else:
            pick = torch.randint(batch - 1, (k,), generator=generator)
        cols.append(others[pick])
    return torch.stack(cols, dim=1)


class Targets(NamedTuple):
    """CL's teacher and negative features of one step (`ContrastiveLoss.embed_targets`)."""

    teacher: list[Tensor]  # B x C_j x H_j x W_j per level
    negatives: list[Tensor]  # K*B rows, k-major; or, with `index`, one row per distinct image
    index: Tensor | None  # K x B: row index[k, b] of `negatives` is negative k of anchor b


class ContrastiveLoss(nn.Module):
    """CL with a frozen VGG19 embedding: `forward(student_sr, teacher_sr, negatives) -> scalar`.

    student_sr, teacher_sr: B x 3 x H x W in [0, 1]; negatives: K x B x 3 x H x W (`make_negatives`).
    The embedding of the teacher and the negatives runs under no_grad (they are detached in CL
    anyway, so this only saves memory and time); the student's runs with grad.
    """

    reads: ClassVar[Reads] = Reads(("student", "teacher", "negatives"))

    def __init__(
        self,
        layers: Sequence[str] = DEFAULT_LAYERS,
        layer_weights: Sequence[float] = DEFAULT_LAYER_WEIGHTS,
        vgg_weights: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
        num_negatives: int = 10,
        input_scale: float = 255.0,
        normalize: bool = False,
        eps: float = 1e-7,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = weight
        if len(layers) != len(layer_weights):
            raise ValueError(f"{len(layers)} layers but {len(layer_weights)} layer_weights")
        for name in layers:
            if name not in TAPS:
                raise ValueError(f"unknown VGG19 tap {name!r}; valid: {', '.join(TAPS)}")
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.num_negatives = num_negatives
        self.eps = eps
        self.embedding = VGG19Features(
            layers, weights=vgg_weights, input_scale=input_scale, normalize=normalize
        )

    @torch.no_grad()
    def embed_targets(self, teacher_sr: Tensor, negatives: Tensor | Negatives) -> Targets:
        """Teacher and negative features, computed once per step and shared by every student width.
        A `Negatives` is embedded once per distinct image and kept with its index (no K copies)."""
        t = self.embedding(teacher_sr)
        if isinstance(negatives, Negatives):
            return Targets(t, self.embedding(negatives.images), negatives.index)
        if negatives.dim() != 5 or negatives.shape[1:] != teacher_sr.shape:
            raise ValueError(
                f"negatives must be K x B x 3 x H x W matching {tuple(teacher_sr.shape)}, "
                f"got {tuple(negatives.shape)}"
            )
        return Targets(t, self.embedding(negatives.flatten(0, 1)), None)

    def forward(
        self,
        student_sr: Tensor,
        teacher_sr: Tensor,
        negatives: Tensor | Negatives,
        targets: Targets | None = None,
    ) -> Tensor:
        """CL of `student_sr`; `targets` (from `embed_targets`) skips re-embedding teacher/negatives."""
        t = targets if targets is not None else self.embed_targets(teacher_sr, negatives)
        return self.weight * contrastive_ratio(
            self.embedding(student_sr), t.teacher, t.negatives, self.layer_weights, self.eps, t.index
        )
