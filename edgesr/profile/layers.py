"""A network as a list of latency-table layers, and a stand-alone module for each table entry.

`model_layers(model, (H, W))` traces the model with torch.fx, propagates shapes (on the meta device
when the model is there, so no real compute), and returns one
`LayerKey` per op that costs time: convs (kernel, c_in, c_out at their input resolution), ReLU,
element-wise adds and multiplies, PixelShuffle. MeanShift-style constant adds count as `add_bcast`.
`layer_module(key)` builds a one-op network of that key, which is exported and timed on the device
with the same runtime as the whole model (NetAdapt's per-layer lookup table).
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgesr.profile.store import LayerKey

KINDS = ("conv", "relu", "add", "add_bcast", "mul", "mul_scalar", "pixel_shuffle")
EPILOGUE = ("relu", "mul_scalar", "add", "add_bcast")  # element-wise ops fused into a preceding conv
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}


class UnsupportedLayerError(ValueError):
    """An op the latency model has no table kind for; callers fall back to whole-model timing."""


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = getattr(node, "meta", {}).get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _key(kind: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: int = 0) -> LayerKey:
    return LayerKey(kind, int(in_shape[1]), int(out_shape[1]), kernel, int(in_shape[2]), int(in_shape[3]))


class _Tracer(fx.Tracer):
    """Keeps every conv (edgesr's SlimConv2d included) a leaf, so it is one table entry."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualname)


def _ops(gm: fx.GraphModule) -> list[tuple[LayerKey, fx.Node, list[fx.Node]]]:
    """(key, node, tensor operands) of every op that costs time, in execution order."""
    mods = dict(gm.named_modules())
    ops: list[tuple[LayerKey, fx.Node, list[fx.Node]]] = []
    for node in gm.graph.nodes:
        out = _shape(node)
        tensors = [a for a in node.args if isinstance(a, fx.Node) and _shape(a) is not None]
        if node.op == "call_module":
            m = mods[node.target]
            src = _shape(node.args[0])
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 or m.stride != (1, 1) or m.kernel_size[0] != m.kernel_size[1]:
                    raise UnsupportedLayerError(f"conv {node.target}: only square, stride-1, ungrouped convs")
                ops.append((_key("conv", src, out, m.kernel_size[0]), node, tensors))
            elif isinstance(m, nn.ReLU):
                ops.append((_key("relu", src, out), node, tensors))
            elif isinstance(m, nn.PixelShuffle):
                ops.append((_key("pixel_shuffle", src, out, m.upscale_factor), node, tensors))
            elif isinstance(m, nn.Identity | nn.Dropout):
                continue
            elif len(list(m.children())) == 0:  # leaf modules fx kept (our models have none besides these)
                raise UnsupportedLayerError(
                    f"module {node.target} ({type(m).__name__}) has no latency-table kind"
                )
        elif node.op in ("call_function", "call_method"):
            if out is None:  # shape arithmetic, fx's guards on concrete arguments: no tensor work
                continue
            fn = node.target
            name = fn if isinstance(fn, str) else getattr(fn, "__name__", str(fn))
            if fn in _ADD or fn in _MUL or name in ("add", "mul", "add_", "mul_"):
                op = "add" if (fn in _ADD or name.startswith("add")) else "mul"
                full = [a for a in tensors if _shape(a) == out]
                if not full:
                    raise UnsupportedLayerError(f"{op} at {node.name}: no full-size tensor operand")
                kind = op if len(full) == 2 else ("add_bcast" if op == "add" else "mul_scalar")
                ops.append((_key(kind, out, out), node, tensors))
            elif name in ("relu", "relu_"):
                ops.append((_key("relu", out, out), node, tensors))
            elif name in ("getattr", "size", "dim", "contiguous", "getitem"):
                continue
            else:
                raise UnsupportedLayerError(f"op {name!r} at {node.name} has no latency-table kind")
    return ops


def model_layers(
    model: nn.Module, hw: tuple[int, int], in_channels: int = 3, fuse: bool = True
) -> list[LayerKey]:
    """The timed ops of `model` for a `(1, in_channels, H, W)` input, in execution order.

    With `fuse`, a conv and the element-wise ops that directly consume its output (ReLU, scalar
    multiply, residual add, bias add: its epilogue) form one entry of kind e.g. `conv+relu` or
    `conv+mul_scalar+add`: runtimes fuse such chains, and timing the chain as one network lets the
    table see whether this one does (nn-Meter measures fused kernels for the same reason).
    """
    concrete = {"width": 1.0} if "width" in inspect.signature(model.forward).parameters else None
    gm = fx.GraphModule(model, _Tracer().trace(model.eval(), concrete_args=concrete))
    param = next(model.parameters(), None)  # a meta-device model is traced without any compute
    device = param.device if param is not None else None
    ShapeProp(gm).propagate(torch.zeros(1, in_channels, *hw, device=device))
    layers: list[LayerKey] = []
    group: list[str] = []  # kinds of the open conv group
    head: LayerKey | None = None
    last: fx.Node | None = None
    for key, node, tensors in _ops(gm):
        joins = (
            fuse
            and head is not None
            and key.kind in EPILOGUE
            and last in tensors
            and len(last.users) == 1
            and (key.kind != "add" or head.c_in == head.c_out)  # the table's module adds its input
        )
        if joins:
            group.append(key.kind)
            last = node
            continue
        if head is not None:
            layers.append(
                LayerKey("+".join(group), head.c_in, head.c_out, head.kernel, head.height, head.width)
            )
            head, group = None, []
        if fuse and key.kind == "conv":
            head, group, last = key, ["conv"], node
        else:
            layers.append(key)
    if head is not None:
        layers.append(LayerKey("+".join(group), head.c_in, head.c_out, head.kernel, head.height, head.width))
    return layers


class _ConvGroup(nn.Module):
    """A conv and its fused epilogue, e.g. `conv+mul_scalar+add` = conv(x) * 0.5 + x."""

    def __init__(self, key: LayerKey) -> None:
        super().__init__()
        self.conv = nn.Conv2d(key.c_in, key.c_out, key.kernel, padding=key.kernel // 2)
        self.ops = key.kind.split("+")[1:]
        bad = [op for op in self.ops if op not in EPILOGUE]
        if bad or (("add" in self.ops) and key.c_in != key.c_out):
            raise UnsupportedLayerError(f"no module for fused layer {key.kind!r} ({key.c_in}->{key.c_out})")
        self.register_buffer("c", torch.full((1, key.c_out, 1, 1), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        for op in self.ops:
            if op == "relu":
                y = torch.relu(y)
            elif op == "mul_scalar":
                y = y * 0.5
            elif op == "add":
                y = y + x
            else:  # add_bcast
                y = y + self.c
        return y


class _Binary(nn.Module):
    """`x op x`: the element-wise op on a full-size tensor (operands read from one buffer, so it is a
    little kinder to caches than a residual add of two tensors)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: Tensor) -> Tensor:
        return x + x if self.op == "add" else x * x


class _Const(nn.Module):
    def __init__(self, op: str, c: int) -> None:
        super().__init__()
        self.op = op
        self.register_buffer("c", torch.full((1, c, 1, 1), 0.25))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c if self.op == "add" else x * 0.5


def layer_module(key: LayerKey) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """A network that runs just `key`'s op, and its input shape."""
    shape = (1, key.c_in, key.height, key.width)
    if key.repeat != 1:
        if key.c_in != key.c_out:
            raise UnsupportedLayerError(f"cannot chain {key.text}: channels change")
        one = replace(key, repeat=1)
        return nn.Sequential(*[layer_module(one)[0] for _ in range(key.repeat)]), shape
    # Wrapped in Sequential so the op is a sub-module, as in a real network (and traced as one).
    if key.kind == "conv":
        return nn.Sequential(nn.Conv2d(key.c_in, key.c_out, key.kernel, padding=key.kernel // 2)), shape
    if key.kind.startswith("conv+"):
        return _ConvGroup(key), shape
    if key.kind == "relu":
        return nn.Sequential(nn.ReLU()), shape
    if key.kind == "pixel_shuffle":
        return nn.Sequential(nn.PixelShuffle(key.kernel)), shape
    if key.kind in ("add", "mul"):
        return _Binary(key.kind), shape
    if key.kind in ("add_bcast", "mul_scalar"):
        return _Const(key.kind.split("_")[0], key.c_in), shape
    raise UnsupportedLayerError(f"no module for layer kind {key.kind!r} (kinds: {', '.join(KINDS)})")
