"""INT8 vs float on real photos, per image, per backend and per quantization variant (issue 12).

    python -m benchmarks quant-photos STUDENT                         # default PTQ, every backend
    python -m benchmarks quant-photos STUDENT --variants default out16 float-tail --backends xnnpack
    python -m benchmarks quant-photos STUDENT --list                  # the variants
    python -m benchmarks quant-photos STUDENT --json out.json --per-image

STUDENT: a float (materialized) student run or checkpoint, e.g. runs/quickstart/student. Images:
the `quant-eval` split of `python -m benchmarks real-photos` (14 real photos, 640x360 HR, LR by
MATLAB bicubic, x = the student's scale), Y-PSNR with a border crop of `scale` (edgesr.metrics).
Each int8 model is the converted PT2E q/dq torch graph (`convert_pt2e`), which is what the
exporters lower (the ExecuTorch / TFLite artifacts match it at ~60 dB); `litert-fi` is LiteRT
fully integer. A variant changes one thing against `default` (today's `edgesr export --precision
int8`: backend quantizer, histogram observers, 8 built-in train crops of 64x64 LR pixels).
The table gives, per backend and variant, the mean Y-PSNR, the mean and worst-image drop against
float, and the photo with the worst drop; `--per-image` adds the per-photo drops.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgesr.quant.precision import end_roles
from edgesr.quant.pt2e import seeded_crops

ANNOTATION = "quantization_annotation"
BACKEND_CHOICES = ("xnnpack", "litert", "litert-fi", "coreml")


# ----------------------------------------------------------------------------------------------
# calibration sets
# ----------------------------------------------------------------------------------------------
def _builtin_lrs(scale: int) -> list[np.ndarray]:
    from edgesr.data import builtin_pairs, load_lr

    return [load_lr(p, scale) for p in builtin_pairs("train")]


def _photo_lrs(scale: int) -> list[np.ndarray]:
    from benchmarks.real_photos import load_split
    from edgesr.data.images import to_uint8

    return [to_uint8(it["lr"]) for it in load_split("calib", scale)]


def _smooth_crops(lrs: Sequence[np.ndarray], n: int, size: int, seed: int, pool: int = 400) -> list[Tensor]:
    """The `n` smoothest of `pool` random crops (lowest mean absolute Laplacian on the grey image)."""
    cands = seeded_crops(lrs, pool, size, seed)

    def roughness(t: Tensor) -> float:
        g = t[0].mean(0)
        lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
        return float(lap.abs().mean())

    return sorted(cands, key=roughness)[:n]


def calibration_set(spec: str, scale: int) -> list[Tensor]:
    """Calibration LR images by name: `builtin:N:S` (N built-in train crops of S LR px: today's
    default is builtin:8:64), `builtin-whole`, `photos:N:S` (crops of the calib photos),
    `photos-whole`, `smooth:N:S` (the N smoothest of 400 crops of built-in + calib photos),
    `A+B` concatenates."""
    from edgesr.data.images import to_tensor

    out: list[Tensor] = []
    for part in spec.split("+"):
        name, *args = part.split(":")
        n, s = (int(args[0]), int(args[1])) if args else (0, 0)
        if name == "builtin":
            from edgesr.quant import calibration_images

            out += calibration_images(scale, n=n, size=s)
        elif name == "builtin-whole":
            out += [to_tensor(lr).unsqueeze(0) for lr in _builtin_lrs(scale)]
        elif name == "photos":
            out += seeded_crops(_photo_lrs(scale), n, s, seed=1)
        elif name == "photos-whole":
            out += [to_tensor(lr).unsqueeze(0) for lr in _photo_lrs(scale)]
        elif name == "smooth":
            out += _smooth_crops(_builtin_lrs(scale) + _photo_lrs(scale), n, s, seed=2)
        else:
            raise ValueError(f"unknown calibration set {part!r}")
    return out


# ----------------------------------------------------------------------------------------------
# annotation tweaks (applied after the backend quantizer, in a ComposableQuantizer)
# ----------------------------------------------------------------------------------------------
class PercentileObserver(torch.nn.Module):
    """Per-tensor affine range = mean over batches of the (p, 100-p) percentiles (ignores outliers)."""

    def __init__(self, dtype=torch.int8, quant_min=-128, quant_max=127, pct: float = 0.01, **_):
        super().__init__()
        from torchao.quantization.pt2e import MinMaxObserver

        self.inner = MinMaxObserver(dtype=dtype, quant_min=quant_min, quant_max=quant_max,
                                    qscheme=torch.per_tensor_affine, eps=2**-12)  # fmt: skip
        self.pct, self.lo, self.hi, self.n = pct, 0.0, 0.0, 0
        self.dtype, self.qscheme = dtype, torch.per_tensor_affine
        self.quant_min, self.quant_max = quant_min, quant_max

    def forward(self, x: Tensor) -> Tensor:
        v = x.detach().float().flatten()
        if v.numel() > 2_000_000:
            v = v[torch.randperm(v.numel())[:2_000_000]]
        q = torch.quantile(v, torch.tensor([self.pct / 100, 1 - self.pct / 100]))
        self.lo += float(q[0])
        self.hi += float(q[1])
        self.n += 1
        return x

    def calculate_qparams(self):
        lo, hi = self.lo / max(self.n, 1), self.hi / max(self.n, 1)
        self.inner.min_val = torch.tensor(min(lo, 0.0))
        self.inner.max_val = torch.tensor(max(hi, 0.0))
        return self.inner.calculate_qparams()

    def with_args(*a, **k):  # pragma: no cover - not used
        raise NotImplementedError


def _observer_ctor(kind: str, dtype=torch.int8):
    # eps floors the scale: 2**-12 (the backends' value) is right for int8 in [0, 1]-ish ranges but
    # would cap int16 at 2**-12 steps, so 16-bit observers get float32's eps instead.
    from torchao.quantization.pt2e import (
        HistogramObserver,
        MinMaxObserver,
        MovingAverageMinMaxObserver,
    )

    eps = 2**-12 if dtype == torch.int8 else torch.finfo(torch.float32).eps
    if kind == "histogram":
        return HistogramObserver.with_args(eps=eps)
    if kind == "minmax":
        return MinMaxObserver.with_args(eps=eps)
    if kind == "movavg":
        return MovingAverageMinMaxObserver.with_args(eps=eps)
    if kind.startswith("pct"):  # prepare_pt2e wants a class-like constructor (it reads __name__)
        pct = float(kind[3:])
        return type(f"Percentile{kind[3:]}Observer", (PercentileObserver,),
                    {"__init__": lambda self, *a, **k: PercentileObserver.__init__(self, *a, pct=pct, **k)})  # fmt: skip
    raise ValueError(f"unknown observer {kind!r}")


def act_spec(bits: int, observer: str):
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    if bits == 8:
        dtype, lo, hi = torch.int8, -128, 127
    else:
        dtype, lo, hi = torch.int16, -32768, 32767
    return QuantizationSpec(dtype=dtype, quant_min=lo, quant_max=hi, qscheme=torch.per_tensor_affine,
                            observer_or_fake_quant_ctr=_observer_ctor(observer, dtype))  # fmt: skip


def _is_act_spec(spec) -> bool:
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    return isinstance(spec, QuantizationSpec) and spec.qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric) \
        and spec.dtype in (torch.int8, torch.uint8)  # fmt: skip


def _is_weight(node) -> bool:
    return getattr(node, "op", None) == "get_attr" or (
        getattr(node, "op", None) == "placeholder" and "weight" in str(node.target)
    )


def roles(gm) -> dict[str, str]:
    """Role of each call_function node of an exported student, by node name: edgesr's own
    `end_roles` (in / head / skip / tail / out: the ops a backend's int8 policy keeps apart, so an
    anchored net's nearest 1x1 conv is `in`, not `tail`) plus `up` (an upsampler conv feeding a
    pixel_shuffle) and `shuffle`. Every op on the image is `in`: for nets whose first conv reads
    the image (plain, XLSR, QuickSRNet, ECBSR) that conv is `in`, not `head` (until 2026-12-03 this
    benchmark called it `head`; EDSR's roles, which its published tables used, are unchanged).
    """
    r = {n.name: role for n, role in end_roles(gm).items()}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target == torch.ops.aten.pixel_shuffle.default:
            r.setdefault(n.args[0].name, "up")
            r.setdefault(n.name, "shuffle")
    return r


@dataclass
class Tweak:
    observer: str = "histogram"  # range estimator of every int8 activation
    observer_roles: tuple[str, ...] = ()  # only on these ops' outputs (and their consumers' inputs); () = all
    float_roles: tuple[str, ...] = ()  # leave these ops unannotated (float)
    int16_roles: tuple[str, ...] = ()  # 16-bit activations on these ops' outputs (and inputs)
    int16_inputs: bool = True  # also the int16 op's activation inputs (16x8 conv)
    fixed_in: bool = False  # graph input quantized with scale 1/255, zero point -128 (the 8-bit image grid)
    fixed_out: bool = False  # returned tensor likewise: int8 output = the saved 8-bit image, [0, 1] clamp


class TweakQuantizer:
    """Built lazily (needs torchao): `base` (a backend quantizer) then edits of its annotations.

    Not a ComposableQuantizer: that one refuses a member which removes an annotation, and leaving
    an op float is exactly that.
    """

    def __new__(cls, base, tweak: Tweak):
        from torchao.quantization.pt2e.quantizer import Quantizer, SharedQuantizationSpec

        class _Q(Quantizer):
            def transform_for_annotation(self, model):
                return base.transform_for_annotation(model)

            def annotate(self, model):
                model = base.annotate(model)
                r = roles(model)
                a8 = act_spec(8, tweak.observer)
                a16 = act_spec(16, "minmax")

                # 1. range estimator of every activation spec
                def picked(node) -> bool:
                    return not tweak.observer_roles or r.get(node.name) in tweak.observer_roles

                for n in model.graph.nodes:
                    a = n.meta.get(ANNOTATION)
                    if a is None or tweak.observer == "histogram":
                        continue
                    for k, spec in list(a.input_qspec_map.items()):
                        if _is_act_spec(spec) and not _is_weight(k) and picked(k):
                            a.input_qspec_map[k] = a8
                    if _is_act_spec(a.output_qspec) and picked(n):
                        a.output_qspec = a8
                # 2. float ops
                for n in list(model.graph.nodes):
                    if r.get(n.name) in tweak.float_roles:
                        n.meta.pop(ANNOTATION, None)
                        # an op annotated as sharing this node's qparams would now share nothing
                        for u in n.users:
                            ua = u.meta.get(ANNOTATION)
                            if ua is None:
                                continue
                            if isinstance(ua.output_qspec, SharedQuantizationSpec):
                                u.meta.pop(ANNOTATION, None)
                # 3. int16 ops: their output edge (producer and every consumer's input spec) and inputs
                for n in list(model.graph.nodes):
                    if r.get(n.name) not in tweak.int16_roles and "*" not in tweak.int16_roles:
                        continue
                    a = n.meta.get(ANNOTATION)
                    if a is None:
                        continue
                    if a.output_qspec is not None:
                        a.output_qspec = a16
                    for u in n.users:
                        ua = u.meta.get(ANNOTATION)
                        if ua is not None and n in ua.input_qspec_map:
                            ua.input_qspec_map[n] = a16
                    if tweak.int16_inputs:
                        for k, spec in list(a.input_qspec_map.items()):
                            if _is_act_spec(spec) and not _is_weight(k):
                                a.input_qspec_map[k] = a16
                                pa = k.meta.get(ANNOTATION)
                                if (
                                    pa is not None
                                    and pa.output_qspec is not None
                                    and not isinstance(pa.output_qspec, SharedQuantizationSpec)
                                ):
                                    pa.output_qspec = a16
                                    for u2 in k.users:
                                        ua2 = u2.meta.get(ANNOTATION)
                                        if ua2 is not None and k in ua2.input_qspec_map:
                                            ua2.input_qspec_map[k] = a16
                # 4. image-grid qparams on the graph input / output
                from torchao.quantization.pt2e.quantizer import FixedQParamsQuantizationSpec

                grid = FixedQParamsQuantizationSpec(dtype=torch.int8, scale=1.0 / 255, zero_point=-128,
                                                    quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)  # fmt: skip
                for n in model.graph.nodes:
                    a = n.meta.get(ANNOTATION)
                    if a is None:
                        continue
                    if tweak.fixed_in:
                        for k in list(a.input_qspec_map):
                            if (
                                k.op == "placeholder"
                                and not _is_weight(k)
                                and _is_act_spec(a.input_qspec_map[k])
                            ):
                                a.input_qspec_map[k] = grid
                    if tweak.fixed_out and r.get(n.name) == "out" and _is_act_spec(a.output_qspec):
                        a.output_qspec = grid
                return model

            def validate(self, model):
                base.validate(model)

        return _Q()


# ----------------------------------------------------------------------------------------------
# variants
# ----------------------------------------------------------------------------------------------
@dataclass
class Variant:
    help: str
    calib: str = "builtin:8:64"
    tweak: Tweak = field(default_factory=Tweak)
    activations: str = "int8"  # edgesr.quant.precision policy, through get_quantizer (the product path)


VARIANTS: dict[str, Variant] = {
    "default": Variant("today's PTQ: histogram observers, 8 built-in train crops 64x64"),
    # range estimator
    "minmax": Variant("min/max observers", tweak=Tweak(observer="minmax")),
    "movavg": Variant("moving-average min/max observers", tweak=Tweak(observer="movavg")),
    "pct0.01": Variant("percentile 0.01/99.99 observers", tweak=Tweak(observer="pct0.01")),
    "pct0.1": Variant("percentile 0.1/99.9 observers", tweak=Tweak(observer="pct0.1")),
    "minmax-tail": Variant(
        "min/max observers on the last conv and the returned op only",
        tweak=Tweak(observer="minmax", observer_roles=("tail", "out")),
    ),  # fmt: skip
    # calibration data
    "calib-32x64": Variant("32 built-in crops 64x64", calib="builtin:32:64"),
    "calib-8x128": Variant("8 built-in crops 128x128", calib="builtin:8:128"),
    "calib-whole": Variant("the 10 whole built-in train images", calib="builtin-whole"),
    "calib-photos": Variant("32 crops 64x64 of the calib photos", calib="photos:32:64"),
    "calib-photos-whole": Variant("the 9 whole calib photos", calib="photos-whole"),
    "calib-smooth": Variant("8 built-in crops + 8 smoothest crops", calib="builtin:8:64+smooth:8:64"),
    # precision of the last ops
    "float-out": Variant("the returned op (add_mean / add) left float", tweak=Tweak(float_roles=("out",))),
    "float-tail": Variant("last conv + returned op left float", tweak=Tweak(float_roles=("tail", "out"))),
    "float-skip": Variant("global residual add left float", tweak=Tweak(float_roles=("skip",))),
    "float-up": Variant(
        "upsampler conv + shuffle + tail + out float",
        tweak=Tweak(float_roles=("up", "shuffle", "tail", "out")),
    ),  # fmt: skip
    "out16": Variant(
        "16-bit activation on the returned op", tweak=Tweak(int16_roles=("out",), int16_inputs=False)
    ),
    "tail16": Variant(
        "16-bit activations in and out of the last conv and the returned op (16x8)",
        tweak=Tweak(int16_roles=("tail", "out")),
    ),  # fmt: skip
    "fixed-in": Variant(
        "graph input qparams fixed to the 8-bit image grid (1/255)", tweak=Tweak(fixed_in=True)
    ),
    "fixed-out": Variant(
        "returned tensor's qparams fixed to the 8-bit image grid (1/255, [0, 1])", tweak=Tweak(fixed_out=True)
    ),  # fmt: skip
    "fixed-io": Variant("fixed-in + fixed-out", tweak=Tweak(fixed_in=True, fixed_out=True)),
    "in16": Variant("16-bit input mean-shift add and head conv input", tweak=Tweak(int16_roles=("in",))),
    "head16": Variant(
        "16-bit activations around the input shift, head conv and global skip",
        tweak=Tweak(int16_roles=("in", "head", "skip")),
    ),  # fmt: skip
    "a16": Variant("every activation 16-bit (W8A16; TFLite's 16x8 mode)", tweak=Tweak(int16_roles=("*",))),
    "mm-headskip": Variant(
        "min/max observers on the input shift, head conv and global skip (no clipping)",
        tweak=Tweak(observer="minmax", observer_roles=("in", "head", "skip")),
    ),
    "ends16": Variant(
        "16-bit activations at both image-facing ends: input shift, head, skip, last conv, output",
        tweak=Tweak(int16_roles=("in", "head", "skip", "tail", "out")),
    ),
    "combo-float": Variant(
        "mm-headskip + fixed-in + last conv and output float",
        tweak=Tweak(
            observer="minmax",
            observer_roles=("in", "head", "skip"),
            fixed_in=True,
            float_roles=("tail", "out"),
        ),
    ),
    "combo-fixed": Variant(
        "mm-headskip + fixed-io (all int8)",
        tweak=Tweak(observer="minmax", observer_roles=("in", "head", "skip"), fixed_in=True, fixed_out=True),
    ),
    "ends-float": Variant(
        "the image-facing ends left float: input shift, head conv, global skip, last conv, output",
        tweak=Tweak(float_roles=("in", "head", "skip", "tail", "out")),
    ),
    "ends-float-mm": Variant(
        "ends-float + min/max observers everywhere",
        tweak=Tweak(observer="minmax", float_roles=("in", "head", "skip", "tail", "out")),
    ),
    "ends16-calib32": Variant(
        "ends16 + 32 built-in crops",
        calib="builtin:32:64",
        tweak=Tweak(int16_roles=("in", "head", "skip", "tail", "out")),
    ),
    "ends-float-calib32": Variant(
        "ends-float + 32 built-in crops",
        calib="builtin:32:64",
        tweak=Tweak(float_roles=("in", "head", "skip", "tail", "out")),
    ),
    "api-float-ends": Variant(
        "edgesr.quant get_quantizer(activations='float-ends')", activations="float-ends"
    ),
    "api-int16-ends": Variant(
        "edgesr.quant get_quantizer(activations='int16-ends')", activations="int16-ends"
    ),
    "api-int16": Variant("edgesr.quant get_quantizer(activations='int16')", activations="int16"),
    "api-float-ends-c32": Variant(
        "api-float-ends + 32 built-in crops", calib="builtin:32:64", activations="float-ends"
    ),
    "api-float-ends-mm": Variant(
        "api-float-ends + min/max observers", activations="float-ends", tweak=Tweak(observer="minmax")
    ),
    "api-float-ends-c32-mm": Variant(
        "api-float-ends + 32 built-in crops + min/max observers",
        calib="builtin:32:64",
        activations="float-ends",
        tweak=Tweak(observer="minmax"),
    ),
    "skip16": Variant("16-bit activations on the global residual add", tweak=Tweak(int16_roles=("skip",))),
}


# ----------------------------------------------------------------------------------------------
# building and measuring
# ----------------------------------------------------------------------------------------------
def load_student(path: str) -> tuple[nn.Module, int, float]:
    from edgesr.student import load_student as _load

    student = _load(path)
    return student.net, int(student.scale), float(student.width)


def build_int8(model: nn.Module, backend: str, variant: Variant, scale: int, calib_cache: dict | None = None):
    """The converted q/dq graph of `model` for `backend` ('litert-fi' = LiteRT fully integer)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgesr.quant import calibrate, export_graph, get_quantizer, set_training

    fully_integer = backend.endswith("-fi")
    base_backend = backend.removesuffix("-fi")
    if calib_cache is not None and variant.calib in calib_cache:
        images = calib_cache[variant.calib]
    else:
        images = calibration_set(variant.calib, scale)
        if calib_cache is not None:
            calib_cache[variant.calib] = images
    quantizer = get_quantizer(base_backend, fully_integer=fully_integer, activations=variant.activations)
    if variant.tweak != Tweak():
        quantizer = TweakQuantizer(quantizer, variant.tweak)
    graph = export_graph(model, images[0], dynamic=False)
    prepared = prepare_pt2e(graph, quantizer)
    set_training(prepared, False)
    calibrate(prepared, images)
    set_training(prepared, False)
    return convert_pt2e(prepared, fold_quantize=base_backend != "litert")


def outputs(fn: Callable[[Tensor], Tensor], items: Sequence[dict]) -> list[Tensor]:
    with torch.no_grad():
        return [fn(it["lr"].unsqueeze(0)).float().clamp(0, 1)[0] for it in items]


def psnrs(
    fn: Callable[[Tensor], Tensor], items: Sequence[dict], scale: int, ref: Sequence[Tensor] | None = None
):
    """Y-PSNR of fn's output against HR per item; with `ref` (other outputs), also against those."""
    from edgesr.metrics import psnr_y

    srs = outputs(fn, items)
    vs_hr = [psnr_y(sr, it["hr"], crop=scale) for sr, it in zip(srs, items, strict=True)]
    if ref is None:
        return vs_hr
    return vs_hr, [psnr_y(sr, r, crop=scale) for sr, r in zip(srs, ref, strict=True)]


def bicubic_psnrs(items: Sequence[dict], scale: int) -> list[float]:
    from edgesr.data.bicubic import imresize
    from edgesr.data.images import to_tensor, to_uint8
    from edgesr.metrics import psnr_y

    return [
        psnr_y(to_tensor(imresize(to_uint8(it["lr"]), scale=scale)), it["hr"], crop=scale) for it in items
    ]


def summary(name: str, values: list[float], ref: list[float], names: list[str]) -> dict:
    d = [v - r for v, r in zip(values, ref, strict=True)]
    worst = int(np.argmin(d))
    return {"name": name, "mean": float(np.mean(values)), "mean_drop": float(np.mean(d)),
            "worst_drop": d[worst], "worst_image": names[worst], "per_image": values}  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quant-photos", help="int8 vs float per real photo, per backend and variant")
    p.add_argument("student", nargs="?", default="runs/quickstart/student")
    p.add_argument("--backends", nargs="+", default=list(BACKEND_CHOICES), choices=BACKEND_CHOICES)
    p.add_argument("--variants", nargs="+", default=["default"])
    p.add_argument("--split", default="quant-eval")
    p.add_argument("--per-image", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--list", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.real_photos import load_split

    if args.list:
        for k, v in VARIANTS.items():
            print(f"{k:20s} {v.help}")
        return 0
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; --list shows them")
    model, scale, width = load_student(args.student)
    items = load_split(args.split, scale)
    names = [it["name"] for it in items]
    bic = bicubic_psnrs(items, scale)
    flt_out = outputs(model, items)
    flt = psnrs(model, items, scale)
    results = {"student": str(args.student), "scale": scale, "width": width, "images": names,
               "bicubic": bic, "float": flt, "rows": []}  # fmt: skip
    print(f"student {args.student} (x{scale}, width {width:g}); {len(items)} {args.split} photos")
    print(f"bicubic {np.mean(bic):.3f} dB, float {np.mean(flt):.3f} dB (float - bicubic: "
          f"min {min(f - b for f, b in zip(flt, bic, strict=False)):+.2f})")  # fmt: skip
    calib_cache: dict = {}
    hdr = "| backend | variant | mean PSNR | mean drop | worst drop | worst image | below bicubic | int8 vs float min | s |"
    print(hdr)
    print("|---|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for backend in args.backends:
            t0 = time.perf_counter()
            try:
                int8 = build_int8(model, backend, VARIANTS[variant], scale, calib_cache)
                vals, vs_float = psnrs(int8, items, scale, ref=flt_out)
            except Exception as exc:  # a variant a backend cannot take: say so, go on
                print(f"| {backend} | {variant} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | | | |")
                continue
            s = summary(f"{backend}/{variant}", vals, flt, names)
            s.update(backend=backend, variant=variant, seconds=time.perf_counter() - t0)
            below = sum(v < b for v, b, f in zip(vals, bic, flt, strict=False) if f > b)
            s["below_bicubic"] = below
            s["vs_float"] = vs_float
            results["rows"].append(s)
            print(f"| {backend} | {variant} | {s['mean']:.3f} | {s['mean_drop']:+.3f} | {s['worst_drop']:+.3f} | "
                  f"{s['worst_image']} | {below} | {min(vs_float):.1f} | {s['seconds']:.0f} |", flush=True)  # fmt: skip
    if args.per_image:
        print()
        cols = [r["name"] for r in results["rows"]]
        print("| photo | bicubic | float | " + " | ".join(cols) + " |")
        print("|---|---|---|" + "---|" * len(cols))
        for i, n in enumerate(names):
            cells = [f"{r['per_image'][i] - flt[i]:+.2f}" for r in results["rows"]]
            print(f"| {n} | {bic[i]:.2f} | {flt[i]:.2f} | " + " | ".join(cells) + " |")
        print("(int8 columns: drop against float, dB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


_ = (copy, math)
