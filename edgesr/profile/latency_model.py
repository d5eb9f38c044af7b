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
whole-model measurements, and callers trust the model only where it is accurate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch import nn

from edgesr.profile.layers import layer_module, model_layers
from edgesr.profile.store import LayerKey, Record

CALL_KEY = LayerKey("relu", 1, 1, 0, 1, 1)  # the "empty" network whose time is one call's overhead
TOLERANCE = 0.10  # a prediction is accurate when within +-10% of the measurement
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


@dataclass(frozen=True)
class Accuracy:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def share_within(self) -> float:
        """Share of checked widths whose prediction is within +-TOLERANCE of the measurement."""
        return sum(c.ok for c in self.checks) / len(self.checks) if self.checks else 0.0

    @property
    def trusted(self) -> bool:
        """At least 3 widths checked and at least TRUST_SHARE of them accurate."""
        return len(self.checks) >= 3 and self.share_within >= TRUST_SHARE

    def summary(self) -> str:
        if not self.checks:
            return "latency model not checked (no whole-model measurements to compare with)"
        n_ok = sum(c.ok for c in self.checks)
        worst = max(self.checks, key=lambda c: abs(c.error))
        verdict = "trusted" if self.trusted else "NOT trusted: measurements are used instead"
        return (
            f"latency model: {n_ok}/{len(self.checks)} widths within +-{TOLERANCE:.0%} of measured "
            f"({self.share_within:.0%}; worst {worst.error:+.1%} at width {worst.width:g}); {verdict}"
        )


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
