"""`--via aihub` for `edgesr profile run|sweep`, and `edgesr devices ls`: thin handlers.

Registered through edgesr/cli/profile.py (its parsers); the work is edgesr.profile.aihub (profile
jobs) and edgesr.profile.aihub_numerics (on-device PSNR).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgesr.cli.common import make_console
from edgesr.errors import UsageError


class JobsDisplay:
    """The one display of the jobs while waiting: a live table on a terminal; in a log, a line each
    time the count of jobs per state changes (so a log shows progress without a line per poll)."""

    def __init__(self, console: Any) -> None:
        self.console, self.last, self.live = console, "", None

    @contextmanager
    def shown(self) -> Iterator[JobsDisplay]:
        if not self.console.is_terminal:
            yield self
            return
        from rich.live import Live

        with Live(console=self.console, refresh_per_second=2) as self.live:
            yield self

    def __call__(self, states: Sequence[Any], elapsed_s: float) -> None:
        from edgesr.profile.aihub import job_summary

        if self.live is None:
            line = job_summary(states)
            if line != self.last:
                self.console.print(f"  {elapsed_s:6.0f} s  {line}", highlight=False, markup=False)
                self.last = line
            return
        from rich.table import Table

        t = Table("job", "artifact", "farm device", "state", title=f"Qualcomm AI Hub, {elapsed_s:.0f} s")
        for s in states:
            t.add_row(s.job_id, s.task.artifact.name, s.task.farm_device, s.code)
        self.live.update(t)


def resume_command(args: argparse.Namespace) -> str:
    """The command line that resumes this run (the same jobs are reused)."""
    devices = args.device if isinstance(args.device, list) else [args.device]
    if args.profile_command == "sweep":
        argv = ["edgesr", "profile", "sweep", "--via", "aihub", "--artifacts", *map(str, args.artifacts)]
    else:
        argv = ["edgesr", "profile", "run", str(args.artifact), "--via", "aihub"]
    for d in devices:
        argv += ["--device", str(d)]
    for flag in ("farm_device", "options", "profiles"):
        if getattr(args, flag):  # --flag=VALUE: an --options value starts with "--"
            argv.append(f"--{flag.replace('_', '-')}={getattr(args, flag)}")
    argv += ["--inference"] if args.inference else []
    argv += ["--trust-artifact"] if args.trust_artifact else []
    return shlex.join(argv)


def _artifacts(args: argparse.Namespace) -> list[Path]:
    if args.profile_command == "run":
        if args.no_save:
            raise UsageError(
                "--no-save does not go with --via aihub: the jobs are paid for, so results are kept"
            )
        return [args.artifact]
    if args.source or not args.artifacts:
        raise UsageError(
            "--via aihub profiles exported artifacts: pass --artifacts exports/*.tflite (export each width "
            "with `edgesr export CHECKPOINT --target tflite --width W`)"
        )
    return list(args.artifacts)


def farm_command(
    args: argparse.Namespace, console: Any, print_records: Callable[[list[Any], str], None]
) -> int:
    """`edgesr profile run|sweep --via aihub`: exit 1 when a job failed (the others are saved)."""
    from edgesr.devices import load_device
    from edgesr.profile.aihub import farm_profile

    artifacts = _artifacts(args)
    devices = [load_device(d) for d in (args.device if isinstance(args.device, list) else [args.device])]
    resume = resume_command(args)
    display = JobsDisplay(console)

    def log(m: str) -> None:
        console.print(m, highlight=False, markup=False)

    with display.shown():
        result = farm_profile(
            artifacts, devices, args.farm_device, args.options, args.profiles, args.trust_artifact,
            args.new_jobs, display, log, resume, args.poll_s,
        )  # fmt: skip
    for d in devices:
        recs = [r for dev, r in result.records if dev.name == d.name]
        if recs:
            print_records(recs, f"{d.name}: Qualcomm AI Hub")
    if result.saved:
        log(f"saved {len(result.records)} measurements to {', '.join(map(str, result.saved))}")
        raw = sorted({str(p.parent) for p in result.raw})
        log(f"raw profiles, as the service gave them: {', '.join(raw)}")
    for f in result.failures:
        console.print(f"failed: {f}", style="red", highlight=False, markup=False)
    if result.failures:
        console.print(
            f"{len(result.failures)} of {len(result.failures) + len(result.records)} jobs failed; the "
            f"others are saved. Re-run to submit the failed ones again: {resume}",
            highlight=False, markup=False,
        )  # fmt: skip
        return 1
    if args.profile_command == "run" and args.inference:
        return _numerics(args, devices[0], display, log, resume)
    return 0


def _numerics(args: argparse.Namespace, device: Any, display: JobsDisplay, log: Any, resume: str) -> int:
    from edgesr.profile.aihub_numerics import on_device_numerics

    display.last = ""
    with display.shown():
        e = on_device_numerics(
            args.artifact, device, args.farm_device, args.options, args.profiles, args.trust_artifact,
            display, log, resume, args.poll_s,
        )  # fmt: skip
    vs = f"{e['psnr_db']} dB vs PyTorch" if e["psnr_db"] is not None else e["reference"]
    log(
        f"on {e['farm_device']}: {vs}; Y-PSNR vs HR {e['y_psnr_vs_hr_db']} dB on the phone, "
        f"{e['pytorch_y_psnr_vs_hr_db']} dB in PyTorch ({e['image']}); recorded in {args.artifact}.json"
    )
    return 0


def devices_command(args: argparse.Namespace, console: Any) -> int:
    """`edgesr devices ls [--farm aihub]`."""
    from rich.table import Table

    if args.farm is None:
        from edgesr.devices import list_devices, load_device

        t = Table("name", "soc", "transport", "farm", title="device files (devices/*.yaml)")
        for name, path in list_devices():
            d = load_device(path)
            t.add_row(name, d.soc, d.transport, f"{d.farm.service}: {d.farm.name}" if d.farm else "-")
        make_console().print(t)
        return 0
    from edgesr.profile.aihub import farm_devices, load_client

    key = args.filter.lower()
    found = [
        d for d in farm_devices(load_client("--farm aihub"))
        if key in d.name.lower() or any(key in c.lower() for c in d.chipsets)
    ]  # fmt: skip
    t = Table(
        "name (farm.name in a device file)", "os", "chipsets", "frameworks", title="Qualcomm AI Hub devices"
    )
    for d in found:
        t.add_row(d.name, d.os, ", ".join(d.chipsets), ", ".join(d.frameworks))
    make_console().print(t)
    console.print(f"{len(found)} devices" + (f" matching {args.filter!r}" if key else ""))
    return 0
