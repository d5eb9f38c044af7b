"""Where a training step runs: the process group (one process, or DDP ranks under torchrun), the
device's precision and memory format, and a clean stop on SIGINT / SIGTERM. The trainer uses these;
`python -m benchmarks distill-cost` uses `prepare_for_device`, so it times a step with the trainer's
device settings."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from rich.console import Console
from torch import nn

from edgesr.errors import EdgesrError
from edgesr.recipe import TrainCfg
from edgesr.train.modes import TrainingError


@dataclass(frozen=True)
class Dist:
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


def init_distributed() -> Dist:
    """The process group torchrun set up (WORLD_SIZE > 1), else one process on CUDA if present."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)


def on_main(dist: Dist, check: Any) -> None:
    """Run `check` on rank 0; if it raises a user error, every rank raises it (none is left waiting
    in a collective for a rank that stopped)."""
    refused: EdgesrError | None = None
    if dist.main:
        try:
            check()
        except EdgesrError as e:
            refused = e
    message = dist.from_main(None if refused is None else str(refused))
    if message is not None:
        raise refused if refused is not None else TrainingError(message)


class StopOnSignal:
    """SIGINT / SIGTERM during training ask for a clean stop: the step in flight finishes, a
    checkpoint is saved and the status says "stopped". A second signal stops at once (the last
    saved checkpoint stays the one to resume from). Main thread only (Python's rule for handlers)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self.console.print(
            f"{self.requested}: stopping after this step and saving a checkpoint (again to stop at once)"
        )

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def prepare_for_device(objective: nn.Module, t: TrainCfg, device: torch.device) -> AbstractContextManager:
    """`train.channels_last` applied to `objective` (in place), and the autocast context of
    `train.amp` to run its steps in; `auto` means on for CUDA, off elsewhere. Shared with
    `python -m benchmarks distill-cost`, so a timed step is the trainer's step."""
    cuda = device.type == "cuda"
    if t.channels_last == "on" or (t.channels_last == "auto" and cuda):
        objective.to(memory_format=torch.channels_last)
    amp = t.amp == "bf16" or (t.amp == "auto" and cuda)
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
