"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution (Lim et al., CVPRW 2017).

Channel-split for CSD: every conv is a ``SlimConv2d``; ``forward(x, width)`` runs the student that
uses the leading ``snap(n_feats, width)`` features of every layer. ``upsampler`` and ``MeanShift``
are shared with RCAN, which uses the same head and tail.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from edgesr.models.plain import nearest_conv
from edgesr.models.slim import Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import Count

# DIV2K training-set RGB mean, in [0, 1] units (as in the official EDSR/RCAN code).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_spec: Fixed | Split, out_spec: Fixed | Split) -> SlimConv2d:
    return SlimConv2d(in_spec, out_spec, 3)


class MeanShift(nn.Module):
    """``x + sign * mean * rgb_range`` per RGB channel; a constant, so never sliced nor learned."""

    def __init__(self, rgb_range: float, sign: int) -> None:
        super().__init__()
        mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) * rgb_range * sign
        # Not persistent: it follows from rgb_range (in arch), so checkpoints stay weights only.
        self.register_buffer("shift", mean, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, 3, H, W)
        return x + self.shift


def upsampler(scale: int, n_feats: int) -> nn.Sequential:
    """Sub-pixel upsampling: ``log2(scale)`` x [conv F -> 4F, PixelShuffle(2)], or conv F -> 9F,
    PixelShuffle(3). ``(N, f, H, W) -> (N, f, scale*H, scale*W)`` where ``f`` is the active width.
    """
    if scale in (2, 4, 8):
        r, steps = 2, scale.bit_length() - 1
    elif scale == 3:
        r, steps = 3, 1
    else:
        raise ValueError(f"scale must be 2, 3, 4 or 8, got {scale}")
    layers: list[nn.Module] = []
    for _ in range(steps):
        # Split(F, mult=r*r): the leading r*r*f channels shuffle into exactly the first f features.
        layers += [conv3x3(Split(n_feats), Split(n_feats, mult=r * r)), nn.PixelShuffle(r)]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """``x + res_scale * conv(relu(conv(x)))`` (no batch norm: EDSR's point). ``(N, f, H, W)`` in/out."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(Split(n_feats), Split(n_feats))
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(Split(n_feats), Split(n_feats))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        res = self.conv2(self.act(self.conv1(x)))
        # no multiply by 1: exported graphs would carry a MUL (int8: TRANSPOSE-MUL-TRANSPOSE) per block
        return x + (res if self.res_scale == 1.0 else self.res_scale * res)


class EDSR(nn.Module):
    """EDSR with a channel-split width. ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``.

    Args:
        scale: upscaling factor (2, 3, 4 or 8).
        n_resblocks: residual blocks in the body (16 baseline, 32 full).
        n_feats: features F at full width (64 baseline, 256 full).
        res_scale: residual scaling in each block (0.1 stabilises the 256-feature model).
        rgb_range: value range of the images (1.0 for [0, 1]); scales the mean shift.
        width_multiple: active feature counts are snapped to multiples of this.
        anchor: add the nearest-upsampled input to the output (the frozen 1x1 conv + PixelShuffle
            of ``edgesr.models.plain.nearest_conv``, as QuickSRNet-Large and ABPN do), so the net
            learns the residual over it and the output mean shift is dropped. Not in the paper:
            edgesr's protocol uses it because plain EDSR students at a CPU budget lose up to 5.7
            dB to bicubic on a near-flat photo (docs/bench/distill_protocol_x2_no_anchor).
            Width-independent, so every channel-split student shares it. Recorded in ``arch`` only
            when on, so existing checkpoints keep their arch.
    """

    def __init__(
        self,
        scale: Count = 4,
        n_resblocks: Count = 16,
        n_feats: Count = 64,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
        width_multiple: Count = 8,
        anchor: bool = False,
    ) -> None:
        super().__init__()
        self.arch: dict[str, Any] = {
            "name": "edsr",
            "args": dict(
                scale=scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale,
                rgb_range=rgb_range, width_multiple=width_multiple,
            ),
        }  # fmt: skip
        if anchor:
            self.arch["args"]["anchor"] = True
        self.scale = scale
        self.width_multiple = width_multiple
        F = n_feats
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = conv3x3(Fixed(3), Split(F))
        self.body = nn.Sequential(*[ResBlock(F, res_scale) for _ in range(n_resblocks)])
        self.body_end = conv3x3(Split(F), Split(F))
        self.upsample = upsampler(scale, F)
        self.tail = conv3x3(Split(F), Fixed(3))
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.nearest = nn.Sequential(nearest_conv(scale), nn.PixelShuffle(scale)) if anchor else None

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            y = self.sub_mean(x)  # (N, 3, H, W)
            y = self.head(y)  # (N, f, H, W), f = snap(F, width)
            y = y + self.body_end(self.body(y))  # long skip, (N, f, H, W)
            y = self.tail(self.upsample(y))  # (N, 3, sH, sW)
            if self.nearest is None:
                return self.add_mean(y)
            return y + self.nearest(x)  # the residual over nearest upsampling


def edsr_baseline(
    scale: int = 4,
    n_resblocks: int = 16,
    n_feats: int = 64,
    res_scale: float = 1.0,
    rgb_range: float = 1.0,
    width_multiple: int = 8,
    anchor: bool = False,
) -> EDSR:
    """EDSR baseline (16 blocks x 64 features, ~1.5M params at x4)."""
    return EDSR(scale, n_resblocks, n_feats, res_scale, rgb_range, width_multiple, anchor)


def edsr_full(
    scale: int = 4,
    n_resblocks: int = 32,
    n_feats: int = 256,
    res_scale: float = 0.1,
    rgb_range: float = 1.0,
    width_multiple: int = 8,
    anchor: bool = False,
) -> EDSR:
    """EDSR full (32 blocks x 256 features, res_scale 0.1, ~43M params at x4): the CSD teacher."""
    return EDSR(scale, n_resblocks, n_feats, res_scale, rgb_range, width_multiple, anchor)
