"""Which tensor's int8 quantization costs the PSNR: per-tensor sensitivity on real photos (issue 12).

    python -m benchmarks quant-layers STUDENT --backend xnnpack --images ColdRipple Path

Prepares and calibrates the student exactly as `quant-photos` does (a variant name picks the
calibration / tweaks), then replaces every observer by the fake quantization its qparams define
(activations per tensor, weights per channel), which reproduces the converted int8 graph (checked
and printed: PSNR of the emulation against `convert_pt2e`'s output). For each activation quantizer
it prints its range, its step in 8-bit image levels (1/255), and the Y-PSNR drop against float on
each image when ONLY that tensor is quantized ("alone") and when every tensor EXCEPT it is
("all but"), plus the weights-only drop.
"""

from __future__ import annotations

import argparse
import types

import torch
from torch import Tensor


def _fq_forward(obs, enabled: dict):
    scale, zp = obs.calculate_qparams()
    qmin, qmax = obs.quant_min, obs.quant_max
    per_channel = scale.numel() > 1 or getattr(obs, "qscheme", None) in (
        torch.per_channel_symmetric, torch.per_channel_affine)  # fmt: skip
    axis = getattr(obs, "ch_axis", 0)

    def forward(self, x: Tensor) -> Tensor:
        if not enabled.get(id(self), True):
            return x
        if per_channel:
            return torch.fake_quantize_per_channel_affine(x, scale.float(), zp.int(), axis, qmin, qmax)
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zp), qmin, qmax)

    return forward


def emulate(prepared) -> tuple[list, list]:
    """Swap every observer for fake quant; returns (activation observers, weight observers) as
    (node name, producer name, module) and the dict that switches them (id(module) -> bool)."""
    from torchao.quantization.pt2e import ObserverBase

    enabled: dict[int, bool] = {}
    acts, weights = [], []
    for n in prepared.graph.nodes:
        if n.op != "call_module":
            continue
        m = prepared.get_submodule(n.target)
        if not isinstance(m, ObserverBase) and not hasattr(m, "calculate_qparams"):
            continue
        src = n.args[0]
        m.forward = types.MethodType(_fq_forward(m, enabled), m)
        (weights if src.op == "get_attr" else acts).append((n.name, src, m))
    return acts, weights, enabled


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quant-layers", help="per-tensor int8 sensitivity on real photos")
    p.add_argument("student")
    p.add_argument("--backend", default="xnnpack")
    p.add_argument("--variant", default="default")
    p.add_argument("--images", nargs="+", default=["ColdRipple", "Path"])
    p.add_argument("--split", default="quant-eval")
    p.set_defaults(run=run)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from benchmarks.quant_photos import (
        VARIANTS,
        Tweak,
        TweakQuantizer,
        calibration_set,
        load_student,
        psnrs,
        roles,
    )
    from benchmarks.real_photos import load_split
    from edgesr.quant import calibrate, export_graph, get_quantizer, set_training

    model, scale, _ = load_student(args.student)
    items = [it for it in load_split(args.split, scale) if it["name"] in args.images]
    variant = VARIANTS[args.variant]
    images = calibration_set(variant.calib, scale)
    fi = args.backend.endswith("-fi")
    base = args.backend.removesuffix("-fi")
    quantizer = get_quantizer(base, fully_integer=fi, activations=variant.activations)
    if variant.tweak != Tweak():
        quantizer = TweakQuantizer(quantizer, variant.tweak)
    graph = export_graph(model, images[0], dynamic=False)
    r = roles(graph)
    prepared = prepare_pt2e(graph, quantizer)
    set_training(prepared, False)
    calibrate(prepared, images)
    converted = convert_pt2e(__import__("copy").deepcopy(prepared), fold_quantize=base != "litert")
    acts, weights, enabled = emulate(prepared)
    flt = psnrs(model, items, scale)
    conv_p = psnrs(converted, items, scale)
    emu_p = psnrs(prepared, items, scale)
    names = [it["name"] for it in items]
    print(f"{args.backend} / {args.variant}; images {names}")
    print("float      " + "  ".join(f"{v:.3f}" for v in flt))
    print("converted  " + "  ".join(f"{v - f:+.3f}" for v, f in zip(conv_p, flt, strict=False)))
    print("emulated   " + "  ".join(f"{v - f:+.3f}" for v, f in zip(emu_p, flt, strict=False)))
    for it in items:
        a, b = converted(it["lr"].unsqueeze(0)), prepared(it["lr"].unsqueeze(0))
        print(f"  {it['name']}: emulation vs converted max |diff| {float((a - b).abs().max()):.2e}")

    def set_all(v: bool, which) -> None:
        for _, _, m in which:
            enabled[id(m)] = v

    set_all(False, acts)
    set_all(True, weights)
    wonly = psnrs(prepared, items, scale)
    print("weights only " + "  ".join(f"{v - f:+.3f}" for v, f in zip(wonly, flt, strict=False)))
    set_all(False, weights)
    print(
        "\n| # | observes (role) | range | step (1/255) | "
        + " | ".join(f"{n} alone | {n} all but" for n in names)
        + " |"
    )
    print("|---|---|---|---|" + "---|---|" * len(names))
    for i, (_name, src, m) in enumerate(acts):
        sc, zp = m.calculate_qparams()
        lo, hi = float((m.quant_min - zp) * sc), float((m.quant_max - zp) * sc)
        set_all(False, acts)
        enabled[id(m)] = True
        alone = psnrs(prepared, items, scale)
        set_all(True, acts)
        set_all(True, weights)
        enabled[id(m)] = False
        allbut = psnrs(prepared, items, scale)
        set_all(False, weights)
        bits = "int16 " if m.quant_max > 255 else ""
        role = r.get(src.name, "")
        cells = " | ".join(f"{a - f:+.3f} | {b - f:+.3f}" for a, b, f in zip(alone, allbut, conv_p_ref(flt), strict=False))
        print(
            f"| {i} | {src.name} ({role}) | {bits}[{lo:.3f}, {hi:.3f}] | {float(sc) * 255:.3f} | {cells} |",
            flush=True,
        )
    return 0


def conv_p_ref(flt):
    return flt
