"""The latency model's arithmetic: per-layer sums, chained layers, and its accuracy check."""

from __future__ import annotations

import pytest

from edgesr.profile.latency_model import (
    CALL_KEY,
    TIGHT,
    Accuracy,
    Check,
    LayerTable,
    MissingLayerError,
    leave_one_device_out,
)
from edgesr.profile.layers import model_layers
from edgesr.profile.store import LayerKey


def test_table_sums_layers_minus_repeated_call_overhead_and_interpolates():
    a, b = LayerKey("conv", 8, 8, 3, 4, 4), LayerKey("conv", 24, 24, 3, 4, 4)
    t = LayerTable(
        {a: 1.0, b: 5.0, LayerKey("relu", 8, 8, 0, 4, 4): 0.3, CALL_KEY: 0.1}, "ort", "cpu", "fp32", 2
    )
    layers = [a, LayerKey("relu", 8, 8, 0, 4, 4), a]
    assert t.predict(layers) == pytest.approx(1.0 + 0.3 + 1.0 - 2 * 0.1)
    # 16x16 conv: work 16*16*9 lies between 8*8*9 and 24*24*9, linear in work
    mid = LayerKey("conv", 16, 16, 3, 4, 4)
    assert t.layer_ms(mid) == pytest.approx(1.0 + 4.0 * (256 - 64) / (576 - 64))
    with pytest.raises(MissingLayerError, match="conv k3 64->64 @4x4"):
        t.layer_ms(LayerKey("conv", 64, 64, 3, 4, 4))  # outside the measured range: no guessing
    with pytest.raises(MissingLayerError):
        t.layer_ms(LayerKey("conv", 16, 16, 3, 8, 8))  # another resolution


def _checks(ratios):
    """Checks whose prediction is `ratio` x a 10 ms measurement, one per width."""
    widths = (0.25, 0.5, 0.75, 1.0, 1.25)
    return tuple(Check(w, 8, 10.0, 10.0 * r) for w, r in zip(widths, ratios, strict=False))


def test_accuracy_calibrates_a_device_wide_bias_and_judges_it_held_out():
    # every prediction 30% high: the raw sum misses all widths, one fitted factor fixes all of them
    biased = Accuracy(_checks([1.3, 1.3, 1.3, 1.3]))
    assert biased.raw_share == 0.0
    assert biased.scale == pytest.approx(1 / 1.3)
    assert [c.error for c in biased.held_out] == pytest.approx([0.0] * 4, abs=1e-12)
    assert biased.trusted and biased.predict(13.0) == pytest.approx(10.0)
    assert "sum of layers 0/4" in biased.summary() and "held out 4/4" in biased.summary()
    # scattered errors are not a bias: no single factor fits them, the model is not trusted
    scattered = Accuracy(_checks([1.0, 1.3, 0.8, 1.0]))
    assert scattered.share_within < 0.9 and not scattered.trusted
    assert "NOT trusted" in scattered.summary()


def test_accuracy_is_leave_one_out_not_in_sample():
    acc = Accuracy(_checks([1.0, 1.0, 1.25]))
    # fitted on all three (in sample) the first two would be within 10% (-7.2%) and the third not
    in_sample = [abs(r * acc.scale - 1) <= 0.10 for r in (1.0, 1.0, 1.25)]
    assert in_sample == [True, True, False]
    # held out: width 0.25 is predicted with the factor of (1.0, 1.25), -10.6%; the outlier with
    # the factor of the two exact widths, +25%
    errors = [c.error for c in acc.held_out]
    assert errors == pytest.approx([1.25**-0.5 - 1, 1.25**-0.5 - 1, 0.25])
    assert acc.share_within == 0.0 and not acc.trusted


def test_held_share_counts_the_tighter_bar_too():
    # held out, errors of about +-7%: within +-10% everywhere, within +-5% nowhere
    acc = Accuracy(_checks([1.0, 1.15, 1.0, 1.15]))
    assert acc.held_share(0.10) == acc.share_within == 1.0
    assert acc.held_share(TIGHT) == 0.0


def test_leave_one_device_out_uses_only_the_other_devices_scales():
    a = Accuracy(_checks([1.25] * 4))  # this device's sum of layers is 25% high
    b = Accuracy(_checks([0.8] * 4))  # this one's 20% low
    c = Accuracy(_checks([1.0] * 4))
    lodo = leave_one_device_out({"a": a, "b": b, "c": c})
    # a is predicted with the geometric mean of b's and c's scales (1.25 and 1.0), never its own 0.8
    assert [x.predicted_ms for x in lodo["a"]] == pytest.approx([12.5 * (1.25**0.5)] * 4)
    assert [x.error for x in lodo["c"]] == pytest.approx([0.0] * 4)  # 1/1.25 and 1/0.8 cancel
    assert not any(x.ok for x in lodo["a"])  # its own held-out check would be exact
    assert all(x.ok for x in a.held_out)
    # one calibrated device has nobody to borrow from; an uncalibrated one lends nothing
    assert leave_one_device_out({"a": a}) == {}
    two = leave_one_device_out({"a": a, "few": Accuracy(_checks([0.5, 0.5]))})
    assert set(two) == {"few"} and [x.error for x in two["few"]] == pytest.approx([0.5 / 1.25 - 1] * 2)


def test_accuracy_needs_three_widths_to_calibrate_or_trust():
    two = Accuracy(_checks([1.05, 0.95]))
    assert two.raw_share == 1.0 and not two.calibrated and two.scale == 1.0
    assert not two.trusted and two.held_out == () and "3 widths needed" in two.summary()
    assert Accuracy(_checks([1.05, 0.95, 1.0])).trusted
    assert "not checked" in Accuracy().summary()


def test_chained_layers_count_their_in_context_cost():
    from dataclasses import replace

    body = LayerKey("conv+relu", 8, 8, 3, 4, 4)
    head = LayerKey("conv", 3, 8, 3, 4, 4)
    t = LayerTable({body: 1.0, replace(body, repeat=2): 1.6, head: 0.5, CALL_KEY: 0.1}, "o", "cpu", "fp32", 1)
    assert t.marginal_ms(body) == pytest.approx(0.6) and t.marginal_ms(head) is None
    # the body layer costs 0.6 in context (its boundary paid once, by the network); one network call
    assert t.predict([head, body, body]) == pytest.approx(0.5 + 0.6 + 0.6)
    assert t.predict([body, body]) == pytest.approx(0.6 + 0.6 + 0.1)


def test_chained_table_module_is_the_layer_twice():
    from dataclasses import replace

    from edgesr.profile.layers import layer_module

    key = LayerKey("conv+mul_scalar+add", 8, 8, 3, 6, 7)
    module, shape = layer_module(replace(key, repeat=2))
    assert model_layers(module, shape[2:], in_channels=8) == [key, key]
