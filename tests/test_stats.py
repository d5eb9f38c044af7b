"""Paired two-way bootstrap: known answers on synthetic per-image x per-seed results."""

from __future__ import annotations

import numpy as np
import pytest

from edgesr.stats import paired_bootstrap

rng = np.random.default_rng(123)
BASE = 30 + 3 * rng.random((20, 3))  # 20 photos x 3 seeds of a baseline, photo difficulty varies a lot


def test_a_true_point_one_db_shift_is_resolved_and_its_interval_holds_it():
    noise = np.random.default_rng(1).normal(0, 0.05, BASE.shape)
    r = paired_bootstrap(BASE + 0.1 + noise, BASE)
    assert r.resolved and r.low < 0.1 < r.high and r.mean == pytest.approx(0.1, abs=0.03)
    assert (r.images, r.seeds) == (20, 3) and "unresolved" not in r.text
    # the sign follows the order of the arguments
    assert paired_bootstrap(BASE, BASE + 0.1 + noise).high < 0


def test_pure_noise_is_unresolved_about_95_percent_of_the_time():
    g = np.random.default_rng(2)
    resolved = [paired_bootstrap(BASE + g.normal(0, 0.1, BASE.shape), BASE, n_boot=1000, seed=k).resolved
                for k in range(200)]  # fmt: skip
    assert 0.0 <= np.mean(resolved) <= 0.10  # nominal 5% false positives
    r = paired_bootstrap(BASE + np.random.default_rng(3).normal(0, 0.1, BASE.shape), BASE)
    assert r.low < 0 < r.high and r.text.endswith("(unresolved)")


def test_seed_to_seed_variation_widens_the_interval():
    # +0.1 dB on average, but each training run lands 0.3 dB up or down on every photo: three seeds
    # cannot tell the sign; an image-only bootstrap (one column) would have called it
    seed_effect = np.array([0.4, -0.2, 0.1])
    a = BASE + seed_effect + np.random.default_rng(4).normal(0, 0.02, BASE.shape)
    both = paired_bootstrap(a, BASE)
    assert not both.resolved and both.mean == pytest.approx(0.1, abs=0.02)
    one_seed = paired_bootstrap(a[:, :1], BASE[:, :1])
    assert one_seed.resolved and one_seed.seeds == 1 and one_seed.high - one_seed.low < both.high - both.low


def test_image_to_image_variation_widens_the_interval():
    # +0.1 dB on average from +1.1 on half the photos and -0.9 on the others: unresolved on 20 photos
    a = BASE + np.where(np.arange(20)[:, None] % 2 == 0, 1.1, -0.9)
    assert not paired_bootstrap(a, BASE).resolved


def test_deterministic_for_a_seed_and_refuses_bad_input():
    x = BASE + np.random.default_rng(5).normal(0.05, 0.1, BASE.shape)
    assert paired_bootstrap(x, BASE, seed=7) == paired_bootstrap(x, BASE, seed=7)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(BASE, BASE[:, :2])
    with pytest.raises(ValueError, match="at least 2 images"):
        paired_bootstrap(BASE[:1], BASE[:1])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.full((3, 1), np.inf), np.ones((3, 1)))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(BASE, BASE, confidence=1.0)
