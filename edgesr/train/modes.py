"""Training modes: `train.mode` -> the objective one step optimises, one registered builder each.

    builder(recipe, model, load_teacher) -> (objective, width of a stand-alone student or None)

`model` is the recipe's architecture at full width (untrained); `load_teacher(path, model)` reads the
`train.init`-style teacher the recipe names and checks it is that architecture. `single`, `csd` and
`distill` are registered here; `qat` by `edgesr.quant.stage` (quantization sits above training in
the layers, docs/architecture.md), which the CLI and the pipeline import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from torch import nn

from edgesr.errors import EdgesrError
from edgesr.models import build_model, materialize
from edgesr.models.official import is_official_checkpoint, load_official
from edgesr.models.zoo import Progress, fetch, is_zoo_ref, lookup
from edgesr.recipe import Recipe
from edgesr.registry import Registry
from edgesr.train.checkpoint import load_model
from edgesr.train.objectives import CSDObjective, DistillObjective, SingleObjective

__all__ = ["MODES", "ObjectiveBuilder", "TeacherLoader", "TrainingError", "build_objective", "load_teacher"]


class TrainingError(EdgesrError, RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


TeacherLoader = Callable[[str, nn.Module], nn.Module]
ObjectiveBuilder = Callable[[Recipe, nn.Module, TeacherLoader], tuple[nn.Module, float | None]]
MODES: Registry[ObjectiveBuilder] = Registry("training mode")


def build_objective(recipe: Recipe, progress: Progress | None = None) -> tuple[nn.Module, float | None]:
    """The step objective for `recipe.train.mode` and, for a stand-alone student, its width.
    `progress(bytes, total)` is shown while a `zoo:` teacher downloads."""
    model = build_model(
        recipe.model.name, scale=recipe.scale, width_multiple=recipe.model.width_multiple, **recipe.model.args
    )
    mode = recipe.train.mode
    if mode not in MODES:
        raise TrainingError(
            f"train.mode {mode!r} is not registered in this process"
            + (": import edgesr.quant first (the CLI does; it needs pip install \"edgesr[quant]\")"
               if mode == "qat" else f" (registered: {', '.join(MODES.names())})")
        )  # fmt: skip
    return MODES.get(mode)(recipe, model, functools.partial(load_teacher, progress=progress))


@MODES.register("single")
@MODES.register("distill")
def _single_or_distill(
    recipe: Recipe, model: nn.Module, load: TeacherLoader
) -> tuple[nn.Module, float | None]:
    """One network: the teacher itself (width 1), or a stand-alone student from scratch or from a
    teacher's leading channels; in `distill` mode a frozen teacher distils into that student."""
    t = recipe.train
    teacher = load(t.init, model) if t.init is not None else None
    width = t.widths[0]
    if width == 1.0:
        return SingleObjective(teacher or model, recipe), None
    source = load(t.student_from, model) if t.mode == "distill" and t.student_from else teacher
    student = materialize(source or model, width)
    if source is None or (t.mode == "distill" and t.student_init == "scratch"):
        for m in student.modules():  # a narrow net needs its own fan-in initialisation
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                m.reset_parameters()
    if t.mode == "distill":
        assert teacher is not None  # the recipe requires train.init in distill mode
        return DistillObjective(student, teacher, recipe), width
    return SingleObjective(student, recipe), width


@MODES.register("csd")
def _csd(recipe: Recipe, model: nn.Module, load: TeacherLoader) -> tuple[nn.Module, float | None]:
    """Teacher and channel-split students of one shared network (CSD's CSSR-Net)."""
    init = recipe.train.init
    return CSDObjective(load(init, model) if init is not None else model, recipe), None


def load_teacher(path: str, model: nn.Module, progress: Progress | None = None) -> nn.Module:
    """The teacher `train.init` names: an edgesr checkpoint or run directory, an official
    EDSR/RCAN PyTorch checkpoint, or `zoo:NAME` (edgesr.models.zoo: fetched into the cache once,
    `progress(bytes, total)` shown while it downloads). It must be the architecture the recipe
    builds, at full width."""
    label, res_scale = path, model.arch["args"].get("res_scale")
    if is_zoo_ref(path):
        # the zoo entry knows the res_scale the weights were trained with; the arch check below
        # then refuses a recipe whose model differs from the teacher in any argument
        res_scale = lookup(path).args.get("res_scale", res_scale)
        path = str(fetch(path, progress))
        label = f"{label} ({path})"
    if not Path(path).exists():
        raise TrainingError(
            f"train.init={path}: no such run directory or checkpoint; this recipe starts from a trained "
            "teacher: train one there first (its recipe's header says which), or set train.init=PATH"
        )
    # a file that is not .safetensors can only be an official checkpoint: reading it as one says
    # why it cannot be used (pickled objects refused, truncated, not an EDSR/RCAN state dict)
    if is_official_checkpoint(path) or (Path(path).is_file() and Path(path).suffix != ".safetensors"):
        official, _ = load_official(path, arch=model.arch["name"], scale=model.scale, res_scale=res_scale)
        # the official file knows nothing of channel splitting: the recipe's slicing rule applies
        teacher = build_model(
            official.arch["name"], **{**official.arch["args"], "width_multiple": model.width_multiple}
        )
        teacher.load_state_dict(official.state_dict())
        arch, width = teacher.arch, None
    else:
        teacher, meta = load_model(path)
        arch, width = meta.arch, meta.materialized_width
    if arch != model.arch or width is not None:
        raise TrainingError(
            f"train.init={label}: checkpoint holds {arch} (width {width or 1}); "
            f"the recipe builds {model.arch} at full width"
        )
    return teacher
