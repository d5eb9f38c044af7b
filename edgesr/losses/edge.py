"""Edge (gradient) loss after EFDN: L1 between fixed-filter gradient maps of the SR output and a target.

Source: Yan Wang, "Edge-enhanced Feature Distillation Network for Efficient Super-Resolution",
CVPR Workshops (NTIRE 2022), arXiv 2204.08759. Its abstract proposes an "edge-enhanced gradient
loss"; its Figure 1 shows HR gradient maps "processed by the Sobel-(x,y) and Laplacian filters" with
one loss term per filter (L_x, L_y, L_l). The filter set below is that one. The official code
(github icandle/EFDN: README.md, models/, test_demo.py) ships the network and inference only, no
training loss, and the paper's loss section could not be read in full, so the rest is **edgesr's
interpretation** (docs/distillation.md, "Edge (gradient) loss"):

    G_f(x)          = f * x            depthwise 3x3 conv of each channel, replicate padding
    edge_loss(S, R) = sum_f mean |G_f(S) - G_f(R)|       f in (sobel_x, sobel_y, laplacian)

- Plain L1 between gradient maps, one equally weighted term per filter (scale the whole term with
  the recipe's `weight`, drop a filter with `filters`). Third-party accounts describe EFDN's terms
  as built on the Gradient-Variance loss (Abrahamyan et al., ICASSP 2022, arXiv 2202.00997; code
  github lusinlu/gradient-variance-loss, gradient_variance_loss.py: Sobel-x/y of the grey image,
  variance of each non-overlapping patch, L2 between the variance maps); that variant is not
  implemented here.
- RGB by default, every channel filtered on its own, like edgesr's pixel losses (an edge between
  two colours of equal luma is still an edge); `luma=True` filters the Rec.601 luma only,
  0.299 R + 0.587 G + 0.114 B (the Gradient-Variance code filters a grey image of about those weights).
- Replicate padding keeps the output size and puts no edge at the image border: a constant image
  has an all-zero gradient map, borders included (zero padding would add a border "edge" whose
  size is the pixel value, i.e. a pixel loss on the border ring).
- The filters are fixed (`kernels`, a non-persistent buffer: nothing in the state dict, so
  checkpoints with and without this loss are the same) and sum to zero, so the loss is blind to a
  constant offset: it complements a pixel loss (e.g. `l1`), it does not replace one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.losses.spec import Reads
from edgesr.registry import unknown_name_message

# Fixed 3x3 edge filters (cross-correlation, as F.conv2d applies them); each sums to zero.
EDGE_FILTERS: dict[str, tuple[tuple[float, ...], ...]] = {
    "sobel_x": ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0)),  # d/dx: left -> right
    "sobel_y": ((-1.0, -2.0, -1.0), (0.0, 0.0, 0.0), (1.0, 2.0, 1.0)),  # d/dy: top -> bottom
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),  # 4-neighbour Laplacian
}
DEFAULT_EDGE_FILTERS = ("sobel_x", "sobel_y", "laplacian")  # EFDN's set (its Figure 1)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec.601


def _names(filters: Sequence[str]) -> tuple[str, ...]:
    return (filters,) if isinstance(filters, str) else tuple(filters)  # one name alone, as YAML may give it


def edge_kernels(filters: Sequence[str] = DEFAULT_EDGE_FILTERS) -> Tensor:
    """The named filters stacked as a K x 1 x 3 x 3 float32 tensor; unknown or repeated names raise."""
    names = _names(filters)
    if not names:
        raise ValueError(f"filters must name at least one of {', '.join(EDGE_FILTERS)}")
    for name in names:
        if name not in EDGE_FILTERS:
            raise ValueError(unknown_name_message("edge filter", name, tuple(EDGE_FILTERS)))
    if len(set(names)) != len(names):
        raise ValueError(f"filters has duplicates: {list(names)}")
    return torch.tensor([EDGE_FILTERS[n] for n in names], dtype=torch.float32).unsqueeze(1)


def to_luma(x: Tensor) -> Tensor:
    """Rec.601 luma of an RGB batch: N x 3 x H x W -> N x 1 x H x W."""
    if x.shape[1] != 3:
        raise ValueError(f"luma needs 3 (RGB) channels, got {x.shape[1]}")
    r, g, b = LUMA_WEIGHTS
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def gradient_maps(x: Tensor, kernels: Tensor) -> Tensor:
    """Every channel filtered by every kernel: N x C x H x W, K x 1 x 3 x 3 -> N x C*K x H x W.

    Output channel c*K + k is kernel k applied to input channel c (a depthwise conv), after
    replicate-padding one pixel so that the maps keep the input size.
    """
    c = x.shape[1]
    weight = kernels.to(dtype=x.dtype, device=x.device).repeat(c, 1, 1, 1)  # C*K x 1 x 3 x 3
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)


def _edge_l1(sr: Tensor, target: Tensor, kernels: Tensor, luma: bool) -> Tensor:
    if sr.shape != target.shape:
        raise ValueError(f"edge loss needs equal shapes, got {tuple(sr.shape)} and {tuple(target.shape)}")
    if luma:
        sr, target = to_luma(sr), to_luma(target)
    # The mean over all C*K maps is the mean over filters of each filter's mean: * K makes it the sum.
    return kernels.shape[0] * F.l1_loss(gradient_maps(sr, kernels), gradient_maps(target, kernels))


def edge_loss(
    sr: Tensor, hr: Tensor, filters: Sequence[str] = DEFAULT_EDGE_FILTERS, luma: bool = False
) -> Tensor:
    """sum_f mean |f * sr - f * hr| over the named fixed filters; sr, hr: N x C x H x W -> scalar.

    Zero when the two images differ by a constant (per channel); symmetric in (sr, hr).
    With `luma`, both RGB images are reduced to Rec.601 luma first.
    """
    return _edge_l1(sr, hr, edge_kernels(filters), luma)


class EdgeLoss(nn.Module):
    """`forward(student_sr, hr) -> weight * edge_loss(student_sr, hr)`: EFDN's loss, against HR.

    filters: any of sobel_x, sobel_y, laplacian (default all three). luma: filter the Rec.601 luma
    instead of each RGB channel. It reads the student's output and HR only, so every recipe may use
    it: added to L1 in `single` mode, to every width of a `csd` run, or as a term of a `distill` or
    `qat` stage.
    """

    reads: ClassVar[Reads] = Reads(("student", "hr"))

    def __init__(
        self, weight: float = 1.0, filters: Sequence[str] = DEFAULT_EDGE_FILTERS, luma: bool = False
    ) -> None:
        super().__init__()
        self.weight = weight
        self.filters = _names(filters)
        self.luma = luma
        self.kernels: Tensor
        self.register_buffer("kernels", edge_kernels(self.filters), persistent=False)

    def forward(self, student_sr: Tensor, hr: Tensor) -> Tensor:
        return self.weight * _edge_l1(student_sr, hr, self.kernels, self.luma)


class EdgeDistillationLoss(EdgeLoss):
    """`forward(student_sr, teacher_sr) -> weight * edge_loss(student_sr, teacher_sr.detach())`: the
    edge loss against the teacher's output, an edge-space output distillation (`distill`, `qat`)."""

    reads: ClassVar[Reads] = Reads(("student", "teacher"))

    def forward(self, student_sr: Tensor, teacher_sr: Tensor) -> Tensor:
        return super().forward(student_sr, teacher_sr.detach())
