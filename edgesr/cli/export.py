"""`edgesr export` (every target, verified, with a manifest) and `edgesr inspect`.

Library modules are imported inside the handlers, so `edgesr -h` starts without loading torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgesr.cli.common import Console, make_console
from edgesr.errors import UsageError
from edgesr.targets import PRECISIONS, TARGETS, UPSAMPLERS, parse_runtime_options

__all__ = ["add_parsers"]

EXPORT_EXAMPLES = """\
examples:
  edgesr export runs/quickstart/student --target onnx            # -> exports/*.onnx + .onnx.json
  edgesr export runs/quickstart/csd --target onnx --width 0.25 --input 1x3x360x640 --force
  edgesr export runs/quickstart/student --target all --dynamic --out exports/dyn
  edgesr export runs/quickstart/student --target tflite --precision int8 --tune --force  # fastest here
  edgesr export runs/my_student                    # as the run's recipe says (its `export:` section)
  edgesr inspect exports/edsr_x2_w0.25_180x320_fp32.onnx
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser(
        "export",
        help="convert a checkpoint to a device format, verify it on its runtime, write a manifest",
        epilog=EXPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("checkpoint", help=".safetensors file, checkpoint dir or run dir")
    x.add_argument(
        "--target",
        choices=[*TARGETS.names(), "all"],
        help=f"{', '.join(TARGETS.names())}, or all (every installed target); default: the run's recipe's "
        "export section (written by `select-width --search --write`)",
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
    x.add_argument(
        "--calibration",
        default="builtin:train",
        metavar="DIR",
        help="int8 PTQ: photos to calibrate activation ranges on (a folder, or builtin:train)",
    )
    x.add_argument(
        "--activations",
        choices=["int8", "float-ends"],
        help="int8 PTQ: int8 everywhere, or the image-facing ends (input shift, head, global skip, last "
        "conv, output) left float (default: float-ends, int8 when --fully-integer; docs/quantization.md)",
    )
    x.add_argument(
        "--accept-int8-loss",
        action="store_true",
        help="keep an int8 artifact that loses more than 0.2 dB mean or 1 dB on any gate image vs float "
        "(the loss is still recorded in its manifest)",
    )
    x.add_argument(
        "--runtime-option", action="append", default=[], metavar="NAME=VALUE",
        help="a runtime setting the artifact is meant to run with, recorded in its manifest (ONNX Runtime: "
        "spinning=allowed|disabled); default: the recipe's export section",
    )  # fmt: skip
    x.add_argument("--input", default="1x3x180x320", metavar="1x3xHxW", help="LR input shape")
    x.add_argument("--dynamic", action="store_true", help="free H and W at run time (where supported)")
    x.add_argument("--out", type=Path, default=Path("exports"), help="output folder")
    x.add_argument("--force", action="store_true", help="replace existing artifacts")
    x.add_argument(
        "--tune", action="store_true",
        help="try the target's graph variants here (upsampler forms; int8: float-ends and int8 activations), "
        "keep the fastest within --tune-tolerance-db of the most accurate, with every trial in the manifest",
    )  # fmt: skip
    x.add_argument("--tune-tolerance-db", type=float, default=0.05, help="--tune: allowed extra int8 drop")
    x.add_argument("--threads", type=int, help="--tune: runtime threads while timing (default: runtime's)")
    x.add_argument(
        "--verbose", action="store_true",
        help="show the converters' own messages here (default: appended to OUT/export.log)",
    )  # fmt: skip
    x.set_defaults(run=_export)

    i = sub.add_parser(
        "inspect", help="print an exported artifact's manifest (exit 1 if the artifact changed since)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  edgesr inspect exports/edsr_x2_w0.25_180x320_fp32.tflite\n"
        "  edgesr inspect exports/edsr_x2_w0.25_180x320_fp32.tflite.json   # the manifest itself",
    )  # fmt: skip
    i.add_argument("artifact", type=Path, help="the artifact, or its .json manifest")
    i.set_defaults(run=_inspect)


def _export(args: argparse.Namespace, console: Console) -> int:

    from edgesr.export import TARGETS, ExportOptions, export_all, export_student, parse_input_shape
    from edgesr.export.verify import verification_table
    from edgesr.profile.tune import Trial, tune_export
    from edgesr.sdk import SDKLog, sdk_output_to
    from edgesr.student import load_student

    _from_recipe(args, console)
    if args.tune and args.target == "all":
        raise UsageError("--tune times one target's variants: pass --target NAME, not all")
    if not args.tune and (args.threads is not None or args.tune_tolerance_db != 0.05):
        raise UsageError("--threads and --tune-tolerance-db apply to --tune only")
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
        accept_int8_loss=args.accept_int8_loss,
        calibration=args.calibration,
        activations=args.activations,
        runtime_options=_runtime_options(targets, args.runtime_option),
    )
    student = load_student(args.checkpoint, args.width)
    log = None if args.verbose else Path(args.out) / "export.log"
    captured = SDKLog(None)
    try:
        with sdk_output_to(log) as captured:
            if args.tune:
                tolerance = args.tune_tolerance_db
                tuned, trials = tune_export(student, args.target, options, tolerance, args.threads)
                results, skipped = [tuned], {}
            elif args.target == "all":
                report = export_all(student, options, targets, target_defaults=precision is None)
                results, skipped = report.results, report.skipped
            else:
                results, skipped = [export_student(student, args.target, options)], {}
    except Exception:
        if captured.lines:
            tail = captured.tail()
            console.print(f"the SDKs' last messages ({log}):\n{tail}", highlight=False, markup=False)
        raise
    make_console().print(verification_table(results))  # stdout, so it can be piped
    if args.tune:  # printed here: inside the block above the SDKs' output goes to the log
        for t in trials:
            timed = f"{t.median_ms:.2f} ms, int8 drop {t.mean_drop_db:.3f} dB" if t.median_ms else t.error
            console.print(f"  tried {t.label}: {timed}", highlight=False, markup=False)
        kept = Trial(**results[0].manifest["tuning"]["chosen"]).label
        console.print(f"--tune: kept {kept} of {len(trials)} variants (manifest: tuning)")
    if captured.lines:
        console.print(f"SDK messages: {captured.lines} lines in {log} (--verbose shows them here)")
    for target, reason in skipped.items():
        console.print(f"skipped {target}: {reason}", highlight=False, markup=False)
    return 0 if results else 1


def _runtime_options(targets: list[str], pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """`--runtime-option` values, one setting each. With one target it must have them (UsageError
    naming what it has); with `--target all` at least one must, and export_all skips the others."""
    combos, errors = None, []
    for target in targets:
        try:
            combos = parse_runtime_options(target, pairs)
        except UsageError as e:
            errors.append(str(e))
    if combos is None:
        raise UsageError(errors[0] if len(errors) == 1 else f"no target has that runtime option: {errors[0]}")
    if len(combos) > 1:
        raise UsageError("an artifact records one value per --runtime-option; profile sweep times several")
    return tuple(sorted(combos[0].items()))


def _from_recipe(args: argparse.Namespace, console: Console) -> None:
    """Fill what the command line left unset from the run's recipe's `export:` section (the target,
    and for that target its precision, upsampler and activations); UsageError when neither says."""
    from edgesr.recipe import load_recipe
    from edgesr.student import run_recipe

    path = run_recipe(args.checkpoint)
    section = load_recipe(path).export if path is not None else None
    if args.target is None:
        if section is None or section.target is None:
            where = f"{path} has no export section" if path else "it is not in a run directory"
            raise UsageError(f"--target is needed for {args.checkpoint}: {where} (set one with "
                             "`edgesr select-width --search --write`, or pass --target)")  # fmt: skip
        args.target = section.target
    if section is None or section.target != args.target:
        return  # the section's variant belongs to its own target
    used = []
    special = args.fully_integer or args.weight_only  # they set the precision and the activations
    if args.precision is None and not special and section.precision is not None:
        args.precision = section.precision
        used.append(f"precision {section.precision}")
    same = args.precision == section.precision and not special
    # --tune searches the variants itself; the section's variant belongs to the section's precision
    fills = {"delegate": True, "upsampler": same and not args.tune, "activations": same and not args.tune}
    for key, allowed in fills.items():
        if allowed and getattr(args, key) is None and getattr(section, key) is not None:
            setattr(args, key, getattr(section, key))
            used.append(f"{key} {getattr(section, key)}")
    if not args.runtime_option and section.runtime_options:
        args.runtime_option = [f"{k}={v}" for k, v in section.runtime_options.items()]
        used += args.runtime_option
    console.print(f"from {path} (export section): target {args.target}" + "".join(f", {u}" for u in used),
                  highlight=False, markup=False)  # fmt: skip


def _inspect(args: argparse.Namespace, console: Console) -> int:
    from edgesr.export.manifest import check_artifact, print_manifest, read_manifest

    manifest, path = read_manifest(args.artifact)
    print_manifest(manifest, path, make_console())
    state = check_artifact(manifest, path)
    if state != "ok":
        problem = "is missing" if state == "missing" else "no longer matches its manifest's sha256"
        console.print(
            f"error: {manifest['artifact']['file']} {problem}: re-export it", style="red", markup=False
        )
        return 1
    return 0
