"""Benchmarks entry point: `python -m benchmarks train RECIPE [k=v ...] [--steps N]`,
`python -m benchmarks export-latency [--runs N] [--threads N] [--targets ...] [--out table.md]`,
`python -m benchmarks latency-model [SOURCE] [--target onnx] [--resolution WxH]`,
`python -m benchmarks quant [--backend xnnpack] [k=v ...]` (float / PTQ / QAT PSNR),
`python -m benchmarks real-photos [--cache DIR] [--list]` (real photos for quantization evaluation),
`python -m benchmarks quant-photos STUDENT [--backends ...] [--variants ...]` (int8 drop per real photo),
`python -m benchmarks quant-layers STUDENT [--backend B] [--images ...]` (per-tensor int8 sensitivity),
`python -m benchmarks loader [--images N] [--folder DIR]` (loader patches/s: 2K vs sub-images),
`python -m benchmarks pareto [--steps N] [--families ...]` (PSNR vs latency of every student family),
`python -m benchmarks reparam-qat STUDENT [--steps N]` (collapse-then-QAT vs QAT-then-collapse),
`python -m benchmarks distill-protocol [--scale S] [--preset cpu|smoke]` (distillation on real photos),
`python -m benchmarks distill-cost [--scales 2 4] [--widths ...]` (s/step of every distillation method),
`python -m benchmarks error-split RUN ... --data DIR` (a student's error per photo: bias, coarse, fine),
`python -m benchmarks csd-throughput --csd-code PATH` (CSD steps/s: edgesr vs the official code),
`python -m benchmarks variant-defaults [--targets ...]` (default export variants vs the fastest)."""

from __future__ import annotations

import argparse
import sys

from benchmarks import (
    csd_throughput,
    distill_cost,
    distill_protocol,
    error_split,
    export_latency,
    latency_model,
    loader,
    pareto,
    quant,
    quant_layers,
    quant_photos,
    real_photos,
    reparam_qat,
    train_throughput,
    variant_defaults,
)
from edgesr.errors import EdgesrError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="bench", required=True)
    train_throughput.add_parser(sub)
    quant.add_parser(sub)
    latency_model.add_parser(sub)
    export_latency.add_parser(sub)
    real_photos.add_parser(sub)
    quant_photos.add_parser(sub)
    quant_layers.add_parser(sub)
    loader.add_parser(sub)
    pareto.add_parser(sub)
    reparam_qat.add_parser(sub)
    distill_protocol.add_parser(sub)
    distill_cost.add_parser(sub)
    error_split.add_parser(sub)
    csd_throughput.add_parser(sub)
    variant_defaults.add_parser(sub)
    args = p.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgesrError as e:  # bad input or a stopped run: one line, as `edgesr` prints it (main() raises)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
