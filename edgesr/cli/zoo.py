"""`edgesr zoo ls | fetch`: the EDSR / RCAN authors' trained teachers by name (edgesr.models.zoo).

A recipe names one as `train.init: zoo:edsr_x4`; `edgesr eval zoo:edsr_x4 --data benchmarks`
measures it beside the numbers its paper reports. Library modules are imported inside the handlers,
so `edgesr -h` starts without loading torch.
"""

from __future__ import annotations

import argparse

from edgesr.cli.common import Console, byte_progress

__all__ = ["add_parsers"]

ZOO_EXAMPLES = """\
examples:
  edgesr zoo ls                                  # names, params, reported PSNR, cached or not
  edgesr zoo fetch edsr_x4 edsr_baseline_x2      # download into the cache now (verified)
  edgesr train recipes/csd_edsr_x4_w025.yaml train.init=zoo:edsr_x4
  edgesr eval zoo:edsr_baseline_x2 --data benchmarks
  EDGESR_ZOO_MIRROR=https://mirror.example.org/edsr edgesr zoo fetch edsr_x2   # same file names
"""

_SETS = ("Set5", "Set14", "B100", "Urban100")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    z = sub.add_parser(
        "zoo", help="the official EDSR / RCAN teachers by name (train.init: zoo:NAME)",
        epilog=ZOO_EXAMPLES, formatter_class=fmt,
    )  # fmt: skip
    zsub = z.add_subparsers(dest="zoo_command", required=True)
    ls = zsub.add_parser("ls", help="names, params, scale, reported PSNR and whether each is cached")
    ls.set_defaults(run=_ls)
    f = zsub.add_parser(
        "fetch", help="download teachers into the cache now (hash and layout checked)",
        epilog=ZOO_EXAMPLES, formatter_class=fmt,
    )  # fmt: skip
    f.add_argument("names", nargs="+", metavar="NAME", help="zoo names (edgesr zoo ls), with or without zoo:")
    f.set_defaults(run=_fetch)


def _ls(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from edgesr.models.zoo import ZOO, cached, source_url, teacher_params, zoo_dir

    table = Table(title=f"teacher zoo (train.init: zoo:NAME; cache: {zoo_dir()})")
    for col in ("name", "arch", "scale", "params"):
        table.add_column(col, justify="right" if col in ("scale", "params") else "left")
    for s in _SETS:
        table.add_column(f"{s}\nPSNR-Y", justify="right")
    table.add_column("cached")
    notes: dict[str, str] = {}
    for t in ZOO.values():
        mark = "" if t.by_authors else "*"
        if not t.by_authors:
            notes["*"] = f"* {t.psnr_source}"
        psnr = [f"{t.psnr[s]:.2f}{mark}" if s in t.psnr else "-" for s in _SETS]
        blocks = f"{t.args.get('n_resgroups', 1)}x{t.args['n_resblocks']}" if t.arch == "rcan" else (
            str(t.args["n_resblocks"]))  # fmt: skip
        arch = f"{t.arch} {blocks}b {t.args['n_feats']}f"
        if cached(t) is not None:
            state = "yes"
        elif source_url(t) is None:
            state = "no (no public URL: edgesr zoo fetch NAME says how)"
        else:
            state = "no"
        table.add_row(t.ref, arch, f"x{t.scale}", f"{teacher_params(t) / 1e6:.2f}M", *psnr, state)
    console.print(table)
    sources = dict.fromkeys(t.psnr_source for t in ZOO.values() if t.by_authors)
    for line in [*notes.values(), *(f"reported PSNR: {s}" for s in sources)]:
        console.print(line, highlight=False, markup=False)
    return 0


def _fetch(args: argparse.Namespace, console: Console) -> int:
    from edgesr.models.zoo import cached, fetch, lookup

    teachers = [lookup(n) for n in args.names]  # every name checked before anything downloads
    for t in teachers:
        was_cached = cached(t) is not None
        with byte_progress(console) as progress:
            path = fetch(t.name, progress(t.ref))
        size = path.stat().st_size / 1e6
        how = "already cached, hash checked" if was_cached else "downloaded, hash and layout checked"
        console.print(f"{t.ref}: {path} ({size:.1f} MB, {how})", highlight=False, markup=False)
    return 0
