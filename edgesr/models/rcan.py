"""RCAN: Image Super-Resolution Using Very Deep Residual Channel Attention Networks (Zhang et al., ECCV 2018).

Residual-in-residual: residual groups of residual channel-attention blocks (RCAB), each group and
the whole body with its own skip. Channel-split for CSD like EDSR; the channel attention's 1x1
convs (F -> F/reduction -> F) are sliced too, so a student's attention reads only its own features.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from edgesr.models.edsr import MeanShift, conv3x3, upsampler
from edgesr.models.slim import Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import Count


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 avgpool(x))))``. ``(N, f, H, W)`` in/out."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)  # (N, f, 1, 1)
        self.squeeze = SlimConv2d(Split(n_feats), Split(n_feats, div=reduction), 1)  # (N, f/red, 1, 1)
        self.act = nn.ReLU(inplace=True)
        self.excite = SlimConv2d(Split(n_feats, div=reduction), Split(n_feats), 1)  # (N, f, 1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.excite(self.act(self.squeeze(self.pool(x)))))


class RCAB(nn.Module):
    """Residual channel-attention block: ``x + res_scale * CA(conv(relu(conv(x))))``."""

    def __init__(self, n_feats: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(Split(n_feats), Split(n_feats))
        self.act = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(Split(n_feats), Split(n_feats))
        self.attention = ChannelAttention(n_feats, reduction)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.attention(self.conv2(self.act(self.conv1(x))))


class ResidualGroup(nn.Module):
    """``x + conv(RCAB^n(x))``: the short skip of residual-in-residual."""

    def __init__(self, n_resblocks: int, n_feats: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks)])
        self.conv = conv3x3(Split(n_feats), Split(n_feats))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.blocks(x))


class RCAN(nn.Module):
    """RCAN with a channel-split width. ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, scale*H, scale*W)``.

    Args:
        scale: upscaling factor (2, 3, 4 or 8).
        n_resgroups: residual groups (10 in the paper).
        n_resblocks: RCABs per group (20 in the paper).
        n_feats: features F at full width.
        reduction: channel-attention squeeze ratio (F -> F/reduction).
        res_scale: residual scaling inside each RCAB.
        rgb_range: value range of the images (1.0 for [0, 1]); scales the mean shift.
        width_multiple: active feature counts are snapped to multiples of this.
    """

    def __init__(
        self,
        scale: Count = 4,
        n_resgroups: Count = 10,
        n_resblocks: Count = 20,
        n_feats: Count = 64,
        reduction: Count = 16,
        res_scale: float = 1.0,
        rgb_range: float = 1.0,
        width_multiple: Count = 8,
    ) -> None:
        super().__init__()
        if n_feats < reduction:
            raise ValueError(f"n_feats ({n_feats}) must be >= reduction ({reduction})")
        self.arch: dict[str, Any] = {
            "name": "rcan",
            "args": dict(
                scale=scale, n_resgroups=n_resgroups, n_resblocks=n_resblocks, n_feats=n_feats,
                reduction=reduction, res_scale=res_scale, rgb_range=rgb_range,
                width_multiple=width_multiple,
            ),
        }  # fmt: skip
        self.scale = scale
        self.width_multiple = width_multiple
        F = n_feats
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = conv3x3(Fixed(3), Split(F))
        self.body = nn.Sequential(
            *[ResidualGroup(n_resblocks, F, reduction, res_scale) for _ in range(n_resgroups)]
        )
        self.body_end = conv3x3(Split(F), Split(F))
        self.upsample = upsampler(scale, F)
        self.tail = conv3x3(Split(F), Fixed(3))
        self.add_mean = MeanShift(rgb_range, sign=+1)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            x = self.sub_mean(x)  # (N, 3, H, W)
            x = self.head(x)  # (N, f, H, W), f = snap(F, width)
            x = x + self.body_end(self.body(x))  # long skip, (N, f, H, W)
            x = self.upsample(x)  # (N, f, sH, sW)
            return self.add_mean(self.tail(x))  # (N, 3, sH, sW)
