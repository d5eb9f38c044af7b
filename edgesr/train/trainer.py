"""Recipe-driven training: joint CSD self-distillation or a single network.

CSD mode (Wang et al. 2021) trains the teacher (width 1) and its channel-split students in one
module with one optimizer:

    L = sum_w L1(S_w, HR) + lambda_T * L1(T, HR) + lambda_CL * sum_w CL(S_w, T, negatives)

plus, on every width, the recipe's `losses` that read only an output and HR (edgesr.train.objectives).
Single mode trains one network: the teacher itself (width 1), or a stand-alone student of width
w < 1, from scratch or initialised with the leading channels of a teacher checkpoint.

Runs on CPU (quickstart, tests) and GPU (bf16 autocast, channels_last, DDP via torchrun). Every
source of randomness is seeded from (recipe seed, step), so a run killed and resumed from a
checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import resource
import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file
from torch import nn

from edgesr.data import TrainPatches, build_train_loader, eval_sets, open_dataset
from edgesr.download import ProgressLines
from edgesr.errors import CheckpointError, Interrupted
from edgesr.evaluate import EvalRow, bicubic_rows, evaluate, psnr_by_width
from edgesr.files import LOCK_NAME, atomic_write_text, is_no_space, mount_point, owned_dir
from edgesr.models.zoo import fetch, is_zoo_ref
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
from edgesr.train.runtime import Dist, StopOnSignal, init_distributed, on_main, prepare_for_device

__all__ = ["TrainResult", "TrainingError", "build_objective", "train"]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    checkpoint: Path  # weights of the last checkpoint
    steps: int
    rows: list[EvalRow]  # final validation, bicubic included
    throughput: dict[str, float]  # it/s, images/s, peak memory (MB)
    state: str = "completed"  # or "stopped" (stop_at, SIGINT/SIGTERM): `--resume` continues it


def _new_run_dir(recipe: Recipe, run_dir: Path | None) -> Path:
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(recipe.output_dir) / f"{recipe.name}-{stamp}"
    return run_dir


def _refuse_used(run_dir: Path) -> None:
    """A new run owns an empty directory (its lock file aside); checked while holding the lock."""
    if any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise TrainingError(f"{run_dir}: run directory exists and is not empty; pass --resume to continue it")


def _completed(run_dir: Path) -> TrainResult | None:
    """The saved result of a run that already completed (resuming it changes nothing)."""
    if run_status(run_dir) != "completed" or not (run_dir / "results.json").is_file():
        return None
    saved = json.loads((run_dir / "results.json").read_text())
    rows = [EvalRow(**r) for r in saved["rows"]]
    return TrainResult(run_dir, resolve_checkpoint(run_dir), int(saved["step"]), rows, saved["throughput"])


def train(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    console: Console | None = None,
) -> TrainResult:
    """Train what `recipe` describes into `run_dir`; with `resume`, continue its latest checkpoint.

    `stop_at` ends the run after that step (for tests and time-boxed jobs), with a checkpoint there.
    The run directory is locked for the run's life (`edgesr.files.owned_dir`): a second writer is
    refused. Resuming a completed run returns its saved result and changes nothing. SIGINT/SIGTERM
    stop after the step in flight with a checkpoint (`TrainResult.state == "stopped"`); an error
    sets the status to "failed" with the reason.
    """
    console = console or Console(stderr=True)
    if resume:
        if run_dir is None:
            raise TrainingError("--resume needs the run directory to continue")
        if (done := _completed(Path(run_dir))) is not None:
            console.print(
                f"{run_dir}: already completed at step {done.steps} (results.json); nothing to resume"
            )
            return done
    dist = init_distributed()
    t = recipe.train
    torch.manual_seed(recipe.seed)
    run_dir = Path(run_dir) if resume else dist.from_main(_new_run_dir(recipe, run_dir and Path(run_dir)))
    if not resume and run_dir.exists():  # fail before minutes of set-up; checked again under the lock

        def probe() -> None:
            with owned_dir(run_dir):
                _refuse_used(run_dir)

        on_main(dist, probe)

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
        preload_max_bytes=int(recipe.data.preload_max_gb * 1e9),
        smooth_fraction=recipe.data.smooth_patches,
        smooth_pool=recipe.data.smooth_pool,
    )
    val_sets = eval_sets(recipe.data.val, recipe.scale, recipe.data.cache_dir)
    init = recipe.train.init
    if is_zoo_ref(init):  # rank 0 downloads a zoo teacher once; the others then find it cached
        on_main(dist, lambda: fetch(init, ProgressLines(init, console.print)))
    objective, mat_width = build_objective(recipe)
    objective.to(dist.device)
    saved = objective.net
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=t.optim.lr, betas=t.optim.betas, weight_decay=t.optim.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=list(t.optim.milestones), gamma=t.optim.gamma
    )
    rhash = recipe_hash(recipe)
    with contextlib.ExitStack() as owned:

        def take() -> None:  # one writer per run directory, for the whole run
            owned.enter_context(owned_dir(run_dir))
            if not resume:
                _refuse_used(run_dir)

        on_main(dist, take)
        if resume:
            start = _resume(run_dir, rhash, saved, opt, sched, objective, dist, console)
        else:
            start = 0
            if dist.main:
                atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe))
        _status(run_dir, dist, "running", step=start)
        dist.barrier()
        at = {"step": start}  # the step reached, for the status of a run that ends in an error
        try:
            return _loop(recipe, run_dir, dist, objective, opt, sched, params, train_set, val_sets,
                         mat_width, rhash, start, stop_at, console, at)  # fmt: skip
        except TrainingError as e:
            if run_status(run_dir) != "diverged":  # a divergence already said so, with its loss terms
                _status(run_dir, dist, "failed", step=at["step"], reason=str(e))
            raise
        except KeyboardInterrupt:
            reason = "interrupted twice: stopped at once, without a checkpoint"
            _status(run_dir, dist, "stopped", step=at["step"], reason=reason)
            raise
        except BaseException as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if is_no_space(e):
                reason = f"{run_dir}: no space left on {mount_point(run_dir)} ({e})"
            _status(run_dir, dist, "failed", step=at["step"], reason=reason)
            if is_no_space(e):
                raise TrainingError(
                    f"{reason}; free space, then continue with `edgesr train --resume {run_dir}`"
                ) from e
            raise


def _resume(run_dir, rhash, saved, opt, sched, objective, dist, console) -> int:  # noqa: ANN001
    ckpt = resolve_checkpoint(run_dir)
    state = load_training_state(ckpt)
    if state["recipe_hash"] != rhash:
        raise TrainingError(
            f"{run_dir}: the recipe differs from the one this run started with; start a new run"
        )
    try:
        weights = load_file(ckpt, device=str(dist.device))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            f"{ckpt}: cannot read the checkpoint's weights ({e}); it is truncated or corrupt: resume "
            f"from an earlier checkpoint (point {run_dir}/checkpoints/latest at it) or start a new run"
        ) from None
    try:
        load_weights(saved, weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{ckpt}: these weights are not {saved.arch['name']} as {run_dir}/recipe.yaml builds it "
            f"({str(e).splitlines()[0]}); the run directory holds another model's checkpoint, start a new run"
        ) from None
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    load_extra_state(objective, state["loss_params"])
    set_rng_state(state["rng"])
    start = int(state["step"])
    console.print(f"resuming {run_dir} at step {start}")
    return start


def _loop(recipe, run_dir, dist, objective, opt, sched, params, train_set, val_sets,  # noqa: ANN001
          mat_width, rhash, start, stop_at, console, at) -> TrainResult:  # fmt: skip
    t = recipe.train
    saved = objective.net
    use_cuda = dist.device.type == "cuda"
    autocast = prepare_for_device(objective, t, dist.device)
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
    stop = StopOnSignal(console)
    try:
        with stop:
            objective.train()
            for step, batch in enumerate(loader, start=start + 1):
                at["step"] = step
                lr_img = batch["lr"].to(dist.device, non_blocking=True)
                hr = batch["hr"].to(dist.device, non_blocking=True)
                with autocast:
                    loss, terms = step_fn(lr_img, hr, step)
                # finite, and no stop asked: one all-reduce so every rank stops together (or the
                # others hang in the next one)
                flags = torch.tensor([float(torch.isfinite(loss.detach())), float(stop.requested is None)])
                if dist.world > 1:
                    flags = flags.to(dist.device)
                    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
                finite, go_on = bool(flags[0]), bool(flags[1])
                if not finite:
                    _status(run_dir, dist, "diverged", step=step, terms=terms)
                    raise TrainingError(
                        f"loss is {loss.item()} at step {step} ({terms}); stopped without saving this "
                        f"state. The last good checkpoint is in {run_dir}/checkpoints; lower "
                        f"train.optim.lr or set train.optim.grad_clip"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t.optim.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, t.optim.grad_clip)
                opt.step()
                sched.step()
                images_seen += lr_img.shape[0]
                monitor.step(step, terms, sched.get_last_lr()[0], log=step % t.log_every == 0 or step == end)
                if step % t.val_every == 0 and step != t.steps and dist.main and go_on:
                    rows = _validate(saved, val_sets, recipe, eval_widths, dist)
                    monitor.validation(step, psnr_by_width(rows))
                if step % t.checkpoint_every == 0 or step in (t.steps, end) or not go_on:
                    _checkpoint(run_dir, objective, meta, step, opt, sched, rhash, dist)  # stops save too
                if step >= end or not go_on:
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
    state = "completed" if step >= t.steps else "stopped"
    _status(run_dir, dist, state, step=step, **({"signal": stop.requested} if stop.requested else {}))
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return TrainResult(run_dir, resolve_checkpoint(run_dir), step, rows, throughput, state)


def _validate(
    model: nn.Module, val_sets: dict, recipe: Recipe, widths: tuple[float, ...], dist: Dist
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
    run_dir: Path, objective: nn.Module, meta: CheckpointMeta, step: int, opt, sched, rhash: str, dist: Dist
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


def _status(run_dir: Path, dist: Dist, state: str, **info: Any) -> None:
    if not dist.main:
        return
    text = json.dumps({"state": state, "time": time.time(), **info}, indent=2)
    if state in ("failed", "stopped") and "reason" in info:
        # reporting an error: a full disk that refuses this small write too must not hide it
        with contextlib.suppress(OSError):
            atomic_write_text(run_dir / "status.json", text)
        return
    atomic_write_text(run_dir / "status.json", text)


def run_status(run_dir: Path) -> str | None:
    """`status.json`'s state of a run directory, or None when there is none."""
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text())["state"] if path.is_file() else None


def train_or_continue(recipe: Recipe, run_dir: Path, console: Console | None = None) -> list[EvalRow]:
    """Final validation rows of `recipe` in `run_dir`: reused if the run completed, resumed from its
    checkpoint if it has one, restarted if it stopped before its first checkpoint. A directory
    holding another recipe's run is an error, never overwritten."""

    with owned_dir(run_dir):
        state = run_status(run_dir)
        if state is not None and recipe_hash(load_recipe(run_dir / "recipe.yaml")) != recipe_hash(recipe):
            raise TrainingError(
                f"{run_dir} holds a run of a different recipe; choose another output directory"
            )
        if state == "completed":
            return [EvalRow(**r) for r in json.loads((run_dir / "results.json").read_text())["rows"]]
        if state is not None and not (run_dir / "checkpoints" / "latest").is_file():
            for p in run_dir.iterdir():  # same recipe, nothing saved yet: start it again
                if p.name != LOCK_NAME:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        resume = (run_dir / "checkpoints" / "latest").is_file()
        result = train(recipe, run_dir, resume=resume, console=console)
    if result.state == "stopped":
        raise Interrupted(
            f"{run_dir}: stopped at step {result.steps} with a checkpoint; run the same command again "
            "to continue from it"
        )
    return result.rows
