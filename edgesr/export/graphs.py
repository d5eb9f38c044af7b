"""Delegate-friendly upsamplers: every `nn.PixelShuffle` rewritten as an equivalent graph.

Converters lower `nn.PixelShuffle(r)` to rank-5/6 RESHAPE + TRANSPOSE chains (TFLite, ExecuTorch),
which mobile GPU/NPU delegates often reject. `rewrite_upsampler(model, variant)` returns a copy of
the model computing the same function (float32, to rounding) with the shuffle written as:

- "depth_to_space": the convs feeding the shuffle get their output channels reordered from
  PyTorch's CRD order (channel ``c*r*r + dy*r + dx``) to the DCR order of TFLite DEPTH_TO_SPACE and
  ONNX DepthToSpace (channel ``(dy*r + dx)*C + c``), then `DepthToSpace(r)` (a DCR reshape/permute;
  exported to ONNX as one ``DepthToSpace(mode="DCR")`` node).
- "transposed_conv": a frozen `nn.ConvTranspose2d(C*r*r, C, r, stride=r)` with one-hot weights.
- "pixelshuffle": the model unchanged.

>>> student = rewrite_upsampler(materialize(build_model("edsr", scale=4), 0.25), "depth_to_space")
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from edgesr.models import reparameterize
from edgesr.targets import UPSAMPLERS

__all__ = ["DepthToSpace", "crd_to_dcr", "one_hot_transposed_conv", "rewrite_upsampler", "upsampler_op"]

# Autograd nodes that act on each channel alone (so a channel permutation commutes with them) and
# that `depth_to_space` may therefore look through between the shuffle and the convs feeding it.
# Multiplication is not here: MulBackward0 cannot tell a scalar from a per-channel tensor.
_CHANNELWISE = frozenset(
    {"AddBackward0", "SubBackward0", "ClampBackward1", "ClampMinBackward0", "ClampMaxBackward0",
     "ReluBackward0", "HardtanhBackward0", "LeakyReluBackward0"}
)  # fmt: skip
PROBE_HW = (8, 8)  # LR size of the probe forward that finds what feeds each shuffle, pixels


class _DepthToSpaceOnnx(torch.autograd.Function):
    """The DCR reshape/permute, exported by the TorchScript ONNX exporter as one DepthToSpace node
    (ONNX defines mode="DCR" as exactly this reshape/transpose/reshape)."""

    @staticmethod
    def forward(ctx: object, x: Tensor, r: int) -> Tensor:
        return _dcr(x, r)

    @staticmethod
    def symbolic(g: object, x: object, r: int) -> object:
        return g.op("DepthToSpace", x, blocksize_i=r, mode_s="DCR")  # type: ignore[attr-defined]


def _dcr(x: Tensor, r: int) -> Tensor:
    n, crr, h, w = x.shape
    c = crr // (r * r)
    # (N, r, r, C, H, W) -> (N, C, H, r, W, r) -> (N, C, rH, rW)
    return x.view(n, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * r, w * r)


class DepthToSpace(nn.Module):
    """DCR depth-to-space (TFLite DEPTH_TO_SPACE, ONNX DepthToSpace mode="DCR") on NCHW tensors.

    Input channel ``(dy*r + dx)*C + c`` at ``(h, w)`` goes to output ``(c, h*r + dy, w*r + dx)``:
    ``(N, r*r*C, H, W) -> (N, C, r*H, r*W)``. Equals ``pixel_shuffle`` of the input with its
    channels reordered by `crd_to_dcr`.
    """

    def __init__(self, block_size: int) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size

    def forward(self, x: Tensor) -> Tensor:
        if torch.onnx.is_in_onnx_export():  # before the check: the tracer would warn on a shape test
            return _DepthToSpaceOnnx.apply(x, self.block_size)
        if x.shape[1] % (self.block_size**2):
            raise ValueError(
                f"DepthToSpace({self.block_size}): {x.shape[1]} channels is not a multiple of r*r"
            )
        return _dcr(x, self.block_size)

    def extra_repr(self) -> str:
        return f"block_size={self.block_size}, mode=DCR"


def crd_to_dcr(channels: int, r: int) -> Tensor:
    """Index ``perm`` (LongTensor, ``channels`` long) with ``dcr = crd[perm]``: DCR channel
    ``(dy*r + dx)*C + c`` is CRD channel ``c*r*r + dy*r + dx``, ``C = channels / r^2``."""
    if channels % (r * r):
        raise ValueError(f"{channels} channels is not a multiple of r*r = {r * r}")
    return torch.arange(channels).view(channels // (r * r), r * r).t().reshape(-1)


def one_hot_transposed_conv(channels: int, r: int) -> nn.ConvTranspose2d:
    """Frozen ``ConvTranspose2d(channels*r*r, channels, r, stride=r)`` that is exactly ``PixelShuffle(r)``:
    weight ``[c*r*r + dy*r + dx, c, dy, dx] = 1``, all others 0, no bias."""
    conv = nn.ConvTranspose2d(channels * r * r, channels, kernel_size=r, stride=r, bias=False)
    i = torch.arange(channels * r * r)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[i, i // (r * r), (i % (r * r)) // r, i % r] = 1.0
    conv.weight.requires_grad_(False)
    return conv


def upsampler_op(variant: str, channels: int, r: int) -> nn.Module:
    """The op that takes ``PixelShuffle(r)``'s place on ``channels`` input channels in ``variant``'s
    graph. For depth_to_space the feeding convs must also be reordered (``rewrite_upsampler`` does);
    alone, as a latency-table layer, the op is timed as it is (the same op, other channel order)."""
    if variant == "pixelshuffle":
        return nn.PixelShuffle(r)
    if variant == "depth_to_space":
        return DepthToSpace(r)
    if variant == "transposed_conv":
        return one_hot_transposed_conv(channels // r**2, r)
    raise ValueError(f"unknown upsampler variant {variant!r}; valid: {', '.join(UPSAMPLERS)}")


def rewrite_upsampler(model: nn.Module, variant: str) -> nn.Module:
    """A copy of ``model`` whose every ``nn.PixelShuffle`` is written as ``variant`` (see the module
    docstring); same outputs, same ``scale``/``arch``/``materialized_width``/training mode.

    A full channel-split model is rewritten at width 1.0: reordered convs become plain ``nn.Conv2d``,
    so running the copy at a narrower width fails loudly (materialize the student first). A model
    with re-parameterisable blocks is collapsed first (`edgesr.models.reparameterize`): the rewrite
    is a deployment form, and only single convs can have their output channels reordered.
    Raises ValueError for an unknown variant, a model without PixelShuffle, or (depth_to_space) a
    shuffle fed by something other than convs through channel-wise ops, naming the module.
    """
    if variant not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler variant {variant!r}; valid: {', '.join(UPSAMPLERS)}")
    if variant == "pixelshuffle":
        return model
    shuffles = [name for name, m in model.named_modules() if isinstance(m, nn.PixelShuffle)]
    if not shuffles:
        raise ValueError(
            f"{type(model).__name__} has no nn.PixelShuffle: there is no sub-pixel upsampler to rewrite"
        )
    collapsed = reparameterize(model)
    out = copy.deepcopy(collapsed) if collapsed is model else collapsed
    training = out.training
    out.eval()
    channels, feeders = _probe(out, shuffles, find_feeders=variant == "depth_to_space")
    if variant == "depth_to_space":
        _reorder_feeders(out, shuffles, feeders)
    for name in shuffles:
        r = out.get_submodule(name).upscale_factor
        _set_submodule(out, name, upsampler_op(variant, channels[name], r))
    _check_same(model, out, variant)
    return out.train(training)


def _probe(
    model: nn.Module, shuffles: list[str], find_feeders: bool
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """One tiny forward with hooks: each shuffle's input channels and, with `find_feeders`, the convs
    whose outputs reach it through channel-wise ops only (the autograd graph walked back from it)."""
    conv_of: dict[int, str] = {}  # id(ConvolutionBackward node) -> conv module name
    alive: list[object] = []  # keep the nodes alive so their ids stay unique
    inputs: dict[str, Tensor] = {}

    def on_conv(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...], y: Tensor) -> None:
            conv_of[id(y.grad_fn)] = name
            alive.append(y.grad_fn)

        return hook

    def on_shuffle(name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            if name in inputs:
                raise ValueError(f"PixelShuffle {name!r} is called more than once per forward")
            inputs[name] = args[0]

        return hook

    handles = [
        m.register_forward_hook(on_conv(n)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
    ] + [model.get_submodule(n).register_forward_pre_hook(on_shuffle(n)) for n in shuffles]
    p = next(model.parameters(), None)
    x = torch.rand(1, 3, *PROBE_HW, device=p.device if p is not None else None, requires_grad=True)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in shuffles if n not in inputs]
    if missing:
        raise ValueError(f"PixelShuffle {', '.join(map(repr, missing))} is not used by the forward pass")
    channels = {n: int(t.shape[1]) for n, t in inputs.items()}
    feeders = {n: _feeding_convs(n, inputs[n].grad_fn, conv_of) for n in shuffles} if find_feeders else {}
    return channels, feeders


def _feeding_convs(shuffle: str, node: object, conv_of: dict[int, str]) -> list[str]:
    found: list[str] = []
    stack, seen = [node], set()
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if id(fn) in conv_of:
            found.append(conv_of[id(fn)])
            continue
        op = fn.name()  # type: ignore[attr-defined]
        if op not in _CHANNELWISE:
            raise ValueError(
                f"PixelShuffle {shuffle!r}: its input is computed by {op}, not by convs through channel-wise "
                "ops, so the depth_to_space rewrite cannot reorder its channels; use upsampler "
                "'transposed_conv' (or 'pixelshuffle') for this model"
            )
        stack.extend(nxt for nxt, _ in fn.next_functions)  # type: ignore[attr-defined]
    if not found:
        raise ValueError(f"PixelShuffle {shuffle!r}: no conv feeds it, nothing to reorder")
    return sorted(set(found))


def _reorder_feeders(model: nn.Module, shuffles: list[str], feeders: dict[str, list[str]]) -> None:
    owner: dict[str, str] = {}
    for name in shuffles:
        for conv_name in feeders[name]:
            if conv_name in owner:
                raise ValueError(
                    f"conv {conv_name!r} feeds both PixelShuffle {owner[conv_name]!r} and {name!r}; "
                    "its channels cannot be reordered for both"
                )
            owner[conv_name] = name
            conv = model.get_submodule(conv_name)
            if conv.groups != 1:
                raise ValueError(
                    f"conv {conv_name!r} feeding PixelShuffle {name!r} is grouped; cannot reorder"
                )
            r = model.get_submodule(name).upscale_factor
            _set_submodule(model, conv_name, _reordered_conv(conv, crd_to_dcr(conv.out_channels, r)))


def _reordered_conv(conv: nn.Conv2d, perm: Tensor) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` (never a width-sliced one) with output channel ``j`` = ``conv``'s ``perm[j]``."""
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )  # fmt: skip
    perm = perm.to(conv.weight.device)
    with torch.no_grad():
        new.weight.copy_(conv.weight[perm])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[perm])
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)
    return new


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _check_same(before: nn.Module, after: nn.Module, variant: str) -> None:
    """Guard against a feeder conv whose output is also used elsewhere, or a per-channel constant
    between conv and shuffle that the autograd walk cannot see: compare outputs on the probe."""
    p = next(after.parameters(), None)
    if p is not None and p.device.type == "meta":
        return
    device = p.device if p is not None else None
    x = torch.rand(1, 3, *PROBE_HW, generator=torch.Generator().manual_seed(0)).to(device)
    training = before.training
    with torch.no_grad():
        want, got = before.eval()(x), after(x)
    before.train(training)
    if not torch.allclose(got, want, rtol=1e-5, atol=1e-5):
        raise RuntimeError(
            f"the {variant} rewrite of {type(before).__name__} changed its output "
            f"(max abs diff {(got - want).abs().max().item():.3g}); a conv feeding a PixelShuffle is "
            "probably used elsewhere too"
        )
