"""The `qat` training stage: a trained student, fake-quantized for a backend, distilled from its teacher.

    L = sum_i weight_i * loss_i(FQ(student)(LR), teacher(LR), HR)   (losses on outputs: output_losses())

The student is materialized from `train.student_from` at `train.widths[0]` (or taken as it is when
that checkpoint already is a materialized student), exported and prepared with fake quantization
for `train.quant.backend` (`edgesr.quant.prepare(qat=True)`), and trained by the ordinary trainer
through this objective. Its checkpoints are QAT checkpoints (`edgesr.quant.state`): the trainer
saves and resumes them like any other stage. With `quant.activation_ranges: calibrate` (the default)
the activation ranges are PTQ's, calibrated on the built-in train crops before the first step and
then fixed (`edgesr.quant.calibrate_ranges`); with `observe` they follow the training batches. After
`quant.freeze_observers_at` no range moves any more (weights' included), so the last steps adapt
the weights to fixed int8 grids.
"""

from __future__ import annotations

from torch import Tensor, nn

from edgesr.errors import RecipeError
from edgesr.models import materialize
from edgesr.quant.backends import default_estimator
from edgesr.quant.pt2e import calibrate_ranges, calibration_images
from edgesr.quant.state import fake_quant_model, quant_entry
from edgesr.recipe import Recipe
from edgesr.student import load_student
from edgesr.train.modes import MODES, TeacherLoader
from edgesr.train.objectives import DistillObjective

__all__ = ["QATObjective", "build_qat_objective", "float_student"]


class QATObjective(DistillObjective):
    """`DistillObjective` whose student is a fake-quant graph; freezes observers at the set step."""

    def __init__(self, student: nn.Module, teacher: nn.Module, recipe: Recipe) -> None:
        super().__init__(student, teacher, recipe)
        q = recipe.train.quant
        self.quant_entry = quant_entry(q.backend, q.fully_integer, q.activations)  # checkpoint metadata
        self.freeze_at = q.freeze_observers_at
        if not q.fake_quant:  # the float control: the same graph with every fake quant off
            for m in self.net._edgesr_fake_quants:
                m.disable_fake_quant()
                m.disable_observer()

    def forward(self, lr: Tensor, hr: Tensor, step: int) -> tuple[Tensor, dict[str, float]]:
        if self.freeze_at is not None and step > self.freeze_at:  # from (step): exact on resume
            for m in self.net._edgesr_fake_quants:
                m.disable_observer()
        return super().forward(lr, hr, step)


def float_student(path: str, width: float) -> nn.Module:
    """The float student at `width` from a materialized-student, CSD or teacher checkpoint, stand-alone
    at every width (a full-width student too, so its QAT checkpoint says materialized width 1)."""
    student = load_student(path, width, any_width=True)
    if student.is_qat:
        raise RecipeError(f"train.student_from={path} is already a QAT checkpoint; give the float student")
    if student.meta.materialized_width is None and student.width == 1.0:
        return materialize(student.net, 1.0)
    return student.net


@MODES.register("qat")
def build_qat_objective(
    recipe: Recipe, model: nn.Module, load_teacher: TeacherLoader
) -> tuple[QATObjective, float]:
    """The objective of a `qat` recipe and the student's width. `model` is the recipe's (full-width,
    untrained) architecture that the teacher must match; `load_teacher` the trainer's `train.init`
    loader."""
    t = recipe.train
    assert t.init is not None and t.student_from is not None  # the recipe checks both in qat mode
    width = t.widths[0]
    teacher = load_teacher(t.init, model)
    student = float_student(t.student_from, width)
    if student.arch != model.arch:
        raise RecipeError(
            f"train.student_from={t.student_from} holds {student.arch}; the recipe builds {model.arch}"
        )
    q = t.quant
    entry = quant_entry(q.backend, q.fully_integer, q.activations)
    fq = fake_quant_model(student, entry)
    if q.fake_quant and q.activation_ranges == "calibrate":
        crops = calibration_images(recipe.scale, n=q.calibration_images, size=q.calibration_size)
        calibrate_ranges(fq, crops, q.estimator or default_estimator(entry["activations"]))
    return QATObjective(fq, teacher, recipe), width
