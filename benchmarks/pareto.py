"""Architecture Pareto front: PSNR on real photos against host latency, every family trained alike.

    python -m benchmarks pareto [--scale 2|4] [--steps 400] [--families plain-6x32 ecbsr-6x32 ...]
        [--threads 1] [--out runs/pareto_x2] [--smoke]

Every family is trained with `recipes/pareto_xS.yaml` (S = --scale; L1 to HR from scratch, built-in
train photos, the same patches, batch, steps and schedule; only `model` differs), into OUT/runs/LABEL
(a completed run is reused, an interrupted one resumed). Then each trained student is

- evaluated in float on the real-photo quant-eval set (`python -m benchmarks real-photos`: 14
  Debian wallpaper photos never trained on, HR 640x360, LR by MATLAB bicubic) and on the built-in val
  photos, Y-PSNR under the protocol, with bicubic beside;
- exported by `edgesr.export.export_student` (re-parameterisable blocks collapsed first) to LiteRT
  and ExecuTorch at 1x3x180x320 (-> 640x360 at x2, 1280x720 at x4), fp32 and int8 (PTQ, the
  exporters' defaults; `accept_int8_loss` so a lossy int8 graph is still measured, its loss is a
  column), each artifact verified on its runtime;
- its int8 Y-PSNR measured on the real photos with the q/dq graph the artifact was verified against;
- timed on its runtime after every export (`--threads`; 3 warm-up calls each, then `--runs` rounds
  that call every artifact once in turn; median wall ms), so all figures share the machine's state.

Output: OUT/pareto.md, OUT/pareto.csv and OUT/pareto.png (PSNR vs median ms per runtime and
precision, the Pareto front of each panel drawn). A point is on the front when no other point is at
most as slow and at least as accurate, one of them strictly.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

# label -> (registered model, args, family). One training recipe for all; sizes chosen to span
# roughly 0.1-2 GMAC at 320x180 -> x2. EDSR 4x16 is the quickstart student's shape (EDSR 4x64 at
# width 0.25) trained from scratch like the others, so the comparison is of architectures only.
FAMILIES: dict[str, tuple[str, dict[str, object], str]] = {
    "plain-6x16": ("plain", {"n_convs": 6, "n_feats": 16, "clamp": True}, "plain"),
    "plain-6x32": ("plain", {"n_convs": 6, "n_feats": 32, "clamp": True}, "plain"),
    "ecbsr-6x16": ("ecbsr", {"n_convs": 6, "n_feats": 16, "clamp": True}, "ecbsr"),
    "ecbsr-6x32": ("ecbsr", {"n_convs": 6, "n_feats": 32, "clamp": True}, "ecbsr"),
    "quicksrnet-small": ("quicksrnet_small", {}, "quicksrnet"),
    "quicksrnet-medium": ("quicksrnet_medium", {}, "quicksrnet"),
    "xlsr": ("xlsr", {}, "xlsr"),
    "edsr-4x16": ("edsr", {"n_resblocks": 4, "n_feats": 16}, "edsr"),
    # one slimmable run (CSD's CSSR-Net, L1 on both widths, no contrastive term): its width-0.5
    # student, a 6x16 net that shares the 6x32 network's leading channels, against ecbsr-6x16
    # trained on its own
    "ecbsr-6x32-slim@0.5": ("ecbsr", {"n_convs": 6, "n_feats": 32, "clamp": True}, "ecbsr-slim"),
    # the EDSR-slice student: the quickstart's EDSR 4x64 trained jointly with its width-0.25 slice
    # (16 channels), the slice measured
    "edsr-4x64-slim@0.25": ("edsr", {"n_resblocks": 4, "n_feats": 64}, "edsr-slice"),
}
SMOKE = ("plain-6x16", "ecbsr-6x16")
RUNTIMES = ("tflite", "executorch")
PRECISIONS = ("fp32", "int8")
INPUT = (1, 3, 180, 320)
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def recipe_path(scale: int) -> Path:
    return RECIPES / f"pareto_x{scale}.yaml"


@dataclass
class Row:
    label: str
    family: str
    params: int  # deployed (collapsed) network
    gmac: float  # at 320x180 in, deployed network
    train_steps: int
    train_s: float
    bicubic_real: float
    float_real: float  # Y-PSNR, real-photo quant-eval set (mean over photos)
    float_builtin: float  # Y-PSNR, built-in val
    runtime: str
    precision: str
    median_ms: float | None
    psnr_real: float | None  # this artifact's graph on the real photos (float or q/dq)
    note: str
    artifact: str = ""


def time_interleaved(rows: list[Row], threads: int, runs: int, warmup: int = 3) -> None:
    """Median wall ms of every artifact, measured round-robin (round k times each artifact once), so
    load that comes and goes on the machine falls on every artifact alike, not on whichever ran then."""
    from edgesr.export import get_exporter

    live = [r for r in rows if r.artifact]
    x = np.random.default_rng(0).random(INPUT, dtype=np.float32)
    fns = [get_exporter(r.runtime).load(Path(r.artifact), threads) for r in live]
    for fn in fns:
        for _ in range(warmup):
            fn(x)
    times: list[list[float]] = [[] for _ in live]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn(x)
            times[i].append((time.perf_counter() - t0) * 1e3)
    for r, ts in zip(live, times, strict=True):
        r.median_ms = float(np.median(ts))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pareto", help="PSNR vs host latency of every student family, trained alike")
    scales = sorted(int(f.stem.removeprefix("pareto_x")) for f in RECIPES.glob("pareto_x*.yaml"))
    p.add_argument("--scale", type=int, default=2, choices=scales, help="recipes/pareto_xSCALE.yaml")
    p.add_argument("--steps", type=int, default=400, help="training steps of every family")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), help="default: all")
    p.add_argument("--smoke", action="store_true", help=f"{', '.join(SMOKE)} only, 20 steps, 2 photos")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime")
    p.add_argument("--runs", type=int, default=15, help="timed rounds (each artifact once per round)")
    p.add_argument("--out", type=Path, help="runs, exports and tables (default: runs/pareto_xSCALE)")
    p.set_defaults(run=run)


def slim_width(label: str) -> float:
    """The student width of a `NAME-slim@W` family."""
    return float(label.rpartition("@")[2])


def family_recipe(label: str, steps: int, out: Path, scale: int = 2):  # -> Recipe
    """`recipes/pareto_xSCALE.yaml` with this family's model and `steps` (schedule scaled with it)."""
    import yaml

    from edgesr.files import atomic_write_text
    from edgesr.recipe import load_recipe
    from edgesr.yamlfile import read_yaml_file

    name, args, _ = FAMILIES[label]
    recipe = recipe_path(scale)
    data = read_yaml_file(recipe, str(recipe))
    data["name"] = f"{data['name']}_{label.replace('@', '_w')}"
    data["model"]["name"], data["model"]["args"] = name, dict(args)
    t = data["train"]
    if "-slim@" in label:  # joint training of both widths, L1 each, no contrastive term
        t["mode"], t["widths"], t["csd"] = "csd", [slim_width(label)], {"lambda_cl": 0.0}
    t["steps"] = steps
    t["optim"]["milestones"] = [max(1, steps * 2 // 3), max(2, steps * 7 // 8)]
    t["checkpoint_every"] = t["val_every"] = steps
    t["log_every"] = max(1, steps // 4)
    path = out / "recipes" / f"{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return load_recipe(path)


def train_family(label: str, steps: int, out: Path, scale: int = 2) -> float:
    """Train (or reuse) the family's run; the wall seconds the training took (as recorded)."""
    from edgesr.train.trainer import train_or_continue

    run_dir = out / "runs" / label
    timing = run_dir / "train_seconds.txt"
    t0 = time.perf_counter()
    train_or_continue(family_recipe(label, steps, out, scale), run_dir)
    if not timing.is_file():
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    return float(timing.read_text())


def mean_psnr(fn, items, scale: int) -> float:
    from edgesr.metrics import psnr_y

    with torch.no_grad():
        return float(np.mean([psnr_y(fn(it["lr"].unsqueeze(0)).clamp(0, 1)[0], it["hr"], crop=scale)
                              for it in items]))  # fmt: skip


def bench_family(label: str, args: argparse.Namespace, real: list[dict], builtin: list[dict]) -> list[Row]:
    from benchmarks.quant_photos import bicubic_psnrs
    from edgesr.export import ExportOptions, export_student, get_exporter
    from edgesr.export.run import deployable, plan_for, quantized_graph
    from edgesr.models import count_macs, count_params, reparameterize
    from edgesr.student import load_student

    steps = 20 if args.smoke else args.steps
    train_s = train_family(label, steps, args.out, args.scale)
    student = load_student(args.out / "runs" / label, slim_width(label) if "-slim@" in label else None)
    deployed = reparameterize(student.net)
    scale = student.scale
    base = dict(
        label=label, family=FAMILIES[label][2], params=count_params(deployed),
        gmac=count_macs(deployed, INPUT[2:]) / 1e9, train_steps=steps, train_s=train_s,
        bicubic_real=float(np.mean(bicubic_psnrs(real, scale))),
        float_real=mean_psnr(student.net, real, scale), float_builtin=mean_psnr(student.net, builtin, scale),
    )  # fmt: skip
    rows = []
    x = np.random.default_rng(0).random(INPUT, dtype=np.float32)
    for target in RUNTIMES:
        exporter = get_exporter(target)
        for precision in PRECISIONS:
            options = ExportOptions(
                precision=precision, input_shape=INPUT, out_dir=args.out / "exports" / label / target,
                force=True, accept_int8_loss=True,
            )  # fmt: skip
            try:
                result = export_student(student, target, options)
                exporter.load(result.artifact, args.threads)(x)  # it runs here; timed later, interleaved
            except Exception as e:  # noqa: BLE001  a failure is a row of the table, not the end of the run
                first = (str(e).strip().splitlines() or [""])[0]
                rows.append(Row(**base, runtime=target, precision=precision, median_ms=None, psnr_real=None,
                                note=f"FAILED: {type(e).__name__}: {first}"[:160]))  # fmt: skip
                continue
            psnr = base["float_real"]
            note = f"verified {result.verification.psnr_db:.1f} dB vs PyTorch"
            if precision == "int8":
                plan = plan_for(student, target, options)
                model = deployable(student.net, plan.upsampler)
                graph = quantized_graph(student, model, torch.from_numpy(x), plan)
                psnr = mean_psnr(graph, real, scale)
                gate = result.manifest["quantization"]["quality"]
                note += f"; gate (built-in) mean drop {gate['mean_drop_db']:.2f} dB"
            rows.append(Row(**base, runtime=target, precision=precision, median_ms=None, psnr_real=psnr,
                            note=note, artifact=str(result.artifact)))  # fmt: skip
            print(f"  {label:18s} {target:10s} {precision:5s} {psnr:6.2f} dB", flush=True)
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, psnr) no other point dominates (as fast or faster and as
    accurate or more, one strictly), in increasing latency."""
    front = []
    for i, (ms, db) in enumerate(points):
        dominated = any(
            (m2 <= ms and d2 >= db) and (m2 < ms or d2 > db) for j, (m2, d2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def on_front(rows: list[Row]) -> set[int]:
    """Row indices on the front of their (runtime, precision) panel."""
    marked: set[int] = set()
    for rt in RUNTIMES:
        for pr in PRECISIONS:
            idx = [i for i, r in enumerate(rows) if (r.runtime, r.precision) == (rt, pr) and r.median_ms]
            pts = [(rows[i].median_ms, rows[i].psnr_real) for i in idx]
            marked |= {idx[k] for k in pareto_front(pts)}  # type: ignore[arg-type]
    return marked


def to_markdown(rows: list[Row], header: str) -> str:
    front = on_front(rows)
    columns = ("model", "family", "params", "GMAC", "runtime", "precision", "median ms", "PSNR real",
               "float real", "bicubic real", "float built-in", "train s", "front", "note")  # fmt: skip
    out = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, r in enumerate(rows):
        ms = "-" if r.median_ms is None else f"{r.median_ms:.2f}"
        db = "-" if r.psnr_real is None else f"{r.psnr_real:.2f}"
        out.append(
            f"| {r.label} | {r.family} | {r.params} | {r.gmac:.2f} | {r.runtime} | {r.precision} | {ms} | "
            f"{db} | {r.float_real:.2f} | {r.bicubic_real:.2f} | {r.float_builtin:.2f} | {r.train_s:.0f} | "
            f"{'*' if i in front else ''} | {r.note} |"
        )
    return "\n".join(out) + "\n"


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(asdict(rows[0])))
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    return buf.getvalue()


def plot(rows: list[Row], path: Path, title: str, scale: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({r.family for r in rows})
    colours = {f: plt.cm.tab10(i) for i, f in enumerate(families)}
    fig, axes = plt.subplots(len(PRECISIONS), len(RUNTIMES), figsize=(12, 9), squeeze=False)
    for a, pr in enumerate(PRECISIONS):
        for b, rt in enumerate(RUNTIMES):
            ax = axes[a][b]
            sel = [r for r in rows if (r.runtime, r.precision) == (rt, pr) and r.median_ms]
            for r in sel:
                ax.scatter(r.median_ms, r.psnr_real, color=colours[r.family], s=40)
                ax.annotate(r.label, (r.median_ms, r.psnr_real), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
            pts = [(r.median_ms, r.psnr_real) for r in sel]
            front = pareto_front(pts)  # type: ignore[arg-type]
            if front:
                xs, ys = [pts[i][0] for i in front], [pts[i][1] for i in front]
                ax.plot(xs, ys, "k--", lw=1, label="Pareto front")
            if sel:
                ax.axhline(sel[0].bicubic_real, color="grey", lw=0.8, ls=":", label="bicubic")
            ax.set_xscale("log")
            ax.set_title(f"{rt} {pr}")
            ax.set_xlabel(f"median ms, 320x180 -> x{scale}")
            ax.set_ylabel("Y-PSNR, real photos (dB)")
            ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colours[f], label=f) for f in families]
    fig.legend(handles=handles, loc="upper center", ncol=len(families))
    fig.suptitle(title, fontsize=8, y=0.02)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from benchmarks.export_latency import cpu_name
    from benchmarks.real_photos import load_split
    from edgesr.data import eval_sets
    from edgesr.files import atomic_write_text

    torch.set_num_threads(args.threads)
    args.out = args.out or Path(f"runs/pareto_x{args.scale}")
    labels = list(SMOKE if args.smoke else args.families or FAMILIES)
    real = load_split("quant-eval", args.scale)
    builtin = [it for items in eval_sets(["builtin:val"], args.scale).values() for it in items]
    if args.smoke:
        real = real[:2]
    rows: list[Row] = []
    for label in labels:
        print(f"{label}: training / reusing {args.out / 'runs' / label}", flush=True)
        rows += bench_family(label, args, real, builtin)
    n = sum(bool(r.artifact) for r in rows)
    print(f"timing {n} artifacts, {args.runs} interleaved rounds", flush=True)
    time_interleaved(rows, args.threads, args.runs)
    header = (
        f"x{args.scale}, every family trained by recipes/{recipe_path(args.scale).name} for "
        f"{rows[0].train_steps} steps; latency at "
        f"1x3x180x320, {args.threads} thread(s), median of {args.runs} interleaved rounds; PSNR on "
        f"{len(real)} real photos (quant-eval); torch {torch.__version__}; {cpu_name()}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "pareto.md", to_markdown(rows, header))
    atomic_write_text(args.out / "pareto.csv", to_csv(rows))
    plot(rows, args.out / "pareto.png", re.sub(r"(.{150}) ", r"\1\n", header), args.scale)
    print(to_markdown(rows, header))
    print(f"wrote {args.out}/pareto.md, .csv, .png")
    return 1 if any(r.note.startswith("FAILED") for r in rows) else 0
