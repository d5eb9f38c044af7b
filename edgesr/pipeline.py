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
4. `export`: the student converted to every installed target (Core ML, TFLite, ExecuTorch, ONNX) at
   each target's default precision, each artifact verified on its runtime against PyTorch; targets
   whose SDK is missing are listed with the `pip install` that adds them.
5. `profile`: the student's architecture timed on this host at a few widths (ONNX Runtime, else
   PyTorch), and `select-width` for the host's budget (devices/host.yaml): the widest width whose
   measured latency fits, with PSNR from the runs above (docs/devices.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from edgesr import selection
from edgesr.evaluate import EvalRow, print_table, table_markdown
from edgesr.export import ExportOptions, export_all
from edgesr.export.verify import verification_table
from edgesr.files import atomic_write_text
from edgesr.recipe import load_recipe, resolve_recipe
from edgesr.sdk import sdk_output_to
from edgesr.student import load_student
from edgesr.train.trainer import run_status, train_or_continue


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    rows: list[EvalRow]  # the final table: bicubic, teacher, student
    stages: dict[str, Path]  # stage name -> run directory
    student: Path  # the deployable student's run directory (its checkpoint is a narrow model)
    exports: Any = None  # edgesr.export.ExportReport of stage 4
    selection: Any = None  # edgesr.selection.Selection of the final profile + select-width step


def _run_stage(
    name: str, recipe_name: str, overrides: list[str], run_dir: Path, console: Console
) -> list[EvalRow]:

    recipe = load_recipe(resolve_recipe(recipe_name), overrides)
    done = run_status(run_dir) == "completed"
    console.print(
        f"[bold]{name}[/]: "
        + (f"already completed in {run_dir}" if done else f"{recipe.description} -> {run_dir}")
    )
    return train_or_continue(recipe, run_dir, console)


def quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               console: Console | None = None,
               export_targets: list[str] | None = None,
               profile: bool = True) -> PipelineResult:  # fmt: skip
    """Run every quickstart stage into `out`; `overrides` apply to all three recipes (e.g. train.steps=50).

    `export_targets`: the targets stage 4 exports to (default: every registered one; [] skips it).
    `profile`: end with a short host latency sweep and a width selection for the host's budget.
    """
    out = Path(out)
    console = console or Console(stderr=True)
    extra = list(overrides or [])
    stages = {"teacher": out / "teacher", "csd": out / "csd", "student": out / "student"}
    teacher_rows = _run_stage("1/5 teacher", "quickstart_teacher", extra, stages["teacher"], console)
    csd_rows = _run_stage(
        "2/5 csd", "quickstart", [*extra, f"train.init={stages['teacher']}"], stages["csd"], console
    )
    from_runs = [f"train.init={stages['teacher']}", f"train.student_from={stages['csd']}"]
    student_rows = _run_stage(
        "3/5 student", "quickstart_student", [*extra, *from_runs], stages["student"], console
    )
    rows = [*teacher_rows]  # bicubic, teacher
    rows += [replace(r, method=f"CSD model {r.method}") for r in csd_rows if r.width is not None]
    rows += [
        replace(r, method=f"student w={r.width:g} fine-tuned") for r in student_rows if r.width is not None
    ]
    scale = load_recipe(resolve_recipe("quickstart"), extra).scale
    title = f"quickstart: x{scale} on the val photos (Y-PSNR / SSIM, border crop {scale})"
    print_table(rows, title, console)
    atomic_write_text(out / "results.md", table_markdown(rows, title) + "\n")
    exports = None
    if export_targets != []:
        exports = export_stage(stages["student"], out / "exports", console, export_targets)
    selection = None
    if profile:
        selection = profile_stage(stages["student"], stages["csd"], out, console, stages["teacher"])
    return PipelineResult(out, rows, stages, stages["student"], exports, selection)


def export_stage(student: Path, out: Path, console: Console, targets: list[str] | None = None) -> Any:
    """Stage 4: export the student to every installed target and print the verification table.

    Artifacts already in `out` are replaced, so a re-run exports the current student.
    """

    console.print(f"[bold]4/5 export[/]: {student} -> {out}")
    options = ExportOptions(out_dir=out, force=True)
    with sdk_output_to(out / "export.log") as captured:  # ~100 lines of converter noise, none ours
        report = export_all(load_student(student), options, targets, target_defaults=True)
    console.print(verification_table(report.results))
    console.print(f"SDK messages: {captured.lines} lines in {captured.path}", highlight=False)
    for target, reason in report.skipped.items():
        console.print(f"skipped {target}: {reason}", highlight=False, markup=False)
    return report


def profile_stage(student: Path, csd: Path, out: Path, console: Console, teacher: Path | None = None) -> Any:
    """Final step: host latency sweep of the student's architecture + width selection for the host's
    budget; writes `out/select_width.md` and `out/select_width.png`, returns the Selection."""

    console.print(f"[bold]5/5 profile[/]: host latency of the student's architecture -> {out / 'profiles'}")
    sel, plot = selection.quickstart_loop(student, csd, out, log=console.print, teacher=teacher)
    title = f"select-width on host: budget {sel.budget_ms:g} ms, {sel.runtime}, LR {sel.resolution}"
    atomic_write_text(out / "select_width.md", f"{title}\n\n{selection.table_markdown(sel)}\n")
    console.print(selection.table_markdown(sel), markup=False, highlight=False)
    for note in sel.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    chosen = f"width {sel.chosen.width:g} ({sel.chosen.latency_ms:.1f} ms)" if sel.chosen else "no width fits"
    console.print(f"select-width: {chosen}; plot {plot}")
    return sel
