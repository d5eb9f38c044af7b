"""XLSR: the extremely lightweight, quantization-robust SR net of MAI 2021, as a channel-split model.

Paper: M. Ayazoglu, "Extremely Lightweight Quantization Robust Real-Time Single-Image Super
Resolution for Mobile Devices", CVPR Workshops (MAI) 2021, arXiv:2105.10288 (winner of the Mobile
AI 2021 real-time SISR challenge; ~22K parameters at x3).

Written for edgesr from the paper and from the public configurations read (not copied) in:
- quic/aimet-model-zoo, ``XLSRRelease`` and ``GBlock`` (read in
  ``aimet_zoo_torch/quicksrnet/model/models.py`` and ``blocks.py``; ``aimet_zoo_torch/xlsr/model/
  model_definition.py`` takes the same classes from ``aimet_zoo_torch/common/super_resolution/``);
- cxzhou95/XLSR, ``model.py`` (a PyTorch reimplementation);
- quic/ai-hub-models, ``qai_hub_models/models/xlsr/info.yaml`` (28.0K parameters at x4).

The network, ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, rH, rW)``, F = 32 and g = 4 in the paper:

    main: conv3x3 3->F (g parallel 3->F/g convs), ReLU, conv1x1 F->F,
          n_gblocks x GBlock [g-group conv3x3 F->F, ReLU, conv1x1 F->F]
    skip: conv3x3 3->F/2 on the input
    cat(main, skip) -> conv1x1 3F/2->F, ReLU -> conv3x3 F->3r^2 -> clipped ReLU -> PixelShuffle(r)

The clipped ReLU (clamp to [0, 1]) on the output is the paper's device for uint8 robustness and is
used in training too, so ``clamp`` defaults to True; a clamp passes no gradient for pixels outside
[0, 1] (``clamp=False`` trains without it). It is applied before the shuffle (a permutation), so
conv + clip fuse and the shuffle stays fed by a conv (the depth_to_space rewrite needs that).
Initialisation is PyTorch's default for every conv (cxzhou95/XLSR uses a He-normal scaled by 0.1
and biases of 0.01; not reproduced).

Channel splitting: the F-wide main path is ``Cat((Split(F, div=g),) * g)``: g groups of F/g
channels, of which a width-``w`` student keeps the leading ``snap(F, w) / g`` of *each* group (so
the grouped convs stay grouped, and the student has ``snap(F, w)`` main features: 8 / 16 / 24 at
widths 0.25 / 0.5 / 0.75 with the default multiple 8). ``Split(F / g)`` per group would snap each
8-channel group to the multiple itself and never narrow. The skip branch is ``Split(F, div=2)``,
the fused features ``Split(F)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from edgesr.models.slim import Cat, Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import Count

__all__ = ["XLSR", "GBlock"]


class GBlock(nn.Module):
    """XLSR's building block: g-group 3x3 conv, ReLU, 1x1 conv (no activation after it).
    ``(N, f, H, W) -> (N, f, H, W)`` with the grouped channel layout ``spec``."""

    def __init__(self, spec: Cat, groups: int) -> None:
        super().__init__()
        self.grouped = SlimConv2d(spec, spec, 3, groups=groups)
        self.act = nn.ReLU(inplace=True)
        self.mix = SlimConv2d(spec, spec, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(self.act(self.grouped(x)))


class XLSR(nn.Module):
    """XLSR with a channel-split width. ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, rH, rW)``.

    Args:
        scale: upscaling factor r (any integer >= 1; the paper's challenge model is x3).
        n_feats: main-path features F at full width (32); the skip branch has F/2.
        n_gblocks: GBlocks in the main path (3).
        groups: groups of the GBlocks' 3x3 convs (4); F must be a multiple of it.
        clamp: the clipped ReLU on the output (the paper trains and deploys with it).
        width_multiple: active feature counts are snapped to multiples of this (a multiple of
            ``groups`` and of 2 keeps every group and the skip branch in proportion).
    """

    def __init__(
        self,
        scale: Count = 4,
        n_feats: Count = 32,
        n_gblocks: Count = 3,
        groups: Count = 4,
        clamp: bool = True,
        width_multiple: Count = 8,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if n_feats % groups or n_feats % 2:
            raise ValueError(f"n_feats ({n_feats}) must be even and a multiple of groups ({groups})")
        step = math.lcm(groups, 2)
        if width_multiple % step:  # else the groups, the skip and the fused width disagree at some widths
            raise ValueError(
                f"width_multiple ({width_multiple}) must be a multiple of {step} (lcm of groups {groups} "
                f"and 2), so that every width keeps {groups} equal groups and a half-width skip; "
                f"e.g. {step * 2}"
            )
        self.arch: dict[str, Any] = {
            "name": "xlsr",
            "args": dict(
                scale=scale, n_feats=n_feats, n_gblocks=n_gblocks, groups=groups, clamp=clamp,
                width_multiple=width_multiple,
            ),
        }  # fmt: skip
        self.scale = scale
        self.width_multiple = width_multiple
        self.clamp = clamp
        F, r2 = n_feats, scale * scale
        main = Cat((Split(F, div=groups),) * groups)  # g groups of F/g, each sliced on its own
        skip = Split(F, div=2)
        # The paper's g parallel 3->F/g convs are one 3->F conv whose outputs are the groups.
        self.head = nn.Sequential(SlimConv2d(Fixed(3), main, 3), nn.ReLU(inplace=True))
        self.proj = SlimConv2d(main, main, 1)
        self.gblocks = nn.Sequential(*[GBlock(main, groups) for _ in range(n_gblocks)])
        self.skip = SlimConv2d(Fixed(3), skip, 3)
        self.fuse = nn.Sequential(SlimConv2d(Cat((*main.parts, skip)), Split(F), 1), nn.ReLU(inplace=True))
        self.last = SlimConv2d(Split(F), Fixed(3 * r2), 3)  # 3*r*r sub-pixels at every width
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            feats = self.gblocks(self.proj(self.head(x)))  # (N, f, H, W), g groups of f/g
            y = self.fuse(torch.cat([feats, self.skip(x)], dim=1))  # (N, f + f/2, H, W) -> (N, f, H, W)
            y = self.last(y)  # (N, 3*r*r, H, W)
            if self.clamp:
                y = y.clamp(0.0, 1.0)  # the clipped ReLU, before the shuffle (a permutation)
            return self.shuffle(y)  # (N, 3, rH, rW)
