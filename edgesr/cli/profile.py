"""`edgesr profile run|sweep|import|show` and `edgesr devices ls`: argument parsing, thin handlers.

The work happens in edgesr.profile.{host,adb,aihub,importers,latency_model}; `select-width`, which
reads what these commands saved, is edgesr/cli/select.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgesr.cli.common import TRUST_HELP, device_args, make_console
from edgesr.errors import UsageError
from edgesr.targets import ACTIVATIONS, PRECISIONS, UPSAMPLERS, parse_runtime_options

PROFILE_EXAMPLES = """\
examples:
  edgesr profile sweep runs/quickstart/student --device host --target onnx        # all widths, saved
  edgesr profile sweep recipes/quickstart_student.yaml --device host --layers     # + latency-model table
  edgesr profile run exports/edsr_x2_w0.25_180x320_fp32.onnx --device host
  edgesr profile run m.tflite --device pixel8 --benchmark-binary ./benchmark_model --serial 3A1B2C
  edgesr profile run m.pte --device galaxy_s24 --benchmark-binary ./executor_runner
  edgesr profile import benchmark_results.json --device pixel8 --artifact exports/m.pte
  edgesr profile import run.etdump --device pixel8 --resolution 320x180
  edgesr profile import aihub_profile.json --device galaxy_s24 --runtime litert --artifact exports/m.tflite
  edgesr profile sweep --via aihub --artifacts exports/*.tflite --device galaxy_s24 --device galaxy_s23
  edgesr profile run exports/m.tflite --device galaxy_s24 --via aihub --inference   # on-device PSNR
  edgesr devices ls --farm aihub
  edgesr profile show --device host
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "profile",
        help="measure latency on a device, or import measurements",
        epilog=PROFILE_EXAMPLES,
        formatter_class=fmt,
    )
    ps = p.add_subparsers(dest="profile_command", required=True)
    r = ps.add_parser("run", help="time one artifact (host: in-process; Android: over adb)")
    r.add_argument("artifact", type=Path)
    device_args(r)
    r.add_argument("--target", help="export target of the artifact (default: from its suffix)")
    r.add_argument("--resolution", metavar="WxH", help="LR input size (default: the artifact's manifest)")
    r.add_argument("--threads", type=int, help="CPU threads (default: the device file's)")
    r.add_argument("--runs", type=int, default=20)
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument(
        "--benchmark-binary", type=Path, help="Android: benchmark_model or executor_runner to push"
    )
    r.add_argument("--adb", default="adb", help="adb executable (default: adb on PATH)")
    r.add_argument("--serial", help="adb device serial (default: the device file's, else the only one)")
    r.add_argument("--delegate", help="Android LiteRT delegate: xnnpack, gpu, nnapi (default: first listed)")
    r.add_argument("--op-profiling", action="store_true", help="Android LiteRT: per-op times too")
    r.add_argument(
        "--runtime-option", action="append", default=[], metavar="NAME=VALUE",
        help="a runtime setting to time with, repeatable (ONNX Runtime: spinning=allowed|disabled; "
        "default: the artifact manifest's)",
    )  # fmt: skip
    r.add_argument("--no-save", action="store_true", help="print only; do not add to the device's profile")
    r.add_argument("--trust-artifact", action="store_true", help=TRUST_HELP)
    _farm_args(r)
    r.add_argument(
        "--inference", action="store_true",
        help="--via aihub: also run it on a built-in photo there and record on-device PSNR in its manifest",
    )  # fmt: skip
    s = ps.add_parser(
        "sweep",
        help="time every width: exported on the fly here (host), or given artifacts on Qualcomm AI Hub",
    )
    s.add_argument("source", nargs="?", help="checkpoint / run dir (its architecture) or recipe (host)")
    device_args(s, many=True)
    s.add_argument(
        "--artifacts", type=Path, nargs="+", metavar="ARTIFACT",
        help="--via aihub: exported artifacts to profile (.tflite, .onnx), e.g. exports/*.tflite",
    )  # fmt: skip
    _farm_args(s)
    s.add_argument("--trust-artifact", action="store_true", help=TRUST_HELP)
    s.add_argument(
        "--target", nargs="+", default=["onnx"],
        help="pytorch or registered export targets (default onnx); several: each is swept",
    )  # fmt: skip
    s.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=PRECISIONS,
        help="int8: each width post-training quantized for the target, as `edgesr export` does "
        "(from a checkpoint, its int8 Y-PSNR drop is recorded too); several: each is swept",
    )  # fmt: skip
    s.add_argument(
        "--upsampler", nargs="+", choices=[*UPSAMPLERS, "all"],
        help="export variants to sweep (default: the target's own; all: every form the target takes)",
    )  # fmt: skip
    s.add_argument(
        "--activations", nargs="+", choices=[*ACTIVATIONS, "all"],
        help="int8 activations policies to sweep (default: the target's; all: every one it accepts)",
    )  # fmt: skip
    s.add_argument(
        "--runtime-option", action="append", default=[], metavar="NAME=VALUE",
        help="a runtime setting to time, repeatable; VALUE,VALUE or all sweeps several (ONNX "
        "Runtime: spinning=allowed|disabled); targets without it are skipped",
    )  # fmt: skip
    s.add_argument("--widths", type=float, nargs="+", help="default: every width on the channel grid")
    s.add_argument("--resolution", metavar="WxH", help="LR input size (default: the device's)")
    s.add_argument("--threads", type=int)
    s.add_argument("--runs", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--layers", action="store_true", help="also measure the latency model's per-layer table")
    s.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="clock of the accuracy check")
    i = ps.add_parser("import", help="ingest results produced elsewhere")
    i.add_argument("file", type=Path)
    device_args(i)
    i.add_argument(
        "--format",
        default="auto",
        help="auto, benchmark_model, executor_runner, executorch-json, etdump, etdump-csv, aihub-json",
    )
    i.add_argument(
        "--runtime",
        help="the runtime measured, when the output does not say (aihub-json: litert, coreml, ...)",
    )
    i.add_argument("--delegate", help="the delegate, when the output does not say or says it ambiguously")
    i.add_argument("--artifact", type=Path, help="the artifact measured (its manifest gives width, hash)")
    i.add_argument("--resolution", metavar="WxH", help="LR input size (default: manifest, else device's)")
    i.add_argument("--precision", default=None, help="default: the manifest's, else fp32")
    i.add_argument("--threads", type=int, help="when the output does not say")
    sh = ps.add_parser("show", help="list a device's measurements")
    device_args(sh)
    # what `show` and `import` do not take reads as unset, so the command reads one namespace shape
    p.set_defaults(run=profile_command, via=None, farm_device=None, artifacts=None, inference=False,
                   runtime_option=(), resolution=None)  # fmt: skip
    dv = sub.add_parser(
        "devices", help="list device files, or a device farm's devices", epilog=PROFILE_EXAMPLES,
        formatter_class=fmt,
    )  # fmt: skip
    dvs = dv.add_subparsers(dest="devices_command", required=True)
    ls = dvs.add_parser("ls", help="the device files (devices/*.yaml), or --farm aihub: the farm's devices")
    ls.add_argument("--farm", choices=["aihub"], help="list Qualcomm AI Hub's devices with their chipsets")
    ls.add_argument("--filter", default="", help="--farm: only names or chipsets containing this text")
    dv.set_defaults(run=devices_command)


def _farm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--via", choices=["host", "adb", "aihub"],
        help="where to measure (default: the device file's transport); aihub: Qualcomm AI Hub's hosted "
        "phones (API token from `qai-hub configure`)",
    )  # fmt: skip
    p.add_argument(
        "--farm-device", help="--via aihub: the farm's device name (default: the device file's farm)"
    )
    p.add_argument(
        "--options", default="",
        help='--via aihub: the service\'s job options, as given: --options="--max_profiler_iterations 50"',
    )  # fmt: skip
    p.add_argument(
        "--new-jobs", action="store_true",
        help="--via aihub: submit new jobs even where earlier ones are stored (by default they are reused)",
    )  # fmt: skip
    p.add_argument("--poll-s", type=float, default=15.0, help=argparse.SUPPRESS)


def _print_records(records: list[Any], title: str) -> None:
    from rich.table import Table

    t = Table(
        "artifact",
        "variant",
        "runtime",
        "delegate",
        "prec",
        "thr",
        "res",
        "width",
        "typical ms",
        "p90",
        "n",
        "peak MB",
        "method",
        title=title,
    )
    for r in records:
        s = r.stats
        t.add_row(
            r.artifact,
            r.variant,  # the graph variant and the runtime settings it was timed with
            f"{r.runtime} {r.runtime_version or ''}".strip(),
            r.delegate,
            r.precision,
            str(r.threads or "-"),
            r.resolution,
            f"{r.model.width:g}" if r.model else "-",
            f"{s.typical_ms:.2f} ({s.typical_name})",
            f"{s.p90_ms:.2f}" if s.p90_ms is not None else "-",
            str(s.count or "-"),
            f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-",
            r.method,
        )
    make_console().print(t)


def profile_command(args: argparse.Namespace, console: Any) -> int:
    from edgesr.devices import load_device, parse_resolution
    from edgesr.profile.store import device_records, save_records

    if args.runtime_option and args.via == "aihub":
        raise UsageError("--runtime-option sets a runtime on this machine: the farm runs its own")
    if args.via == "aihub":
        from edgesr.cli.farm import farm_command

        return farm_command(args, console, _print_records)
    if isinstance(args.device, list):  # sweep: several devices only through a farm
        if len(args.device) > 1:
            raise UsageError("several --device need --via aihub; a host sweep measures this machine")
        args.device = args.device[0]
    device = load_device(args.device)
    _check_via(args, device)
    root = args.profiles  # None: read the shipped and the user's profiles, write the user's
    res = parse_resolution(args.resolution) if args.resolution else None
    if args.profile_command == "show":
        recs = device_records(device.name, root)
        _print_records(recs, f"{device.name}: whole-model measurements")
        layers = device_records(device.name, root, "layers")
        console.print(f"{len(layers)} latency-table layer measurements")
        return 0
    if args.profile_command == "import":
        from edgesr.profile.ingest import import_results

        recs = import_results(
            args.file,
            device,
            args.format,
            args.artifact,
            res,
            args.precision,
            args.threads,
            args.runtime,
            args.delegate,
        )
    elif args.profile_command == "run":
        recs = [_run(args, device, res)]
        if args.no_save:
            _print_records(recs, f"{device.name} (not saved)")
            return 0
    else:
        return _sweep(args, device, res, root, console)
    paths = {save_records(device.name, [r], f"models_{r.runtime}", root) for r in recs}
    _print_records(recs, device.name)
    console.print(f"saved to {', '.join(str(p) for p in sorted(paths))}")
    return 0


def _check_via(args: argparse.Namespace, device: Any) -> None:
    via = args.via
    reached = "adb" if device.transport == "adb" else "host"
    if via is not None and via != reached:
        raise UsageError(f"device {device.name!r} is reached through {device.transport}, not --via {via}")
    for flag in ("farm_device", "artifacts", "inference"):
        if getattr(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} is for --via aihub")
    if args.profile_command == "sweep" and not args.source:
        raise UsageError("profile sweep needs a checkpoint, run dir or recipe (or --via aihub --artifacts)")


def _run(args: argparse.Namespace, device: Any, res: Any) -> Any:
    threads = args.threads if args.threads is not None else device.threads
    if device.transport in ("host", "macos"):
        from edgesr.profile.host import profile_artifact, target_for_artifact

        options = None
        if args.runtime_option:
            options = _one_setting(args.target or target_for_artifact(args.artifact), args.runtime_option)
        return profile_artifact(
            args.artifact, args.target, res, threads, args.warmup, args.runs, trust=args.trust_artifact,
            runtime_options=options,
        )  # fmt: skip
    if args.runtime_option:
        raise UsageError(
            f"--runtime-option applies to runtimes on this machine, not to {device.transport} devices"
        )
    if device.transport == "adb":
        from edgesr.export.manifest import checked_artifact, manifest_path
        from edgesr.profile.adb import Adb, profile_android
        from edgesr.profile.ingest import attach_manifest, manifest_resolution

        if args.benchmark_binary is None:
            raise UsageError(
                "--benchmark-binary is needed on Android: benchmark_model (.tflite) or "
                "executor_runner (.pte) built for the phone"
            )
        if manifest_path(args.artifact).is_file():  # the file the phone runs is the one exported
            checked_artifact(args.artifact, args.trust_artifact)
        runtime = {".tflite": "litert", ".pte": "executorch"}.get(args.artifact.suffix)
        delegate = args.delegate or (device.runtime(runtime).delegates[0] if runtime else "xnnpack")
        # a fixed-shape artifact runs at its exported size, whatever the device's default
        res = res or manifest_resolution(args.artifact)
        rec, _ = profile_android(
            args.artifact,
            args.benchmark_binary,
            Adb(args.serial or device.adb_serial, args.adb),
            runtime,
            threads,
            args.runs,
            args.warmup,
            delegate,
            args.op_profiling,
            res.text if res else "",
        )
        return attach_manifest(rec, args.artifact, res or device.resolution)
    raise UsageError(
        f"device {device.name!r} is measured through {device.transport}: import its results "
        f"with `edgesr profile import FILE --device {device.name}`"
    )


def _sweep(args: argparse.Namespace, device: Any, res: Any, root: Any, console: Any) -> int:
    from edgesr.profile.store import save_records
    from edgesr.profile.sweep import run_sweep, sweep_configs

    if device.transport not in ("host", "macos"):
        raise UsageError(
            f"a sweep exports and times here: device {device.name!r} is reached through "
            f"{device.transport}; export the widths and use `profile run` / `profile import`"
        )
    threads = args.threads if args.threads is not None else device.threads
    configs, refused = sweep_configs(args.target, args.precision, args.upsampler, args.activations)
    for why in refused:
        console.print(f"skipped: {why}", highlight=False, markup=False)
    if not configs:
        raise UsageError("nothing to sweep: every target x precision x variant asked for was refused (above)")
    settings = _settings(configs, args.runtime_option, console)
    if args.layers and len(settings) > 1:
        raise UsageError("--layers measures one fp32 latency table: sweep one target at fp32, in its default "
                         "variant and runtime settings, with it")  # fmt: skip
    for (target, precision, upsampler, activations), options in settings:
        result = run_sweep(
            args.source,
            target,
            res or device.resolution,
            args.widths,
            threads,
            args.warmup,
            args.runs,
            args.layers,
            log=console.print,
            clock=args.clock,
            precision=precision,
            upsampler=upsampler,
            activations=activations,
            runtime_options=options,
        )
        runtime = result.models[0].runtime
        path = save_records(device.name, result.models, f"models_{runtime}", root)
        console.print(f"saved {len(result.models)} whole-model measurements to {path}")
        if result.layers:
            lpath = save_records(device.name, result.layers, f"layers_{runtime}", root, kind="layers")
            console.print(f"saved {len(result.layers)} layer measurements to {lpath}")
            console.print(result.accuracy.summary())
        _print_records(result.models, f"{device.name}: sweep")
    return 0


def _settings(
    configs: list[tuple[str, str, str | None, str | None]], pairs: list[str], console: Any
) -> list[tuple[tuple[str, str, str | None, str | None], dict[str, str]]]:
    """Each sweep configuration with each combination of the `--runtime-option` values; a target
    without those options is skipped, in one line."""
    out = []
    for config in configs:
        try:
            combos = parse_runtime_options(config[0], pairs)
        except UsageError as e:
            console.print(f"skipped: {config[0]} {config[1]}: {e}", highlight=False, markup=False)
            continue
        out += [(config, options) for options in combos]
    if not out:
        raise UsageError("nothing to sweep: no target asked for has the --runtime-option given (above)")
    return out


def _one_setting(target: str, pairs: list[str]) -> dict[str, str]:
    combos = parse_runtime_options(target, pairs)
    if len(combos) > 1:
        raise UsageError(
            "profile run times one setting of each --runtime-option; `profile sweep` times several"
        )
    return combos[0]


def devices_command(args: argparse.Namespace, console: Any) -> int:
    from edgesr.cli import farm

    return farm.devices_command(args, console)
