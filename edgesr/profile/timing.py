"""Timing and memory primitives: warm-up, repeated runs, robust statistics, peak RSS.

stats = time_fn(lambda: run(x), warmup=3, runs=20)   # Stats in milliseconds
with PeakRSS() as mem: session = load(); run(x)      # mem.delta_mb after the block
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import numpy as np

from edgesr.errors import UsageError
from edgesr.profile.store import Stats


def stats_from_ms(
    samples_ms: Sequence[float], warmup: int | None, cpu_ms: Sequence[float] | None = None
) -> Stats:
    """Median, p90 (linear interpolation), mean, std (population), min, max of per-run wall times
    (ms), and the median and p90 of per-run process CPU times when given."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timed runs to summarise")
    c = None if cpu_ms is None else np.asarray(cpu_ms, dtype=np.float64)
    return Stats(
        cpu_median_ms=None if c is None else float(np.median(c)),
        cpu_p90_ms=None if c is None else float(np.percentile(c, 90)),
        median_ms=float(np.median(a)),
        p90_ms=float(np.percentile(a, 90)),
        mean_ms=float(a.mean()),
        std_ms=float(a.std()),
        min_ms=float(a.min()),
        max_ms=float(a.max()),
        count=int(a.size),
        warmup=warmup,
    )


def time_fn(fn: Callable[[], object], warmup: int = 3, runs: int = 20, warmup_s: float = 0.0) -> Stats:
    """Call `fn` untimed at least `warmup` times and for at least `warmup_s` seconds, then `runs`
    times, each timed with perf_counter (wall ms) and process_time (CPU ms of all the process's
    threads). `Stats.warmup` is the number of warm-up calls made."""
    if warmup < 0 or runs < 1 or warmup_s < 0:
        raise UsageError(
            f"need warmup >= 0, runs >= 1 and warmup_s >= 0, got warmup={warmup}, runs={runs}, "
            f"warmup_s={warmup_s}"
        )
    n_warm, start = 0, time.perf_counter()
    while n_warm < warmup or time.perf_counter() - start < warmup_s:
        fn()
        n_warm += 1
    samples, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return stats_from_ms(samples, n_warm, cpu)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


class PeakRSS:
    """Peak resident set size of this process inside a `with` block, minus the RSS at its start (MB).

    On Linux the kernel's high-water mark (VmHWM) is reset at entry by writing 5 to
    /proc/self/clear_refs, so the figure is the block's own peak: runtime session, weights, arena
    and activations, plus anything else the process allocates meanwhile. Where the reset is not
    allowed it falls back to `ru_maxrss`, which only shows growth beyond the process's earlier
    peak (then `exact` is False). Freed-and-reused memory is not counted twice.
    """

    def __enter__(self) -> PeakRSS:
        self.exact = False
        try:
            _CLEAR_REFS.write_text("5")
            self.exact = _status_kb("VmHWM") is not None
        except OSError:
            pass
        self._start_kb = _status_kb("VmRSS") if self.exact else None
        self._start_max_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.delta_mb: float | None = None
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.exact and self._start_kb is not None:
            hwm = _status_kb("VmHWM")
            self.delta_mb = None if hwm is None else max(0, hwm - self._start_kb) / 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.delta_mb = max(0, peak - self._start_max_kb) / 1024
