"""`edgesr bench distill`: distillation methods side by side under one protocol.

Every method trains the same student (width, data, steps, optimizer) from the same teacher; only
the objective differs. Each method is a list of recipe overrides on a preset base recipe, so the
table states exactly what ran. Three baselines are always included: the student from scratch,
the student initialised from the teacher's leading channels with plain L1 (which matched CSD in
CSD's issue #9), and output distillation.

Outputs in `--out`: `results.csv` (one row per method x seed x data set), `per_image.csv` (one row
per method x seed x data set x image), `table.md` (mean and spread over seeds, seconds per training
step, each method against bicubic photo by photo (its mean, its mean on bicubic's easiest quarter
of the images, the images x seeds below bicubic, the worst one), then every method against every
baseline: the mean per-image Y-PSNR and SSIM difference over
images x seeds with a 95% interval counting image and seed variation, edgesr.stats; a difference
is marked resolved only when its interval excludes zero), `psnr.png`, `paired.png` (the differences with their
intervals), and `teacher/` (the teacher run, unless `--teacher` was given).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from edgesr.data import dataset_name, open_dataset
from edgesr.errors import DataError, UnknownNameError
from edgesr.files import atomic_path, atomic_write_text
from edgesr.recipe import Recipe, dump_recipe, load_recipe, resolve_recipe
from edgesr.stats import PairedDiff, paired_difference
from edgesr.train.trainer import train_or_continue


def _distill(losses: str) -> list[str]:
    return ["train.mode=distill", "train.init={teacher}", f"train.losses={losses}"]


# name -> (description, overrides). "{teacher}" is replaced by the teacher run directory.
METHODS: dict[str, tuple[str, list[str]]] = {
    # single and csd train with their own objective: a preset's `losses` are cleared for them
    "scratch": ("student from scratch, L1", ["train.mode=single", "train.init=null", "train.losses=[]"]),
    "slice_l1": ("teacher-slice init, L1", ["train.mode=single", "train.init={teacher}", "train.losses=[]"]),
    "output_kd": ("output distillation: 0.5 L1(S,HR) + 0.5 L1(S,T)",
                  _distill("[{name: output_kd, args: {alpha: 0.5}}]")),
    "fitnet": ("L1 + FitNet (1x1 regressors, MSE) on 3 body stages",
               _distill("[{name: l1}, {name: fitnet, weight: 1.0}]")),
    "fakd": ("FAKD: 0.5 L1(S,HR) + 0.5 L1(S,T) + 10 affinity L1 on 3 stages",
             _distill("[{name: output_kd, args: {alpha: 0.5}}, {name: fakd, weight: 10.0}]")),
    "lsfd": ("L1 + LSFD (edgesr's interpretation, docs/distillation.md)",
             _distill("[{name: l1}, {name: lsfd, weight: 1.0}]")),
    "facd": ("L1 + FACD (edgesr's interpretation, docs/distillation.md)",
             _distill("[{name: l1}, {name: facd, weight: 0.1}]")),
    "meta_kd": ("L1 + meta-KD (KRNet texture kernels, meta-learned; edgesr's interpretation)",
                _distill("[{name: l1}, {name: meta_kd, weight: 1.0}]")),
    "csd": ("CSD joint training from the teacher, CL on",
            ["train.mode=csd", "train.init={teacher}", "train.losses=[]"]),
    "csd_no_cl": ("ablation of csd: the same joint training, CL off (lambda_cl 0)",
                  ["train.mode=csd", "train.init={teacher}", "train.losses=[]", "train.csd.lambda_cl=0"]),
}  # fmt: skip
BASELINES = ("scratch", "slice_l1", "output_kd")
# ablation -> the method it takes one part out of. Ablations run only when asked for by name (they
# answer "which part of a method does it": docs/distillation.md, CSD's contrastive term), and the
# paired table adds the method minus its ablation.
ABLATIONS: dict[str, str] = {"csd_no_cl": "csd"}
DEFAULT_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m not in ABLATIONS)
PRESETS = {"cpu": "bench_distill_cpu", "gpu": "bench_distill_gpu"}


@dataclass(frozen=True)
class BenchRow:
    method: str
    seed: int
    dataset: str
    psnr: float
    ssim: float
    image_psnr: tuple[float, ...] = ()  # per validation image, the data set's order
    image_ssim: tuple[float, ...] = ()
    step_s: float | None = None  # wall seconds per training step of this run


def method_recipe(base: Recipe, base_path: Path, method: str, seed: int, teacher: Path | None) -> Recipe:
    """The base recipe with one method's overrides, the seed, and a student-only name."""
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    _, overrides = METHODS[method]
    overrides = [o.replace("{teacher}", str(teacher)) for o in overrides]
    return load_recipe(base_path, [*overrides, f"seed={seed}", f"name={base.name}-{method}-s{seed}"])


def run_bench(
    preset_or_recipe: str,
    out: Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    seeds: Sequence[int] = (0, 1),
    teacher: Path | None = None,
    teacher_steps: int | None = None,
    overrides: Sequence[str] = (),
    console: Console | None = None,
) -> list[BenchRow]:
    console = console or Console(stderr=True)
    methods = list(dict.fromkeys([*BASELINES, *methods]))  # the baselines are never optional
    for m in methods:  # fail before anything trains
        if m not in METHODS:
            raise UnknownNameError(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
    base_path = resolve_recipe(PRESETS.get(preset_or_recipe, preset_or_recipe))
    base = load_recipe(base_path, overrides)
    if overrides:  # later loads must see the same base
        base_path = out / "base_recipe.yaml"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(base_path, dump_recipe(base))
    if teacher is None:
        teacher = out / "teacher"
        steps = teacher_steps or 2 * base.train.steps
        as_teacher = ["train.mode=single", "train.widths=[1.0]", "train.init=null", f"train.steps={steps}"]
        console.print(f"teacher ({steps} steps) in {teacher}")
        train_or_continue(
            load_recipe(base_path, [*as_teacher, f"name={base.name}-teacher"]), teacher, console
        )
    rows: list[BenchRow] = []
    for method in methods:
        for seed in seeds:
            recipe = method_recipe(base, base_path, method, seed, teacher)
            run_dir = out / "runs" / f"{method}-s{seed}"
            console.print(f"[bold]{method}[/] seed {seed}: {METHODS[method][0]}")
            result_rows = train_or_continue(recipe, run_dir, console)
            speed = json.loads((run_dir / "results.json").read_text()).get("throughput", {}).get("it_per_s")
            step_s = 1 / speed if speed else None
            student = [r for r in result_rows if r.width is not None and r.width < 1.0]
            rows += [BenchRow(method, seed, r.dataset, r.psnr, r.ssim or float("nan"), r.image_psnr,
                              r.image_ssim, step_s) for r in student]  # fmt: skip
            rows += [BenchRow("bicubic", seed, r.dataset, r.psnr, r.ssim or float("nan"), r.image_psnr,
                              r.image_ssim)
                     for r in result_rows if r.method == "bicubic" and method == methods[0]]  # fmt: skip
    write_outputs(rows, out, base, list(seeds))
    return rows


def summarise(rows: Sequence[BenchRow]) -> dict[tuple[str, str], tuple[float, float, float, float, int]]:
    """(method, dataset) -> (PSNR mean, PSNR std, SSIM mean, SSIM std, seeds)."""
    groups: dict[tuple[str, str], list[BenchRow]] = {}
    for r in rows:
        groups.setdefault((r.method, r.dataset), []).append(r)

    def std(v: list[float]) -> float:
        return statistics.stdev(v) if len(v) > 1 else 0.0

    out = {}
    for key, g in groups.items():
        p, s = [r.psnr for r in g], [r.ssim for r in g]
        out[key] = (statistics.mean(p), std(p), statistics.mean(s), std(s), len(g))
    return out


def table_markdown(
    rows: Sequence[BenchRow],
    recipe: Recipe,
    seeds: list[int],
    names: dict[str, tuple[str, ...]] | None = None,
) -> str:
    summary = summarise(rows)
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    lines = [
        f"Student: `{recipe.model.name}` {recipe.model.args} at width {recipe.train.widths[0]}, "
        f"x{recipe.scale}, "
        f"{recipe.train.steps} steps, batch {recipe.data.batch_size}, LR patch {recipe.data.patch_size}; "
        f"seeds {seeds}; Y-PSNR (dB) / SSIM, mean ± std over seeds.",
        "",
        "| method | what | s/step | " + " | ".join(datasets) + " |",
        "|---|---|---|" + "---|" * len(datasets),
    ]
    for m in methods:
        cells = []
        for d in datasets:
            p, ps, s, ss, _ = summary[(m, d)]
            cells.append(f"{p:.2f} ± {ps:.2f} / {s:.4f}")
        what = METHODS[m][0] if m in METHODS else "MATLAB bicubic upsampling"
        times = [r.step_s for r in rows if r.method == m and r.step_s]
        step = f"{statistics.mean(times):.3f}" if times else "-"
        lines.append(f"| {m} | {what} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + bicubic_markdown(rows, names) + paired_markdown(rows)


def image_names(recipe: Recipe) -> dict[str, tuple[str, ...]]:
    """Validation data set -> its image names, in the order the per-image results are in."""
    return {
        dataset_name(spec): tuple(p.name for p in open_dataset(spec, recipe.scale))
        for spec in recipe.data.val
    }


@dataclass(frozen=True)
class VsBicubic:
    """One method's per-image Y-PSNR minus bicubic's on one data set, over images x seeds."""

    mean: float
    easiest: float  # mean over bicubic's easiest quarter of the images (its highest Y-PSNR: smooth photos)
    below: int  # (image, seed) pairs under bicubic
    pairs: int
    images: int
    worst: tuple[float, int, int]  # (difference, image, seed) of the lowest pair


def vs_bicubic(rows: Sequence[BenchRow]) -> dict[tuple[str, str], VsBicubic]:
    """(dataset, method) -> `VsBicubic`, for every data set with per-image bicubic results. A mean
    above bicubic can hide photos below it; the smooth photos, where bicubic is already close to the
    original, are where small students and int8 can fall under it (docs/quantization.md)."""
    bicubic = {r.dataset: r.image_psnr for r in rows if r.method == "bicubic" and r.image_psnr}
    out = {}
    for d, ref in bicubic.items():
        easiest = sorted(range(len(ref)), key=lambda i: ref[i])[-max(1, len(ref) // 4) :]
        for m in dict.fromkeys(r.method for r in rows if r.method != "bicubic"):
            runs = [r for r in rows if (r.method, r.dataset) == (m, d) and r.image_psnr]
            for r in runs:
                if len(r.image_psnr) != len(ref):
                    raise DataError(
                        f"bench distill: {m} seed {r.seed} was validated on {len(r.image_psnr)} images of "
                        f"{d}, bicubic on {len(ref)}: delete the runs that differ and run again"
                    )
            diffs = [(p - ref[i], i, r.seed) for r in runs for i, p in enumerate(r.image_psnr)]
            if not diffs:
                continue
            easy = [dp for dp, i, _ in diffs if i in easiest]
            out[(d, m)] = VsBicubic(
                mean=statistics.mean(dp for dp, _, _ in diffs),
                easiest=statistics.mean(easy),
                below=sum(dp < 0 for dp, _, _ in diffs),
                pairs=len(diffs),
                images=len(ref),
                worst=min(diffs),
            )
    return out


def bicubic_markdown(rows: Sequence[BenchRow], names: dict[str, tuple[str, ...]] | None = None) -> str:
    """The against-bicubic section of table.md; the worst image by its name in `names` (data set ->
    image names, `image_names`) when they match the results, else by its index."""
    vs = vs_bicubic(rows)
    if not vs:
        return ""
    lines = [
        "",
        "Against bicubic, photo by photo: per-image Y-PSNR minus bicubic's (dB), over images x seeds; "
        '"easiest quarter": the quarter of the images where bicubic scores highest (smooth photos, '
        "where small students can fall under it); the worst image x seed is named.",
        "",
        "| data set | method | mean | easiest quarter | images x seeds below | worst |",
        "|---|---|---|---|---|---|",
    ]
    for (d, m), v in vs.items():
        dp, i, seed = v.worst
        named = (names or {}).get(d, ())
        image = named[i] if len(named) == v.images else f"image {i}"  # names of another image set: no
        lines.append(
            f"| {d} | {m} | {v.mean:+.2f} | {v.easiest:+.2f} | {v.below} / {v.pairs} | "
            f"{dp:+.2f} ({image}, seed {seed}) |"
        )
    return "\n".join(lines) + "\n"


def _matrix(
    rows: Sequence[BenchRow], method: str, dataset: str, seeds: list[int], ssim: bool
) -> list[list[float]]:
    """images x seeds of one method's per-image metric on one data set."""
    by_seed = {
        r.seed: (r.image_ssim if ssim else r.image_psnr)
        for r in rows
        if (r.method, r.dataset) == (method, dataset)
    }
    counts = {s: len(by_seed[s]) for s in seeds}
    if len(set(counts.values())) != 1:
        raise DataError(
            f"bench distill: {method} on {dataset} has {counts} images per seed: a run was validated on "
            "another set of images; delete the runs of this out folder that differ and run again"
        )
    return [list(col) for col in zip(*(by_seed[s] for s in seeds), strict=True)]


def _comparisons(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(method, baseline) pairs of the paired table: every method against every baseline it is not,
    then every method against each of its ablations that ran."""
    pairs = [(m, base) for m in methods for base in BASELINES if base != m]
    ablations = [(whole, part) for part, whole in ABLATIONS.items() if whole in methods and part in methods]
    return pairs + ablations


def paired(rows: Sequence[BenchRow]) -> dict[tuple[str, str, str], tuple[PairedDiff, PairedDiff]]:
    """(dataset, method, baseline) -> (Y-PSNR difference, SSIM difference) of method - baseline over
    images x the seeds both ran, for every method against every baseline it is not, and for a
    method against its ablation (`ABLATIONS`) when both ran."""
    out = {}
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != "bicubic"]
    for d in datasets:
        have = {(r.method, r.seed) for r in rows if r.dataset == d and len(r.image_psnr) > 1}
        for m, base in _comparisons(methods):
            seeds = sorted({s for (mm, s) in have if mm == m} & {s for (mm, s) in have if mm == base})
            if not seeds:
                continue
            pairs = [
                (_matrix(rows, m, d, seeds, ssim), _matrix(rows, base, d, seeds, ssim)) for ssim in (0, 1)
            ]
            if len(pairs[0][0]) != len(pairs[0][1]):
                raise DataError(
                    f"bench distill: {m} and {base} were validated on {len(pairs[0][0])} and "
                    f"{len(pairs[0][1])} images of {d}: delete the runs that differ and run again"
                )
            psnr, ssim = (paired_difference(a, b) for a, b in pairs)
            out[(d, m, base)] = (psnr, ssim)
    return out


def paired_markdown(rows: Sequence[BenchRow]) -> str:
    diffs = paired(rows)
    if not diffs:
        return (
            "\nPaired differences: no per-image results (runs written before edgesr kept them: delete "
            "their run folders to train them again).\n"
        )
    lines = [
        "",
        "Paired differences, method - baseline (or - its ablation): mean over images x seeds of the "
        "per-image Y-PSNR (dB) and SSIM difference, [95% interval over images and seeds] (edgesr.stats); "
        '"unresolved": the interval includes 0.',
        "",
        "| data set | method | baseline | images x seeds | Y-PSNR diff | SSIM diff |",
        "|---|---|---|---|---|---|",
    ]
    for (d, m, base), (p, s) in diffs.items():
        ssim = f"{s.mean:+.4f} [{s.low:+.4f}, {s.high:+.4f}]{'' if s.resolved else ' (unresolved)'}"
        lines.append(f"| {d} | {m} | {base} | {p.images} x {p.seeds} | {p.text} | {ssim} |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: Sequence[BenchRow], out: Path, recipe: Recipe, seeds: list[int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    w = csv.writer(table)  # rows end in CRLF, as the csv module writes them
    w.writerow(["method", "seed", "dataset", "psnr_y", "ssim_y", "s_per_step"])
    w.writerows([r.method, r.seed, r.dataset, f"{r.psnr:.4f}", f"{r.ssim:.6f}", r.step_s or ""] for r in rows)
    atomic_write_text(out / "results.csv", table.getvalue())
    images = io.StringIO()
    w = csv.writer(images)
    w.writerow(["method", "seed", "dataset", "image", "name", "psnr_y", "ssim_y"])
    names = image_names(recipe)
    for r in rows:
        ssims = r.image_ssim or (float("nan"),) * len(r.image_psnr)
        named = names.get(r.dataset, ())
        named = named if len(named) == len(r.image_psnr) else ("",) * len(r.image_psnr)
        w.writerows([r.method, r.seed, r.dataset, i, n, f"{p:.4f}", f"{q:.6f}"]
                    for i, (n, p, q) in enumerate(zip(named, r.image_psnr, ssims, strict=True)))  # fmt: skip
    atomic_write_text(out / "per_image.csv", images.getvalue())
    atomic_write_text(out / "table.md", table_markdown(rows, recipe, seeds, names))
    plot(rows, out / "psnr.png")
    plot_paired(rows, out / "paired.png")


def plot(rows: Sequence[BenchRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    methods = [m for m in dict.fromkeys(r.method for r in rows) if m != "bicubic"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 + 1.2 * len(methods), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        means = [summary[(m, d)][0] for m in methods]
        stds = [summary[(m, d)][1] for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=3, color="tab:blue")
        if ("bicubic", d) in summary:
            ax.axhline(summary[("bicubic", d)][0], color="gray", linestyle="--", label="bicubic")
            ax.legend(loc="lower right")
        lows = [m - s for m, s in zip(means, stds, strict=True)]
        highs = [m + s for m, s in zip(means, stds, strict=True)]
        if ("bicubic", d) in summary:  # keep the reference line in view
            lows.append(summary[("bicubic", d)][0])
            highs.append(summary[("bicubic", d)][0])
        ax.set_ylim(min(lows) - 0.3, max(highs) + 0.2)
        ax.set_title(d)
        ax.set_ylabel("Y-PSNR (dB)")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _panel(
    diffs: dict[tuple[str, str, str], tuple[PairedDiff, PairedDiff]], dataset: str, base: str | None
) -> list[tuple[str, PairedDiff]]:
    """(label, Y-PSNR difference) of one paired.png panel: every method against `base`, or, with
    `base` None, every method against its ablation."""
    if base is None:
        return [(f"{m} - {b}", p) for (d, m, b), (p, _) in diffs.items() if d == dataset and b in ABLATIONS]
    return [(m, p) for (d, m, b), (p, _) in diffs.items() if (d, b) == (dataset, base)]


def plot_paired(rows: Sequence[BenchRow], path: Path) -> None:
    """One panel per (data set, baseline): each method's Y-PSNR difference with its interval; and,
    when an ablation ran beside its method, a last panel of method - ablation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diffs = paired(rows)
    if not diffs:
        return
    datasets = list(dict.fromkeys(d for d, _, _ in diffs))
    panels: list[str | None] = list(BASELINES)
    if any(b in ABLATIONS for _, _, b in diffs):
        panels.append(None)  # None: each method against its ablation
    size = (4.5 * len(panels), 0.5 + 2.8 * len(datasets))
    fig, axes = plt.subplots(len(datasets), len(panels), figsize=size, squeeze=False)
    for i, d in enumerate(datasets):
        for j, base in enumerate(panels):
            ax = axes[i][j]
            got = _panel(diffs, d, base)
            for k, (_, p) in enumerate(got):
                colour = "tab:blue" if p.resolved else "tab:gray"
                ax.errorbar(
                    p.mean, k, xerr=[[p.mean - p.low], [p.high - p.mean]], fmt="o", color=colour, capsize=3
                )
            ax.set_yticks(range(len(got)), [m for m, _ in got])
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(f"{d}: method - {base or 'its ablation'}", fontsize=9)
            ax.set_xlabel("Y-PSNR difference (dB), 95% CI")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
