"""`edgesr eval` (float, or float / PTQ / QAT with --quant) and `edgesr upscale`.

Library modules are imported inside the handlers, so `edgesr -h` starts without loading torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgesr.cli.common import TRUST_HELP, Console, UsageError, byte_progress, make_console
from edgesr.errors import OutputExistsError

__all__ = ["add_parsers"]

UPSCALE_EXAMPLES = """\
examples:
  edgesr upscale photo.png --checkpoint runs/quickstart/student --out photo_x2.png
  edgesr upscale photo.png --artifact exports/edsr_x2_w0.25_180x320_fp32.onnx --threads 2 --force
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "eval", help="Y-PSNR/SSIM of a checkpoint on data sets, bicubic included",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  edgesr eval runs/quickstart/csd --data builtin:val --width 0.25\n"
        "  edgesr eval runs/quickstart/student --data data/benchmark/Set5 --self-ensemble "
        "--markdown set5.md\n"
        "  edgesr eval runs/quickstart/student --data ~/.cache/edgesr/photos/quant-eval --quant\n"
        "  edgesr eval zoo:edsr_x4 --data benchmarks --self-ensemble    # beside the paper's numbers",
    )  # fmt: skip
    e.add_argument(
        "checkpoint", help=".safetensors file, checkpoint dir, run dir, or zoo:NAME (edgesr zoo ls)"
    )
    e.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="DIR",
        help="data set folder (DIV2K, Set5/HR[/LR_bicubic], plain folder), builtin:val, or benchmarks "
        "(Set5, Set14, B100, Urban100 and Manga109 where present under $EDGESR_DATA/benchmark, the "
        "papers' protocol); repeatable",
    )
    e.add_argument(
        "--width", type=float, action="append", help="width(s) to evaluate (default: trained widths)"
    )
    e.add_argument("--self-ensemble", action="store_true", help="average the 8 flips/transposes (x8 '+')")
    e.add_argument("--no-ssim", action="store_true")
    e.add_argument("--cache-dir", help="where generated LR images are cached")
    e.add_argument(
        "--markdown", type=Path, help="also write the table as Markdown here (--quant: + NAME.per_image.md)"
    )
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
    e.add_argument(
        "--calibration",
        default="builtin:train",
        metavar="DIR",
        help="with --quant: photos the PTQ row calibrates on (a folder, or builtin:train)",
    )

    e.set_defaults(run=_eval)

    u = sub.add_parser(
        "upscale",
        help="super-resolve one image with a checkpoint or an exported artifact, tiled (bounded memory)",
        epilog=UPSCALE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    u.add_argument("image", type=Path, help="the LR image, or builtin:astronaut (a built-in photo) to try it")
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
    u.add_argument("--trust-artifact", action="store_true", help=TRUST_HELP)

    u.set_defaults(run=_upscale)


def _eval(args: argparse.Namespace, console: Console) -> int:
    import edgesr.quant  # noqa: F401  (rebuilds QAT checkpoints: `edgesr eval QAT_RUN`)
    from edgesr.data import eval_sets
    from edgesr.evaluate import bicubic_rows, evaluate, print_table, reported_rows, table_markdown
    from edgesr.files import atomic_write_text
    from edgesr.models.zoo import fetch, is_zoo_ref, lookup
    from edgesr.student import load_network

    if is_zoo_ref(args.checkpoint):
        lookup(args.checkpoint)  # an unknown name is said before anything else is looked at
    args.data = _expand_benchmarks(args.data)
    if args.quant:
        return _eval_quant(args)
    if args.qat or args.backend:
        raise UsageError("--qat and --backend apply with --quant")
    if is_zoo_ref(args.checkpoint):  # fetched (once) with a progress display, then read from the cache
        with byte_progress(console) as progress:
            fetch(args.checkpoint, progress(args.checkpoint))
    network = load_network(args.checkpoint)
    model, meta = network.net, network.meta
    scale = meta.scale
    sets = eval_sets(args.data, meta.scale, args.cache_dir)
    widths = args.width or [w for w in meta.widths if w != 1.0] or [1.0]
    rows = bicubic_rows(sets, scale, not args.no_ssim) + evaluate(
        model, sets, scale, widths, self_ensemble=args.self_ensemble, with_ssim=not args.no_ssim
    )
    reported = reported_rows(meta.source, list(sets), args.self_ensemble)
    rows += reported
    title = f"{meta.arch['name']} x{scale}" + (" (self-ensemble x8)" if args.self_ensemble else "")
    print_table(rows, title, make_console())
    note = ""
    if reported and meta.source is not None:
        teacher = lookup(meta.source)
        note = f"{reported[0].method}: {teacher.psnr_source} (Y-PSNR, border crop = scale, as measured here)"
        make_console().print(note, highlight=False, markup=False)
    if args.markdown:
        atomic_write_text(args.markdown, table_markdown(rows, title) + (f"\n\n{note}" if note else "") + "\n")
    return 0


def _expand_benchmarks(specs: list[str]) -> list[str]:
    """`benchmarks` -> the benchmark set folders present under the data root, in the papers' order."""
    if "benchmarks" not in specs:
        return specs
    from edgesr.data.catalog import benchmark_sets

    present = [str(p) for p in benchmark_sets()]
    out: list[str] = []
    for spec in specs:
        out += present if spec == "benchmarks" else [spec]
    return list(dict.fromkeys(out))


def _eval_quant(args: argparse.Namespace) -> int:
    """`edgesr eval CKPT --quant`: float / PTQ / QAT rows of one student (edgesr.quant.report)."""
    from rich.markdown import Markdown

    from edgesr.data import eval_sets
    from edgesr.evaluate import bicubic_rows, print_table, table_markdown
    from edgesr.files import atomic_write_text
    from edgesr.quant import is_qat_checkpoint
    from edgesr.quant.quality import per_image_markdown
    from edgesr.quant.report import compare_quantized, qat_student_source
    from edgesr.train.checkpoint import read_meta

    if args.width or args.self_ensemble:
        raise UsageError("--quant evaluates the student's own width without self-ensemble")
    qat = args.qat
    student = args.checkpoint
    if is_qat_checkpoint(args.checkpoint):
        if qat:
            raise UsageError("CHECKPOINT is already a QAT run; --qat is for a float CHECKPOINT")
        qat, student = args.checkpoint, qat_student_source(args.checkpoint)
    scale = read_meta(student).scale
    sets = eval_sets(args.data, scale, args.cache_dir)
    result = compare_quantized(
        student, sets, qat=qat, backend=args.backend, calibration_images=args.calibration_images,
        calibration=args.calibration, with_ssim=not args.no_ssim,
    )  # fmt: skip
    rows = bicubic_rows(sets, scale, not args.no_ssim) + result.rows
    title = f"float vs int8 ({result.backend}), x{scale}, student {student}"
    print_table(rows, title, make_console())
    per_image = per_image_markdown(result.losses)
    make_console().print(Markdown(f"**Y-PSNR per image (dB), int8 drop against float**\n\n{per_image}"))
    for method, loss in result.losses.items():
        w = loss.worst
        make_console().print(
            f"{method}: mean drop {loss.mean_drop_db:.3f} dB, worst {w.drop_db:.3f} dB on {w.name!r}"
            + (f"; below bicubic on {', '.join(loss.below_bicubic)}" if loss.below_bicubic else ""),
            highlight=False, markup=False,
        )  # fmt: skip
    if args.markdown:  # the table, and beside it the per-image one (<name>.per_image.md)
        atomic_write_text(args.markdown, table_markdown(rows, title) + "\n")
        head = f"**{title}: Y-PSNR per image (dB), int8 drop against float**\n\n"
        atomic_write_text(args.markdown.with_suffix(".per_image.md"), f"{head}{per_image}\n")
    return 0


def _upscale(args: argparse.Namespace, console: Console) -> int:
    from edgesr.data.images import read_image, write_image
    from edgesr.data.samples import builtin_image
    from edgesr.upscale import artifact_upscaler, checkpoint_upscaler, upscale_image

    if args.artifact is not None and args.width is not None:
        raise UsageError("--width applies to --checkpoint; an artifact has its width baked in")
    if args.artifact is None and args.threads is not None:
        raise UsageError("--threads applies to --artifact (PyTorch uses torch's own thread count)")
    builtin = str(args.image).startswith("builtin:")
    source = builtin_image(str(args.image)) if builtin else args.image
    if args.out is not None and args.out.exists() and not args.force:  # before loading anything
        raise OutputExistsError(f"{args.out} exists; pass --force to overwrite it")
    image = read_image(source, exif_orientation=True)  # as the phone showed it
    if args.artifact is not None:
        up = artifact_upscaler(args.artifact, args.threads, trust=args.trust_artifact)
        # an axis the image spans in more than one window needs 2*overlap < the window there
        tiled = [n for n, size in zip(up.input_hw or (), image.shape[:2], strict=False) if size > n]
        if tiled and 2 * args.overlap >= min(tiled):
            h, w = up.input_hw
            raise UsageError(
                f"{args.artifact}: its manifest gives a fixed {h}x{w} input, too small to tile this image "
                f"with --overlap {args.overlap} (need 2*overlap < {min(tiled)}): pass a smaller "
                "--overlap, or re-export with a larger --input"
            )
    else:
        up = checkpoint_upscaler(args.checkpoint, args.width)
    # default: next to the image (a built-in photo: in the current folder, not in the package)
    out = args.out or (Path(".") if builtin else args.image.parent) / f"{source.stem}_x{up.scale}.png"
    if out.exists() and not args.force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    sr = upscale_image(up.fn, image, up.scale, args.tile, args.overlap, input_hw=up.input_hw)
    write_image(out, sr)  # atomic: a crash leaves no half-written image
    console.print(f"wrote {out} ({sr.shape[1]}x{sr.shape[0]}, {up.label})")
    return 0
