"""Attention in the choice model: the popularity a choice saw is the attention at its own time, and the half-life
is the one the choice model itself predicts the validation choices best with (issue 27, part 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recoworld.calibration import CalibrationConfig, calibrate
from recoworld.data import DataConfig
from recoworld.data.attention import attention_z
from recoworld.data.reference_log import write_reference_log

DAY = 86400.0


def _plain(items: np.ndarray, times: np.ndarray, n: int, h: float, at: float) -> np.ndarray:
    """The definition, one choice at a time: interactions of earlier days, decayed by whole days, rescaled to their
    number, add-one smoothed, logged and standardized over the catalog (`Catalog.popularity_z`)."""
    d, k = np.floor(at / DAY), np.floor(times / DAY)
    before = k < d
    weight = np.exp2(-(d - 1 - k[before]) / h) if np.isfinite(h) else np.ones(int(before.sum()))
    a = np.bincount(items[before], weights=weight, minlength=n)
    counts = a * before.sum() / a.sum() if a.sum() > 0 else a
    popularity = (counts + 1) / (counts + 1).sum()
    log_pop = np.log(popularity)
    return (log_pop - log_pop.mean()) / max(float(log_pop.std()), 1e-9)


@pytest.mark.parametrize("half_life", [2.0, 7.0, np.inf])
def test_attention_feature_is_the_per_choice_definition_and_reads_no_future(half_life: float) -> None:
    rng = np.random.default_rng(3)
    n = 9
    items, times = rng.integers(0, n, 80), np.sort(rng.uniform(0, 25, 80)) * DAY
    at, cand = rng.uniform(0, 27, 30) * DAY, rng.integers(0, n, (30, 4))
    z = attention_z(items, times, n, half_life, at, cand)
    for e in range(len(at)):
        np.testing.assert_allclose(z[e], _plain(items, times, n, half_life, at[e])[cand[e]], atol=1e-10)
    # Interactions at or after a choice's time change nothing of it: add a burst of item 0 at each choice's time.
    for e in range(0, len(at), 7):
        later = np.concatenate([times, np.full(50, at[e]), at[e] + rng.uniform(0, 5, 50) * DAY])
        more = np.concatenate([items, np.zeros(100, np.int64)])
        np.testing.assert_allclose(attention_z(more, later, n, half_life, at[e:e + 1], cand[e:e + 1]), z[e:e + 1])
    # ...while the same burst a day earlier does (the test can fail).
    e = int(np.argmax(at))
    earlier = np.concatenate([times, np.full(50, at[e] - DAY)])
    moved = attention_z(np.concatenate([items, np.zeros(50, np.int64)]), earlier, n, half_life, at[e:e + 1],
                        np.arange(n)[None])
    assert moved[0, 0] > attention_z(items, times, n, half_life, at[e:e + 1], np.arange(n)[None])[0, 0]


def test_attention_in_all_time_units_is_the_count_so_far() -> None:
    items, times = np.array([0, 0, 1, 2]), np.array([0.5, 1.5, 1.6, 3.2]) * DAY
    z = attention_z(items, times, 3, np.inf, np.array([2.1 * DAY]), np.array([[0, 1, 2]]))
    log_pop = np.log(np.array([2, 1, 0]) + 1.0)  # day 2 reads days 0 and 1 only, not item 2's day-3 interaction
    np.testing.assert_allclose(z[0], (log_pop - log_pop.mean()) / log_pop.std())


def _calibrate(path: Path, attention: float | str | None) -> dict:
    data = DataConfig(path=path, split="global", representation={"popularity_half_life_days": attention})
    return calibrate(CalibrationConfig(data=data, moment_budget=10, moment_users=60, folds=2)).report


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attention")
    return {"trends": write_reference_log(root / "trends", n_users=200, n_items=400, mean_activity=50, seed=1,
                                          trend_strength=2.0, lifecycle_days=15.0, back_catalog=0.1),
            "stationary": write_reference_log(root / "stationary", n_users=200, n_items=400, mean_activity=50,
                                              seed=1)}


def test_choice_model_fits_a_short_half_life_on_lifecycles_and_a_long_one_on_a_stationary_log(
        logs: dict[str, Path]) -> None:
    trends = _calibrate(logs["trends"], "fit")["attention"]
    assert float(trends["half_life_days"]) <= 14, trends["grid"]
    grid = {h: v["valid_loglik"] for h, v in trends["grid"].items()}
    assert grid[trends["half_life_days"]] == max(grid.values())
    assert grid[trends["half_life_days"]] > grid["inf"] + 0.02  # attention in time predicts choices much better
    steady = _calibrate(logs["stationary"], "fit")["attention"]
    assert float(steady["half_life_days"]) >= 60, steady["grid"]


def test_given_half_life_is_used_without_a_grid_and_none_keeps_all_time_counts(logs: dict[str, Path]) -> None:
    given = _calibrate(logs["trends"], 30.0)
    assert given["attention"]["half_life_days"] == "30" and list(given["attention"]["grid"]) == ["30"]
    none = _calibrate(logs["trends"], None)
    assert none["attention"]["half_life_days"] is None
    # The choice fit reads another popularity feature, so the popularity weight differs.
    assert given["choice"]["weights"]["popularity"]["value"] != none["choice"]["weights"]["popularity"]["value"]
