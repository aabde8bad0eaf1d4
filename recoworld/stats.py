"""Confidence intervals and the bootstrap, one implementation each.

Three kinds of interval are reported across the project, on purpose:

- `estimate`: a fitted parameter with its standard error and `value ± 1.96 se` (the calibration
  reports; the fits give the standard error, from the likelihood's curvature);
- `mean_ci`: the mean and the half-width of its 95% normal-approximation interval, for a mean
  over many users (retention, rewards, ranking metrics), reported as `value ± half`;
- `percentile_ci`: the 2.5th and 97.5th percentiles of a bootstrap distribution, for statistics
  whose sampling distribution is far from normal (rank correlations, agreement measures),
  reported as `[low, high]`.

`bootstrap_indices` draws the resamples behind the second. It draws every resample in one call,
which gives the same indices as drawing them one at a time (`rng.integers(0, n, n)` per
resample or `rng.choice(users, n)`), so callers that used either keep their numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: z for a two-sided 95% normal confidence interval.
Z95 = 1.959963984540054
#: z of the `value ± 1.96 se` intervals of the fitted parameters (`estimate`): rounded, as
#: calibration.json and the distilled world's report have always written them.
Z95_ROUNDED = 1.96
#: The percentiles bounding a central 95% interval, written out: (1 - 0.95) / 2 is 0.025000000000000022.
Q95 = (0.025, 0.975)


def mean_ci(values: np.ndarray | pd.Series) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (normal approximation), ignoring nans.

    The half-width is nan with fewer than two values: one value says nothing about its spread."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    half = Z95 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
    return float(x.mean()), float(half)


def estimate(value: float, se: float) -> dict[str, Any]:
    """A fitted parameter as the calibration reports write it: value, standard error, 95% interval."""
    return {"value": float(value), "se": float(se),
            "ci95": [float(value - Z95_ROUNDED * se), float(value + Z95_ROUNDED * se)]}


def percentile_ci(values: np.ndarray, quantiles: tuple[float, float] = Q95) -> tuple[float, float]:
    """The percentile interval of `values` (bootstrap replicates) between `quantiles`, ignoring nans.

    A replicate is nan when its statistic is undefined on that resample (e.g. a rank correlation
    with no spread); the interval is (nan, nan) when every replicate is."""
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(x, quantiles)
    return float(lo), float(hi)


def bootstrap_indices(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) row indices, each row `n` draws with replacement from `range(n)`."""
    return rng.integers(0, n, (resamples, n))
