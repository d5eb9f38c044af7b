"""What a distillation loss reads: a declaration each registered loss class carries.

A loss class sets `reads = Reads((...), channels=...)`, naming the `DistillBatch` fields its
`forward` takes, positionally and in that order; the trainer calls every loss the same way
(`edgesr.losses.batch.call_loss`) and builds it as `cls(weight=w, **args)`, adding
`student_channels` / `teacher_channels` (one count per tap, in the recipe's tap order) when
`channels` is set. So adding a loss is one class and one `LOSSES.register` line; a loss that
reads no tapped features may be used where taps cannot hook (an exported QAT graph), and one that
reads only the student's output and the batch (`standalone`) also where there is no teacher
(`single` mode, every width of a `csd` run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# The fields of a `DistillBatch` a loss may read. "student_feats"/"teacher_feats" arrive as lists of
# N x C x H x W tap features in the recipe's `taps` order; "negatives" is built only if read.
Field = Literal["lr", "hr", "student", "teacher", "student_feats", "teacher_feats", "generator", "negatives"]
FIELDS: tuple[str, ...] = get_args(Field)
FEATURE_FIELDS = ("student_feats", "teacher_feats")
# What a network trained on its own offers (`single` mode, each width of a `csd` run): its output,
# the batch and the step's generator. No teacher output, no tapped features, no negatives.
STANDALONE_FIELDS = ("lr", "hr", "student", "generator")


@dataclass(frozen=True)
class Reads:
    """The inputs of a loss's `forward`, in order, and whether it is built with per-tap channels."""

    inputs: tuple[Field, ...]
    channels: bool = False  # constructor takes student_channels / teacher_channels, one per tap

    def __post_init__(self) -> None:
        unknown = [f for f in self.inputs if f not in FIELDS]
        if not self.inputs or unknown:
            raise ValueError(f"Reads.inputs must name fields of {FIELDS}, got {self.inputs!r}")
        if self.channels and not self.features:
            raise ValueError("Reads(channels=True) needs tapped features among its inputs")

    @property
    def features(self) -> bool:
        """Whether the loss reads tapped (forward-hook) features, not only network outputs."""
        return any(f in FEATURE_FIELDS for f in self.inputs)

    @property
    def standalone(self) -> bool:
        """Whether the loss reads only the student's output and the batch (no teacher, no taps),
        so that it can be added to the objective of a network trained without a teacher."""
        return all(f in STANDALONE_FIELDS for f in self.inputs)


def reads_of(loss: object) -> Reads:
    """The `Reads` a loss class or instance declares; a clear error if it declares none."""
    reads = getattr(loss, "reads", None)
    if not isinstance(reads, Reads):
        name = getattr(loss, "__name__", type(loss).__name__)
        raise TypeError(f"loss {name} declares no `reads = Reads(...)` (see edgesr.losses.spec)")
    return reads
