"""How the phone's runtime computes the image: `edgesr profile run ARTIFACT --via aihub --inference`.

One Qualcomm AI Hub inference job runs the artifact on the export verification's input (the centre
crop of the first built-in val photo at the artifact's input size, `edgesr.export.verify`); the
output is downloaded and compared with the PyTorch model the artifact was exported from (rebuilt
from the manifest's checkpoint at its width) and with the HR photo. The figures go into the
artifact's manifest under `on_device["aihub:<farm device>"]`, beside the host verification:

- `psnr_db`, `max_abs_diff`: device output vs PyTorch on clipped RGB, data range 1 (the measure of
  `verification.psnr_db`, so the two read side by side: fp16 on the NPU, or int8 kernels that round
  differently, show here and not on the host);
- `y_psnr_vs_pytorch_db`, `y_psnr_vs_hr_db`, `pytorch_y_psnr_vs_hr_db`: Y-PSNR (the SR papers'
  measure, `scale` pixels of border cropped) of the device output against PyTorch and against the HR
  photo, and of PyTorch against the HR photo: what the numerics cost in image quality.

The manifest is rewritten atomically; the artifact (and so its sha256) is untouched. The job is
kept in the same state file as profile jobs, so a re-run after Ctrl-C reuses it.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from edgesr.devices import Device
from edgesr.errors import UsageError
from edgesr.export.manifest import checked_artifact, write_manifest
from edgesr.export.verify import output_psnr, verification_hr, verification_input
from edgesr.metrics import psnr_y
from edgesr.profile.aihub import (
    POLL_S,
    FarmError,
    FarmTask,
    JobStore,
    Log,
    Progress,
    check_farm_names,
    client_version,
    farm_devices,
    load_client,
    plan_tasks,
    service_errors,
    state_path,
    submit_missing,
    wait_jobs,
)
from edgesr.profile.store import ProfileRoot
from edgesr.profile.timing import now_utc
from edgesr.student import load_student


def _db(v: float | None) -> float | str | None:
    return None if v is None or math.isnan(v) else ("inf" if math.isinf(v) else round(v, 3))


def to_artifact_input(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """float32 NCHW in [0, 1] -> what the artifact takes (int8 I/O: quantized with the manifest's
    scale and zero point)."""
    q = spec.get("quantization")
    if spec.get("dtype", "float32") == "float32" or not q:
        return x.astype(np.float32)
    info = np.iinfo(np.dtype(spec["dtype"]))
    return np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max).astype(spec["dtype"])


def from_artifact_output(data: Any, spec: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """The downloaded output data ({name: [array]}) -> float32 NCHW `shape` (dequantized; an NHWC
    output is transposed)."""
    if not isinstance(data, dict) or not data:
        raise FarmError(f"Qualcomm AI Hub returned no output data (got {type(data).__name__}); re-run")
    y = np.asarray(next(iter(data.values()))[0])
    q = spec.get("quantization")
    if q and np.issubdtype(y.dtype, np.integer):
        y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
    if y.shape != shape and y.ndim == 4 and (y.shape[0], y.shape[3], *y.shape[1:3]) == shape:
        y = y.transpose(0, 3, 1, 2)
    if y.shape != shape:
        raise FarmError(f"the phone's output has shape {list(y.shape)}, the manifest says {list(shape)}")
    return y.astype(np.float32)


def pytorch_reference(manifest: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray | None, str]:
    """PyTorch's output on `x` from the checkpoint the artifact was exported from, or None (and
    why) when that checkpoint is not on this machine."""
    ckpt = (manifest.get("source") or {}).get("checkpoint")
    if not ckpt or not Path(ckpt).exists():
        return None, f"checkpoint {ckpt!r} not found here: no PyTorch comparison"
    student = load_student(ckpt, manifest["model"]["width"], any_width=True)
    with torch.no_grad():
        return student.net(torch.from_numpy(x)).numpy(), f"PyTorch {torch.__version__} eager, float32"


def numerics_entry(
    out: np.ndarray, ref: np.ndarray | None, hr: np.ndarray | None, scale: int
) -> dict[str, Any]:
    """The figures of a device output `out` against PyTorch `ref` and the HR crop `hr`."""

    def y(a: np.ndarray, b: np.ndarray) -> float:
        return psnr_y(torch.from_numpy(a[0]).clamp(0, 1), torch.from_numpy(b[0]).clamp(0, 1), scale)

    e: dict[str, Any] = {"psnr_db": None, "max_abs_diff": None, "y_psnr_vs_pytorch_db": None}
    if ref is not None:
        e["psnr_db"] = _db(output_psnr(out, ref))
        e["max_abs_diff"] = float(np.max(np.abs(out.astype(np.float64) - ref)))
        e["y_psnr_vs_pytorch_db"] = _db(y(out, ref))
    e["y_psnr_vs_hr_db"] = _db(y(out, hr)) if hr is not None else None
    e["pytorch_y_psnr_vs_hr_db"] = _db(y(ref, hr)) if hr is not None and ref is not None else None
    return e


def _fixed_shape(manifest: dict[str, Any], path: Path) -> tuple[int, int, int, int]:
    shape = manifest["input"]["shape"]
    if manifest["input"].get("dynamic") or not all(isinstance(v, int) for v in shape):
        raise UsageError(f"{path}: a dynamic-shape artifact; on-device numerics need a fixed input size")
    return tuple(shape)  # type: ignore[return-value]


def on_device_numerics(
    artifact: str | Path,
    device: Device,
    farm_device: str | None = None,
    options: str = "",
    root: ProfileRoot = None,
    trust: bool = False,
    progress: Progress | None = None,
    log: Log | None = None,
    resume: str = "the same command",
    poll_s: float = POLL_S,
) -> dict[str, Any]:
    """Run `artifact` on `device` through an AI Hub inference job; record and return the figures."""
    hub = load_client()
    path, manifest = checked_artifact(artifact, trust)
    (task,) = plan_tasks([path], [device], farm_device, options, "inference", trust)
    check_farm_names([task.farm_device], farm_devices(hub))
    shape, scale = _fixed_shape(manifest, path), int(manifest["model"]["scale"])
    x, image = verification_input(shape, scale)
    inputs = {str(manifest["input"].get("name", "lr")): [to_artifact_input(x, manifest["input"])]}

    def submit(hub: ModuleType, model: Any, t: FarmTask) -> Any:
        return hub.submit_inference_job(
            model=model, device=hub.Device(t.farm_device), inputs=inputs,
            name=f"edgesr numerics {t.artifact.name}", options=t.options, retry=False,
        )  # fmt: skip

    store = JobStore(state_path(root))
    jobs = submit_missing(hub, [task], store, submit, log)
    (state,), jobs = wait_jobs(hub, [task], store, jobs, progress, poll_s, resume)
    if not state.success:
        store.drop(task.key)
        raise FarmError(
            f"{task.label}: AI Hub inference job {state.job_id} {state.code.lower()}: "
            f"{state.message or 'the service gave no reason'}"
        )
    job = jobs[task.key]
    with service_errors(hub, f"downloading the output of job {state.job_id}"):
        data = job.download_output_data()
    out_shape = (1, shape[1], shape[2] * scale, shape[3] * scale)
    out = from_artifact_output(data, manifest["output"], out_shape)
    ref, reference = pytorch_reference(manifest, x)
    entry = {
        "service": "Qualcomm AI Hub", "device": device.name, "farm_device": task.farm_device,
        "job_id": state.job_id, "service_version": str(getattr(job, "hub_version", "unknown")),
        "client": f"qai-hub {client_version(hub)}", "runtime": task.runtime, "image": image,
        "input_shape": list(shape), "reference": reference,
        **numerics_entry(out, ref, verification_hr(shape, scale), scale), "measured_at": now_utc(),
    }  # fmt: skip
    manifest.setdefault("on_device", {})[f"aihub:{task.farm_device}"] = entry
    write_manifest(path, manifest)
    return entry
