"""Channel splitting (CSD's CSSR-Net): one set of teacher-sized weights, students use leading slices.

A student of width ``w`` in (0, 1] runs every conv with the *leading* slice of the shared weights
(no channel ranking). This file is the only place that knows how to slice; models only say, per
conv, how its input and output channels split (a channel spec):

- ``Fixed(n)``: never sliced (RGB in/out, frozen residual convs).
- ``Split(features, mult, div)``: ``snap(features, w) * mult // div`` leading channels; ``mult`` is
  ``r*r`` before ``PixelShuffle(r)``, ``div`` is the channel-attention reduction.
- ``Cat(parts)``: a concatenation; the leading channels of *each* part (not the first k channels of
  the whole, the CARN bug in the official CSD code).

The width travels in a context variable set by ``width_scope`` (each model's ``forward(x, width)``
opens one), so model code never threads ``width`` through its sub-modules. ``materialize`` turns a
width into a stand-alone narrow network of plain ``nn.Conv2d`` holding copies of the slices, which is
what gets exported.
"""

from __future__ import annotations

import contextvars
import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgesr.errors import UsageError

__all__ = [
    "Cat",
    "ChannelSpec",
    "Fixed",
    "SlimConv2d",
    "Split",
    "active_index",
    "check_width",
    "current_width",
    "materialize",
    "snap_channels",
    "width_scope",
]


def check_width(width: float) -> float:
    """Return ``width`` as a float, or raise ValueError naming it when it is not in (0, 1]."""
    w = float(width)
    if not (0.0 < w <= 1.0):  # also rejects NaN
        raise UsageError(f"width must be in (0, 1], got {width!r}")
    return w


def _check_multiple(multiple: int) -> int:
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"width multiple must be a positive integer, got {multiple!r}")
    return int(multiple)


def snap_channels(features: int, width: float, multiple: int = 8) -> int:
    """Active channel count of a ``features``-wide layer at ``width``.

    ``round(features * width / multiple) * multiple`` clamped to ``[min(multiple, features), features]``;
    rounding is half-up (not Python's banker's rounding) so 2.5 groups snap to 3. Width 1.0 always
    gives ``features``, even when ``features`` is not a multiple of ``multiple``. Multiples of 8 keep
    phone NPUs / GEMM kernels on their fast paths; ``multiple=1`` is plain rounding with minimum 1.

    >>> snap_channels(64, 0.25), snap_channels(256, 0.25), snap_channels(32, 0.25)
    (16, 64, 8)
    """
    w = check_width(width)
    m = _check_multiple(multiple)
    if features < 1:
        raise ValueError(f"features must be >= 1, got {features}")
    if w == 1.0:
        return features
    snapped = math.floor(features * w / m + 0.5) * m
    return max(min(m, features), min(snapped, features))


# ---------------------------------------------------------------------------------------------
# Channel specs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixed:
    """``n`` channels that are never sliced (RGB images, frozen residual convs)."""

    n: int

    @property
    def full(self) -> int:
        return self.n

    def active(self, width: float, multiple: int) -> int:
        return self.n

    def index(self, width: float, multiple: int) -> slice | Tensor:
        return slice(0, self.n)


@dataclass(frozen=True)
class Split:
    """``features * mult // div`` channels at full width, ``snap(features, w) * mult // div`` active.

    ``Split(F)`` is a body feature map; ``Split(F, mult=r*r)`` feeds ``PixelShuffle(r)``, whose output
    channel ``c`` reads input channels ``c*r*r .. c*r*r + r*r - 1``, so the leading ``r*r*f`` inputs
    are exactly the first ``f`` outputs; ``Split(F, div=reduction)`` is a channel-attention squeeze.
    """

    features: int
    mult: int = 1
    div: int = 1

    @property
    def full(self) -> int:
        return self.features * self.mult // self.div

    def active(self, width: float, multiple: int) -> int:
        return max(1, snap_channels(self.features, width, multiple) * self.mult // self.div)

    def index(self, width: float, multiple: int) -> slice | Tensor:
        return slice(0, self.active(width, multiple))


@dataclass(frozen=True)
class Cat:
    """Concatenation ``torch.cat(parts, dim=1)``: the active channels are each part's leading slice."""

    parts: tuple[ChannelSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))  # accept lists, stay hashable
        if not self.parts:
            raise ValueError("Cat needs at least one part")

    @property
    def full(self) -> int:
        return sum(p.full for p in self.parts)

    def active(self, width: float, multiple: int) -> int:
        return sum(p.active(width, multiple) for p in self.parts)

    def index(self, width: float, multiple: int) -> slice | Tensor:
        pieces, offset = [], 0
        for part in self.parts:
            pieces.append(torch.arange(part.active(width, multiple)) + offset)
            offset += part.full
        idx = torch.cat(pieces)
        n = idx.numel()
        if n and int(idx[-1]) == n - 1:  # strictly increasing, so this means idx == arange(n)
            return slice(0, n)
        return idx


ChannelSpec = Fixed | Split | Cat


def active_index(spec: ChannelSpec, width: float, multiple: int = 8) -> slice | Tensor:
    """Channels of ``spec`` a width-``width`` student uses: a slice when contiguous, else a LongTensor."""
    return spec.index(check_width(width), _check_multiple(multiple))


def _as_spec(spec: ChannelSpec | int) -> ChannelSpec:
    return Fixed(spec) if isinstance(spec, int) else spec


def _take(t: Tensor, idx: slice | Tensor, dim: int) -> Tensor:
    """``t`` restricted to ``idx`` along ``dim``; a slice gives a view, so gradients land in place."""
    if isinstance(idx, slice):
        return t.narrow(dim, idx.start, idx.stop - idx.start)
    return t.index_select(dim, idx.to(t.device))


# ---------------------------------------------------------------------------------------------
# Width context
# ---------------------------------------------------------------------------------------------

_WIDTH: contextvars.ContextVar[tuple[float, int]] = contextvars.ContextVar("edgesr_width", default=(1.0, 8))


@contextmanager
def width_scope(width: float, multiple: int = 8) -> Iterator[None]:
    """Run the enclosed ``SlimConv2d`` calls at ``width`` (snapping to ``multiple``); re-entrant.

    A context variable rather than a ``width`` argument on every sub-module keeps model code
    reading like the paper, and is thread- and asyncio-safe.
    """
    token = _WIDTH.set((check_width(width), _check_multiple(multiple)))
    try:
        yield
    finally:
        _WIDTH.reset(token)


def current_width() -> tuple[float, int]:
    """``(width, multiple)`` set by the innermost ``width_scope``; ``(1.0, 8)`` outside any."""
    return _WIDTH.get()


# ---------------------------------------------------------------------------------------------
# The sliceable conv
# ---------------------------------------------------------------------------------------------


class SlimConv2d(nn.Conv2d):
    """``nn.Conv2d`` sized for the full width that runs on leading slices at the current width.

    Shapes: ``(N, in_spec.active(w), H, W) -> (N, out_spec.active(w), H', W')``. At width 1.0 it is
    exactly ``nn.Conv2d``. An ``int`` spec means ``Fixed(int)``.

    Grouped (``groups=g > 1``): both specs are ``Cat((part,) * g)``, g identical parts, so that every
    group keeps its own leading channels at every width (XLSR's 4-group convs); the weight's input
    dimension is then one group's, sliced by ``part``.
    """

    def __init__(
        self,
        in_spec: ChannelSpec | int,
        out_spec: ChannelSpec | int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str | None = None,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        groups: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        in_spec, out_spec = _as_spec(in_spec), _as_spec(out_spec)
        if groups != 1:
            for role, spec in (("in_spec", in_spec), ("out_spec", out_spec)):
                if not (isinstance(spec, Cat) and len(spec.parts) == groups and len(set(spec.parts)) == 1):
                    raise ValueError(
                        f"SlimConv2d(groups={groups}): {role} must be Cat((part,) * {groups}), got {spec}"
                    )
        if padding is None:  # "same" for odd kernels, the SR default
            ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = (ks[0] // 2, ks[1] // 2)
        super().__init__(
            in_spec.full, out_spec.full, kernel_size, stride=stride, padding=padding, dilation=dilation,
            bias=bias, padding_mode=padding_mode, device=device, dtype=dtype, groups=groups,
        )  # fmt: skip
        self.in_spec = in_spec
        self.out_spec = out_spec

    def sliced_weight(self, width: float, multiple: int) -> tuple[Tensor, Tensor | None]:
        """``(weight[out_idx][:, in_idx], bias[out_idx])`` of the width-``width`` student."""
        out_idx = self.out_spec.index(width, multiple)
        # a grouped weight's input dimension is one group's channels (the spec's parts are identical)
        in_part = self.in_spec.parts[0] if self.groups > 1 else self.in_spec  # type: ignore[union-attr]
        in_idx = in_part.index(width, multiple)
        weight = _take(_take(self.weight, out_idx, 0), in_idx, 1)
        bias = None if self.bias is None else _take(self.bias, out_idx, 0)
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        width, multiple = current_width()
        if width == 1.0:  # every spec is whole at width 1 (snap_channels guarantees it)
            return super().forward(x)
        weight, bias = self.sliced_weight(width, multiple)
        if x.shape[1] != weight.shape[1] * self.groups:
            raise ValueError(
                f"SlimConv2d({self.in_spec}, {self.out_spec}) at width {width}: got {x.shape[1]} input "
                f"channels, expected {weight.shape[1] * self.groups}"
            )
        return self._conv_forward(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.in_spec}, {self.out_spec}, " + super().extra_repr()


# ---------------------------------------------------------------------------------------------
# Stand-alone narrow students
# ---------------------------------------------------------------------------------------------


def _narrow_conv(conv: SlimConv2d, width: float, multiple: int) -> nn.Conv2d:
    weight, bias = conv.sliced_weight(width, multiple)
    plain = nn.Conv2d(
        weight.shape[1] * conv.groups, weight.shape[0], conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=bias is not None, padding_mode=conv.padding_mode,
        device=weight.device, dtype=weight.dtype, groups=conv.groups,
    )  # fmt: skip
    with torch.no_grad():
        plain.weight.copy_(weight)
        if bias is not None:
            plain.bias.copy_(bias)
    plain.weight.requires_grad_(conv.weight.requires_grad)
    if bias is not None:
        plain.bias.requires_grad_(conv.bias.requires_grad)
    plain.train(conv.training)
    return plain


def materialize(model: nn.Module, width: float, multiple: int | None = None) -> nn.Module:
    """A deep copy of ``model`` whose ``SlimConv2d`` are plain ``nn.Conv2d`` with copies of the slices.

    The result has the student's real channel counts (fewer parameters, exportable, no width
    context needed); call it as ``narrow(x)``: its convs ignore any width. ``multiple`` defaults to
    ``model.width_multiple`` (8 when absent). The copy carries ``materialized_width`` and the full
    model's ``arch``, so a checkpoint of it is rebuilt by ``materialize(build_model(...), width)``
    followed by ``load_state_dict``. Frozen parameters stay frozen.
    """
    w = check_width(width)
    if hasattr(model, "materialized_width"):
        raise ValueError(f"model is already materialized at width {model.materialized_width}")
    m = _check_multiple(getattr(model, "width_multiple", 8) if multiple is None else multiple)
    if isinstance(model, SlimConv2d):
        narrow: nn.Module = _narrow_conv(model, w, m)
    else:
        narrow = copy.deepcopy(model)
    replaced: dict[int, nn.Conv2d] = {}  # a conv shared by two parents stays shared
    for parent in list(narrow.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SlimConv2d):
                if id(child) not in replaced:
                    replaced[id(child)] = _narrow_conv(child, w, m)
                setattr(parent, name, replaced[id(child)])
    narrow.materialized_width = w
    narrow.arch = copy.deepcopy(getattr(model, "arch", None))
    return narrow
