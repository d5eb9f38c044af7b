"""`edgesr` command line: a thin layer that parses, loads and calls one library function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from edgesr.targets import PRECISIONS, TARGETS, UPSAMPLERS

EXAMPLES = """\
examples:
  edgesr quickstart                                 # the whole pipeline on the built-in photos (CPU)
  edgesr train quickstart_teacher                   # one recipe by name
  edgesr train recipes/csd_edsr_x4_w025.yaml train.steps=1000 data.batch_size=8
  edgesr train --resume runs/quickstart/csd
  edgesr eval runs/quickstart/csd --data builtin:val --width 0.25
  edgesr upscale photo.png --checkpoint runs/quickstart/student --out photo_x2.png
  edgesr recipes ls
  edgesr recipes validate recipes/*.yaml
  edgesr bench distill --preset cpu --seeds 0 1 --out docs/bench/distill_cpu
"""


UPSCALE_EXAMPLES = """\
examples:
  edgesr upscale photo.png --checkpoint runs/quickstart/student --out photo_x2.png
  edgesr upscale photo.png --artifact exports/edsr_x2_w0.25_180x320_fp32.onnx --threads 2 --force
"""


EXPORT_EXAMPLES = """\
examples:
  edgesr export runs/quickstart/student --target onnx            # -> exports/*.onnx + .onnx.json
  edgesr export runs/quickstart/csd --target onnx --width 0.25 --input 1x3x360x640 --force
  edgesr export runs/quickstart/student --target all --dynamic --out exports/dyn
  edgesr inspect exports/edsr_x2_w0.25_180x320_fp32.onnx
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgesr",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train what a recipe describes",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("recipe", nargs="?", help="recipe path or shipped recipe name (see `edgesr recipes ls`)")
    t.add_argument("overrides", nargs="*", help="a.b=value overrides, parsed as YAML values")
    t.add_argument("--run-dir", type=Path, help="run directory (default: <output_dir>/<name>-<time>)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its latest checkpoint")

    q = sub.add_parser("quickstart", help="the whole pipeline on the built-in photos (CPU, minutes)")
    q.add_argument("overrides", nargs="*", help="a.b=value overrides applied to every stage's recipe")
    q.add_argument("--out", type=Path, default=Path("runs/quickstart"))

    e = sub.add_parser("eval", help="Y-PSNR/SSIM of a checkpoint on data sets, bicubic included")
    e.add_argument("checkpoint", help=".safetensors file, checkpoint dir or run dir")
    e.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR",
        help="data set folder (DIV2K, Set5/HR[/LR_bicubic], plain folder) or builtin:val; repeatable",
    )
    e.add_argument(
        "--width", type=float, action="append", help="width(s) to evaluate (default: trained widths)"
    )
    e.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/transposes (x8 '+')")
    e.add_argument("--no-ssim", action="store_true")
    e.add_argument("--cache-dir", help="where generated LR images are cached")
    e.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    e.add_argument(
        "--quant",
        action="store_true",
        help="float, int8 PTQ and int8 QAT PSNR side by side: CHECKPOINT is a QAT run (its float student "
        "is read from its recipe) or a float student (add --qat RUN for the QAT row)",
    )
    e.add_argument("--qat", help="with --quant and a float CHECKPOINT: the QAT run of that student")
    e.add_argument(
        "--backend", help="with --quant: int8 backend of the PTQ row (default: the QAT run's, or xnnpack)"
    )
    e.add_argument("--calibration-images", type=int, default=8, help="with --quant: PTQ calibration crops")

    u = sub.add_parser(
        "upscale",
        help="super-resolve one image with a checkpoint or an exported artifact, tiled (bounded memory)",
        epilog=UPSCALE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("image", type=Path)
    src = u.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint", help="run a checkpoint in PyTorch (.safetensors file, checkpoint or run dir)"
    )
    src.add_argument(
        "--artifact", type=Path, help="run an exported artifact (with its .json manifest) on its runtime here"
    )
    u.add_argument(
        "--width", type=float, default=None, help="student width (--checkpoint only; default: narrowest)"
    )
    u.add_argument("--out", type=Path, help="output path (default: <image>_x<scale>.png)")
    u.add_argument(
        "--tile", type=int, default=256, help="LR tile side in pixels (fixed-shape artifacts: their input)"
    )
    u.add_argument("--overlap", type=int, default=16, help="LR context pixels around each tile")
    u.add_argument("--threads", type=int, help="--artifact: runtime CPU threads (default: the runtime's own)")
    u.add_argument("--force", action="store_true", help="overwrite an existing output")

    b = sub.add_parser("bench", help="side-by-side comparisons")
    bs = b.add_subparsers(dest="bench_command", required=True)
    d = bs.add_parser("distill", help="distillation methods x seeds on one student, with baselines")
    d.add_argument("overrides", nargs="*", help="a.b=value overrides of the preset's base recipe")
    d.add_argument("--preset", default="cpu", help="cpu, gpu, or a base recipe path/name")
    d.add_argument("--methods", nargs="+", help="methods to run besides the baselines (default: all)")
    d.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    d.add_argument("--teacher", type=Path, help="teacher run dir or checkpoint (default: train one)")
    d.add_argument("--teacher-steps", type=int, help="steps for the teacher (default: 2x the students')")
    d.add_argument("--out", type=Path, default=Path("runs/bench_distill"))

    x = sub.add_parser(
        "export",
        help="convert a checkpoint to a device format, verify it on its runtime, write a manifest",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("checkpoint", help=".safetensors file, checkpoint dir or run dir")
    x.add_argument(
        "--target",
        required=True,
        choices=[*TARGETS.names(), "all"],
        help=f"{', '.join(TARGETS.names())}, or all (every installed target)",
    )
    x.add_argument("--width", type=float, help="student width (default: the narrowest trained)")
    x.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="default: the target's own (coreml fp16, others fp32); int8 uses the checkpoint's QAT state "
        "when it has one, else post-training quantization on built-in train crops",
    )
    x.add_argument("--fully-integer", action="store_true", help="int8 I/O and no float ops (tflite, NPUs)")
    x.add_argument("--weight-only", action="store_true", help="int8 weights, float activations (coreml)")
    x.add_argument(
        "--upsampler",
        choices=UPSAMPLERS,
        help="how the sub-pixel upsampling is written in the graph (default: the target's choice)",
    )
    x.add_argument(
        "--delegate",
        choices=sorted({d for spec in TARGETS.values() for d in spec.delegates}),
        help="backend inside the artifact where the target has a choice (executorch: xnnpack, coreml)",
    )
    x.add_argument("--input", default="1x3x180x320", metavar="1x3xHxW", help="LR input shape")
    x.add_argument("--dynamic", action="store_true", help="free H and W at run time (where supported)")
    x.add_argument("--out", type=Path, default=Path("exports"), help="output folder")
    x.add_argument("--force", action="store_true", help="replace existing artifacts")

    i = sub.add_parser("inspect", help="print an exported artifact's manifest")
    i.add_argument("artifact", type=Path, help="the artifact, or its .json manifest")

    r = sub.add_parser("recipes", help="list or validate recipes")
    rs = r.add_subparsers(dest="recipes_command", required=True)
    rs.add_parser("ls", help="list shipped recipes")
    v = rs.add_parser("validate", help="validate recipe files (default: every shipped recipe)")
    v.add_argument("paths", nargs="*", type=Path)

    from edgesr.profile.commands import add_parsers as add_profile_parsers

    add_profile_parsers(sub)  # `profile run|sweep|import|show` and `select-width`
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    try:
        return _COMMANDS[args.command](args, console)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        # Expected user errors (bad recipe, image, checkpoint...) carry their own clear message.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        console.print(f"error: {msg}", style="red", highlight=False, markup=False)
        return 1


def _train(args: argparse.Namespace, console) -> int:
    from edgesr.recipe import load_recipe, resolve_recipe
    from edgesr.train.trainer import train

    if args.resume is not None:
        if args.recipe is not None or args.overrides:
            raise ValueError(
                f"--resume continues {args.resume} with its saved recipe.yaml; "
                "give no recipe or overrides (start a new run to change the recipe)"
            )
        recipe = load_recipe(args.resume / "recipe.yaml")
        result = train(recipe, args.resume, resume=True, console=console)
    else:
        if args.recipe is None:
            raise ValueError("give a recipe (path or name, see `edgesr recipes ls`) or --resume RUN_DIR")
        recipe = load_recipe(resolve_recipe(args.recipe), args.overrides)
        result = train(recipe, args.run_dir, console=console)
    from edgesr.evaluate import print_table

    if result.rows:
        print_table(result.rows, f"{recipe.name}: x{recipe.scale}, step {result.steps}")
    console.print(f"run directory: {result.run_dir}")
    tp = result.throughput
    console.print(
        f"throughput: {tp['it_per_s']:.2f} it/s, {tp['images_per_s']:.1f} images/s, "
        f"peak memory {tp['peak_mem_mb']:.0f} MB"
    )
    return 0


def _quickstart(args: argparse.Namespace, console) -> int:
    from edgesr.pipeline import quickstart

    result = quickstart(args.out, args.overrides, console)
    console.print(f"pipeline directory: {result.out} (table in {result.out / 'results.md'})")
    return 0


def _eval(args: argparse.Namespace, console) -> int:
    from edgesr.data import eval_sets
    from edgesr.evaluate import bicubic_rows, evaluate, print_table, table_markdown
    from edgesr.files import atomic_write_text
    from edgesr.student import load_network

    if args.quant:
        return _eval_quant(args)
    if args.qat or args.backend:
        raise ValueError("--qat and --backend apply with --quant")
    network = load_network(args.checkpoint)
    model, meta = network.net, network.meta
    scale = meta.scale
    sets = eval_sets(args.data, meta.scale, args.cache_dir)
    widths = args.width or [w for w in meta.widths if w != 1.0] or [1.0]
    rows = bicubic_rows(sets, scale, not args.no_ssim) + evaluate(
        model, sets, scale, widths, self_ensemble=args.self_ensemble, with_ssim=not args.no_ssim
    )
    title = f"{meta.arch['name']} x{scale}" + (" (self-ensemble x8)" if args.self_ensemble else "")
    print_table(rows, title)
    if args.markdown:
        atomic_write_text(args.markdown, table_markdown(rows, title) + "\n")
    return 0


def _eval_quant(args: argparse.Namespace) -> int:
    """`edgesr eval CKPT --quant`: float / PTQ / QAT rows of one student (edgesr.quant.report)."""
    from edgesr.data import eval_sets
    from edgesr.evaluate import bicubic_rows, print_table, table_markdown
    from edgesr.files import atomic_write_text
    from edgesr.quant import is_qat_checkpoint
    from edgesr.quant.report import compare_quantized, qat_student_source
    from edgesr.train.checkpoint import read_meta

    if args.width or args.self_ensemble:
        raise ValueError("--quant evaluates the student's own width without self-ensemble")
    qat = args.qat
    student = args.checkpoint
    if is_qat_checkpoint(args.checkpoint):
        if qat:
            raise ValueError("CHECKPOINT is already a QAT run; --qat is for a float CHECKPOINT")
        qat, student = args.checkpoint, qat_student_source(args.checkpoint)
    scale = read_meta(student).scale
    sets = eval_sets(args.data, scale, args.cache_dir)
    result = compare_quantized(
        student, sets, qat=qat, backend=args.backend, calibration_images=args.calibration_images,
        with_ssim=not args.no_ssim,
    )  # fmt: skip
    rows = bicubic_rows(sets, scale, not args.no_ssim) + result.rows
    title = f"float vs int8 ({result.backend}), x{scale}, student {student}"
    print_table(rows, title)
    if args.markdown:
        atomic_write_text(args.markdown, table_markdown(rows, title) + "\n")
    return 0


def _upscale(args: argparse.Namespace, console) -> int:
    from edgesr.data.images import read_image, write_image
    from edgesr.upscale import artifact_upscaler, checkpoint_upscaler, upscale_image

    if args.artifact is not None and args.width is not None:
        raise ValueError("--width applies to --checkpoint; an artifact has its width baked in")
    if args.artifact is None and args.threads is not None:
        raise ValueError("--threads applies to --artifact (PyTorch uses torch's own thread count)")
    if args.artifact is not None:
        up = artifact_upscaler(args.artifact, args.threads)
    else:
        up = checkpoint_upscaler(args.checkpoint, args.width)
    out = args.out or args.image.with_name(f"{args.image.stem}_x{up.scale}.png")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    image = read_image(args.image)
    sr = upscale_image(up.fn, image, up.scale, args.tile, args.overlap, input_hw=up.input_hw)
    write_image(out, sr)  # atomic: a crash leaves no half-written image
    console.print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}, {up.label})")
    return 0


def _recipes(args: argparse.Namespace, console) -> int:
    from edgesr.recipe import list_recipes, load_recipe

    if args.recipes_command == "ls":
        from rich.console import Console
        from rich.table import Table

        table = Table("name", "path", "description")
        for name, path, desc in list_recipes():
            table.add_row(name, str(path), desc)
        Console().print(table)  # stdout, so it can be piped
        return 0
    paths = args.paths or [p for _, p, _ in list_recipes()]
    bad = 0
    for path in paths:
        try:
            load_recipe(path)
            console.print(f"ok      {path}")
        except ValueError as e:
            bad += 1
            console.print(f"invalid {e}", style="red", highlight=False, markup=False)
    return 1 if bad else 0


def _bench(args: argparse.Namespace, console) -> int:
    from edgesr.distill_bench import METHODS, run_bench

    methods = args.methods or list(METHODS)
    run_bench(
        args.preset, args.out, methods, args.seeds, args.teacher, args.teacher_steps, args.overrides, console
    )
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown((args.out / "table.md").read_text()))
    console.print(f"wrote {args.out}/table.md, results.csv, psnr.png")
    return 0


def _export(args: argparse.Namespace, console) -> int:
    from rich.console import Console

    from edgesr.export import TARGETS, ExportOptions, export_all, export_student, parse_input_shape
    from edgesr.export.verify import verification_table
    from edgesr.student import load_student

    precision = args.precision or ("int8" if args.fully_integer or args.weight_only else None)
    targets = TARGETS.names() if args.target == "all" else [args.target]
    options = ExportOptions(
        # `all` without --precision: each target at its own default (export_all's target_defaults)
        precision=precision or TARGETS.get(targets[0]).default_precision,
        input_shape=parse_input_shape(args.input),
        dynamic=args.dynamic,
        out_dir=args.out,
        force=args.force,
        upsampler=args.upsampler,
        delegate=args.delegate,
        fully_integer=args.fully_integer,
        weight_only=args.weight_only,
    )
    student = load_student(args.checkpoint, args.width)
    if args.target == "all":
        report = export_all(student, options, targets, target_defaults=precision is None)
        results, skipped = report.results, report.skipped
    else:
        results, skipped = [export_student(student, args.target, options)], {}
    Console().print(verification_table(results))  # stdout, so it can be piped
    for target, reason in skipped.items():
        console.print(f"skipped {target}: {reason}", highlight=False, markup=False)
    return 0 if results else 1


def _inspect(args: argparse.Namespace, console) -> int:
    from edgesr.export.manifest import print_manifest, read_manifest

    manifest, path = read_manifest(args.artifact)
    print_manifest(manifest, path)
    return 0


_COMMANDS = {
    "train": _train,
    "quickstart": _quickstart,
    "eval": _eval,
    "upscale": _upscale,
    "recipes": _recipes,
    "bench": _bench,
    "export": _export,
    "inspect": _inspect,
    "profile": lambda args, console: _profile_commands().profile_command(args, console),
    "select-width": lambda args, console: _profile_commands().select_width_command(args, console),
}


def _profile_commands():  # imported on use, like every other command's module
    from edgesr.profile import commands

    return commands


if __name__ == "__main__":
    sys.exit(main())
