"""Test helper (was edgesr.quant.graphs): which compute ops of a converted PT2E graph run in int8.

In a converted graph an op runs in int8 on a backend when it sits in a q/dq "sandwich": every
tensor input comes from a dequantize and its output goes only to quantize ops. Anything else is a
float island: the backend runs it in float (or the delegate splits the graph there).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.fx import GraphModule, Node

__all__ = ["float_islands", "io_quantized", "op_name"]


def _is_q(n: object) -> bool:
    """A quantize op (by name: the ops exist only once torchao is imported)."""
    return (
        isinstance(n, Node) and n.op == "call_function" and "quantized_decomposed.quantize_" in str(n.target)
    )


def _is_dq(n: object) -> bool:
    return (
        isinstance(n, Node)
        and n.op == "call_function"
        and "quantized_decomposed.dequantize_" in str(n.target)
    )


def op_name(n: Node) -> str:
    """`aten.conv2d.default` -> `conv2d`."""
    return str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)


def _is_tensor(n: object) -> bool:
    return isinstance(n, Node) and isinstance(n.meta.get("val"), torch.Tensor)


def _compute_nodes(gm: GraphModule) -> list[Node]:
    return [
        n for n in gm.graph.nodes
        if n.op == "call_function" and not _is_q(n) and not _is_dq(n) and _is_tensor(n)
    ]  # fmt: skip


def _weight_like(n: Node) -> bool:
    """A dequantized or float constant (weights, biases, mean shifts), not an activation."""
    while _is_q(n) or _is_dq(n):
        n = n.args[0]
    return n.op == "get_attr"


_FUSABLE_ACTS = ("relu", "relu_", "hardtanh", "hardtanh_", "clamp", "clamp_")


def _fused_act(n: Node) -> Node | None:
    """The activation fused into producer `n` (its only user), as int8 kernels do for conv+relu."""
    users = list(n.users)
    if len(users) == 1 and users[0].op == "call_function" and op_name(users[0]) in _FUSABLE_ACTS:
        return users[0]
    return None


def float_islands(gm: GraphModule) -> Counter[str]:
    """Op name -> count of compute ops of converted `gm` that are not in a q/dq sandwich.

    A float bias or constant operand does not make an op float (backends fold them); a float
    activation input or a float output does. An activation that is a producer's only user is fused
    into it (conv + relu is one int8 kernel) and judged with it.
    """
    out: Counter[str] = Counter()
    fused = set()
    for n in _compute_nodes(gm):
        if n in fused:
            continue
        acts = [a for a in n.all_input_nodes if _is_tensor(a) and not _weight_like(a)]
        float_in = not all(_is_dq(a) for a in acts)
        last = n
        act = _fused_act(n) if not float_in else None
        while act is not None:
            fused.add(act)
            last, act = act, _fused_act(act)
        float_out = not last.users or not all(_is_q(u) for u in last.users)
        if float_in or float_out:
            out[op_name(n)] += 1
    return out


def io_quantized(gm: GraphModule) -> tuple[bool, bool]:
    """(input, output) of converted `gm` are int8: the input feeds only quantize ops, and the
    returned value is a dequantize of an int8 tensor (backends then keep int8 at the boundary)."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder" and _is_tensor(n)]
    in_q = all(_is_q(u) for x in inputs for u in x.users if u.op == "call_function")  # not _guards_fn
    out_q = all(_is_dq(o) for o in gm.graph.output_node().args[0] if isinstance(o, Node))
    return in_q, out_q
