"""recoworld.stats: the one mean interval, percentile interval and bootstrap draw."""

from __future__ import annotations

import numpy as np

from recoworld.stats import Z95, bootstrap_indices, estimate, mean_ci, percentile_ci


def test_mean_ci_is_the_normal_interval_ignoring_nans() -> None:
    mean, half = mean_ci(np.array([1.0, 2.0, np.nan, 3.0, 6.0]))
    assert mean == 3.0
    assert half == Z95 * np.std([1.0, 2.0, 3.0, 6.0], ddof=1) / 2.0
    assert np.isnan(mean_ci([4.0])[1]) and mean_ci([4.0])[0] == 4.0
    assert all(np.isnan(mean_ci([np.nan])))


def test_percentile_ci_matches_nanquantile_and_is_nan_without_replicates() -> None:
    values = np.random.default_rng(0).normal(size=501)
    values[::7] = np.nan
    assert percentile_ci(values) == tuple(np.nanquantile(values, [0.025, 0.975]))
    assert percentile_ci(values, (0.1, 0.9)) == tuple(np.nanquantile(values, [0.1, 0.9]))
    assert all(np.isnan(percentile_ci(np.full(4, np.nan))))
    assert all(np.isnan(percentile_ci(np.array([]))))


def test_bootstrap_indices_draw_as_one_resample_at_a_time_did() -> None:
    users = np.array([f"u{i}" for i in range(13)])
    drawn = bootstrap_indices(np.random.default_rng(9), len(users), 40)
    assert drawn.shape == (40, 13) and drawn.min() >= 0 and drawn.max() < 13
    one_by_one, by_choice = np.random.default_rng(9), np.random.default_rng(9)
    assert np.array_equal(drawn, [one_by_one.integers(0, 13, 13) for _ in range(40)])
    assert np.array_equal(users[drawn], [by_choice.choice(users, 13) for _ in range(40)])


def test_estimate_is_value_se_and_the_rounded_normal_interval() -> None:
    assert estimate(np.float64(2.0), 0.5) == {"value": 2.0, "se": 0.5, "ci95": [2.0 - 1.96 * 0.5, 2.0 + 1.96 * 0.5]}
    assert all(type(v) is float for v in [*estimate(np.float32(1.5), np.float32(0.25))["ci95"]])
