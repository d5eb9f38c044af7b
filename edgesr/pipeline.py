"""The quickstart pipeline: the whole edgesr loop on the built-in photos, on a CPU, in minutes.

Stages (each a recipe run in its own directory under `out`, skipped when already completed, so
an interrupted pipeline continues where it stopped):
1. `teacher`: pre-train the teacher alone (`recipes/quickstart_teacher.yaml`), as CSD's protocol
   starts from a trained teacher;
2. `csd`: joint CSD training of the teacher and its width-0.25 student from that teacher
   (`recipes/quickstart.yaml` with `train.init` pointing at stage 1);
3. `student`: the width-0.25 student materialized from the CSD model and fine-tuned alone with
   output distillation from the frozen stage-1 teacher (`recipes/quickstart_student.yaml`);
then the final table: bicubic, the teacher, the CSD model at both widths, and the fine-tuned
student, Y-PSNR / SSIM on the built-in val photos. docs/quickstart.md says why three stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from edgesr.evaluate import EvalRow, print_table, table_markdown
from edgesr.files import atomic_write_text
from edgesr.recipe import load_recipe, recipe_hash, resolve_recipe


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    rows: list[EvalRow]  # the final table: bicubic, teacher, student
    stages: dict[str, Path]  # stage name -> run directory
    student: Path  # the deployable student's run directory (its checkpoint is a narrow model)


def _status(run_dir: Path) -> str | None:
    path = run_dir / "status.json"
    return json.loads(path.read_text())["state"] if path.is_file() else None


def _run_stage(
    name: str, recipe_name: str, overrides: list[str], run_dir: Path, console: Console
) -> list[EvalRow]:
    from edgesr.train.trainer import TrainingError, train

    recipe = load_recipe(resolve_recipe(recipe_name), overrides)
    state = _status(run_dir)
    if state is not None and recipe_hash(load_recipe(run_dir / "recipe.yaml")) != recipe_hash(recipe):
        raise TrainingError(f"{run_dir} holds a run of a different recipe; choose another output directory")
    if state == "completed":
        console.print(f"[bold]{name}[/]: already completed in {run_dir}")
        rows = [EvalRow(**r) for r in json.loads((run_dir / "results.json").read_text())["rows"]]
        return rows
    console.print(f"[bold]{name}[/]: {recipe.description} -> {run_dir}")
    resume = state is not None and (run_dir / "checkpoints" / "latest").is_file()
    return train(recipe, run_dir, resume=resume, console=console).rows


def quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               console: Console | None = None) -> PipelineResult:  # fmt: skip
    """Run every quickstart stage into `out`; `overrides` apply to both recipes (e.g. train.steps=50)."""
    out = Path(out)
    console = console or Console(stderr=True)
    extra = list(overrides or [])
    stages = {"teacher": out / "teacher", "csd": out / "csd", "student": out / "student"}
    teacher_rows = _run_stage("1/3 teacher", "quickstart_teacher", extra, stages["teacher"], console)
    csd_rows = _run_stage(
        "2/3 csd", "quickstart", [*extra, f"train.init={stages['teacher']}"], stages["csd"], console
    )
    from_runs = [f"train.init={stages['teacher']}", f"train.student_from={stages['csd']}"]
    student_rows = _run_stage(
        "3/3 student", "quickstart_student", [*extra, *from_runs], stages["student"], console
    )
    rows = [*teacher_rows]  # bicubic, teacher
    rows += [replace(r, method=f"CSD model {r.method}") for r in csd_rows if r.width is not None]
    rows += [replace(r, method="student w=0.25 fine-tuned") for r in student_rows if r.width is not None]
    title = "quickstart: x2 on the built-in val photos (Y-PSNR / SSIM, border crop 2)"
    print_table(rows, title)
    atomic_write_text(out / "results.md", table_markdown(rows, title) + "\n")
    return PipelineResult(out, rows, stages, stages["student"])
