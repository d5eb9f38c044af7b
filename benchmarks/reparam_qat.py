"""QAT order for re-parameterisable students: collapse then QAT, or QAT then collapse.

    python -m benchmarks reparam-qat STUDENT [--steps 300] [--backend xnnpack] [--seed 0]

STUDENT: a trained float `ecbsr` checkpoint or run directory (e.g. the Pareto benchmark's
`runs/pareto_x2_3000/runs/ecbsr-6x16`). Both orders run the same QAT loop from it: `--steps` Adam
steps (lr 1e-4) of L1 to HR on the same seeded built-in train patches (batch 8, 32 px LR), activation
ranges calibrated first on the same crops, the `--backend` quantizer (XNNPACK: what ExecuTorch runs):

- **collapse -> QAT** (what `edgesr` does, `edgesr.quant.prepare(collapse=True)`): each block is one
  3x3 conv while training, so the int8 grid the weights are trained on is the deployed one;
- **QAT -> collapse**: every branch is fake-quantized on its own (`collapse=False`), trained, and its
  trained float weights are then collapsed and quantized again (PTQ, same calibration): the grid the
  deployed conv lands on was never trained on.

Beside them: the float student, its PTQ (no QAT), and two float controls trained by the same loop
with no fake quantization, one collapsed and one on the branches (QAT is also more training: each
order's quantization cost is its difference to its control). Every activation is int8 in both
orders (the backend quantizer's own annotation, `activations="int8"`), not the float-ends default
that `edgesr export` uses. Y-PSNR on the real-photo quant-eval set (`python -m benchmarks
real-photos`) and the built-in val photos.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from edgesr.targets import quant_backends


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reparam-qat", help="collapse-then-QAT vs QAT-then-collapse of a re-param student")
    p.add_argument("student", type=Path, help="float ecbsr checkpoint or run directory")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--backend", default="xnnpack", choices=quant_backends())
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def batches(scale: int, steps: int, seed: int, batch: int = 8, patch: int = 32):
    from torch.utils.data import DataLoader

    from edgesr.data import builtin_pairs
    from edgesr.data.datasets import TrainPatches

    data = TrainPatches(builtin_pairs("train"), scale, patch, steps * batch, seed)
    return list(DataLoader(data, batch_size=batch, shuffle=False))


def qat_loop(fq, data, lr: float = 1e-4) -> float:
    """Train the fake-quant graph (or float module) `fq` on `data` (L1 to HR); wall seconds."""
    from torch.fx import GraphModule

    from edgesr.quant.pt2e import set_training

    def mode(on: bool) -> None:
        set_training(fq, on) if isinstance(fq, GraphModule) else fq.train(on)

    mode(True)
    opt = torch.optim.Adam([p for p in fq.parameters() if p.requires_grad], lr=lr)
    t0 = time.perf_counter()
    for b in data:
        loss = (fq(b["lr"]) - b["hr"]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    mode(False)
    return time.perf_counter() - t0


def trained_branches(fq, model):
    """`model` (the multi-branch float student) with the float weights QAT trained in `fq`."""
    out = copy.deepcopy(model)
    mine = dict(out.named_parameters())
    n = 0
    for name, p in fq.named_parameters():
        if name in mine:
            with torch.no_grad():
                mine[name].copy_(p)
            n += 1
    if n != len(mine):
        raise RuntimeError(f"matched {n} of {len(mine)} parameters of the QAT graph and the model")
    return out


def run(args: argparse.Namespace) -> int:
    from benchmarks.export_latency import cpu_name
    from benchmarks.pareto import mean_psnr
    from benchmarks.real_photos import load_split
    from edgesr.data import eval_sets
    from edgesr.models import count_rep_blocks, reparameterize
    from edgesr.quant.pt2e import calibrate_ranges, calibration_images, convert, prepare, ptq
    from edgesr.student import load_student

    torch.manual_seed(args.seed)
    student = load_student(args.student)
    model, scale = student.net, student.scale
    if not count_rep_blocks(model):
        raise SystemExit(f"{args.student}: {student.arch['name']} has no re-parameterisable blocks")
    real = load_split("quant-eval", scale)
    builtin = [it for items in eval_sets(["builtin:val"], scale).values() for it in items]
    crops = calibration_images(scale)
    example = torch.rand(2, 3, 32, 32)
    data = batches(scale, args.steps, args.seed)

    def measure(fn) -> tuple[float, float]:
        return mean_psnr(fn, real, scale), mean_psnr(fn, builtin, scale)

    rows: dict[str, tuple[float, float, float | None]] = {}
    rows["float"] = (*measure(model), None)
    rows["PTQ (collapsed)"] = (*measure(ptq(model, args.backend, example[:1], crops)), None)
    # QAT is also more training: the same loop in float (collapsed, no fake quant) is the reference
    # each order's quantization cost is read against
    control = copy.deepcopy(reparameterize(model))
    seconds = qat_loop(control, data)
    rows["float control (same steps)"] = (*measure(control), seconds)
    # ... and the same loop on the branches (then collapsed): the float reference of QAT -> collapse,
    # which optimises the branches, not the collapsed conv
    branches = copy.deepcopy(model)
    seconds = qat_loop(branches, data)
    rows["float control, branches (same steps)"] = (*measure(reparameterize(branches)), seconds)
    for order, collapse in (("collapse -> QAT", True), ("QAT -> collapse", False)):
        torch.manual_seed(args.seed)
        fq = prepare(model, args.backend, example, qat=True, collapse=collapse)
        calibrate_ranges(fq, crops)
        seconds = qat_loop(fq, data)
        if collapse:
            int8 = convert(fq, args.backend)
        else:  # the trained branches, collapsed, then quantized again on the same calibration crops
            int8 = ptq(reparameterize(trained_branches(fq, model)), args.backend, example[:1], crops)
        rows[order] = (*measure(int8), seconds)
        print(f"{order}: {rows[order][0]:.2f} dB real, {rows[order][1]:.2f} dB built-in, {seconds:.0f} s")
    f_real, f_builtin, _ = rows["float control (same steps)"]
    print(
        f"\n{args.student} ({student.arch['name']} {student.arch['args']}), backend {args.backend}, "
        f"{args.steps} QAT steps, seed {args.seed}; Y-PSNR on {len(real)} real photos (quant-eval) and "
        f"{len(builtin)} built-in val photos; torch {torch.__version__}; {cpu_name()}\n"
    )
    print("| graph | real photos dB | vs float control | built-in val dB | vs float control | train s |")
    print("|---|---|---|---|---|---|")
    for name, (r, b, s) in rows.items():
        secs = "-" if s is None else f"{s:.0f}"
        print(f"| {name} | {r:.2f} | {r - f_real:+.2f} | {b:.2f} | {b - f_builtin:+.2f} | {secs} |")
    return 0
