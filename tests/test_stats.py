"""Paired differences over images x seeds: known answers on synthetic per-image x per-seed results."""

from __future__ import annotations

import numpy as np
import pytest

from edgesr.stats import paired_difference

BASE = 30 + 3 * np.random.default_rng(123).random((20, 3))  # 20 photos x 3 seeds, difficulty varies


def rate(diff, trials: int = 300) -> float:
    """Fraction of resolved intervals over `trials` draws of `diff(rng)` (images x seeds, vs zeros)."""
    out = []
    for k in range(trials):
        d = diff(np.random.default_rng(k))
        out.append(paired_difference(d, np.zeros_like(d)).resolved)
    return float(np.mean(out))


def test_a_true_point_one_db_shift_is_resolved_and_its_interval_holds_it():
    noise = np.random.default_rng(1).normal(0, 0.05, BASE.shape)
    r = paired_difference(BASE + 0.1 + noise, BASE)
    assert r.resolved and r.low < 0.1 < r.high and r.mean == pytest.approx(0.1, abs=0.03)
    assert (r.images, r.seeds) == (20, 3) and "unresolved" not in r.text
    assert paired_difference(BASE, BASE + 0.1 + noise).high < 0  # the sign follows the argument order


@pytest.mark.parametrize("seeds", [2, 3])
def test_a_true_zero_is_rarely_called_resolved_whatever_the_source_of_noise(seeds: int):
    n = 20
    cell = rate(lambda g: g.normal(0, 0.1, (n, seeds)))
    image = rate(lambda g: g.normal(0, 0.2, (n, 1)) + g.normal(0, 0.05, (n, seeds)))
    # the case a bootstrap over 2-3 seeds gets wrong: every photo moves together with the seed
    seed = rate(lambda g: g.normal(0, 0.3, (1, seeds)) + g.normal(0, 0.02, (n, seeds)))
    assert cell <= 0.10 and image <= 0.10 and seed <= 0.10, (cell, image, seed)


def test_seed_to_seed_variation_widens_the_interval():
    # +0.1 dB on average, but each training run lands 0.3 dB up or down on every photo: three seeds
    # cannot tell the sign; the images-only interval of one seed calls it, and says what it covers
    seed_effect = np.array([0.4, -0.2, 0.1])
    a = BASE + seed_effect + np.random.default_rng(4).normal(0, 0.02, BASE.shape)
    both = paired_difference(a, BASE)
    assert not both.resolved and both.mean == pytest.approx(0.1, abs=0.02)
    one_seed = paired_difference(a[:, :1], BASE[:, :1])
    assert one_seed.resolved and one_seed.seeds == 1 and "images only: 1 seed" in one_seed.text


def test_image_to_image_variation_widens_the_interval():
    # +0.1 dB on average from +1.1 on half the photos and -0.9 on the others: unresolved on 20 photos
    a = BASE + np.where(np.arange(20)[:, None] % 2 == 0, 1.1, -0.9)
    assert not paired_difference(a, BASE).resolved


def test_identical_results_and_bad_input():
    r = paired_difference(BASE, BASE)
    assert (r.mean, r.low, r.high, r.resolved) == (0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(BASE, BASE[:, :2])
    with pytest.raises(ValueError, match="at least 2 images"):
        paired_difference(BASE[:1], BASE[:1])
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.full((3, 1), np.inf), np.ones((3, 1)))
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(BASE, BASE, confidence=1.0)
