"""A saved Qualcomm AI Hub profile: `json.dump(profile_job.download_profile(), f)`.

An object `{execution_summary, execution_detail}` (qai_hub's `_profile_pb_to_python_dict`). Times are
microseconds, memory bytes. `execution_summary.all_inference_times` are the timed runs (the first,
a cold run, is counted as warm-up when there are at least 3); a profile with only
`estimated_inference_time` (AI Hub's headline figure, the fastest run, not a median) is refused.
Peak memory is the upper bound of `inference_memory_peak_range` (else
`estimated_inference_peak_memory`). Each `execution_detail` entry names an op (`name`, `type`),
its `compute_unit` (NPU, GPU, CPU) and, when AI Hub measured it, `execution_time`. The profile
does not name the runtime (the target runtime is a property of the compiled model, not of the
profile), so `Parsed.runtime` is None and the importer needs `--runtime`; the delegate follows
from the compute units (`aihub_delegate`).
"""

from __future__ import annotations

import json
from typing import Any

from edgesr.profile.importers.parsed import Parsed, ParseError
from edgesr.profile.store import OpTime
from edgesr.profile.timing import stats_from_ms

__all__ = ["AIHUB_UNIT_DELEGATES", "aihub_delegate", "aihub_top_unit", "parse_aihub_json"]


# AI Hub compute unit -> the delegate name edgesr's device files use for it, per runtime. Evidence:
# qai_hub's own client test shows a TFLite profile's NPU layers on the QNN delegate (HTP) and its CPU
# layers on XNNPACK; Core ML's compute units are CPU, GPU and the Neural Engine (ANE); ONNX Runtime
# reaches the NPU through the QNN execution provider. Unlisted pairs are not guessed.
AIHUB_UNIT_DELEGATES: dict[str, dict[str, str]] = {
    "litert": {"NPU": "qnn", "GPU": "gpu", "CPU": "xnnpack"},
    "coreml": {"NPU": "ane", "GPU": "gpu", "CPU": "cpu"},
    "onnxruntime": {"NPU": "qnn", "CPU": "cpu"},
}
_UNIT_ORDER = ("NPU", "GPU", "CPU")  # AI Hub places ops on the NPU first, then GPU, then CPU


def aihub_top_unit(units: dict[str, int]) -> str | None:
    """The most capable compute unit any op ran on (the one asked for; the others are fallback)."""
    return next((u for u in _UNIT_ORDER if units.get(u)), next(iter(units), None))


def aihub_delegate(runtime: str, units: dict[str, int]) -> str | None:
    """The delegate of `runtime` that ran an AI Hub profile with these per-op compute unit counts."""
    top = aihub_top_unit(units)
    return AIHUB_UNIT_DELEGATES.get(runtime, {}).get(top) if top else None


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_aihub_json(text: str, source: str = "AI Hub profile") -> Parsed:
    """A saved Qualcomm AI Hub profile (`profile_job.download_profile()`) -> Parsed (us -> ms)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ParseError(f"{source}: not JSON ({e})") from None
    summary = data.get("execution_summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise ParseError(
            f"{source}: no execution_summary object: not an AI Hub profile "
            "(expected the dict profile_job.download_profile() returns, saved with json.dump)"
        )

    def bad(key: str, want: str, v: Any) -> ParseError:
        return ParseError(
            f"{source}: execution_summary.{key} must be {want}, got {type(v).__name__} {v!r:.60}"
        )

    times, est = summary.get("all_inference_times"), summary.get("estimated_inference_time")
    if times is not None and not (isinstance(times, list) and all(_is_num(t) and t > 0 for t in times)):
        raise bad("all_inference_times", "a list of run times in microseconds (> 0)", times)
    if est is not None and not (_is_num(est) and est > 0):
        raise bad("estimated_inference_time", "microseconds (> 0)", est)
    notes = []
    if times:
        ms = [t / 1000 for t in times]
        warm = 1 if len(ms) >= 3 else 0
        stats = stats_from_ms(ms[warm:], warm)
        if warm:
            notes.append(f"first of {len(ms)} runs ({ms[0]:.1f} ms, cold) counted as warm-up")
        if est is not None:
            notes.append(f"AI Hub estimate {est / 1000:.3f} ms")
    elif est is not None:
        raise ParseError(
            f"{source}: execution_summary has no all_inference_times, only estimated_inference_time "
            f"({est / 1000:.3f} ms), which is AI Hub's fastest run, not a median: a profile stores "
            "medians only; re-download the profile from a recent AI Hub job"
        )
    else:
        raise ParseError(
            f"{source}: execution_summary has neither all_inference_times nor estimated_inference_time "
            "(did the profile job fail?)"
        )

    peak_range, est_peak = (
        summary.get("inference_memory_peak_range"),
        summary.get("estimated_inference_peak_memory"),
    )
    if peak_range is not None and not (
        isinstance(peak_range, list) and len(peak_range) == 2 and all(_is_num(v) for v in peak_range)
    ):
        raise bad("inference_memory_peak_range", "[low, high] in bytes", peak_range)
    if est_peak is not None and not _is_num(est_peak):
        raise bad("estimated_inference_peak_memory", "bytes", est_peak)
    mib = 2**20
    peak = None
    if peak_range and peak_range[1] > 0:
        peak = peak_range[1] / mib
        notes.append(f"inference memory peak {peak_range[0] / mib:.1f}-{peak:.1f} MB")
        if est_peak:
            notes.append(f"process peak after inference {est_peak / mib:.1f} MB")
    elif est_peak:
        peak = est_peak / mib
        notes.append(f"peak memory: estimated_inference_peak_memory {peak:.1f} MB")
    load = [(k, summary.get(f"{k}_time")) for k in ("first_load", "warm_load")]
    if all(_is_num(v) for _, v in load):
        notes.append(", ".join(f"{k.replace('_', ' ')} {v / 1000:.1f} ms" for k, v in load))

    detail = data.get("execution_detail") or []
    if not isinstance(detail, list):
        raise ParseError(
            f"{source}: execution_detail must be a list of per-op objects, got {type(detail).__name__}"
        )
    units: dict[str, int] = {}
    ops: list[OpTime] = []
    untimed = 0
    for i, d in enumerate(detail):
        unit = d.get("compute_unit") if isinstance(d, dict) else None
        if not isinstance(unit, str):
            raise ParseError(f"{source}: execution_detail[{i}] has no compute_unit: {d!r:.80}")
        units[unit] = units.get(unit, 0) + 1
        t = d.get("execution_time")
        if t is None:
            untimed += 1
        elif not _is_num(t) or t < 0:
            raise ParseError(
                f"{source}: execution_detail[{i}].execution_time must be microseconds, got {t!r}"
            )
        else:
            name = str(d.get("name", f"op {i}"))
            ops.append(OpTime(name, str(d.get("type", name)), t / 1000, None, unit))
    units = dict(sorted(units.items(), key=lambda kv: -kv[1]))  # most ops first
    if units:
        notes.insert(0, "compute units: " + ", ".join(f"{u} {n}" for u, n in units.items()))
    if untimed:
        notes.append(f"{untimed} ops without execution_time")
    return Parsed(stats, None, None, None, None, peak, tuple(ops), "; ".join(notes), {"compute_units": units})
