"""What a training run tells the outside world: a progress bar, JSONL records and TensorBoard.

Only rank 0 writes; other ranks get a silent monitor.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Monitor:
    def __init__(
        self, run_dir: Path | None, total_steps: int, start_step: int, console: Console | None
    ) -> None:
        self.enabled = run_dir is not None
        self.console = console or Console(stderr=True)
        self._jsonl = None
        self._tb = None
        self._progress: Progress | None = None
        self._task = None
        self._last_time = time.perf_counter()
        self._last_step = start_step
        self._printed = math.inf  # when the last plain line was printed (no live bar)
        self.rate = math.nan  # iterations per second over the last logging window
        if not self.enabled:
            return
        assert run_dir is not None
        self._jsonl = open(run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.console.print("[yellow]tensorboard not installed: TensorBoard logs disabled[/]")
        self._total = total_steps
        if not self.console.is_terminal:  # CI, pipes, nohup: plain lines instead of a live bar
            self._printed = time.perf_counter()
            self.console.print(
                f"training steps {start_step + 1}..{total_steps} into {run_dir}", highlight=False
            )
            return
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} it/s"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "train", total=total_steps, completed=start_step, rate="-", status=""
        )
        self._progress.start()

    # Without a live bar, a plain line at least this often (seconds), whatever log_every is: a busy
    # machine at 0.2 it/s would otherwise stay silent for 8 minutes before step 100.
    PLAIN_EVERY_S = 30.0

    def step(self, step: int, terms: dict[str, float], lr: float, log: bool) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not log and self._progress is None and now - self._printed >= self.PLAIN_EVERY_S:
            rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
            self._printed = now
            self.console.print(f"step {step}/{self._total} {rate:.2f} it/s", highlight=False)
        if not log:
            if self._progress is not None:
                self._progress.update(self._task, completed=step)
            return
        self.rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        status = " ".join(f"{k}={v:.4g}" for k, v in terms.items()) + f" lr={lr:.2e}"
        if self._progress is not None:
            self._progress.update(self._task, completed=step, rate=f"{self.rate:.2f}", status=status)
        else:
            self._printed = now
            eta = (self._total - step) / self.rate if self.rate > 0 else math.nan
            self.console.print(
                f"step {step}/{self._total} {status} {self.rate:.2f} it/s eta {eta / 60:.1f} min",
                highlight=False,
            )
        self.record(
            {"step": step, "lr": lr, "it_per_s": self.rate, **{f"loss/{k}": v for k, v in terms.items()}}
        )
        if self._tb is not None:
            for k, v in terms.items():
                self._tb.add_scalar(f"loss/{k}", v, step)
            self._tb.add_scalar("lr", lr, step)
            self._tb.add_scalar("it_per_s", self.rate, step)

    def validation(self, step: int, psnr: dict[str, dict[float, float]]) -> None:
        if not self.enabled:
            return
        self.record(
            {"step": step, "val_psnr_y": {d: {str(w): v for w, v in ws.items()} for d, ws in psnr.items()}}
        )
        parts = []
        for dataset, widths in psnr.items():
            for w, v in widths.items():
                if self._tb is not None:
                    self._tb.add_scalar(f"val/{dataset}/psnr_y_w{w:g}", v, step)
                parts.append(f"{dataset} w{w:g}: {v:.2f}")
        self.console.print(f"step {step}: val PSNR-Y " + ", ".join(parts))

    def record(self, data: dict[str, Any]) -> None:
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"time": time.time(), **data}) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        """Close what is open; a failing close (a full disk flushing the last records) must not hide
        the error that ended the run, so it is ignored here."""
        if self._progress is not None:
            self._progress.stop()
        for handle in (self._tb, self._jsonl):
            if handle is not None:
                with contextlib.suppress(OSError):
                    handle.close()
