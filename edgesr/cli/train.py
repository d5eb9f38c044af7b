"""`edgesr train`, `quickstart`, `recipes ls|validate` and `bench distill`.

Library modules are imported inside the handlers, so `edgesr -h` starts without loading torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgesr.cli.common import EXAMPLES, Console, UsageError, make_console

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
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

    t.set_defaults(run=_train)

    raw = argparse.RawDescriptionHelpFormatter
    q = sub.add_parser(
        "quickstart", help="the whole pipeline on the built-in photos (CPU, minutes)", formatter_class=raw,
        epilog="examples:\n"
        "  edgesr quickstart                               # into runs/quickstart (10 min on 2 cores)\n"
        "  edgesr quickstart --out runs/qs train.steps=200 # a shorter run elsewhere\n"
        "  (an interrupted quickstart continues where it stopped when run again)",
    )  # fmt: skip
    q.add_argument("overrides", nargs="*", help="a.b=value overrides applied to every stage's recipe")
    q.add_argument("--out", type=Path, default=Path("runs/quickstart"))

    q.set_defaults(run=_quickstart)

    r = sub.add_parser(
        "recipes", help="list or validate recipes", formatter_class=raw,
        epilog="examples:\n  edgesr recipes ls\n  edgesr recipes validate        # every shipped recipe\n"
        "  edgesr recipes validate my.yaml other.yaml",
    )  # fmt: skip
    rs = r.add_subparsers(dest="recipes_command", required=True)
    rs.add_parser("ls", help="list shipped recipes")
    v = rs.add_parser("validate", help="validate recipe files (default: every shipped recipe)")
    v.add_argument("paths", nargs="*", type=Path)
    r.set_defaults(run=_recipes)


    b = sub.add_parser(
        "bench", help="side-by-side comparisons", formatter_class=raw,
        epilog="examples:\n  edgesr bench distill --preset cpu --seeds 0 1 --out runs/bench_distill\n"
        "  edgesr bench distill --methods fakd lsfd --teacher runs/quickstart/teacher --seeds 0",
    )  # fmt: skip
    bs = b.add_subparsers(dest="bench_command", required=True)
    d = bs.add_parser("distill", help="distillation methods x seeds on one student, with baselines")
    d.add_argument("overrides", nargs="*", help="a.b=value overrides of the preset's base recipe")
    d.add_argument("--preset", default="cpu", help="cpu, gpu, or a base recipe path/name")
    d.add_argument("--methods", nargs="+", help="methods besides the baselines (default: all but ablations)")
    d.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    d.add_argument("--teacher", type=Path, help="teacher run dir or checkpoint (default: train one)")
    d.add_argument("--teacher-steps", type=int, help="steps for the teacher (default: 2x the students')")
    d.add_argument("--out", type=Path, default=Path("runs/bench_distill"))

    b.set_defaults(run=_bench)


def _train(args: argparse.Namespace, console: Console) -> int:
    import edgesr.quant  # noqa: F401  (registers the `qat` training mode)
    from edgesr.recipe import load_recipe, resolve_recipe
    from edgesr.train.trainer import train

    if args.resume is not None:
        if args.recipe is not None or args.overrides:
            raise UsageError(
                f"--resume continues {args.resume} with its saved recipe.yaml; "
                "give no recipe or overrides (start a new run to change the recipe)"
            )
        recipe = load_recipe(args.resume / "recipe.yaml")
        result = train(recipe, args.resume, resume=True, console=console)
    else:
        if args.recipe is None:
            raise UsageError("give a recipe (path or name, see `edgesr recipes ls`) or --resume RUN_DIR")
        recipe = load_recipe(resolve_recipe(args.recipe), args.overrides)
        result = train(recipe, args.run_dir, console=console)
    from edgesr.evaluate import print_table

    if result.state == "stopped" and result.steps < recipe.train.steps:
        console.print(
            f"stopped at step {result.steps} of {recipe.train.steps} with a checkpoint; continue with "
            f"`edgesr train --resume {result.run_dir}`"
        )
        return 130
    if result.rows:
        title = f"{recipe.name}: x{recipe.scale}, step {result.steps}"
        print_table(result.rows, title, make_console())
    console.print(f"run directory: {result.run_dir}")
    tp = result.throughput
    console.print(
        f"throughput: {tp['it_per_s']:.2f} it/s, {tp['images_per_s']:.1f} images/s, "
        f"peak memory {tp['peak_mem_mb']:.0f} MB"
    )
    return 0


def _quickstart(args: argparse.Namespace, console: Console) -> int:
    from edgesr.pipeline import quickstart

    result = quickstart(args.out, args.overrides, console)
    console.print(f"pipeline directory: {result.out} (table in {result.out / 'results.md'})")
    return 0


def _recipes(args: argparse.Namespace, console: Console) -> int:
    from edgesr.recipe import list_recipes, load_recipe

    if args.recipes_command == "ls":
        from rich.table import Table

        table = Table("name", "path", "description")
        for name, path, desc in list_recipes():
            table.add_row(name, str(path), desc)
        make_console().print(table)  # stdout, so it can be piped
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


def _bench(args: argparse.Namespace, console: Console) -> int:
    from edgesr.distill_bench import DEFAULT_METHODS, run_bench

    methods = args.methods or list(DEFAULT_METHODS)
    run_bench(
        args.preset, args.out, methods, args.seeds, args.teacher, args.teacher_steps, args.overrides, console
    )
    from rich.markdown import Markdown

    make_console().print(Markdown((args.out / "table.md").read_text()))
    console.print(f"wrote {args.out}/table.md, results.csv, psnr.png")
    return 0
