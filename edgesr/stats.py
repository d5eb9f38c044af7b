"""Paired statistics for method comparisons: is a 0.05 dB difference real, or seed and image noise?

Two methods evaluated on the same images with the same seeds give a matrix of paired differences
D[i, s] = PSNR_a(image i, seed s) - PSNR_b(image i, seed s). `paired_difference` gives the mean
difference and a confidence interval that counts both sources of variation: which photos were used
(the validation set is a sample) and which training runs (one seed is a sample too). A difference
is *resolved* only when its interval excludes zero.

The model is the crossed random-effects one, D[i, s] = mu + a_i + b_s + e_is (image effect, seed
effect, residual), whose mean has variance sigma_a^2/n + sigma_b^2/m + sigma_e^2/(nm). From the
two-way ANOVA mean squares (n images, m seeds)

    MS_I = m * sum_i (mean_i - mean)^2 / (n - 1)        E = sigma_e^2 + m sigma_a^2
    MS_S = n * sum_s (mean_s - mean)^2 / (m - 1)        E = sigma_e^2 + n sigma_b^2
    MS_E = sum (D - mean_i - mean_s + mean)^2 / ((n - 1)(m - 1))     E = sigma_e^2

that variance is (MS_I + MS_S - MS_E) / (nm), floored at max(MS_I, MS_S) / (nm) (a negative
component estimate must not shrink the interval), and the interval is a Student t one with
Satterthwaite's degrees of freedom. With few seeds those degrees of freedom are few (2 seeds: about
1 when the seed effect dominates), so a difference that rests on seed-to-seed luck stays unresolved.
With one seed the seed effect cannot be estimated: the interval covers images only (a paired t
interval over images) and says so (`seeds == 1`).

Why not a bootstrap: resampling 2-3 seeds with replacement cannot see their spread (measured by
simulation, 20 images, a pure seed effect, true difference 0: a two-way percentile bootstrap called
47% of draws "resolved" at 2 seeds and 29% at 3, against the nominal 5%; this estimator: about 5%,
`tests/test_stats.py`). References for the design: Searle, Casella and McCulloch, "Variance
Components" (1992), for the crossed model and its ANOVA estimators; Satterthwaite (1946), "An
approximate distribution of estimates of variance components"; Bouthillier et al. (2021),
"Accounting for variance in machine learning benchmarks", for counting the seed as a source of
variance. Code is edgesr's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDiff:
    """Mean of `a - b` over images x seeds with its confidence interval."""

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
        scope = " (images only: 1 seed)" if self.seeds == 1 else ""
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]{mark}{scope}"


def paired_difference(
    a: Sequence[Sequence[float]] | np.ndarray,
    b: Sequence[Sequence[float]] | np.ndarray,
    confidence: float = 0.95,
) -> PairedDiff:
    """Mean of `a - b` over images x seeds with its interval (module docstring); a, b: images x
    seeds matrices of one metric, the same image in a row and the same training seed in a column."""
    from scipy.stats import t as student_t

    da, db = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if da.ndim != 2 or da.shape != db.shape:
        raise ValueError(
            f"a and b must be images x seeds matrices of one shape, got {da.shape} and {db.shape}"
        )
    n, m = da.shape
    if n < 2:
        raise ValueError(f"an interval over images needs at least 2 images, got {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not (np.isfinite(da).all() and np.isfinite(db).all()):
        raise ValueError("a and b must be finite (an infinite PSNR means an identical image: cap it first)")
    d = da - db
    mean = float(d.mean())
    rows = d.mean(axis=1)
    ms_i = m * float(((rows - mean) ** 2).sum()) / (n - 1)
    if m == 1:
        var, df = ms_i / n, float(n - 1)
    else:
        cols = d.mean(axis=0)
        ms_s = n * float(((cols - mean) ** 2).sum()) / (m - 1)
        ms_e = float(((d - rows[:, None] - cols[None, :] + mean) ** 2).sum()) / ((n - 1) * (m - 1))
        combo = ms_i + ms_s - ms_e
        if combo >= max(ms_i, ms_s):
            parts = ms_i**2 / (n - 1) + ms_s**2 / (m - 1) + ms_e**2 / ((n - 1) * (m - 1))
            var, df = combo / (n * m), combo**2 / parts if parts > 0 else float(n * m - 1)
        elif ms_i >= ms_s:
            var, df = ms_i / (n * m), float(n - 1)
        else:
            var, df = ms_s / (n * m), float(m - 1)
    if var <= 0:  # identical differences everywhere: the interval is the point
        return PairedDiff(mean, mean, mean, n, m, confidence)
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * var**0.5
    return PairedDiff(mean, mean - half, mean + half, n, m, confidence)
