"""Time models on this machine with the real runtimes: any registered export target, or eager PyTorch.

    rec = profile_artifact("exports/edsr_x2_w0.25_180x320_fp32.onnx", threads=2)
    recs = sweep(arch, [0.125, 0.25, 0.5], "onnx", Resolution(320, 180), threads=2)

Each measurement: load the artifact into its runtime (inside a peak-RSS window), `warmup` untimed
runs, then `runs` timed runs on one fixed real-valued input; median/p90/std/count are recorded.
A width sweep exports each width on the fly (latency does not depend on the weights' values, so a
freshly initialised model of the checkpoint's architecture is used when the checkpoint has no
weights for that width).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgesr.data.datasets import eval_sets
from edgesr.devices import Resolution
from edgesr.errors import NotFoundError, NotRunnableHere, UsageError
from edgesr.export import EXPORTERS, ExportOptions, ExportPlan, get_exporter, plan_export
from edgesr.export import manifest as export_manifest
from edgesr.export.graphs import upsampler_op
from edgesr.export.manifest import artifact_sha256, manifest_path
from edgesr.export.run import deployable, ptq_graph
from edgesr.fingerprint import detect_machine
from edgesr.models import arch_channels, build_model, count_macs, count_params, students_at
from edgesr.profile.store import LayerKey, ModelInfo, Record
from edgesr.profile.timing import PeakRSS, now_utc, time_fn
from edgesr.quant.quality import GATE_IMAGES, measure_int8_loss
from edgesr.targets import TARGETS

PYTORCH = "pytorch"
_PLATFORMS = {"darwin": "macOS/iOS"}  # sys.platform -> what messages call it

Loader = Callable[[int | None], Callable[[np.ndarray], np.ndarray]]


def targets() -> list[str]:
    """What can be timed here: eager PyTorch and every registered export target."""
    return [PYTORCH, *EXPORTERS.names()]


def runtime_info(target: str) -> tuple[str, str, str]:
    """(runtime name, runtime version, delegate) for a target; MissingSDKError when its SDK is absent,
    RuntimeError when its runtime cannot run on this machine (Core ML off macOS)."""
    if target == PYTORCH:
        return "pytorch", str(torch.__version__), "cpu"  # TorchVersion is a str subclass YAML cannot dump
    spec = TARGETS.get(target)
    if spec.platforms and sys.platform not in spec.platforms:
        raise NotRunnableHere(
            f"{spec.sdk_label.split(' (')[0]} artifacts run only on {_PLATFORMS[spec.platforms[0]]}: "
            "time them on such a machine (a `transport: macos` device) or import an on-device "
            "measurement with `edgesr profile import`"
        )
    versions = get_exporter(target).sdk_versions()
    pkg = spec.runtime_package
    version = versions.get(pkg) if pkg in versions else ", ".join(f"{k} {v}" for k, v in versions.items())
    return spec.runtime, str(version), spec.default_delegate


def target_for_artifact(path: Path) -> str:
    """The registered target whose suffix `path` has (.onnx -> onnx)."""
    for spec in TARGETS.values():
        if path.name.endswith(spec.suffix):
            return spec.name
    raise UsageError(
        f"{path}: no registered export target has suffix {path.suffix!r} "
        f"(targets: {', '.join(EXPORTERS.names())}); pass --target"
    )


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def pytorch_loader(model: nn.Module) -> Loader:
    """Eager PyTorch as a runtime: float32 NCHW numpy in -> out, no autograd."""
    model = model.eval()

    def load(threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return run

    return load


def weights_sha256(model: nn.Module) -> str:
    """sha256 of the state dict's safetensors bytes: the eager "artifact" identity."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()


def real_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A fixed float32 input in [0, 1) (values do not change dense-conv latency; zeros could in
    runtimes that skip them, so random is used)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# Warm-up lasts at least this long whatever `warmup` says: a fresh runtime session keeps getting
# faster for its first calls (allocator arenas, page faults, caches). Measured here on ONNX Runtime,
# 1 thread: the 8-channel quickstart student's median was 28 ms after 2 warm-up calls and 25.7 ms
# after 10, which is more than the latency model's whole error budget on small models.
WARMUP_S = 0.5


def measure(
    load: Loader, x: np.ndarray, threads: int | None, warmup: int, runs: int
) -> tuple[Any, float | None]:
    """(Stats, peak RSS delta MB) of `load(threads)`, then at least `warmup` calls and WARMUP_S
    seconds of warm-up, then `runs` timed calls on `x`."""
    with torch_threads(threads), PeakRSS() as mem:
        fn = load(threads)
        stats = time_fn(lambda: fn(x), warmup, runs, WARMUP_S)
    return stats, mem.delta_mb


def machine_load() -> str:
    """The machine's 1-minute load average vs its CPUs, recorded with host timings: on a shared
    machine it says how much the figures were disturbed by other work."""
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return ""


def macs_at(model: nn.Module, hw: tuple[int, int]) -> int:
    """Conv MACs of one frame at `hw`, counted on a meta-device copy (no real compute)."""
    return count_macs(copy.deepcopy(model).to("meta"), hw)


def model_info(arch: dict[str, Any], width: float, model: nn.Module, hw: tuple[int, int]) -> ModelInfo:
    channels = arch_channels(arch, width)
    return ModelInfo(dict(arch), float(width), channels, count_params(model), macs_at(model, hw))


def _export(
    model: nn.Module, target: str, shape: tuple[int, int, int, int], folder: Path, stem: str,
    precision: str = "fp32", scale: int | None = None, upsampler: str | None = None,
    activations: str | None = None,
) -> tuple[Path, ExportPlan, Any]:  # fmt: skip
    """Write `model` as `target`'s artifact for timing: the graph the target ships (by default its
    default upsampler, e.g. TFLite float: DEPTH_TO_SPACE; int8: PTQ on 8 built-in train crops with the
    target's default activations; `upsampler` / `activations` pick another variant), not verified
    (profiling times, it does not ship). Returns (artifact, plan, the int8 graph or None)."""
    exporter = get_exporter(target)
    path = folder / f"{stem}{exporter.spec.suffix}"
    # The options' shape must be RGB; single-layer models of the latency table take other channel
    # counts, and exporters trace with `example`, so only H and W are passed through here.
    options = ExportOptions(precision=precision, input_shape=(1, 3, *shape[2:]), upsampler=upsampler,
                            activations=activations)  # fmt: skip
    plan = plan_export(target, options)
    if isinstance(model, nn.Sequential) and len(model) == 1 and isinstance(model[0], nn.PixelShuffle):
        # the latency table's one-op shuffle layer: no conv feeds it, so time the op the target's
        # graph has in its place (DEPTH_TO_SPACE, a transposed conv) as it is
        model = nn.Sequential(upsampler_op(plan.upsampler, shape[1], model[0].upscale_factor))
    elif any(isinstance(m, nn.PixelShuffle) for m in model.modules()):
        model = deployable(model.eval(), plan.upsampler)
    example = torch.from_numpy(real_input(shape))
    model = model.eval()
    quantized = None
    if plan.int8_activations:
        if scale is None:
            raise UsageError("an int8 sweep needs the model's scale (whole models only, not layer tables)")
        model = quantized = ptq_graph(model, scale, example, plan)
    with torch.no_grad():
        exporter.export(model, example, path, plan)
    return path, plan, quantized


def int8_drop_db(float_model: nn.Module, quantized: Any, scale: int) -> float:
    """Mean Y-PSNR (dB) the int8 graph loses to the float model on the int8 gate photos (the same
    measurement as `edgesr export`'s int8 quality gate)."""
    images = [item for items in eval_sets(GATE_IMAGES, scale).values() for item in items]
    return measure_int8_loss(float_model.eval(), quantized, images, scale).mean_drop_db


def artifact_sha(path: Path) -> str:
    return artifact_sha256(path)


def profile_module(
    model: nn.Module,
    target: str,
    shape: tuple[int, int, int, int],
    name: str,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    model_meta: ModelInfo | None = None,
    layer: LayerKey | None = None,
    workdir: Path | None = None,
    precision: str = "fp32",
    scale: int | None = None,
    upsampler: str | None = None,
    activations: str | None = None,
    quality: bool = False,
    runtime_options: Mapping[str, str] | None = None,
) -> Record:
    """Export `model` for `target` (none for pytorch) at `precision` (int8: PTQ, needs the model's
    `scale` for calibration crops) as the `upsampler` / `activations` variant (default: the target's),
    time it on input `shape` with `runtime_options` (edgesr.targets.RuntimeOption), return its Record.
    `quality`: also measure an int8 graph's Y-PSNR drop against `model` (only meaningful for trained
    weights)."""
    runtime, version, delegate = runtime_info(target)
    if target == PYTORCH and precision != "fp32":
        raise UsageError(f"eager PyTorch is timed in fp32 only, not {precision}; pick an export target")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        variant: dict[str, Any] = {}
        if target == PYTORCH:
            if upsampler is not None or activations is not None or runtime_options:
                raise UsageError(
                    "eager PyTorch has no export variants or runtime options; pick an export target"
                )
            load, sha, artifact = pytorch_loader(model), weights_sha256(model), f"{name}.pt (eager)"
        else:
            exp = get_exporter(target)
            options = exp.spec.check_runtime_options(runtime_options or {})  # refused before the export
            path, plan, quantized = _export(model, target, shape, Path(tmp), name, precision, scale,
                                            upsampler, activations)  # fmt: skip
            load, sha, artifact = (lambda t: exp.load(path, t, options)), artifact_sha(path), path.name
            variant["runtime_options"] = exp.spec.non_default_options(options)
            if any(isinstance(m, nn.PixelShuffle) for m in model.modules()):  # a whole model
                variant["upsampler"] = plan.upsampler
                variant["activations"] = plan.activations if plan.int8_activations else None
                if quality and quantized is not None and scale is not None:
                    variant["int8_drop_db"] = int8_drop_db(model, quantized, scale)
        busy = machine_load()
        stats, peak = measure(load, real_input(shape), threads, warmup, runs)
    return Record(
        artifact=artifact,
        runtime=runtime,
        delegate=delegate,
        precision=precision,
        resolution=f"{shape[3]}x{shape[2]}",
        stats=stats,
        measured_at=now_utc(),
        method="host",
        sha256=sha,
        runtime_version=version,
        threads=threads,
        peak_mem_mb=peak,
        model=model_meta,
        layer=layer,
        notes=busy,
        machine=detect_machine(),
        **variant,
    )


def info_from_manifest(manifest: dict[str, Any], resolution: Resolution) -> ModelInfo:
    """ModelInfo of an artifact's manifest, MACs rescaled to `resolution` (conv MACs scale with H*W)."""
    m = manifest["model"]
    ch = arch_channels(m, m["width"])
    h, w = m["macs_input"][2], m["macs_input"][3]
    macs = int(m["macs"] * resolution.width * resolution.height / (h * w))
    return ModelInfo({"name": m["name"], "args": m["args"]}, float(m["width"]), ch, int(m["params"]), macs)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The artifact's `<artifact>.json` manifest, checked (edgesr.export.manifest), or None."""
    return export_manifest.read_manifest(path)[0] if manifest_path(path).is_file() else None


def profile_artifact(
    path: str | Path,
    target: str | None = None,
    resolution: Resolution | None = None,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    trust: bool = False,
    runtime_options: Mapping[str, str] | None = None,
) -> Record:
    """Time an exported artifact on its runtime here. Input size: `resolution`, else the manifest's;
    runtime options: `runtime_options`, else those the manifest says it is meant to run with. An
    artifact with a manifest must still match its sha256 (unless `trust`)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"no such artifact: {path}")
    target = target or target_for_artifact(path)
    manifest = read_manifest(path)
    if manifest is not None:
        export_manifest.checked_artifact(path, trust)
    if resolution is None:
        shape = (manifest or {}).get("input", {}).get("shape")
        if not shape or not all(isinstance(v, int) for v in shape):
            raise UsageError(f"{path}: no fixed input shape in its manifest; pass --resolution WxH")
        resolution = Resolution(shape[3], shape[2])
    runtime, version, delegate = runtime_info(target)
    exp = get_exporter(target)
    info = info_from_manifest(manifest, resolution) if manifest else None
    precision = manifest.get("precision", "fp32") if manifest else "fp32"
    graph = (manifest or {}).get("graph") or {}
    acts = ((manifest or {}).get("quantization") or {}).get("activations", "")
    shape = (1, 3, resolution.height, resolution.width)
    busy = machine_load()
    if runtime_options is None:
        runtime_options = ((manifest or {}).get("runtime") or {}).get("options") or {}
    options = exp.spec.check_runtime_options(runtime_options)
    load = export_manifest.guarded(path, f"loading it on {runtime}", exp.load)
    stats, peak = measure(
        lambda t: export_manifest.guarded(path, f"running it on {runtime}", load(path, t, options)),
        real_input(shape), threads, warmup, runs,
    )  # fmt: skip
    return Record(
        artifact=path.name,
        runtime=runtime,
        delegate=delegate,
        precision=precision,
        resolution=resolution.text,
        stats=stats,
        measured_at=now_utc(),
        method="host",
        sha256=artifact_sha(path),
        runtime_version=version,
        threads=threads,
        peak_mem_mb=peak,
        model=info,
        notes=busy,
        machine=detect_machine(),
        upsampler=graph.get("upsampler"),
        # the manifest says "int8 per-tensor (float-ends)" for int8 activations
        activations=acts[acts.index("(") + 1 : -1] if acts.startswith("int8 per-tensor (") else None,
        runtime_options=exp.spec.non_default_options(options),
    )


def sweep(
    arch: dict[str, Any],
    widths: Sequence[float],
    target: str,
    resolution: Resolution,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    weights: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "fp32",
    upsampler: str | None = None,
    activations: str | None = None,
    runtime_options: Mapping[str, str] | None = None,
) -> list[Record]:
    """Export and time the architecture at each width and `precision`, as the `upsampler` /
    `activations` variant (default: the target's), run with `runtime_options`. `weights`: a
    full-width model to slice (e.g. a CSD checkpoint; int8 records then also carry the int8 Y-PSNR
    drop of each width); by default a seeded fresh model of `arch` (latency is weight-independent)."""
    trained = weights is not None
    if weights is None:
        torch.manual_seed(0)
        weights = build_model(arch["name"], **arch["args"])
    shape = (1, 3, resolution.height, resolution.width)
    out = []
    for w, model in students_at(weights, widths):
        info = model_info(arch, w, model, resolution.hw)
        size = f"{resolution.height}x{resolution.width}"
        name = f"{arch['name']}_x{arch['args'].get('scale', '')}_w{w:g}_{size}_{precision}"
        rec = profile_module(model, target, shape, name, threads, warmup, runs, info, precision=precision,
                             scale=arch["args"].get("scale"), upsampler=upsampler, activations=activations,
                             quality=trained, runtime_options=runtime_options)  # fmt: skip
        if log:
            drop = "" if rec.int8_drop_db is None else f", int8 drop {rec.int8_drop_db:.3f} dB"
            log(
                f"  width {w:<6g} {info.channels:>3} ch  {rec.stats.typical_ms:8.2f} ms median "
                f"(p90 {rec.stats.p90_ms:.2f}, n={rec.stats.count}){drop}"
            )
        out.append(rec)
    return out
