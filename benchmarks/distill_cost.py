"""Seconds per training step of every distillation method, side by side, on this machine.

    python -m benchmarks distill-cost [--scales 2 4] [--widths 0.25 0.5] [--methods ...]
        [--steps 7] [--warmup 2] [--seeds 3] [--out FILE.md]

Each method's objective is built the way `edgesr bench distill` and the protocol build it (the
`distill_protocol_cpu` recipe, or `--recipe`, with the method's overrides, edgesr.distill_bench)
from an untrained teacher saved as a checkpoint: a step's cost does not depend on the weights.
It is timed on random batches of the recipe's batch and patch size (forward, backward, Adam
step): `--warmup` untimed steps, then the median wall and CPU seconds of `--steps` timed ones.
The recipe's `amp` and `channels_last` are applied as the trainer applies them (`prepare_for_device`;
`auto` is off on the CPU); the optimizer is a plain Adam (no scheduler, clipping or compile).
`--device cuda` times it on the GPU, waiting for the GPU at the end of each step (its CPU column is
then mostly that wait); give a GPU more steps, e.g. `--warmup 5 --steps 20`.
Data loading and validation are not in it; the protocol's own s/step column has them, and
whatever else ran on the machine at the time. The medians and the load average are printed so
a busy machine shows.

"x scratch" is each method's s/step over scratch's (measured first by default). Per (scale,
width) the table ends with the projected student training time of the protocol:
the sum over methods of s/step x the recipe's steps x `--seeds` (the teacher, trained once and
cached, is not in it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edgesr.distill_bench import DEFAULT_METHODS, METHODS, method_recipe
from edgesr.fingerprint import detect_machine
from edgesr.models import build_model
from edgesr.recipe import Recipe, dump_recipe, load_recipe, recipe_hash, resolve_recipe
from edgesr.train.checkpoint import CheckpointMeta, save_checkpoint
from edgesr.train.modes import build_objective
from edgesr.train.runtime import prepare_for_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill-cost", help="seconds per training step of every distillation method")
    p.add_argument("--recipe", default="distill_protocol_cpu")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4], choices=(2, 3, 4))
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(DEFAULT_METHODS))
    p.add_argument("--steps", type=int, default=7, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seeds", type=int, default=3, help="seeds in the projected protocol time")
    p.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    p.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"],
        help="cuda: the first GPU, with the recipe's amp and channels_last as the trainer applies them",
    )  # fmt: skip
    p.set_defaults(run=run)


def save_teacher(base: Recipe, folder: Path) -> Path:
    """An untrained full-width teacher of `base`'s architecture, as an edgesr checkpoint."""
    model = build_model(base.model.name, scale=base.scale, width_multiple=base.model.width_multiple,
                        **base.model.args)  # fmt: skip
    meta = CheckpointMeta(arch=model.arch, scale=base.scale, widths=(1.0,), materialized_width=None,
                          recipe_hash=recipe_hash(base), step=0)  # fmt: skip
    return save_checkpoint(folder / "checkpoints", model, meta, None)


def time_steps(recipe: Recipe, steps: int, warmup: int, device: str = "cpu") -> tuple[float, float]:
    """Median (wall, CPU) seconds of one training step of `recipe`'s objective on `device`."""
    dev = torch.device(device)
    objective, _ = build_objective(recipe)
    objective.to(dev).train()
    autocast = prepare_for_device(objective, recipe.train, dev)
    optim = torch.optim.Adam([p for p in objective.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(recipe.seed)
    n, p, s = recipe.data.batch_size, recipe.data.patch_size, recipe.scale
    lr, hr = torch.rand(n, 3, p, p, generator=g), torch.rand(n, 3, p * s, p * s, generator=g)
    lr, hr = lr.to(dev), hr.to(dev)
    wall, cpu = [], []
    for step in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        with autocast:
            loss, _ = objective(lr, hr, step)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # the step's kernels, not only their launch
        if step >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def command(args: argparse.Namespace) -> str:
    scales, widths = " ".join(map(str, args.scales)), " ".join(f"{w:g}" for w in args.widths)
    return (
        f"python -m benchmarks distill-cost --recipe {args.recipe} --scales {scales} --widths {widths}"
        f" --methods {' '.join(args.methods)} --steps {args.steps} --warmup {args.warmup} "
        f"--seeds {args.seeds}" + (f" --device {args.device}" if args.device != "cpu" else "")
    )


def budget_table(args: argparse.Namespace, base_path: Path, scale: int, width: float, tmp: Path) -> list[str]:
    """One (scale, width): a row per method as it is measured, then the projected protocol time."""
    base = load_recipe(base_path, [f"scale={scale}", f"train.widths=[{width}]"])
    at_budget = tmp / "base_recipe.yaml"
    at_budget.write_text(dump_recipe(base))
    teacher = save_teacher(base, tmp / "teacher")
    table = [
        "",
        f"### x{scale}, width {width:g}: batch {base.data.batch_size}, LR patch {base.data.patch_size}, "
        f"{base.train.steps} steps",
        "",
        "| method | wall s/step | CPU s/step | x scratch | load before / after |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(table), flush=True)
    walls: dict[str, float] = {}
    for method in args.methods:
        recipe = method_recipe(base, at_budget, method, 0, teacher)
        before = os.getloadavg()[0]
        walls[method], cpu = time_steps(recipe, args.steps, args.warmup, args.device)
        ratio = f"{walls[method] / walls['scratch']:.1f}" if "scratch" in walls else "-"
        load = f"{before:.1f} / {os.getloadavg()[0]:.1f}"
        table.append(f"| {method} | {walls[method]:.3f} | {cpu:.3f} | {ratio} | {load} |")
        print(table[-1], flush=True)
    per_step = sum(walls.values())
    minutes = per_step * base.train.steps * args.seeds / 60
    table.append(
        f"\nAll {len(walls)} methods: {per_step:.2f} s per step of one seed each; x {base.train.steps} steps "
        f"x {args.seeds} seeds = **{minutes:.0f} min** of student training (wall medians; no loading, "
        "validation or teacher)."
    )
    print(table[-1], flush=True)
    return table


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device cuda: torch {torch.__version__} sees no CUDA GPU here; time on --device cpu"
        )
    base_path = resolve_recipe(args.recipe)  # an unknown recipe stops before anything is printed
    on = (
        f"GPU {torch.cuda.get_device_name(0)}"
        if args.device == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    lines = [
        f"Machine: {detect_machine().text}; torch {torch.__version__}, {on}.",
        "",
        f"Command: `{command(args)}`",
        "",
        f"Median of {args.steps} steps after {args.warmup} warm-up steps; CPU s/step is the process's "
        "CPU time (all threads) per step; 1-minute load average before / after each row.",
    ]
    print("\n".join(lines), flush=True)
    for scale in args.scales:
        for width in args.widths:
            with tempfile.TemporaryDirectory() as tmp:
                lines += budget_table(args, base_path, scale, width, Path(tmp))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0
