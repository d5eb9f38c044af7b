"""SR networks, their registry, and the channel-split (CSD) slicing they share.

Every registered model is built from ``SlimConv2d`` and has ``forward(x, width=1.0)``, ``scale``,
``width_multiple`` and ``arch = {"name": ..., "args": {...}}`` so that
``build_model(arch["name"], **arch["args"])`` rebuilds it from a checkpoint alone.

>>> m = build_model("edsr_baseline", scale=2)
>>> narrow = materialize(m, 0.25)  # stand-alone 16-feature student with copies of the slices
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from edgesr.models.edsr import EDSR, edsr_baseline, edsr_full
from edgesr.models.plain import PlainSR
from edgesr.models.quicksrnet import QuickSRNet, quicksrnet_large, quicksrnet_medium, quicksrnet_small
from edgesr.models.rcan import RCAN
from edgesr.models.reparam import ECBSR, count_rep_blocks, reparameterize
from edgesr.models.slim import (
    Cat,
    Fixed,
    SlimConv2d,
    Split,
    active_index,
    materialize,
    snap_channels,
    width_scope,
)
from edgesr.models.xlsr import XLSR
from edgesr.registry import Registry
from edgesr.schema import bound_errors

__all__ = [
    "ECBSR",
    "EDSR",
    "MODELS",
    "RCAN",
    "Cat",
    "Fixed",
    "PlainSR",
    "QuickSRNet",
    "SlimConv2d",
    "Split",
    "XLSR",
    "active_index",
    "arch_channels",
    "build_model",
    "candidate_widths",
    "count_macs",
    "count_params",
    "count_rep_blocks",
    "materialize",
    "model_signature",
    "reparameterize",
    "snap_channels",
    "students_at",
    "width_scope",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("edsr")(EDSR)
MODELS.register("edsr_baseline")(edsr_baseline)
MODELS.register("edsr_full")(edsr_full)
MODELS.register("rcan")(RCAN)
MODELS.register("ecbsr")(ECBSR)
MODELS.register("plain")(PlainSR)
MODELS.register("quicksrnet")(QuickSRNet)
MODELS.register("quicksrnet_small")(quicksrnet_small)
MODELS.register("quicksrnet_medium")(quicksrnet_medium)
MODELS.register("quicksrnet_large")(quicksrnet_large)
MODELS.register("xlsr")(XLSR)


def model_signature(name: str) -> inspect.Signature:
    """Signature of the builder registered as ``name``, annotations resolved to real types."""
    return inspect.signature(MODELS.get(name), eval_str=True)


def build_model(name: str, **args: int | float | bool) -> nn.Module:
    """Build the registered model ``name``; unknown names and arguments raise with the valid ones."""
    builder = MODELS.get(name)
    sig = model_signature(name)
    unknown = sorted(set(args) - set(sig.parameters))
    if unknown:
        raise TypeError(f"model {name!r} got unknown args {unknown}; valid: {', '.join(sig.parameters)}")
    if wrong := bound_errors(sig, args):
        raise ValueError(f"model {name!r}: " + "; ".join(f"{k} {v}" for k, v in wrong.items()))
    return builder(**args)


def arch_channels(arch: dict, width: float) -> int:
    """Feature channels of `arch` (``{"name", "args"}``, as checkpoints and manifests carry it) at
    `width`: the one rule ``snap_channels(n_feats, width, width_multiple)``; 0 for a model without
    ``n_feats``."""
    args = arch.get("args", {})
    feats = int(args.get("n_feats", 0))
    return snap_channels(feats, width, int(args.get("width_multiple", 8))) if feats else 0


def candidate_widths(arch: dict) -> list[float]:
    """Widths k * width_multiple / n_feats, k = 1 .. n_feats / width_multiple (each a distinct student)."""
    model = build_model(arch["name"], **arch["args"])  # defaults filled in (n_feats, width_multiple)
    args = model.arch["args"]
    n, m = int(args["n_feats"]), int(args.get("width_multiple", 8))
    return [round(k * m / n, 6) for k in range(1, n // m + 1)]


def students_at(full: nn.Module, widths: Iterable[float]) -> Iterator[tuple[float, nn.Module]]:
    """(width, stand-alone student of `full` as it deploys) for each width, made one at a time as it
    is asked for: re-parameterisable blocks collapsed; width 1 of a model without them is `full`
    itself, not a copy."""
    for w in widths:
        yield w, reparameterize(full if w == 1.0 else materialize(full, w))


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (frozen ones too unless ``trainable_only``); shared ones counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_hw: tuple[int, int], width: float = 1.0) -> int:
    """Multiply-accumulates of all convs for one ``(1, 3, H, W)`` input at ``width``.

    Counted from the tensors each conv really sees (forward hooks), so a sliced forward at
    ``width < 1`` and the materialized student give the same figure. Works on ``meta`` models.
    Re-parameterisable blocks count as the one 3x3 conv they deploy as (training costs more).
    """
    model = reparameterize(model)
    total = 0

    def hook(conv: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += out[0].numel() * (inputs[0].shape[1] // conv.groups) * kh * kw

    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, *input_hw, device=param.device if param is not None else None)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            # Only pass width when asked: materialized and third-party models may not take it.
            if width == 1.0:
                model(x)
            else:
                model(x, width=width)
    finally:
        for h in handles:
            h.remove()
    return total
