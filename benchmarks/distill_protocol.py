"""The real-photo distillation protocol: can a method be told apart from the baselines on photos?

    python -m benchmarks distill-protocol [--scale 2|4] [--preset cpu|smoke] [--seeds 0 1 2]
        [--widths 0.25 0.5] [--methods fakd csd ...] [--photos DIR] [--out runs/distill_protocol_x2]

1. Data (`prepare`): training = the built-in train photos + the 9 `calib` real photos of
   `python -m benchmarks real-photos` (1280 px wide); validation = its 14 `quant-eval` photos
   (640x360 crops), never trained on. `--photos DIR` uses another folder with `calib/` and
   `quant-eval/` sub-folders instead (tests do). Both sets are copied under OUT/data.
2. Refuses to run when a validation photo is also a training photo (`check_disjoint`): the same
   pixels, or the same picture at another size (grey 16x16 thumbnails correlated above 0.98).
3. Teacher to a plateau (`plateau_teacher`): the preset's teacher recipe trained in stages of twice the
   students' steps, each stage continuing the previous one's weights, until a stage raises the Y-PSNR on the
   built-in val photos (not the real validation photos, which stay unseen until the students are
   scored) by less than `--plateau-db` (0.05 dB) or `--max-stages` is reached; the best stage is the
   teacher. The stages and their PSNR are printed and kept (OUT/teacher/stage-K). Reused when run
   again. The overlap check compares whole photos; it does not detect a crop of a training photo.
4. For each student width, `edgesr bench distill` on that teacher (every method, `--seeds`), into
   OUT/wW: tables with the paired intervals against the three baselines (edgesr.stats). Students
   an earlier invocation initialised from another teacher stage stop the run before anything
   trains, with the `mv` that keeps them (`stale_students`).

Presets: `cpu` is recipes/distill_protocol_cpu.yaml (EDSR 4x64 teacher -> widths 0.25 / 0.5, i.e.
16 / 32 channels, 600 steps) on this data; `smoke` is the same at 2 steps, 1 stage, one extra method
(CI time). OUT/summary.md records the command, the wall time of the teacher and of each width (this
invocation's, and every run's training time however many invocations it took), and every student
that ended below bicubic (the protocol's tables mean little for those).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import at_least_one
from edgesr.errors import OutputExistsError
from edgesr.files import atomic_write_text

PRESETS = {"cpu": "distill_protocol_cpu", "smoke": "distill_protocol_cpu"}
SMOKE_OVERRIDES = ["train.steps=2", "train.checkpoint_every=2", "data.patch_size=16", "data.batch_size=2",
                   "data.workers=0", "train.log_every=1"]  # fmt: skip
THUMB = 16
SAME_PICTURE = 0.98  # thumbnail correlation above which two photos are one picture


class OverlapError(SystemExit):
    """A validation photo is also a training photo: the protocol's numbers would be meaningless."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill-protocol", help="distillation methods vs baselines on real photos, paired CIs"
    )
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--preset", default="cpu", choices=list(PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--methods", nargs="+", help="default: all but ablations (baselines always run)")
    p.add_argument("--photos", type=Path, help="folder with calib/ and quant-eval/ (default: fetched)")
    p.add_argument("--plateau-db", type=float, default=0.05, help="teacher stops when a stage gains less")
    stages = at_least_one("needs at least 1 teacher stage, got {n}")
    p.add_argument("--max-stages", type=stages, default=6, help="teacher stages at most (smoke: 1)")
    p.add_argument("--out", type=Path, help="default: runs/distill_protocol_xSCALE[_smoke]")
    p.set_defaults(run=run)


def _pixels(path: Path) -> np.ndarray:
    from edgesr.data.images import read_image

    return read_image(path)


def _thumb(img: np.ndarray) -> np.ndarray:
    from edgesr.data.bicubic import imresize

    grey = img.astype(np.float64).mean(axis=2)
    t = imresize(grey, output_shape=(THUMB, THUMB)).ravel()
    return (t - t.mean()) / (t.std() + 1e-9)


def check_disjoint(train: list[Path], val: list[Path]) -> None:
    """OverlapError naming the first validation photo that is also a training photo: identical
    pixels, or the same picture at another size (16x16 grey thumbnails correlated above 0.98)."""

    def key(img: np.ndarray) -> str:
        return hashlib.sha256(img.tobytes() + str(img.shape).encode()).hexdigest()

    seen = {}
    for path in train:
        img = _pixels(path)
        seen[key(img)] = (path, _thumb(img))
    for v in val:
        img = _pixels(v)
        if key(img) in seen:
            raise OverlapError(f"validation photo {v} is training photo {seen[key(img)][0]} (same pixels): "
                               "remove it from one of the two sets")  # fmt: skip
        tv = _thumb(img)
        for path, tt in seen.values():
            corr = float(tv @ tt) / tv.size
            if corr > SAME_PICTURE:
                raise OverlapError(
                    f"validation photo {v} looks like training photo {path} (thumbnail correlation "
                    f"{corr:.3f} > {SAME_PICTURE}: the same picture at another size?): remove it from one set"
                )


def prepare(out: Path, photos: Path | None) -> tuple[Path, Path]:
    """OUT/data/train (built-in train + calib photos) and OUT/data/val (quant-eval), disjoint."""
    from benchmarks.real_photos import fetch
    from edgesr.data.samples import builtin_pairs

    src = photos or fetch(verbose=False)
    train, val = out / "data" / "train", out / "data" / "val"
    calib, evals = sorted((src / "calib").glob("*.png")), sorted((src / "quant-eval").glob("*.png"))
    if len(evals) < 2 or not calib:
        raise SystemExit(f"{src}: needs calib/*.png and at least 2 quant-eval/*.png")
    builtin = [p.hr_path for p in builtin_pairs("train")]
    check_disjoint([*builtin, *calib], evals)
    for folder, files in ((train, [*builtin, *calib]), (val, evals)):
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (folder / f.name).is_file():
                shutil.copyfile(f, folder / f.name)
    return train, val


class Teacher(NamedTuple):
    """The staged teacher training's outcome (module docstring, step 3)."""

    dir: Path  # the best stage's run
    note: str  # `teacher_note`: whether it plateaued
    stages: list[dict]  # what teacher/stages.json holds: stage, steps, val_psnr, seconds


def plateau_teacher(base: list[str], args: argparse.Namespace, out: Path, student_steps: int) -> Teacher:
    """Train the teacher in stages of twice the students' steps until one gains under
    `--plateau-db` (or `--max-stages`); each stage an earlier invocation finished is reused."""
    from edgesr.recipe import load_recipe, resolve_recipe
    from edgesr.train.trainer import run_status, train_or_continue

    path = resolve_recipe(PRESETS[args.preset])
    steps = student_steps * 2
    prev, best, log = None, None, []
    stages_json = out / "teacher" / "stages.json"
    # a stage an earlier invocation finished is reused: keep the seconds it took then
    before = {e["stage"]: e for e in json.loads(stages_json.read_text())} if stages_json.is_file() else {}
    stages = 1 if args.preset == "smoke" else args.max_stages
    for k in range(1, stages + 1):
        run_dir = out / "teacher" / f"stage-{k}"
        # the plateau is judged on the built-in val photos: the real validation photos stay unseen
        overrides = [*base, "train.mode=single", "train.widths=[1.0]", f"train.steps={steps}",
                     "data.val=[builtin:val]", f"train.init={prev if prev else 'null'}",
                     f"name=protocol-teacher-{k}"]  # fmt: skip
        t0 = time.perf_counter()
        reused = run_status(run_dir) == "completed" and before.get(k, {}).get("steps") == steps
        rows = train_or_continue(load_recipe(path, overrides), run_dir)
        psnr = float(np.mean([r.psnr for r in rows if r.width == 1.0]))
        seconds = before[k]["seconds"] if reused else round(time.perf_counter() - t0, 1)
        log.append({"stage": k, "steps": steps, "val_psnr": psnr, "seconds": seconds})
        print(f"teacher stage {k}: val Y-PSNR {psnr:.3f} dB", flush=True)
        prev = run_dir
        if best is None or psnr > best:
            best, best_dir = psnr, run_dir
        gain = last_gain(log)
        if gain is not None and gain < args.plateau_db:
            break
    atomic_write_text(stages_json, json.dumps(log, indent=2))
    more = "the smoke preset trains one stage" if args.preset == "smoke" else "raise --max-stages"
    note = teacher_note(log, args.plateau_db, more)
    print(f"teacher: {best_dir} ({best:.3f} dB on built-in val); {note}", flush=True)
    return Teacher(best_dir, note, log)


def last_gain(log: list[dict]) -> float | None:
    """The last stage's val Y-PSNR gain over the best earlier stage; None after one stage."""
    if len(log) < 2:
        return None
    return log[-1]["val_psnr"] - max(e["val_psnr"] for e in log[:-1])


def teacher_note(log: list[dict], plateau_db: float, more: str = "raise --max-stages") -> str:
    """Whether the staged teacher reached its plateau (a stage gaining under `plateau_db`), in words."""
    k, gain = log[-1]["stage"], last_gain(log)
    if gain is None:
        return f"one stage only: not tested for a plateau ({more})"
    if gain < plateau_db:
        return f"plateau: stage {k} gained {gain:+.3f} dB < {plateau_db:g} dB"
    return f"NOT at a plateau: stage {k} still gained {gain:+.3f} dB >= {plateau_db:g} dB ({more})"


def stale_students(width_dir: Path, teacher: Path) -> str | None:
    """What to do, in words with the `mv` to run, when student runs in `width_dir` were initialised
    from another teacher stage than `teacher` (the teacher gained stages since they ran); None when
    none were. The runs are kept: `run` refuses to start until they are moved aside."""
    from edgesr.recipe import load_recipe

    old = sorted({
        init
        for f in sorted((width_dir / "runs").glob("*/recipe.yaml"))
        if (init := load_recipe(f).train.init) is not None and Path(init).resolve() != teacher.resolve()
    })  # fmt: skip
    if not old:
        return None
    names = sorted({Path(i).name for i in old})
    was, now = (
        (", ".join(names), teacher.name) if teacher.name not in names else (", ".join(old), str(teacher))
    )
    aside, n = width_dir.with_name(f"{width_dir.name}-teacher-{'-'.join(names)}"), 1
    while aside.exists():  # never mv into an earlier aside folder
        n += 1
        aside = width_dir.with_name(f"{width_dir.name}-teacher-{'-'.join(names)}-{n}")
    return (f"{width_dir}: its students were initialised from teacher {was}, but the teacher is now {now}; "
            f"move them aside ({shlex.join(['mv', str(width_dir), str(aside)])}; its scratch-s* runs do not "
            "depend on the teacher and can be moved back into runs/)")  # fmt: skip


def training_seconds(rows: list, steps: int) -> float:
    """Student training time of a width, every run counted once however many invocations trained
    it: the sum over (method, seed) of `steps` x the run's seconds per step."""
    per_run = {(r.method, r.seed): r.step_s for r in rows if r.step_s}
    return steps * sum(per_run.values())


def below_bicubic(rows: list) -> list[str]:
    """'method seed S: X dB < bicubic Y dB' for every student row under the bicubic row of its data set."""
    bicubic = {r.dataset: r.psnr for r in rows if r.method == "bicubic"}
    return [
        f"{r.method} seed {r.seed}: {r.psnr:.2f} dB < bicubic {bicubic[r.dataset]:.2f} dB on {r.dataset}"
        for r in rows
        if r.method != "bicubic" and r.dataset in bicubic and r.psnr < bicubic[r.dataset]
    ]


def command(args: argparse.Namespace, out: Path) -> str:
    """The command line that reproduces this run (from the parsed arguments, however it was called)."""
    seeds, widths = " ".join(map(str, args.seeds)), " ".join(f"{w:g}" for w in args.widths)
    parts = ["python -m benchmarks distill-protocol", f"--scale {args.scale}", f"--preset {args.preset}",
             f"--seeds {seeds}", f"--widths {widths}", f"--max-stages {args.max_stages}",
             f"--plateau-db {args.plateau_db:g}"]  # fmt: skip
    if args.methods:
        parts.append("--methods " + " ".join(args.methods))
    if args.photos:
        parts.append(f"--photos {args.photos}")
    return " ".join([*parts, f"--out {out}"])


def run(args: argparse.Namespace) -> int:
    from edgesr.distill_bench import DEFAULT_METHODS, run_bench
    from edgesr.recipe import load_recipe, resolve_recipe

    smoke = args.preset == "smoke"
    out = args.out or Path(f"runs/distill_protocol_x{args.scale}{'_smoke' if smoke else ''}")
    train, val = prepare(out, args.photos)
    base = [
        f"scale={args.scale}",
        f"data.train={train}",
        f"data.val=[{val}]",
        *(SMOKE_OVERRIDES if smoke else []),
    ]
    steps = load_recipe(resolve_recipe(PRESETS[args.preset]), base).train.steps
    t0 = time.perf_counter()
    teacher, note, stages = plateau_teacher(base, args, out, steps)
    summary = [
        "# Distillation protocol run",
        "",
        f"Command: `{command(args, out)}`",
        "",
        f"- teacher: {teacher.name}, {time.perf_counter() - t0:.0f} s; its {len(stages)} stages took "
        f"{sum(e['seconds'] for e in stages):.0f} s in all (teacher/stages.json); {note}",
    ]
    summary.append("- (times are this invocation's: runs finished in OUT before it are reused, not timed "
                   "again; teacher/stages.json keeps each stage's original seconds)")  # fmt: skip
    methods = args.methods or (["fakd"] if smoke else list(DEFAULT_METHODS))
    stale = [line for w in args.widths if (line := stale_students(out / f"w{w:g}", teacher))]
    if stale:  # every width is checked before any student trains
        raise OutputExistsError(" and ".join(stale) + "; then run the same command again")
    for w in args.widths:
        t1 = time.perf_counter()
        rows = run_bench(PRESETS[args.preset], out / f"w{w:g}", methods, args.seeds, teacher=teacher,
                         overrides=[*base, f"train.widths=[{w}]"])  # fmt: skip
        seconds = time.perf_counter() - t1
        low = below_bicubic(rows)
        print(f"width {w:g}: {seconds:.0f} s; table in {out / f'w{w:g}' / 'table.md'}", flush=True)
        for line in low:
            print(f"width {w:g}: below bicubic: {line}", flush=True)
        trained = training_seconds(rows, steps)
        summary.append(f"- width {w:g}: {seconds:.0f} s; all its runs trained for {trained:.0f} s (steps x "
                       f"each run's s/step, runs reused from earlier invocations included); students "
                       f"below bicubic: {len(low)}")  # fmt: skip
        summary += [f"  - {line}" for line in low]
    total = time.perf_counter() - t0
    summary.append(f"- total: {total:.0f} s")
    atomic_write_text(out / "summary.md", "\n".join(summary) + "\n")
    print(f"protocol done in {total:.0f} s (summary: {out / 'summary.md'})")
    return 0
