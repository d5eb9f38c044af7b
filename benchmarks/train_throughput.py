"""Training throughput of a recipe: iterations/s, images/s and peak memory, on this machine.

    python -m benchmarks train csd_edsr_x4_w025 --steps 50 data.train=builtin:train data.val=[builtin:val]

Runs the recipe for `--steps` steps in a temporary run directory (validation and checkpoints off)
after `--warmup` untimed steps, and prints one line of figures plus the command to reproduce it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="training throughput of a recipe")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgesr.recipe import load_recipe, resolve_recipe
    from edgesr.train.trainer import train

    total = args.warmup + args.steps
    overrides = [
        *args.overrides,
        f"train.steps={total}",
        f"train.val_every={total + 1}",
        f"train.checkpoint_every={total}",
        f"train.log_every={total}",
    ]
    recipe = load_recipe(resolve_recipe(args.recipe), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        # the warm-up run pays for LR caching, allocator growth and (on GPU) cuDNN autotuning
        train(recipe, f"{tmp}/warm", stop_at=args.warmup)
        t0 = time.perf_counter()
        result = train(recipe, f"{tmp}/warm", resume=True)
        wall = time.perf_counter() - t0
    tp = result.throughput
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    print(
        f"recipe={recipe.name} device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"batch={recipe.data.batch_size} patch={recipe.data.patch_size} steps={args.steps}: "
        f"{tp['it_per_s']:.2f} it/s, {tp['images_per_s']:.1f} images/s, "
        f"peak memory {tp['peak_mem_mb']:.0f} MB "
        f"(wall {wall:.1f} s incl. final validation)"
    )
    return 0
