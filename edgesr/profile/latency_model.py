"""NetAdapt-style latency model: a per-layer lookup table measured on the device, summed per network.

The table maps `LayerKey` (kind, c_in, c_out, kernel, input H x W) to the median latency of a
one-op network of that layer (a conv with its fused epilogue counts as one layer, see
edgesr.profile.layers), timed with the same runtime, delegate, precision and threads as the whole
models. A layer timed alone also pays what the whole network pays only once: the runtime call and
its tensors' boundary work (input/output copies, layout changes such as ONNX Runtime's NCHWc
reorders). Layers that keep their channel count (the body convs, most of an SR net's time) are
therefore also timed twice in a row, and their in-context cost is the difference,
`T(layer, layer) - T(layer)`. A student's prediction is

    predicted_ms = sum(marginal[l] for chained l) + sum(table[l] for the other l) - (n_other - 1) * call_ms

where `call_ms` is the measured fixed cost of one runtime call (an almost empty one-op network, a
1-channel 1x1 ReLU): each of the other layers' networks paid it once, the whole model pays it once.
Missing keys are interpolated linearly in work (MACs for convs, elements otherwise) between measured
keys of the same kind, kernel and resolution (NetAdapt uses radial-basis interpolation; our tables
are measured on the snapped channel grid, so interpolation is rarely needed). What a sum of layers
still cannot see (cross-layer scheduling, caches) is why `accuracy` compares predictions with
whole-model measurements. On one device and runtime that residual is close to one factor for every
width, so the model in use is the sum times a scale fitted on the measured widths (`fit_scale`), and
its accuracy is judged leave-one-out: every width is predicted with the scale fitted on the others.
Callers trust the model only where that held-out accuracy meets TRUST_SHARE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from edgesr.profile.layers import layer_module, model_layers
from edgesr.profile.store import LayerKey, Record

CALL_KEY = LayerKey("relu", 1, 1, 0, 1, 1)  # the "empty" network whose time is one call's overhead
TOLERANCE = 0.10  # a prediction is accurate when within +-10% of the measurement
TIGHT = 0.05  # the second bar (>= 90% of widths within +-5%; LitePred reports 79-98% there)
TRUST_SHARE = 0.90  # the model is trusted when at least this share of measured widths is accurate


class MissingLayerError(KeyError):
    """A layer the table has no measurement for and cannot interpolate; measure the table first."""


def _work(k: LayerKey) -> float:
    return float(k.c_in * k.c_out * k.kernel * k.kernel) if k.kind.startswith("conv") else float(k.c_out)


@dataclass(frozen=True)
class LayerTable:
    """Per-layer medians (ms) of one device + runtime + delegate + precision + threads."""

    entries: dict[LayerKey, float]
    runtime: str
    delegate: str
    precision: str
    threads: int | None

    @property
    def call_ms(self) -> float:
        return self.entries.get(CALL_KEY, 0.0)

    def _lookup(self, key: LayerKey) -> float:
        if key in self.entries:
            return self.entries[key]
        group = (key.kind, key.kernel, key.height, key.width, key.repeat)
        same = sorted(
            (_work(k), v)
            for k, v in self.entries.items()
            if (k.kind, k.kernel, k.height, k.width, k.repeat) == group
        )
        x = _work(key)
        if len(same) >= 2 and same[0][0] <= x <= same[-1][0]:
            xs, ys = zip(*same, strict=True)
            return float(np.interp(x, xs, ys))
        raise MissingLayerError(f"no latency-table entry for {key.text} and no neighbours to interpolate")

    def marginal_ms(self, key: LayerKey) -> float | None:
        """In-context cost of a chainable layer: T(layer twice in a row) - T(layer alone), or None."""
        if not chainable(key):
            return None
        try:
            return self._lookup(replace(key, repeat=2)) - self._lookup(key)
        except MissingLayerError:
            return None

    def layer_ms(self, key: LayerKey) -> float:
        """The layer's cost inside a network: marginal when it was chained, else its own network's time."""
        m = self.marginal_ms(key)
        return m if m is not None else self._lookup(key)

    def predict(self, layers: Sequence[LayerKey]) -> float:
        """Predicted whole-network latency (ms) of the layer list `model_layers` returns.

        Marginal (chained) layers carry no runtime call or tensor-boundary cost; every other layer's
        one-op network paid one call, of which the whole network pays one.
        """
        total, alone = 0.0, 0
        for k in layers:
            m = self.marginal_ms(k)
            total += m if m is not None else self._lookup(k)
            alone += m is None
        return total - (alone - 1) * self.call_ms

    def predict_model(self, model: nn.Module, hw: tuple[int, int]) -> float:
        return self.predict(model_layers(model, hw))


def table_from_records(
    records: Iterable[Record],
    runtime: str,
    delegate: str,
    precision: str,
    threads: int | None,
    clock: str = "wall",
) -> LayerTable:
    """The table of the layer records that match the runtime configuration, on `clock` (wall | cpu)."""
    entries = {
        r.layer: v
        for r in records
        if r.layer is not None
        and (r.runtime, r.delegate, r.precision, r.threads) == (runtime, delegate, precision, threads)
        and (v := r.stats.value(clock)) is not None
    }
    return LayerTable(entries, runtime, delegate, precision, threads)


def chainable(key: LayerKey) -> bool:
    """Convs (with their epilogue) that keep the channel count can be timed chained (see module doc)."""
    return key.kind.startswith("conv") and key.c_in == key.c_out and key.repeat == 1


def needed_keys(models: Iterable[nn.Module], hw: tuple[int, int]) -> list[LayerKey]:
    """The distinct layers a set of models needs (chainable ones also twice in a row, plus the
    call-overhead probe), in a stable order."""
    keys = {CALL_KEY}
    for m in models:
        for k in model_layers(m, hw):
            keys.add(k)
            if chainable(k):
                keys.add(replace(k, repeat=2))
    return sorted(keys, key=lambda k: (k.kind, k.kernel, k.height, k.width, k.c_in, k.c_out, k.repeat))


def measure_table(
    keys: Sequence[LayerKey],
    time_module: Callable[[nn.Module, tuple[int, int, int, int], str, LayerKey], Record],
    log: Callable[[str], None] | None = None,
) -> list[Record]:
    """Time a one-op network per key with `time_module(module, input_shape, name, key)`."""
    out = []
    for i, key in enumerate(keys):
        module, shape = layer_module(key)
        name = f"layer_{key.kind}_k{key.kernel}_{key.c_in}x{key.c_out}_{key.height}x{key.width}"
        rec = time_module(module, shape, name, key)
        if log:
            log(f"  [{i + 1}/{len(keys)}] {key.text:<36} {rec.stats.typical_ms:8.3f} ms")
        out.append(rec)
    return out


@dataclass(frozen=True)
class Check:
    width: float
    channels: int
    measured_ms: float
    predicted_ms: float

    @property
    def error(self) -> float:
        """Relative error of the prediction, (predicted - measured) / measured."""
        return self.predicted_ms / self.measured_ms - 1.0

    @property
    def ok(self) -> bool:
        return abs(self.error) <= TOLERANCE

    def within(self, tolerance: float) -> bool:
        return abs(self.error) <= tolerance


def fit_scale(checks: Iterable[Check]) -> float:
    """The device correction: the geometric mean of measured / predicted (1.0 with no checks).

    A sum of one-op networks sees neither what the runtime overlaps across layers nor the caches a
    whole network keeps warm, and on one device and runtime that error is close to one factor for
    every width. Fitting it in log space weighs a 10% miss on a small and on a large student alike.
    """
    logs = [np.log(c.measured_ms / c.predicted_ms) for c in checks]
    return float(np.exp(np.mean(logs))) if logs else 1.0


MIN_CHECKS = 3  # fewer whole-model measurements than this neither calibrate nor earn trust


@dataclass(frozen=True)
class Accuracy:
    """Per-layer predictions (`checks`, raw sums of the table) against whole-model measurements.

    The model that is used is the table times `scale`, fitted on all checks. Its accuracy is judged
    leave-one-out (`held_out`): each width is predicted with the scale fitted on the *other* widths,
    so a width is never checked against a correction that has seen its own measurement.
    """

    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def calibrated(self) -> bool:
        return len(self.checks) >= MIN_CHECKS

    @property
    def scale(self) -> float:
        """Factor applied to the table's predictions (1.0 until MIN_CHECKS widths are measured)."""
        return fit_scale(self.checks) if self.calibrated else 1.0

    @property
    def held_out(self) -> tuple[Check, ...]:
        """Leave-one-out calibrated checks (empty below MIN_CHECKS)."""
        if not self.calibrated:
            return ()
        return tuple(
            replace(c, predicted_ms=c.predicted_ms * fit_scale(self.checks[:i] + self.checks[i + 1 :]))
            for i, c in enumerate(self.checks)
        )

    @property
    def raw_share(self) -> float:
        """Share of widths whose uncalibrated sum of layers is within +-TOLERANCE."""
        return sum(c.ok for c in self.checks) / len(self.checks) if self.checks else 0.0

    @property
    def share_within(self) -> float:
        """Share of widths whose held-out calibrated prediction is within +-TOLERANCE."""
        held = self.held_out
        return sum(c.ok for c in held) / len(held) if held else 0.0

    def held_share(self, tolerance: float) -> float:
        """Share of widths whose held-out calibrated prediction is within +-`tolerance`."""
        held = self.held_out
        return sum(c.within(tolerance) for c in held) / len(held) if held else 0.0

    @property
    def trusted(self) -> bool:
        """At least MIN_CHECKS widths checked and at least TRUST_SHARE of them accurate held out."""
        return self.calibrated and self.share_within >= TRUST_SHARE

    def predict(self, raw_ms: float) -> float:
        """A table prediction corrected for this device."""
        return raw_ms * self.scale

    def summary(self) -> str:
        if not self.checks:
            return "latency model not checked (no whole-model measurements to compare with)"
        n = len(self.checks)
        raw_ok = sum(c.ok for c in self.checks)
        raw_worst = max(self.checks, key=lambda c: abs(c.error))
        raw = (
            f"sum of layers {raw_ok}/{n} widths within +-{TOLERANCE:.0%} "
            f"(worst {raw_worst.error:+.1%} at width {raw_worst.width:g})"
        )
        if not self.calibrated:
            return f"latency model: {raw}; NOT trusted: {MIN_CHECKS} widths needed to calibrate and check it"
        held = self.held_out
        ok = sum(c.ok for c in held)
        worst = max(held, key=lambda c: abs(c.error))
        verdict = "trusted" if self.trusted else "NOT trusted: measurements are used instead"
        return (
            f"latency model: {raw}; calibrated x{self.scale:.3f}, held out {ok}/{n} within "
            f"+-{TOLERANCE:.0%} ({self.share_within:.0%}; worst {worst.error:+.1%} at width "
            f"{worst.width:g}); {verdict}"
        )


def leave_one_device_out(accuracies: Mapping[str, Accuracy]) -> dict[str, tuple[Check, ...]]:
    """Each device's widths predicted from its own layer table times a scale it never measured: the
    geometric mean of the *other* devices' fitted scales (devices with fewer than MIN_CHECKS widths
    give none). It answers what a new device gets from its table before any whole model is timed
    on it. A device is any (machine, runtime) with a table and whole-model checks; a device gets a
    result when at least one *other* device is calibrated and it has checks of its own."""
    scales = {name: acc.scale for name, acc in accuracies.items() if acc.calibrated}
    out: dict[str, tuple[Check, ...]] = {}
    for name, acc in accuracies.items():
        others = [np.log(v) for other, v in scales.items() if other != name]
        if not others or not acc.checks:
            continue
        scale = float(np.exp(np.mean(others)))
        out[name] = tuple(replace(c, predicted_ms=c.predicted_ms * scale) for c in acc.checks)
    return out


def accuracy(
    table: LayerTable, measured: Iterable[tuple[float, int, float, nn.Module]], hw: tuple[int, int]
) -> Accuracy:
    """Compare predictions with measurements: `measured` yields (width, channels, measured ms, model)."""
    checks = []
    for width, channels, ms, model in measured:
        try:
            pred = table.predict_model(model, hw)
        except MissingLayerError:
            continue
        checks.append(Check(width, channels, ms, pred))
    return Accuracy(tuple(sorted(checks, key=lambda c: c.width)))
