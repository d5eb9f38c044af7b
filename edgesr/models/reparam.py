"""Slimmable re-parameterisable students: multi-branch blocks for training, plain 3x3 convs on the phone.

A `RepBlock` trains as the sum of linear branches on one input (ECBSR's edge-oriented convolution
block, Zhang, Zeng and Zhang, "Edge-oriented Convolution Block for Real-time Super Resolution on
Mobile Devices", ACM MM 2021; EFDN's re-parameterised edge blocks, Wang, "Edge-enhanced Feature
Distillation Network for Efficient Super-Resolution", CVPR-W 2022; RepVGG's argument, Ding et al.,
CVPR 2021, arXiv 2101.03697, that branches help optimisation and cost nothing once summed):

    y = conv3x3(x) + conv3x3_E(conv1x1_E(x)) + sum_k  D_k * conv1x1_k(x) + x
        (3x3)        (1x1 expand, then 3x3)    (1x1, then a fixed Sobel-x/-y/Laplacian)  (identity)

Every branch is linear with no bias between its two convs, so the block *is* one 3x3 conv and
`reparameterize` collapses it exactly (zero padding of a bias-free 1x1 output is the 1x1 of the zero
padding; ECBSR's 1x1 biases need a bias-valued padding trick, which dropping them avoids: the 3x3
branch's bias carries the block's):

    W = W3 + einsum(W3_E, W1_E)  +  sum_k W1_k (x) D_k  +  I (x) delta
    b = b3

The deployed network is then `PlainSR`'s graph: 3x3 conv, ReLU, ..., a frozen 1x1 nearest conv, add,
PixelShuffle: every op delegated by XNNPACK / NNAPI / Core ML, nothing the INT8 quantizer must guess.

**Slicing commutes with collapsing.** Branch outputs and inputs are the block's outer channels, so
they slice with the block's specs; the expansion's E inner channels are `Fixed` (not sliced): a
narrow student runs its leading outer channels through all E, and so

    collapse(slice_w(block)) == slice_w(collapse(block))

(the collapsed 3x3 is a `SlimConv2d` of the same specs). Slicing E instead would drop terms of the
einsum's sum for a narrow student, which the full model's collapsed weights keep. The cost is
training-time only: a width-w student's expansion conv reads E channels, not w*E.

Choices, and why: ReLU, not ECBSR's PReLU (a per-channel slope would need its own slicing rule and
is one more op for an NPU to fuse; ReLU fuses into the conv everywhere). Branch weights other than
the 3x3 start at a tenth of PyTorch's default, so the collapsed conv starts near one conv's scale
(the identity already adds 1 at the centre tap).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesr.models.plain import nearest_conv
from edgesr.models.slim import ChannelSpec, Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import AtLeast, Count

__all__ = ["EDGE_FILTERS", "ECBSR", "RepBlock", "count_rep_blocks", "reparameterize"]

# Fixed 3x3 edge filters of ECBSR's edge branches (Sobel in x and y, 4-neighbour Laplacian).
EDGE_FILTERS: dict[str, tuple[tuple[float, ...], ...]] = {
    "sobel_x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "sobel_y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "laplacian": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}
BRANCH_INIT_SCALE = 0.1  # non-3x3 branches start at this fraction of PyTorch's default init


class RepBlock(nn.Module):
    """Multi-branch 3x3 block between `in_spec` and `out_spec` channels; collapses to one 3x3 conv.

    Args:
        in_spec, out_spec: channel specs of the block's input and output (sliced with the width).
        expand: E = expand * out_spec.full inner channels of the 1x1-then-3x3 branch; 0 = no branch.
        edge: add the three 1x1-then-fixed-edge-filter branches (Sobel x, Sobel y, Laplacian).
        identity: add the input to the output; used only where the specs are equal ("where shapes
            allow": never on the RGB-in or the sub-pixel-out block).
    Shapes: ``(N, in_spec.active(w), H, W) -> (N, out_spec.active(w), H, W)``.
    """

    def __init__(
        self, in_spec: ChannelSpec, out_spec: ChannelSpec, expand: int = 2, edge: bool = True,
        identity: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        if expand < 0:
            raise ValueError(f"expand must be >= 0, got {expand}")
        self.conv3 = SlimConv2d(in_spec, out_spec, 3)
        self.expand_in: nn.Module | None = None
        self.expand_out: nn.Module | None = None
        if expand:
            inner = Fixed(expand * out_spec.full)
            self.expand_in = SlimConv2d(in_spec, inner, 1, bias=False)
            self.expand_out = SlimConv2d(inner, out_spec, 3, bias=False)
        self.edges = nn.ModuleDict(
            {name: SlimConv2d(in_spec, out_spec, 1, bias=False) for name in EDGE_FILTERS} if edge else {}
        )
        for name in EDGE_FILTERS if edge else ():
            self.register_buffer(f"filter_{name}", torch.tensor(EDGE_FILTERS[name]), persistent=False)
        self.identity = bool(identity) and in_spec == out_spec
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m is not self.conv3:
                    m.weight.mul_(BRANCH_INIT_SCALE)

    def edge_filter(self, name: str) -> Tensor:
        return getattr(self, f"filter_{name}")

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(x)
        if self.expand_in is not None and self.expand_out is not None:
            y = y + self.expand_out(self.expand_in(x))
        for name, conv in self.edges.items():
            z = conv(x)
            depthwise = self.edge_filter(name).to(z.dtype).expand(z.shape[1], 1, 3, 3)
            y = y + F.conv2d(z, depthwise, padding=1, groups=z.shape[1])
        if self.identity:
            y = y + x
        return y

    def collapsed(self) -> tuple[Tensor, Tensor | None]:
        """The one 3x3 conv's ``(weight, bias)`` equal to this block, at the block's current sizes
        (full for a channel-split block, the student's for a materialized one)."""
        w = self.conv3.weight.detach().clone()
        if self.expand_in is not None and self.expand_out is not None:
            w += torch.einsum("oekl,ei->oikl", self.expand_out.weight, self.expand_in.weight[:, :, 0, 0])
        for name, conv in self.edges.items():
            w += conv.weight[:, :, :, :] * self.edge_filter(name).to(w.dtype)  # (o,i,1,1) * (3,3)
        if self.identity:
            n = min(w.shape[0], w.shape[1])  # equal specs: square at every width
            idx = torch.arange(n, device=w.device)
            w[idx, idx, 1, 1] += 1.0
        bias = None if self.conv3.bias is None else self.conv3.bias.detach().clone()
        return w.detach(), bias

    def extra_repr(self) -> str:
        return f"expand_inner={0 if self.expand_in is None else self.expand_in.out_channels}, " \
               f"edges={list(self.edges)}, identity={self.identity}"  # fmt: skip


def _collapse(block: RepBlock) -> nn.Conv2d:
    weight, bias = block.collapsed()
    conv3 = block.conv3
    if isinstance(conv3, SlimConv2d):  # a channel-split model stays slimmable after collapsing
        out: nn.Conv2d = SlimConv2d(conv3.in_spec, conv3.out_spec, 3, bias=bias is not None,
                                    device=weight.device, dtype=weight.dtype)  # fmt: skip
    else:
        out = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1, bias=bias is not None,
                        device=weight.device, dtype=weight.dtype)  # fmt: skip
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out.train(block.training)


def count_rep_blocks(model: nn.Module) -> int:
    """Number of `RepBlock`s in `model` (0 for a collapsed or a plain model)."""
    return sum(isinstance(m, RepBlock) for m in model.modules())


def reparameterize(model: nn.Module) -> nn.Module:
    """A copy of `model` with every `RepBlock` collapsed into one 3x3 conv (exact to float rounding);
    `model` itself when it has none. Attributes (`arch`, `scale`, `materialized_width`, ...) are kept,
    and `reparameterized` records how many blocks were collapsed. A channel-split model stays
    channel-split (its blocks become `SlimConv2d`), a materialized student stays plain."""
    if not count_rep_blocks(model):
        return model
    out = copy.deepcopy(model)
    n = 0
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RepBlock):
                setattr(parent, name, _collapse(child))
                n += 1
    out.reparameterized = n
    return out


class ECBSR(nn.Module):
    """Re-parameterisable plain SR net (ECBSR / EFDN family) with a nearest-upsampling residual.

    ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``. Training: `n_convs` `RepBlock`s with
    ReLU between them; deployed (`reparameterize`): exactly `PlainSR`'s graph and module names.

    Args:
        scale: upscaling factor.
        n_convs: blocks in total, the first (RGB -> F) and the last (F -> 3*scale^2) included.
        n_feats: features F at full width.
        expand: inner channels of the 1x1-then-3x3 branch, as a multiple of the block's outputs (0: off).
        edge: the Sobel-x / Sobel-y / Laplacian branches.
        identity: the identity branch on F -> F blocks.
        clamp: clamp the output to [0, 1] (deployment; it blocks gradients of out-of-range pixels).
        width_multiple: active feature counts are snapped to multiples of this.
    """

    def __init__(
        self,
        scale: Count = 2,
        n_convs: Annotated[int, AtLeast(2)] = 6,
        n_feats: Count = 32,
        expand: Annotated[int, AtLeast(0)] = 2,
        edge: bool = True,
        identity: bool = True,
        clamp: bool = False,
        width_multiple: Count = 8,
    ) -> None:
        super().__init__()
        if n_convs < 2:
            raise ValueError(f"n_convs must be >= 2 (first and last block), got {n_convs}")
        self.arch: dict[str, Any] = {
            "name": "ecbsr",
            "args": dict(
                scale=scale, n_convs=n_convs, n_feats=n_feats, expand=expand, edge=edge, identity=identity,
                clamp=clamp, width_multiple=width_multiple,
            ),  # fmt: skip
        }
        self.scale = scale
        self.width_multiple = width_multiple
        self.clamp = clamp
        feats, r2 = Split(n_feats), scale * scale
        branches = dict(expand=expand, edge=edge, identity=identity)
        layers: list[nn.Module] = [RepBlock(Fixed(3), feats, **branches), nn.ReLU(inplace=True)]
        for _ in range(n_convs - 2):
            layers += [RepBlock(feats, feats, **branches), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.last = RepBlock(feats, Fixed(3 * r2), **branches)  # sub-pixel outputs: never sliced
        self.nearest = nearest_conv(scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            y = self.last(self.body(x)) + self.nearest(x)  # (N, 3*r*r, H, W)
            if self.clamp:
                y = y.clamp(0.0, 1.0)
            return self.shuffle(y)
