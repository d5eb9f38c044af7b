"""Float vs INT8 PTQ vs INT8 QAT PSNR of the quickstart student (x2, built-in val photos).

    python -m benchmarks quant                   # runs/quickstart/{teacher,student} -> runs/quickstart/qat
    python -m benchmarks quant --backend litert train.steps=300   # overrides of quickstart_qat.yaml
    python -m benchmarks quant --data ~/.cache/edgesr/photos/quant-eval   # real photos, per-image drops

Trains (or reuses, or resumes) the QAT stage of `recipes/quickstart_qat.yaml` in `--run-dir`, then
measures the float student, the same student post-training quantized on built-in *train* crops, and
the QAT checkpoint converted to int8, on the built-in val images; and a float control trained
exactly like the QAT run with fake quantization off (`train.quant.fake_quant=false`), because QAT
is also more distillation: QAT - control is the quantization cost at equal training, and PTQ of the
control is the baseline at equal training. The target, judged at equal training: QAT loses at most
0.1 dB to the float control and less than the control's PTQ; the last line says whether it was met.

With `--data DIR` (repeatable) the measurement is on those images instead of the recipe's val set
(training still validates on the recipe's), and a per-image table gives each int8 model's drop
against the float student and, at equal training, against the float control; the target then also
asks for at most 0.3 dB on the worst image (issue 12's protocol, docs/quantization.md).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quant", help="float / PTQ / QAT PSNR of the quickstart student")
    p.add_argument("overrides", nargs="*", help="a.b=value overrides of recipes/quickstart_qat.yaml")
    p.add_argument("--recipe", default="quickstart_qat")
    p.add_argument("--backend", default=None, help="xnnpack (default), litert or coreml")
    p.add_argument("--run-dir", type=Path, default=None, help="default: runs/quickstart/qat[-BACKEND]")
    p.add_argument("--data", action="append", default=None, help="measure on this data set (repeatable)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgesr.data import eval_sets
    from edgesr.evaluate import bicubic_rows, evaluate, print_table
    from edgesr.quant import calibration_images, ptq
    from edgesr.quant.backends import default_activations, default_estimator
    from edgesr.quant.quality import measure_int8_loss, per_image_markdown
    from edgesr.quant.report import Int8Student, compare_quantized
    from edgesr.quant.state import quantized_student
    from edgesr.recipe import load_recipe
    from edgesr.student import load_student
    from edgesr.train.checkpoint import load_model
    from edgesr.train.trainer import train_or_continue

    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"train.quant.backend={args.backend}")
    recipe = load_recipe(args.recipe, overrides)
    q = recipe.train.quant
    run_dir = args.run_dir or Path(f"runs/quickstart/qat{'' if q.backend == 'xnnpack' else '-' + q.backend}")
    control_dir = run_dir.with_name(run_dir.name + "-float-control")
    t0 = time.perf_counter()
    train_or_continue(recipe, run_dir)
    # the float control: same recipe with fake quantization off, so QAT's training gain shows apart
    train_or_continue(load_recipe(args.recipe, [*overrides, "train.quant.fake_quant=false"]), control_dir)
    train_s = time.perf_counter() - t0
    sets = eval_sets(args.data or recipe.data.val, recipe.scale, recipe.data.cache_dir)
    assert recipe.train.student_from is not None
    result = compare_quantized(
        recipe.train.student_from, sets, qat=run_dir, calibration_images=q.calibration_images,
        calibration_size=q.calibration_size, with_ssim=False,
    )  # fmt: skip
    control, _ = load_model(control_dir)
    control.eval()
    images = calibration_images(recipe.scale, n=q.calibration_images, size=q.calibration_size)
    activations = default_activations(q.backend, q.fully_integer)  # the export's default PTQ
    int8_control = ptq(
        control, q.backend, images[0], images, fully_integer=q.fully_integer, activations=activations,
        estimator=default_estimator(activations),
    )  # fmt: skip
    control_ptq = Int8Student(int8_control, result.width)
    control_rows = [
        replace(r, method=f"{label} w={result.width:g}")
        for label, m in [("float fine-tuned like QAT (control)", control),
                         ("int8 PTQ of the control", control_ptq)]
        for r in evaluate(m, sets, recipe.scale, [result.width], with_ssim=False)
    ]  # fmt: skip
    rows = bicubic_rows(sets, recipe.scale, False) + result.rows + control_rows
    print_table(rows, f"float vs int8 ({q.backend}), x{recipe.scale}")
    worst_ok = True
    if args.data:  # per image: drops against the float student (eval --quant's) and the control
        items = [item for found in sets.values() for item in found]
        qat_net = Int8Student(quantized_student(load_student(run_dir))[0], result.width)
        vs_control = {
            "control's PTQ vs control": measure_int8_loss(control, control_ptq, items, recipe.scale),
            "QAT vs control": measure_int8_loss(control, qat_net, items, recipe.scale),
        }
        vs_student = {f"{label} vs student": loss for label, loss in result.losses.items()}
        print("\nvs the float student:\n" + per_image_markdown(vs_student))
        print("\nat equal training, vs the float control:\n" + per_image_markdown(vs_control))
        worst_ok = vs_control["QAT vs control"].worst.drop_db <= 0.3
    for name in sets:
        psnr = {r.method.split(" (")[0].split(" w=")[0]: r.psnr for r in rows if r.dataset == name}
        f, p, qat = psnr["float"], psnr["int8 PTQ"], psnr["int8 QAT"]
        c, cp = psnr["float fine-tuned like QAT"], psnr["int8 PTQ of the control"]
        met = c - qat <= 0.1 and qat > cp and worst_ok
        print(
            f"{name}: float student {f:.3f} dB, its PTQ {p:.3f} ({p - f:+.3f}); "
            f"QAT {qat:.3f} ({qat - f:+.3f}). At equal training: float control {c:.3f}, "
            f"its PTQ {cp:.3f} ({cp - c:+.3f}), QAT {qat - c:+.3f}. "
            f"Target (QAT within 0.1 dB of float{' (0.3 on the worst image)' if args.data else ''} and "
            f"closer than PTQ, at equal training) "
            f"{'MET' if met else 'NOT MET'} [backend {q.backend}, {recipe.train.steps} steps, runs {run_dir} "
            f"and {control_dir}, {train_s:.0f} s to train/reuse]"
        )
    return 0
