"""`edgesr select-width`: the widest student, or with `--search` the whole configuration, that meets
a latency budget on a device, from the measurements `edgesr profile` saved; `--write` puts the
choice into the recipe.

The work happens in edgesr.selection (choice, tables, plots) and edgesr.recipe_edit (`--write`).
Library modules are imported inside the handlers, so `edgesr -h` starts without loading torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgesr.cli.common import device_args, make_console
from edgesr.errors import OutputExistsError, UsageError

EXAMPLES = """\
examples:
  edgesr select-width --device host --budget-ms 33.3 --recipe quickstart_student --write
  edgesr select-width --device host --recipe quickstart_student --search --psnr-from runs/quickstart/student
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    w = sub.add_parser(
        "select-width",
        help="the widest student that meets a latency budget on a device",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    device_args(w)
    w.add_argument("--budget-ms", type=float, help="latency budget per frame (default: the device's)")
    w.add_argument("--resolution", metavar="WxH", help="LR input size (default: the device's)")
    w.add_argument("--scale", type=int, help="only architectures with this scale")
    w.add_argument("--recipe", help="the student's recipe (architecture; --write edits its width)")
    w.add_argument(
        "--write", nargs="?", const=True, metavar="FILE",
        help="set the recipe's student width to the choice: in the recipe file you gave, or, for a "
        "shipped recipe given by name, in a copy ./NAME.yaml (never in the package); FILE: write there",
    )  # fmt: skip
    w.add_argument(
        "--runtime", help="runtime whose measurements decide (default: the device's first measured)"
    )
    w.add_argument("--precision", default="fp32")
    w.add_argument("--threads", type=int, help="default: the device file's (else the measurements')")
    w.add_argument(
        "--delegate", help="delegate whose measurements decide (default: the device file's first, else the "
        "measurements', e.g. qnn for an AI Hub profile that ran on the NPU)",
    )  # fmt: skip
    w.add_argument("--psnr-from", action="append", default=[], metavar="RUN_DIR", help="results.json source")
    w.add_argument(
        "--search", action="store_true",
        help="choose the whole configuration: width x runtime x precision x export variant, from every "
        "one measured (`profile sweep --target ... --precision ... --upsampler all`); --write also writes "
        "the recipe's export section",
    )  # fmt: skip
    w.add_argument(
        "--tolerance-db", type=float, default=0.05,
        help="--search: configurations within this much Y-PSNR of the best tie, and the fastest wins",
    )  # fmt: skip
    w.add_argument("--plot", type=Path, help="PNG path (default: runs/select_width/<device>.png)")
    w.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: wall-clock medians; cpu: process CPU-time medians (shared host, 1 thread)",
    )
    w.set_defaults(run=select_width_command)


def select_width_command(args: argparse.Namespace, console: Any) -> int:
    from edgesr.selection import select_for

    if args.search:
        return _search(args, console)
    if args.tolerance_db != 0.05:
        raise UsageError("--tolerance-db applies to --search only")

    sel, plot = select_for(
        args.device,
        args.budget_ms,
        args.resolution,
        args.scale,
        args.recipe,
        args.runtime,
        args.precision,
        args.threads,
        args.psnr_from,
        args.plot,
        args.profiles,
        args.clock,
        args.delegate,
        log=lambda m: console.print(m, highlight=False, markup=False),
    )
    from rich.table import Table

    from edgesr.selection import selection_table

    header, rows = selection_table(sel)
    t = Table(
        *header,
        title=f"{sel.device}: budget {sel.budget_ms:g} ms, {sel.runtime}/{sel.delegate} "
        f"{sel.precision}, threads {sel.threads if sel.threads is not None else '-'}, LR {sel.resolution}",
    )
    for row in rows:
        t.add_row(*row)
    make_console().print(t)
    if sel.accuracy.checks or any(c.predicted_ms is not None for c in sel.candidates):
        console.print(sel.accuracy.summary())
    else:  # no per-layer table: the choice rests on whole-model measurements alone
        console.print("latency model not used (no per-layer measurements); the latencies are measured")
    for n in sel.notes:
        console.print(f"note: {n}", highlight=False, markup=False)
    console.print(f"plot: {plot}")
    if sel.chosen is None:
        unknown = all(c.latency_ms is None for c in sel.candidates)
        console.print(
            "no width chosen: no latency is known for any width at these settings (see the note above)"
            if unknown
            else "no width meets the budget",
            style="red",
        )
        return 1
    c = sel.chosen
    console.print(f"chosen: width {c.width:g} ({c.channels} channels), {c.latency_ms:.1f} ms ({c.basis})")
    if args.write:
        from edgesr.recipe_edit import write_recipe_width

        path, out = _write_target(args)
        old, _ = write_recipe_width(path, c.width, out)
        console.print(f"wrote {out or path}: train.widths [{old:g}] -> [{c.width:g}]")
        if out is not None and out != path:
            console.print(f"train it with: edgesr train {out}")
    return 0


def _write_target(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(recipe to read, file to write or None for in place) of `--write` (see its help)."""
    from edgesr.recipe import resolve_recipe

    if not args.recipe:
        raise UsageError("--write needs --recipe (the recipe whose student width to set)")
    path = resolve_recipe(args.recipe)
    out = Path(args.write) if args.write is not True else None
    if out is None and path.resolve() != Path(args.recipe).resolve():  # a shipped recipe by name
        out = Path(f"{args.recipe}.yaml")
    if out is not None and out.exists() and out.resolve() != path.resolve():
        raise OutputExistsError(
            f"{out} exists (an earlier copy?); to set its width run select-width with --recipe {out} "
            "--write, or write a new file (--write NEW.yaml)"
        )
    return path, out


def _search(args: argparse.Namespace, console: Any) -> int:
    """`select-width --search`: the whole configuration (edgesr.selection.configs)."""
    from rich.table import Table

    from edgesr.recipe_edit import export_flow, write_recipe_width
    from edgesr.selection import config_table, search_for
    from edgesr.selection.configs import export_flags

    given = [f for f, v in (("--runtime", args.runtime), ("--delegate", args.delegate)) if v]
    given += ["--precision"] if args.precision != "fp32" else []
    if given:
        raise UsageError(f"--search compares every runtime and precision measured: drop {', '.join(given)}")
    sel, plot = search_for(
        args.device, args.budget_ms, args.resolution, args.scale, args.recipe, args.threads, args.psnr_from,
        args.plot, args.profiles, args.clock, args.tolerance_db,
    )  # fmt: skip
    header, rows = config_table(sel)
    t = Table(*header, title=f"{sel.device}: budget {sel.budget_ms:g} ms, threads {sel.threads}, LR "
              f"{sel.resolution}; {sel.rule}")  # fmt: skip
    for row in rows:
        t.add_row(*row)
    make_console().print(t)
    for n in sel.notes:
        console.print(f"note: {n}", highlight=False, markup=False)
    console.print(f"plot: {plot}")
    c = sel.chosen
    if c is None:
        why = " (none meets the budget)" if sel.configs else ""
        console.print(f"no configuration chosen{why}", style="red")
        return 1
    quality = f", {c.psnr_db:.2f} dB" if c.psnr_db is not None else ""
    flags = export_flags(c.export_section())
    say = {"highlight": False, "markup": False}
    console.print(f"chosen: {c.label} ({c.channels} channels), {c.latency_ms:.1f} ms{quality}", **say)
    console.print(f"export it with: edgesr export CHECKPOINT --width {c.width:g} {flags}", **say)
    if args.write:
        path, out = _write_target(args)
        old, _ = write_recipe_width(path, c.width, out, export=c.export_section())
        section = export_flow(c.export_section())
        console.print(f"wrote {out or path}: train.widths [{old:g}] -> [{c.width:g}], export: {section}",
                      **say)  # fmt: skip
        if out is not None and out != path:
            console.print(f"train it with: edgesr train {out}")
    return 0
