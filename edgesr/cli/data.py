"""`edgesr data fetch | ls | prepare`: public SR data sets onto disk, verified, in the layout recipes read."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgesr.cli.common import Console, byte_progress
from edgesr.errors import Interrupted

__all__ = ["add_parsers"]

_ROOT_HELP = "data root (default: $EDGESR_DATA, else ./data)"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="fetch, list and prepare public SR data sets (DIV2K, benchmarks, ...)")
    dsub = d.add_subparsers(dest="data_command", required=True)

    f = dsub.add_parser(
        "fetch", help="download, verify and unpack data sets into the layout recipes read",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  edgesr data fetch div2k benchmarks          # the paper recipes' data, 6 GB\n"
        "  edgesr data fetch set5 --root /scratch/data\n"
        "  edgesr data fetch div2k --mirror https://mirror.example.org/sr   # same file names\n"
        "re-running is a no-op for what is in place; an interrupted download continues where it stopped",
    )  # fmt: skip
    f.add_argument("names", nargs="+", metavar="NAME", help="catalog names (edgesr data ls)")
    f.add_argument("--root", type=Path, help=_ROOT_HELP)
    f.add_argument("--mirror", metavar="URL", help="base URL, same file names (or EDGESR_DATA_MIRROR)")
    f.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking")
    f.set_defaults(run=_fetch)

    ls = dsub.add_parser("ls", help="the data sets edgesr knows: size, licence, checksum source, on disk")
    ls.add_argument("--root", type=Path, help=_ROOT_HELP)
    ls.set_defaults(run=_ls)

    p = dsub.add_parser(
        "prepare", help="once before a GPU run: aligned LR/HR sub-image crops (and LR where none ships)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  edgesr data prepare div2k --scale 4      # then data.train: data/DIV2K/DIV2K_train_HR_sub\n"
        "  edgesr data prepare data/Flickr2K/Flickr2K_HR --scale 2 --workers 8",
    )  # fmt: skip
    p.add_argument("folder", help="a catalog name (div2k, flickr2k) or a folder (DIV2K, DIV2K_*_HR, plain)")
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--out", type=Path, help="output (default: DIV2K_train_HR_sub, photos_sub, Set5_sub)")
    p.add_argument("--crop", type=int, default=480, help="HR crop size (default 480, BasicSR's)")
    p.add_argument("--step", type=int, default=240, help="HR crop stride (default 240)")
    p.add_argument("--thresh", type=int, default=48, help="extra edge crop when the remainder exceeds this")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    p.set_defaults(run=_prepare)


# ------------------------------------------------------------------------------------- fetch


def _fetch(args: argparse.Namespace, console: Console) -> int:
    from edgesr.data.fetch import fetch

    try:
        with byte_progress(console) as progress:
            results = fetch(args.names, args.root, mirror=args.mirror, keep_archives=args.keep_archives,
                            progress=progress, log=lambda m: console.print(m, highlight=False))  # fmt: skip
    except KeyboardInterrupt:
        raise Interrupted(
            "interrupted: what was downloaded is kept (.part files under the data root's .edgesr-data) "
            f"and nothing half-unpacked is in place; run `edgesr data fetch {' '.join(args.names)}` "
            "again to continue"
        ) from None
    done = sum(r.status == "fetched" for r in results)
    console.print(f"{done} archive(s) fetched, {len(results) - done} already in place", highlight=False)
    return 0


def _ls(args: argparse.Namespace, console: Console) -> int:
    from edgesr.data.catalog import ARCHIVES, DATASETS, data_root
    from edgesr.data.fetch import archive_state

    root = args.root or data_root()
    table = Table(title=f"data sets (root: {root})")
    for col in ("name", "what", "download", "checksum", "licence", "on disk"):
        table.add_column(col)
    for d in DATASETS.values():
        archives = [ARCHIVES[f] for f in d.archives]
        sizes = [a.size for a in archives]
        size = "-" if not archives else "?" if None in sizes else f"{sum(sizes) / 1e9:.2f} GB"  # type: ignore[arg-type]
        check = ", ".join(sorted({"sha256" if a.sha256 else "md5" if a.md5 else "none" for a in archives}))
        on_disk = _on_disk(d, archives, root, archive_state)
        table.add_row(d.name, d.description, size, check or "-", d.licence, on_disk)
    console.print(table)
    console.print("checksum sources: docs/data.md; fetch with: edgesr data fetch NAME", highlight=False)
    return 0


def _on_disk(d, archives, root: Path, archive_state) -> str:  # noqa: ANN001
    if not archives:
        folder = root / d.path if d.path else None
        return "present (placed by hand)" if folder and (folder / "HR").is_dir() else "request from authors"
    states = [archive_state(a, root) for a in archives]
    if all(s and s.get("complete") for s in states):
        return "fetched " + min(s["fetched_at"][:10] for s in states)  # type: ignore[index]
    if any(s for s in states):
        return f"partial ({sum(bool(s and s.get('complete')) for s in states)}/{len(states)} archives)"
    folder = root / d.path if d.path else None
    return "present (not fetched by edgesr)" if folder and folder.is_dir() else "-"


# ------------------------------------------------------------------------------------- prepare


def _prepare(args: argparse.Namespace, console: Console) -> int:
    from edgesr.data.catalog import resolve
    from edgesr.data.prepare import prepare

    named = resolve(args.folder)
    folder, split = named if named is not None else (Path(args.folder), None)
    columns = (TextColumn("prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task("prepare", total=None)
        report = prepare(
            folder, args.scale, out=args.out, crop=args.crop, step=args.step, thresh=args.thresh,
            workers=args.workers, split=split or "train",
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if report.already_done:
        console.print(f"{report.out}: already prepared with these settings, nothing to do", highlight=False)
    else:
        console.print(
            f"{report.images} images -> {report.crops} aligned crop pairs in {report.out} "
            f"({report.shipped_lr} from shipped LR, {report.seconds:.0f} s)", highlight=False,
        )  # fmt: skip
        if report.skipped:
            console.print(f"skipped (smaller than the crop): {', '.join(report.skipped)}", highlight=False)
    console.print(f"train on it with: data.train={report.out}", highlight=False)
    return 0
