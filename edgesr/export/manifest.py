"""The manifest: `<artifact>.json` next to every artifact, so it can be audited from the files alone.

It records what the model is (architecture, arguments, width, scale, params, MACs), how to feed it
(input/output shape, layout, range, dtype), where it came from (checkpoint sha256, recipe hash),
what made it (tool versions), and what was checked (verification figures, delegation summary).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

import edgesr
from edgesr.errors import EdgesrError, NotFoundError
from edgesr.files import atomic_write_json, sha256_file
from edgesr.models import build_model, count_macs, count_params, count_rep_blocks

if TYPE_CHECKING:  # types only: the manifest is written from what export/run.py resolved
    from edgesr.export.base import Exporter
    from edgesr.export.plan import ExportPlan
    from edgesr.export.verify import Verification
    from edgesr.student import Student

FORMAT = "edgesr-artifact/1"


class ManifestError(EdgesrError, ValueError):
    """A file that is not a readable edgesr artifact manifest."""


class ArtifactError(EdgesrError, ValueError):
    """An artifact that must not or cannot run: changed since export (sha256), truncated, corrupt,
    or refused by its runtime. The message names the file and what to do."""


# What readers of a manifest use, with the JSON type each must have: a manifest missing one (or an
# edited one) is refused naming the key, rather than failing later as `KeyError: 'model'`.
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "target": str, "precision": str, "artifact.file": str, "artifact.sha256": str,
    "model.name": str, "model.scale": int, "model.width": (int, float), "model.args": dict,
    "model.params": int, "model.macs": int, "model.macs_input": list,
    "input.shape": list, "output.shape": list, "verification": dict, "delegation": dict,
}  # fmt: skip


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """`model.onnx` -> `model.onnx.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def artifact_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder artifact's files (relative path + content, in order)."""
    if path.is_file():
        return sha256_file(path)
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def tool_versions(sdk: dict[str, str]) -> dict[str, str]:
    return {
        "edgesr": edgesr.__version__,
        "torch": torch.__version__,
        **sdk,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _rep_blocks(arch: dict[str, Any]) -> int:
    """Re-parameterisable blocks the architecture trains with (a QAT graph was collapsed already)."""
    with torch.device("meta"):
        return count_rep_blocks(build_model(arch["name"], **arch["args"]))


def build_manifest(
    student: Student,
    plan: ExportPlan,
    model: nn.Module,
    artifact: Path,
    verification: Verification,
    delegation: dict[str, Any],
    sdk: dict[str, str],
    exporter: Exporter,
    export_s: float,
) -> dict[str, Any]:
    _, c, h, w = plan.input_shape
    s = student.scale
    in_shape: list[int | str] = [1, c, "height", "width"] if plan.dynamic else [1, c, h, w]
    out_shape: list[int | str] = [1, c, f"{s}*height", f"{s}*width"] if plan.dynamic else [1, c, s * h, s * w]
    io = {"layout": "NCHW", "range": [0.0, 1.0], "dtype": "float32", "color": "RGB"}
    inp = {"name": "lr", "shape": in_shape, "dynamic": plan.dynamic, **io}
    out = {"name": "sr", "shape": out_shape, **io, "note": "not clamped unless the model clamps"}
    spec = exporter.io_spec(artifact)  # targets whose I/O is not float32 NCHW say so
    inp.update(spec.get("input", {}))
    out.update(spec.get("output", {}))
    quantization = None
    if plan.precision == "int8" and plan.weight_only:
        quantization = {"method": "weight_only", "weights": "int8", "activations": "float"}
    elif plan.precision == "int8":
        quantization = {
            "method": "qat" if plan.qat else "ptq",
            "backend": plan.spec.quant_backend,
            "fully_integer": plan.fully_integer,
            "calibration_images": None if plan.qat else plan.options.calibration_images,
            "calibration": None if plan.qat else plan.options.calibration,
            "weights": "int8 symmetric per-channel",
            "activations": f"int8 per-tensor ({plan.activations})",
            "range_estimator": None if plan.qat else plan.estimator,
        }
    meta = student.meta
    return {
        "format": FORMAT,
        "target": plan.target,
        "precision": plan.precision,
        "artifact": {"file": artifact.name, "sha256": artifact_sha256(artifact)},
        "model": {
            "name": meta.arch["name"],
            "args": meta.arch["args"],
            "width": student.width,
            "trained_widths": list(meta.widths),
            "scale": s,
            "params": count_params(model),
            "macs": count_macs(model, (h, w)),
            "macs_input": [1, c, h, w],
        },
        # re-parameterisable blocks collapsed into single 3x3 convs before export (0: none in the model)
        "graph": {
            "upsampler": plan.upsampler,
            "delegate": plan.delegate,
            "reparameterized_blocks": _rep_blocks(meta.arch),
        },  # fmt: skip
        "quantization": quantization,
        # settings for the app's runtime session, not in the file (`edgesr profile` times them);
        # `options` lists those that differ from the runtime's defaults
        "runtime": {
            "name": plan.spec.runtime,
            "options": plan.spec.non_default_options(dict(plan.options.runtime_options)),
        },  # fmt: skip
        "input": inp,
        "output": out,
        "source": {
            "checkpoint": str(student.path) if student.path else None,
            "checkpoint_sha256": sha256_file(student.path) if student.path else None,
            "recipe_hash": meta.recipe_hash,
            "step": meta.step,
        },
        "tools": tool_versions(sdk),
        "verification": verification.to_json(),
        "delegation": delegation,
        "export_s": round(export_s, 3),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def write_manifest(artifact: Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path(artifact)
    atomic_write_json(path, manifest)
    return path


def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Path]:
    """Read the manifest of an artifact (or the manifest itself); returns (manifest, its path)."""
    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        mpath = path
    else:
        if not path.exists():
            raise NotFoundError(f"{path}: no such artifact")
        mpath = manifest_path(path)
        if not mpath.is_file():
            raise NotFoundError(
                f"{path}: no manifest next to it (expected {mpath.name}); "
                "artifacts made by `edgesr export` carry one"
            )
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{mpath}: not an edgesr artifact manifest (expected format {FORMAT!r})")
    for key, kind in _REQUIRED.items():
        node: Any = manifest
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or isinstance(node, bool) or not isinstance(node, kind):
            found = "missing" if node is None else f"a {type(node).__name__}"
            raise ManifestError(
                f"{mpath}: key {key!r} is {found}, expected {_kind_name(kind)}; the manifest was edited "
                "or cut short: re-export the artifact (edgesr export) to get a complete one"
            )
    shape = manifest["input"]["shape"]
    name = manifest["artifact"]["file"]
    if name in ("", ".", "..") or Path(name).name != name:
        raise ManifestError(f"{mpath}: artifact.file {name!r} is not a file name; re-export the artifact")
    fixed = not manifest["input"].get("dynamic")
    if len(shape) != 4 or (fixed and not all(isinstance(v, int) and v > 0 for v in shape)):
        raise ManifestError(f"{mpath}: input.shape {shape} is not N, C, H, W; re-export the artifact")
    return manifest, mpath


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "text", int: "a whole number", float: "a number", dict: "a mapping", list: "a list"}
    return " or ".join(names[k] for k in kinds)


def checked_artifact(path: str | os.PathLike[str], trust: bool = False) -> tuple[Path, dict[str, Any]]:
    """(artifact path, manifest) for an artifact or its manifest, refusing one whose file no longer
    matches the sha256 recorded at export (truncated, replaced or edited since) unless `trust`.
    Every command that runs an artifact goes through here (upscale, profile run)."""
    manifest, mpath = read_manifest(path)
    artifact = mpath.with_name(manifest["artifact"]["file"])
    state = check_artifact(manifest, mpath)
    if state == "missing":
        raise NotFoundError(f"{artifact}: the artifact {mpath.name} describes is missing")
    if state != "ok" and not trust:
        raise ArtifactError(
            f"{artifact}: its sha256 does not match the manifest ({manifest['artifact']['sha256'][:12]}... "
            f"at export, {artifact_sha256(artifact)[:12]}... now): the file changed after export "
            "(truncated, replaced or edited); re-export it, or pass --trust-artifact to run it anyway"
        )
    return artifact, manifest


def guarded(path: Path, what: str, fn: Any) -> Any:
    """`fn` with a runtime's exception (a truncated flatbuffer, a shape the graph refuses) turned
    into one line naming the artifact; used around loading and calling an artifact."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except EdgesrError:
            raise
        except Exception as e:  # each runtime raises its own types (ORT Fail, RuntimeError, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(
                f"{path}: {what} failed: {first[:300]}; if the artifact is truncated or corrupt, or its "
                "manifest was edited, re-export it (edgesr export)"
            ) from e

    return call


def check_artifact(manifest: dict[str, Any], mpath: Path) -> str:
    """'ok', 'MISMATCH' or 'missing': does the artifact next to the manifest still match its sha256?"""
    artifact = mpath.with_name(manifest["artifact"]["file"])
    if not artifact.exists():
        return "missing"
    return "ok" if artifact_sha256(artifact) == manifest["artifact"]["sha256"] else "MISMATCH"


def print_manifest(manifest: dict[str, Any], mpath: Path, console: Any = None) -> None:
    """A summary table then the full JSON (rich, to stdout unless `console` is given)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    m, v = manifest["model"], manifest["verification"]
    t = Table(title=str(mpath), show_header=False)
    t.add_row("artifact", f"{manifest['artifact']['file']} (sha256 {check_artifact(manifest, mpath)})")
    t.add_row("target / precision", f"{manifest['target']} / {manifest['precision']}")
    t.add_row("model", f"{m['name']} x{m['scale']} width {m['width']:g}, {m['params']:,} params")
    t.add_row("input -> output", f"{manifest['input']['shape']} -> {manifest['output']['shape']}")
    status = "passed" if v["passed"] else "FAILED"
    if v.get("numerics_run", True):
        text = f"{status}: PSNR {v['psnr_db']} dB vs {v['reference']}, max abs diff {v['max_abs_diff']:.3g}"
        if v.get("float_psnr_db") is not None:
            text += f"; {v['float_psnr_db']} dB vs float"
        text += f" on {v['runtime']}"
    else:
        text = f"{status} (structure only): {v.get('note', '')}"
    t.add_row("verification", text)
    graph = manifest.get("graph", {})
    t.add_row("graph", ", ".join(f"{k} {val}" for k, val in graph.items() if val is not None))
    options = (manifest.get("runtime") or {}).get("options") or {}
    if options:
        t.add_row("run it with", ", ".join(f"{k}={v}" for k, v in options.items()))
    ops = manifest["delegation"].get("ops", {})
    t.add_row("ops", ", ".join(f"{k} {n}" for k, n in ops.items()))
    console.print(t)
    console.print_json(data=manifest)
