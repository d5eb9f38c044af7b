"""Losses: pure functions on tensors, small modules that add weights/configuration, one registry.

The registrations below are the one list of loss names (`LOSSES.names()`; `build_loss(name, **kwargs)`).
Each class documents its constructor and `forward`, and declares what it reads in
`reads = Reads(...)` (`edgesr.losses.spec`): the `DistillBatch` fields its `forward` takes (outputs,
HR, tapped features, a generator, CSD negatives) and whether it is built with per-tap channels. The
trainer calls every loss from that declaration (`call_loss`), so a new loss is one class and one
`LOSSES.register` line; `output_losses()`, those reading no tapped features, are the ones a QAT
stage may use, and `standalone_losses()`, those reading only the student's output and the batch,
the ones `single` and `csd` runs may add to their L1. LSFD, FACD and the edge loss (after EFDN)
are edgesr's interpretations (docs/distillation.md).
`csd_objective` combines them into CSD's full training objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from edgesr.losses.batch import DistillBatch, call_loss
from edgesr.losses.contrastive import (
    DEFAULT_LAYER_WEIGHTS,
    DEFAULT_LAYERS,
    ContrastiveLoss,
    Negatives,
    contrastive_ratio,
    make_negatives,
    negative_indices,
    negative_set,
)
from edgesr.losses.edge import EdgeDistillationLoss, EdgeLoss, edge_loss
from edgesr.losses.facd import FACDLoss, facd_loss
from edgesr.losses.feature import FAKDLoss, FitNetLoss, fakd_loss, fitnet_loss, spatial_affinity
from edgesr.losses.lsfd import LSFDLoss, lsfd_loss
from edgesr.losses.meta_kd import KRNet, MetaKDLoss
from edgesr.losses.pixel import L1Loss, OutputDistillationLoss, l1, output_distillation
from edgesr.losses.spec import Reads, reads_of
from edgesr.losses.vgg import TAPS, VGG19Features, load_vgg19_weights
from edgesr.registry import Registry

LOSSES: Registry[type[nn.Module]] = Registry("loss")  # each class declares `reads` (edgesr.losses.spec)
LOSSES.register("l1")(L1Loss)
LOSSES.register("output_kd")(OutputDistillationLoss)
LOSSES.register("csd")(ContrastiveLoss)
LOSSES.register("fitnet")(FitNetLoss)
LOSSES.register("fakd")(FAKDLoss)
LOSSES.register("lsfd")(LSFDLoss)
LOSSES.register("facd")(FACDLoss)
LOSSES.register("edge")(EdgeLoss)
LOSSES.register("edge_kd")(EdgeDistillationLoss)
LOSSES.register("meta_kd")(MetaKDLoss)


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered loss module; an unknown name raises KeyError listing the valid ones."""
    return LOSSES.get(name)(**kwargs)


def output_losses() -> tuple[str, ...]:
    """Registered losses that read no tapped features (only outputs, HR, ...), in name order.

    Taps are forward hooks, so these are the losses usable where hooks do not run (a QAT graph).
    """
    return tuple(n for n in LOSSES.names() if not reads_of(LOSSES.get(n)).features)


def standalone_losses() -> tuple[str, ...]:
    """Registered losses that read only the student's output and the batch (no teacher, no taps),
    in name order: the ones `single` mode and every width of a `csd` run may add to their L1."""
    return tuple(n for n in LOSSES.names() if reads_of(LOSSES.get(n)).standalone)


def csd_objective(
    student_srs: Mapping[float, Tensor],
    teacher_sr: Tensor,
    hr: Tensor,
    negatives: Tensor | Negatives | None,
    lambda_teacher: float,
    lambda_cl: float,
    cl: ContrastiveLoss | None,
) -> tuple[Tensor, dict[str, float]]:
    """CSD's joint objective for one step; returns (total, named terms).

        total = sum_w L1(S_w, HR) + lambda_T * L1(T, HR) + lambda_CL * sum_w CL(S_w, T, N)

    student_srs: width -> B x 3 x H x W student output; teacher_sr, hr: B x 3 x H x W;
    negatives: `negative_set(...)` or a K x B x 3 x H x W tensor (`make_negatives`).
    The teacher is trained by its L1 term only
    (CL detaches it). With lambda_cl == 0 CL is not computed ("joint training, no CL" baseline)
    and `cl`/`negatives` may be None.

    The dict holds unweighted terms ("l1_student_w<w>", "l1_teacher", "cl_w<w>") and "total" as
    Python floats. Reading them synchronises with the device once per call (one `.tolist()`).
    """
    if not student_srs:
        raise ValueError("csd_objective needs at least one student output")
    use_cl = lambda_cl != 0.0
    if use_cl and (cl is None or negatives is None):
        raise ValueError("lambda_cl != 0 needs a ContrastiveLoss `cl` and `negatives`")

    names: list[str] = []
    values: list[Tensor] = []  # unweighted terms, graph kept for the total
    weighted: list[Tensor] = []
    for w, s in student_srs.items():
        term = l1(s, hr)
        names.append(f"l1_student_w{w:g}")
        values.append(term)
        weighted.append(term)
    t_term = l1(teacher_sr, hr)
    names.append("l1_teacher")
    values.append(t_term)
    weighted.append(lambda_teacher * t_term)
    if use_cl:
        assert cl is not None and negatives is not None
        targets = cl.embed_targets(teacher_sr, negatives)  # once for all widths
        for w, s in student_srs.items():
            term = cl(s, teacher_sr, negatives, targets)
            names.append(f"cl_w{w:g}")
            values.append(term)
            weighted.append(lambda_cl * term)

    # torch.stack keeps every term in the graph; torch.tensor([...]) would make a gradient-free leaf.
    total = torch.stack(weighted).sum()
    floats = torch.stack([*values, total]).detach().cpu().tolist()
    return total, dict(zip([*names, "total"], floats, strict=True))


__all__ = [
    "DEFAULT_LAYERS",
    "DEFAULT_LAYER_WEIGHTS",
    "LOSSES",
    "TAPS",
    "ContrastiveLoss",
    "DistillBatch",
    "EdgeDistillationLoss",
    "EdgeLoss",
    "FACDLoss",
    "FAKDLoss",
    "FitNetLoss",
    "KRNet",
    "L1Loss",
    "LSFDLoss",
    "MetaKDLoss",
    "OutputDistillationLoss",
    "Reads",
    "VGG19Features",
    "build_loss",
    "call_loss",
    "contrastive_ratio",
    "csd_objective",
    "edge_loss",
    "facd_loss",
    "fakd_loss",
    "fitnet_loss",
    "l1",
    "load_vgg19_weights",
    "lsfd_loss",
    "Negatives",
    "make_negatives",
    "negative_set",
    "negative_indices",
    "output_distillation",
    "output_losses",
    "reads_of",
    "spatial_affinity",
    "standalone_losses",
]
