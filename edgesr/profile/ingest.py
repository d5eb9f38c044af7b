"""`edgesr profile import`: parsed results (edgesr.profile.importers) -> profile Records of a device."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgesr.devices import Device, Resolution
from edgesr.errors import UsageError
from edgesr.profile.host import artifact_sha, info_from_manifest, read_manifest
from edgesr.profile.importers import Parsed, aihub_delegate, aihub_top_unit, detect_format, parse_file
from edgesr.profile.store import Record
from edgesr.profile.timing import now_utc


def manifest_resolution(artifact: Path | None) -> Resolution | None:
    """The LR input size an artifact was exported at, from its manifest; None when unknown (dynamic)."""
    if artifact is None:
        return None

    shape = ((read_manifest(artifact) or {}).get("input") or {}).get("shape") or []
    if len(shape) == 4 and all(isinstance(v, int) for v in shape):
        return Resolution(shape[3], shape[2])
    return None


def attach_manifest(rec: Record, artifact: Path | None, resolution: Resolution) -> Record:
    """Fill in what the artifact's manifest knows (model, width, hash, precision) and the resolution."""

    rec = replace(rec, resolution=rec.resolution or resolution.text)
    if artifact is None or not artifact.exists():
        return rec
    manifest = read_manifest(artifact)
    rec = replace(rec, artifact=artifact.name, sha256=artifact_sha(artifact))
    if manifest is None:
        return rec
    return replace(
        rec, model=info_from_manifest(manifest, resolution), precision=manifest.get("precision", "fp32")
    )


def import_results(
    file: Path,
    device: Device,
    fmt: str = "auto",
    artifact: Path | None = None,
    resolution: Resolution | None = None,
    precision: str | None = None,
    threads: int | None = None,
    runtime: str | None = None,
    delegate: str | None = None,
) -> list[Record]:
    """Parse `file` and turn each result into a Record of `device`.

    The resolution is `resolution`, else the artifact manifest's input, else the device's default
    (benchmark outputs do not state it). The runtime must be one the device file lists: the output's,
    else `runtime` (needed for an AI Hub profile, which does not name it). The delegate is `delegate`,
    else the output's, else (AI Hub) the one its compute units map to, else the device's first.
    """
    file = Path(file)
    parsed = parse_file(file, fmt)
    if fmt == "auto":
        try:
            fmt = detect_format(file, file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            fmt = "etdump"
    if artifact is not None and len(parsed) > 1:
        raise UsageError(f"{file} holds {len(parsed)} results; --artifact can describe only one")
    res = resolution or manifest_resolution(artifact) or device.resolution
    out = []
    for p in parsed:
        if runtime and p.runtime and runtime != p.runtime:
            raise UsageError(f"{file} is {p.runtime} output ({fmt}); --runtime {runtime} contradicts it")
        rt = runtime or p.runtime
        if not rt:
            have = ", ".join(r.name for r in device.runtimes)
            raise UsageError(
                f"{file}: {fmt} output does not name its runtime; pass --runtime "
                f"(device {device.name!r} has: {have})"
            )
        cfg = device.runtime(rt)  # raises naming the device's runtimes
        if delegate is not None and delegate not in cfg.delegates:
            raise UsageError(
                f"device {device.name!r} lists no delegate {delegate!r} for {rt} "
                f"(it has: {', '.join(cfg.delegates)})"
            )
        rec = Record(
            artifact=p.artifact or file.name,
            runtime=rt,
            delegate=delegate
            or p.delegate
            or _unit_delegate(p, rt, cfg.delegates, file, device.name)
            or cfg.delegates[0],
            precision=precision or "fp32",
            resolution=res.text,
            stats=p.stats,
            measured_at=now_utc(),
            method=f"import:{fmt}",
            runtime_version=cfg.version,
            threads=p.threads if p.threads is not None else threads,
            peak_mem_mb=p.peak_mem_mb,
            ops=p.ops,
            notes="; ".join(
                s for s in (p.notes, f"imported from {file.name}; measured_at = import time") if s
            ),
        )
        rec = attach_manifest(rec, artifact, res)
        if precision is not None:
            rec = replace(rec, precision=precision)
        out.append(rec)
    return out


def _unit_delegate(
    p: Parsed, runtime: str, delegates: tuple[str, ...], file: Path, device: str
) -> str | None:
    """The delegate an AI Hub profile's compute units point to; an error rather than a guess when the
    device file has no delegate for that unit (pass --delegate)."""
    units = p.extra.get("compute_units")
    if not units:
        return None
    d = aihub_delegate(runtime, units)
    if d is None or d not in delegates:
        raise UsageError(
            f"{file}: ran on {aihub_top_unit(units)}; which {runtime} delegate of {device!r} that is "
            f"cannot be told (it has: {', '.join(delegates)}); pass --delegate"
        )
    return d
