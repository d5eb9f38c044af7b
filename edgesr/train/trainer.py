"""Recipe-driven training: joint CSD self-distillation or a single network.

CSD mode (Wang et al. 2021) trains the teacher (width 1) and its channel-split students in one
module with one optimizer:

    L = sum_w L1(S_w, HR) + lambda_T * L1(T, HR) + lambda_CL * sum_w CL(S_w, T, negatives)

Single mode trains one network: the teacher itself (width 1), or a stand-alone student of width
w < 1, from scratch or initialised with the leading channels of a teacher checkpoint.

Runs on CPU (quickstart, tests) and GPU (bf16 autocast, channels_last, DDP via torchrun). Every
source of randomness is seeded from (recipe seed, step), so a run killed and resumed from a
checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgesr.data import TrainPatches, build_train_loader, eval_sets, open_dataset
from edgesr.evaluate import EvalRow, bicubic_rows, evaluate, psnr_by_width
from edgesr.files import atomic_write_text
from edgesr.recipe import Recipe, dump_recipe, load_recipe, recipe_hash
from edgesr.train.checkpoint import (
    CheckpointMeta,
    load_training_state,
    load_weights,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from edgesr.train.modes import TrainingError, build_objective
from edgesr.train.monitor import Monitor
from edgesr.train.objectives import extra_state, load_extra_state

__all__ = ["TrainResult", "TrainingError", "build_objective", "train"]




@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path  # weights of the last checkpoint
    steps: int
    rows: list[EvalRow]  # final validation, bicubic included
    throughput: dict[str, float]  # it/s, images/s, peak memory (MB)


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Rank 0 writes the run's files; the others wait here until they exist."""
        if self.world > 1:
            torch.distributed.barrier()

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (e.g. a run directory named after the clock)."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _init_distributed() -> _Dist:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return _Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)


def _new_run_dir(recipe: Recipe, run_dir: Path | None) -> Path:
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(recipe.output_dir) / f"{recipe.name}-{stamp}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingError(f"{run_dir}: run directory exists and is not empty; pass --resume to continue it")
    return run_dir


def train(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train what `recipe` describes into `run_dir`; with `resume`, continue its latest checkpoint.

    `stop_at` ends the run after that step (for tests and time-boxed jobs), with a checkpoint there.
    """
    dist = _init_distributed()
    t = recipe.train
    console = console or Console(stderr=True)
    torch.manual_seed(recipe.seed)

    # Everything that can reject the user's input happens before the run directory exists.
    train_pairs = open_dataset(recipe.data.train, recipe.scale, recipe.data.cache_dir)
    global_batch = recipe.data.batch_size * dist.world
    train_set = TrainPatches(
        train_pairs,
        recipe.scale,
        recipe.data.patch_size,
        length=t.steps * global_batch,
        seed=recipe.seed,
        cache_dir=recipe.data.cache_dir,
        smooth_fraction=recipe.data.smooth_patches,
        smooth_pool=recipe.data.smooth_pool,
    )
    val_sets = eval_sets(recipe.data.val, recipe.scale, recipe.data.cache_dir)
    objective, mat_width = build_objective(recipe)
    objective.to(dist.device)
    saved = objective.net
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.optim.lr, betas=t.optim.betas, weight_decay=t.optim.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=list(t.optim.milestones), gamma=t.optim.gamma
    )
    rhash = recipe_hash(recipe)

    start = 0
    if resume:
        if run_dir is None:
            raise TrainingError("--resume needs the run directory to continue")
        run_dir = Path(run_dir)
        ckpt = resolve_checkpoint(run_dir)
        state = load_training_state(ckpt)
        if state["recipe_hash"] != rhash:
            raise TrainingError(
                f"{run_dir}: the recipe differs from the one this run started with; start a new run"
            )
        from safetensors.torch import load_file

        load_weights(saved, load_file(ckpt, device=str(dist.device)))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        load_extra_state(objective, state["loss_params"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        console.print(f"resuming {run_dir} at step {start}")
    else:
        run_dir = dist.from_main(_new_run_dir(recipe, None if run_dir is None else Path(run_dir)))
        dist.barrier()  # every rank has checked the directory before rank 0 writes into it
        if dist.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
    _status(run_dir, dist, "running", step=start)
    dist.barrier()

    use_cuda = dist.device.type == "cuda"
    amp = t.amp == "bf16" or (t.amp == "auto" and use_cuda)
    autocast = torch.autocast(dist.device.type, dtype=torch.bfloat16) if amp else nullcontext()
    if t.channels_last == "on" or (t.channels_last == "auto" and use_cuda):
        objective.to(memory_format=torch.channels_last)
    if t.compile:
        saved.compile()  # in place: state_dict keys stay those of the plain module
    step_fn: nn.Module = objective
    if dist.world > 1:
        device_ids = [dist.device.index] if use_cuda else None
        step_fn = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)

    loader = build_train_loader(
        train_set,
        recipe.data.batch_size,
        recipe.data.workers,
        start,
        dist.rank,
        dist.world,
        pin_memory=use_cuda,
    )
    trained_widths = (1.0, *t.widths) if t.mode == "csd" else tuple(t.widths)
    quant = getattr(objective, "quant_entry", None)  # QAT: the checkpoint describes its fake quant
    meta = CheckpointMeta(saved.arch, recipe.scale, trained_widths, mat_width, rhash, start, quant)
    end = t.steps if stop_at is None else min(stop_at, t.steps)
    if stop_at is not None and end <= start:
        raise TrainingError(f"stop_at={stop_at} is not after the run's current step {start}")
    monitor = Monitor(run_dir if dist.main else None, t.steps, start, console)
    eval_widths = tuple(recipe.eval.widths or t.widths)
    images_seen, t0 = 0, time.perf_counter()
    if use_cuda:
        torch.cuda.reset_peak_memory_stats(dist.device)
    step = start
    try:
        objective.train()
        for step, batch in enumerate(loader, start=start + 1):
            lr_img = batch["lr"].to(dist.device, non_blocking=True)
            hr = batch["hr"].to(dist.device, non_blocking=True)
            with autocast:
                loss, terms = step_fn(lr_img, hr, step)
            finite = torch.isfinite(loss.detach()).float()
            if dist.world > 1:  # every rank stops together, or the others hang in the next all-reduce
                torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
            if not finite:
                _status(run_dir, dist, "diverged", step=step, terms=terms)
                raise TrainingError(
                    f"loss is {loss.item()} at step {step} ({terms}); stopped without saving this state. "
                    f"The last good checkpoint is in {run_dir}/checkpoints; lower train.optim.lr or set "
                    f"train.optim.grad_clip"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.optim.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, t.optim.grad_clip)
            opt.step()
            sched.step()
            images_seen += lr_img.shape[0]
            monitor.step(step, terms, sched.get_last_lr()[0], log=step % t.log_every == 0 or step == end)
            if step % t.val_every == 0 and step != t.steps and dist.main:
                monitor.validation(step, psnr_by_width(_validate(saved, val_sets, recipe, eval_widths, dist)))
            if step % t.checkpoint_every == 0 or step in (t.steps, end):  # a deliberate stop saves too
                _checkpoint(run_dir, objective, meta, step, opt, sched, rhash, dist)
            if step >= end:
                break
    finally:
        monitor.close()
        del loader

    seconds = time.perf_counter() - t0
    throughput = {
        "it_per_s": (step - start) / seconds if seconds > 0 else float("nan"),
        "images_per_s": images_seen * dist.world / seconds if seconds > 0 else float("nan"),
        "peak_mem_mb": (
            torch.cuda.max_memory_allocated(dist.device)
            if use_cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        / 2**20,
    }
    rows: list[EvalRow] = []
    if step >= t.steps and dist.main:
        rows = bicubic_rows(val_sets, recipe.scale) + _validate(saved, val_sets, recipe, eval_widths, dist)
        results = {"step": step, "throughput": throughput, "rows": [r.__dict__ for r in rows]}
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    _status(run_dir, dist, "completed" if step >= t.steps else "stopped", step=step)
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, resolve_checkpoint(run_dir), step, rows, throughput)


def _validate(
    model: nn.Module, val_sets: dict, recipe: Recipe, widths: tuple[float, ...], dist: _Dist
) -> list[EvalRow]:
    return evaluate(
        model,
        val_sets,
        recipe.scale,
        widths,
        self_ensemble=recipe.eval.self_ensemble,
        with_ssim=True,
        device=dist.device,
    )


def _checkpoint(
    run_dir: Path, objective: nn.Module, meta: CheckpointMeta, step: int, opt, sched, rhash: str, dist: _Dist
) -> None:
    if not dist.main:
        return
    state: dict[str, Any] = {
        "step": step,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng_state(),
        "recipe_hash": rhash,
        "loss_params": extra_state(objective),
    }
    save_checkpoint(run_dir / "checkpoints", objective.net, replace(meta, step=step), state)


def _status(run_dir: Path, dist: _Dist, state: str, **info: Any) -> None:
    if dist.main:
        atomic_write_text(
            run_dir / "status.json", json.dumps({"state": state, "time": time.time(), **info}, indent=2)
        )


def run_status(run_dir: Path) -> str | None:
    """`status.json`'s state of a run directory, or None when there is none."""
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text())["state"] if path.is_file() else None


def train_or_continue(recipe: Recipe, run_dir: Path, console: Console | None = None) -> list[EvalRow]:
    """Final validation rows of `recipe` in `run_dir`: reused if the run completed, resumed from its
    checkpoint if it has one, restarted if it stopped before its first checkpoint. A directory
    holding another recipe's run is an error, never overwritten."""

    state = run_status(run_dir)
    if state is not None and recipe_hash(load_recipe(run_dir / "recipe.yaml")) != recipe_hash(recipe):
        raise TrainingError(f"{run_dir} holds a run of a different recipe; choose another output directory")
    if state == "completed":
        return [EvalRow(**r) for r in json.loads((run_dir / "results.json").read_text())["rows"]]
    if state is not None and not (run_dir / "checkpoints" / "latest").is_file():
        shutil.rmtree(run_dir)  # same recipe, nothing saved yet: start it again
    resume = (run_dir / "checkpoints" / "latest").is_file()
    return train(recipe, run_dir, resume=resume, console=console).rows
