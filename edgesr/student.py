"""The one place a checkpoint becomes a student network: `load_student(checkpoint, width)`.

Every command that turns a checkpoint into a network at a width (export, the QAT stage, the quant
report, eval, upscale, profile sweep, select-width) calls `load_student`, which reads the file once
(header and weights together) and returns a typed `Student`.

>>> s = load_student("runs/quickstart/student")          # doctest: +SKIP
>>> s.net, s.width, s.scale, s.is_qat                    # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgesr.errors import CheckpointError, UsageError
from edgesr.models import build_model, materialize
from edgesr.models.zoo import is_zoo_ref, load_zoo
from edgesr.recipe import load_recipe, resolve_recipe
from edgesr.train.checkpoint import CheckpointMeta, open_checkpoint, read_meta, resolve_checkpoint

__all__ = ["Student", "load_network", "load_student", "resolve_arch", "run_recipe", "student_width"]


@dataclass(frozen=True)
class Student:
    """A stand-alone network at one width, and where it came from.

    `net` runs as `net(x)` with no width argument: a materialized (narrow) copy, or the full network at
    width 1. For a QAT checkpoint it is the fake-quant graph as trained (`edgesr.quant` converts it).
    """

    net: nn.Module
    meta: CheckpointMeta
    width: float
    path: Path | None  # the weights file read; None for a module that came from no checkpoint

    @property
    def scale(self) -> int:
        return self.meta.scale

    @property
    def arch(self) -> dict[str, Any]:
        return self.meta.arch

    @property
    def quant(self) -> dict[str, Any] | None:
        """A QAT checkpoint's `quant` entry ({"backend", "fully_integer", ...}); None when float."""
        return self.meta.quant

    @property
    def is_qat(self) -> bool:
        return self.meta.quant is not None


def student_width(meta: CheckpointMeta, width: float | None, *, any_width: bool = False) -> float:
    """The width to take: a materialized checkpoint's own (asking another is an error), else `width`
    or the narrowest trained width. `width` must be a trained width unless `any_width` (a student sliced
    from a teacher's leading channels)."""
    if width is not None and not 0.0 < float(width) <= 1.0:
        raise UsageError(f"width must be in (0, 1], got {width!r}")
    if meta.materialized_width is not None:
        if width is not None and abs(width - meta.materialized_width) > 1e-9:
            raise CheckpointError(
                f"this checkpoint is a materialized student at width {meta.materialized_width:g}; "
                f"it cannot be used at width {width:g}"
            )
        return float(meta.materialized_width)
    if width is None:
        return float(min(meta.widths))
    if not any_width and not any(abs(width - w) < 1e-9 for w in meta.widths):
        raise CheckpointError(
            f"width {width:g} was not trained in this checkpoint (trained widths: "
            f"{', '.join(f'{w:g}' for w in meta.widths)})"
        )
    return float(width)


def run_recipe(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The `recipe.yaml` of the run a run dir, checkpoint dir or weights file belongs to (the run dir
    holds it beside `checkpoints/`); None for a file outside a run, or a `zoo:` teacher."""
    if is_zoo_ref(str(checkpoint)):
        return None
    path = Path(checkpoint)
    if (path / "recipe.yaml").is_file():
        return path / "recipe.yaml"
    weights = resolve_checkpoint(path)
    for parent in list(weights.parents)[:3]:  # run/checkpoints/step-N/model.safetensors
        if parent.name == "checkpoints" and (parent.parent / "recipe.yaml").is_file():
            return parent.parent / "recipe.yaml"
    return None


def load_network(checkpoint: str | os.PathLike[str]) -> Student:
    """The network as the checkpoint stores it, in eval mode: a CSD or teacher network at full width
    (slimmable: `net(x, width=w)` runs any trained width), or a materialized student at its own width.
    `zoo:NAME` is a zoo teacher (edgesr.models.zoo; fetched into the cache if needed)."""
    if is_zoo_ref(checkpoint):
        zoo_net, info = load_zoo(checkpoint)
        meta = CheckpointMeta(zoo_net.arch, zoo_net.scale, (1.0,), None, "official", 0, source=checkpoint)
        return Student(zoo_net.eval(), meta, 1.0, Path(info["source"]))
    net, meta, path = open_checkpoint(checkpoint)
    return Student(net.eval(), meta, float(meta.materialized_width or 1.0), path)


def load_student(
    checkpoint: str | os.PathLike[str], width: float | None = None, *, any_width: bool = False
) -> Student:
    """The student at `width` of a run dir, checkpoint dir or .safetensors file, in eval mode.

    A CSD or teacher checkpoint is materialized at `width` (width 1: the full network as it is); a
    materialized student is taken as it is. Raises `CheckpointError` naming the file and the widths.
    """
    stored = load_network(checkpoint)
    w = student_width(stored.meta, width, any_width=any_width)
    if stored.meta.materialized_width is None and w < 1.0:
        return Student(materialize(stored.net, w).eval(), stored.meta, w, stored.path)
    return Student(stored.net, stored.meta, w, stored.path)


def resolve_arch(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The full architecture (every constructor argument) of a checkpoint / run dir, or of a recipe."""
    p = Path(source)
    if p.is_dir() or p.suffix == ".safetensors":
        arch = read_meta(resolve_checkpoint(p)).arch
    else:
        r = load_recipe(resolve_recipe(source))
        args = {**r.model.args, "scale": r.scale, "width_multiple": r.model.width_multiple}
        arch = {"name": r.model.name, "args": args}
    with torch.device("meta"):  # every default filled in, no weights allocated
        return build_model(arch["name"], **arch["args"]).arch
