"""QuickSRNet: a plain 3x3-conv SR net for fast mobile inference, as a channel-split edgesr model.

Paper: G. Berger, M. Dhingra, A. Mercier, Y. Savani, S. Panchal, F. Porikli, "QuickSRNet: Plain
Single-Image Super-Resolution Architecture for Faster Inference on Mobile Platforms", CVPR
Workshops (MAI) 2023, arXiv:2303.04336.

Written for edgesr from the paper and from the public configurations read (not copied) in
Qualcomm's reference code:
- quic/aimet-model-zoo, ``aimet_zoo_torch/quicksrnet/model/models.py`` (``QuickSRNetBase`` and the
  Small / Medium / Large variants) and ``.../model_cards/quicksrnet_*_w8a8.json``;
- quic/ai-hub-models, ``qai_hub_models/models/quicksrnet{small,medium,large}/info.yaml`` (the
  published parameter counts: 33.3K, 61.0K and 436K at x4).

The network, ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, rH, rW)``:

    conv3x3 3->F, clip(0, 1), n_intermediate x [conv3x3 F->F, clip(0, 1)], conv3x3 F->3r^2
    (+ anchor(x) when ``anchor``), clip(0, 1), PixelShuffle(r)

| preset | F | n_intermediate | input-to-output anchor |
|---|---|---|---|
| ``quicksrnet_small`` | 32 | 2 | no (nearest taps in the last conv's initialisation instead) |
| ``quicksrnet_medium`` | 32 | 5 | no (nearest taps in the last conv's initialisation instead) |
| ``quicksrnet_large`` | 64 | 11 | yes |

Two points of the reference design are kept because they are the point of the architecture:
- Activations are clipped ReLUs (hardtanh to [0, 1]), not ReLUs: bounded activations quantize to
  INT8 without range outliers.
- Every 3x3 conv is initialised as ``default init + identity`` (the centre tap of channel ``i`` ->
  ``i`` gets +1, on top of PyTorch's default initialisation, as in the reference), so each conv
  starts as ``x + conv(x)`` and the body carries the RGB input in its first three channels. Small
  and medium drop the input-to-output add at run time: their last conv's initialisation also
  gets +1 from feature channel ``c`` (= input colour ``c``) to the ``r*r`` sub-pixel channels of
  ``c``, i.e. nearest upsampling, so the net starts as nearest upsampling plus the contribution
  of the default-initialised weights (which training then shapes into the residual), without an
  add in the graph. Large keeps the add (``anchor=True``) through
  edgesr's frozen 1x1 ``nearest_conv`` (plain.py, 3 x 3r^2 weights, no bias); the reference's
  anchor is the same 1x1 conv left trainable, with a zero-initialised bias (at x4: 192 trainable
  parameters there, 144 frozen ones here).

Channel splitting: every body conv is ``Split(F)`` (the leading ``snap(F, w)`` features run at
width ``w``); the identity taps are on the leading channels, so every student has them too.
The output clip is ``clamp``: the reference applies it in training as
well, which is the default here; a clamp passes no gradient for pixels outside [0, 1], so
``clamp=False`` trains with the unclipped output (and deploys with it unclipped, unless a clamp is
added back).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor, nn

from edgesr.models.plain import nearest_conv
from edgesr.models.slim import Fixed, SlimConv2d, Split, width_scope
from edgesr.schema import AtLeast, Count

__all__ = ["QuickSRNet", "quicksrnet_large", "quicksrnet_medium", "quicksrnet_small"]


def _add_identity(conv: nn.Conv2d) -> None:
    """``weight[i, i, centre] += 1`` for ``i < min(in, out)``: the conv starts as ``x + conv(x)``."""
    cy, cx = conv.kernel_size[0] // 2, conv.kernel_size[1] // 2
    n = min(conv.in_channels, conv.out_channels)
    with torch.no_grad():
        idx = torch.arange(n)
        conv.weight[idx, idx, cy, cx] += 1.0


def _add_nearest(conv: nn.Conv2d, scale: int) -> None:
    """``weight[o, o // r^2, centre] += 1`` for the ``3*r*r`` outputs: the conv starts as
    ``conv(x) + nearest(x[:, :3])`` once shuffled (feature channels 0..2 carry RGB at init)."""
    cy, cx = conv.kernel_size[0] // 2, conv.kernel_size[1] // 2
    with torch.no_grad():
        out = torch.arange(conv.out_channels)
        conv.weight[out, out // (scale * scale), cy, cx] += 1.0


class QuickSRNet(nn.Module):
    """QuickSRNet with a channel-split width. ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, rH, rW)``.

    Args:
        scale: upscaling factor r (any integer >= 1; the paper's 1.5x variant is not provided).
        n_feats: features F at full width (32 small / medium, 64 large).
        n_intermediate: F -> F convs between the first (RGB -> F) and the last (F -> 3r^2) conv
            (2 small, 5 medium, 11 large).
        anchor: add a frozen nearest-upsampling 1x1 conv of the input to the last conv's output
            (QuickSRNet's input-to-output connection, used by the large preset); without it the
            last conv gets nearest-upsampling taps added to its initialisation instead.
        clamp: clip the output to [0, 1] before the shuffle, as the reference does in training and
            deployment (a clamp passes no gradient for out-of-range pixels).
        width_multiple: active feature counts are snapped to multiples of this.
    """

    def __init__(
        self,
        scale: Count = 4,
        n_feats: Count = 32,
        n_intermediate: Annotated[int, AtLeast(0)] = 2,
        anchor: bool = False,
        clamp: bool = True,
        width_multiple: Count = 8,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if n_intermediate < 0:
            raise ValueError(f"n_intermediate must be >= 0, got {n_intermediate}")
        if not anchor and n_feats < 3:
            raise ValueError(f"n_feats must be >= 3 without the anchor (0..2 carry RGB), got {n_feats}")
        self.arch: dict[str, Any] = {
            "name": "quicksrnet",
            "args": dict(
                scale=scale, n_feats=n_feats, n_intermediate=n_intermediate, anchor=anchor, clamp=clamp,
                width_multiple=width_multiple,
            ),
        }  # fmt: skip
        self.scale = scale
        self.width_multiple = width_multiple
        self.clamp = clamp
        F, r2 = n_feats, scale * scale
        layers: list[nn.Module] = [SlimConv2d(Fixed(3), Split(F), 3), nn.Hardtanh(0.0, 1.0)]
        for _ in range(n_intermediate):
            layers += [SlimConv2d(Split(F), Split(F), 3), nn.Hardtanh(0.0, 1.0)]
        self.body = nn.Sequential(*layers)
        self.last = SlimConv2d(Split(F), Fixed(3 * r2), 3)  # 3*r*r sub-pixels at every width
        self.nearest = nearest_conv(scale) if anchor else None
        self.shuffle = nn.PixelShuffle(scale)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                _add_identity(m)
        if not anchor:
            _add_nearest(self.last, scale)

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:
        with width_scope(width, self.width_multiple):
            y = self.last(self.body(x))  # (N, 3*r*r, H, W)
            if self.nearest is not None:
                y = y + self.nearest(x)
            if self.clamp:
                # Before the shuffle (it only permutes values): conv (+ add) + clip fuse on NPUs.
                y = y.clamp(0.0, 1.0)
            return self.shuffle(y)  # (N, 3, rH, rW)


def quicksrnet_small(
    scale: Count = 4,
    n_feats: Count = 32,
    n_intermediate: Annotated[int, AtLeast(0)] = 2,
    anchor: bool = False,
    clamp: bool = True,
    width_multiple: Count = 8,
) -> QuickSRNet:
    """QuickSRNet-Small: 32 features, 2 intermediate convs, no anchor (33,264 params at x4)."""
    return QuickSRNet(scale, n_feats, n_intermediate, anchor, clamp, width_multiple)


def quicksrnet_medium(
    scale: Count = 4,
    n_feats: Count = 32,
    n_intermediate: Annotated[int, AtLeast(0)] = 5,
    anchor: bool = False,
    clamp: bool = True,
    width_multiple: Count = 8,
) -> QuickSRNet:
    """QuickSRNet-Medium: 32 features, 5 intermediate convs, no anchor (61,008 params at x4)."""
    return QuickSRNet(scale, n_feats, n_intermediate, anchor, clamp, width_multiple)


def quicksrnet_large(
    scale: Count = 4,
    n_feats: Count = 64,
    n_intermediate: Annotated[int, AtLeast(0)] = 11,
    anchor: bool = True,
    clamp: bool = True,
    width_multiple: Count = 8,
) -> QuickSRNet:
    """QuickSRNet-Large: 64 features, 11 intermediate convs, frozen nearest anchor (435,840 params
    at x4, 144 of them the frozen anchor)."""
    return QuickSRNet(scale, n_feats, n_intermediate, anchor, clamp, width_multiple)
