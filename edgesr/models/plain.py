"""A plain, mobile-first SR net in the NCNet / ABPN family, built for INT8 phone NPUs.

Only 3x3 convs, ReLU, one add and one PixelShuffle: every op is delegated by NNAPI / XNNPACK /
Core ML, and activations stay in a narrow range that quantizes well. The network learns a residual
on top of nearest-neighbour upsampling, which NCNet computes with a fixed 1x1 "nearest conv"
before the shuffle so that the residual add happens at low resolution.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor, nn

from edgesr.models.slim import Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import AtLeast, Count


def nearest_conv(scale: int) -> nn.Conv2d:
    """Frozen 1x1 conv ``3 -> 3*scale*scale`` that copies RGB channel ``c`` to channels
    ``c*r*r .. c*r*r + r*r - 1``; followed by ``PixelShuffle(r)`` it is nearest upsampling.

    A conv rather than ``repeat_interleave``/``cat`` because XNNPACK and NNAPI delegate a conv
    but split the graph (falling back to the CPU) on those ops.
    """
    r2 = scale * scale
    conv = nn.Conv2d(3, 3 * r2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c * r2 : (c + 1) * r2, c] = 1.0
    conv.weight.requires_grad_(False)
    return conv


class PlainSR(nn.Module):
    """Plain conv stack + nearest residual. ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``.

    Args:
        scale: upscaling factor (any integer >= 1).
        n_convs: 3x3 convs in total, including the first (RGB -> F) and the last (F -> 3*scale^2).
        n_feats: features F at full width.
        clamp: clamp the output to [0, 1]; meant for deployment / INT8 (a clamp blocks gradients
            of out-of-range pixels, so leave it off while training).
        width_multiple: active feature counts are snapped to multiples of this.
    """

    def __init__(
        self,
        scale: Count = 4,
        n_convs: Annotated[int, AtLeast(2)] = 6,
        n_feats: Count = 32,
        clamp: bool = False,
        width_multiple: Count = 8,
    ) -> None:
        super().__init__()
        if n_convs < 2:
            raise ValueError(f"n_convs must be >= 2 (first and last conv), got {n_convs}")
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.arch: dict[str, Any] = {
            "name": "plain",
            "args": dict(
                scale=scale, n_convs=n_convs, n_feats=n_feats, clamp=clamp, width_multiple=width_multiple
            ),
        }
        self.scale = scale
        self.width_multiple = width_multiple
        self.clamp = clamp
        F, r2 = n_feats, scale * scale
        layers: list[nn.Module] = [SlimConv2d(Fixed(3), Split(F), 3), nn.ReLU(inplace=True)]
        for _ in range(n_convs - 2):
            layers += [SlimConv2d(Split(F), Split(F), 3), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        # The output is 3*r*r sub-pixel channels whatever the width, so it is Fixed.
        self.last = SlimConv2d(Split(F), Fixed(3 * r2), 3)
        self.nearest = nearest_conv(scale)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            y = self.last(self.body(x)) + self.nearest(x)  # (N, 3*r*r, H, W)
            if self.clamp:
                # Before the shuffle (it only permutes values), so conv + add + clamp fuse on NPUs.
                y = y.clamp(0.0, 1.0)
            return self.shuffle(y)  # (N, 3, rH, rW)
