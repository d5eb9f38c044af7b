"""Paired statistics for method comparisons: is a 0.05 dB difference real, or seed and image noise?

Two methods evaluated on the same images with the same seeds give a matrix of paired differences
D[i, s] = PSNR_a(image i, seed s) - PSNR_b(image i, seed s). `paired_bootstrap` estimates the mean
difference and a percentile confidence interval by a two-way bootstrap: each replicate draws the
images with replacement AND the seeds with replacement and averages D over the drawn cells, so both
sources of variation (which photos, which training run) widen the interval. A difference is
*resolved* only when its interval excludes zero.

Why two-way: resampling only images treats a single lucky training run as the method's value (one
seed says nothing about the next); resampling only seeds ignores that the validation photos are a
sample too. With one seed the seed factor cannot vary and the interval covers images only, which
the result says (`seeds == 1`).

The design follows the paired/bootstrap practice of Koehn (2004, "Statistical significance tests
for machine translation evaluation", paired bootstrap resampling over test sentences) and
Dror et al. (2018, "The hitchhiker's guide to testing statistical significance in NLP"), extended
with the seed factor as in Bouthillier et al. (2021, "Accounting for variance in machine learning
benchmarks"). Code is edgesr's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDiff:
    """Mean of `a - b` over images x seeds with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    images: int
    seeds: int
    confidence: float = 0.95

    @property
    def resolved(self) -> bool:
        """The interval excludes zero: the sign of the difference is known at this confidence."""
        return self.low > 0 or self.high < 0

    @property
    def text(self) -> str:
        mark = "" if self.resolved else " (unresolved)"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]{mark}"


def paired_bootstrap(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Two-way (images x seeds) bootstrap of mean(a - b); a, b: images x seeds matrices of one
    metric, the same image in a row and the same training seed in a column of both."""
    da, db = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if da.ndim != 2 or da.shape != db.shape:
        raise ValueError(
            f"a and b must be images x seeds matrices of one shape, got {da.shape} and {db.shape}"
        )
    n_img, n_seed = da.shape
    if n_img < 2:
        raise ValueError(f"a bootstrap over images needs at least 2 images, got {n_img}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not (np.isfinite(da).all() and np.isfinite(db).all()):
        raise ValueError("a and b must be finite (an infinite PSNR means an identical image: cap it first)")
    d = da - db
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_img, size=(n_boot, n_img))
    cols = rng.integers(0, n_seed, size=(n_boot, n_seed))
    # mean over the drawn cells = mean over drawn rows of (mean over drawn columns): per replicate,
    # average each image's row over the drawn seeds, then the drawn images
    per_image = np.stack([d[:, c].mean(axis=1) for c in cols])  # n_boot x n_img
    means = np.take_along_axis(per_image, rows, axis=1).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return PairedDiff(float(d.mean()), float(low), float(high), n_img, n_seed, confidence)
