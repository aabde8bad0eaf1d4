"""Users continued from a log's cutoff: `ReturnGapModel.continuation` against its closed form, late episode
starts, and the simulated side of validate's out-of-sample column with and without continuation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import gammaincc

from recoworld.config import ReturnConfig, WorldConfig
from recoworld.errors import ConfigError
from recoworld.simulators.return_gap import ReturnGapModel
from recoworld.validity.continuation import absent_days, continuation_uniforms, user_seeds

N = 40_000
CONFIG = ReturnConfig(base_rate=0.35, gap_shape=0.5, churn_bias=-2.5, churn_satisfaction=4.0)


def _closed_form(model: ReturnGapModel, d: float, propensity: float) -> tuple[float, float, float]:
    """(churn posterior, rate, S(d)) at neutral satisfaction, written out from the model's definition."""
    c = model.config
    rate = c.base_rate * propensity / 0.5
    churn = 1.0 / (1.0 + np.exp(-(c.churn_bias - c.churn_satisfaction * c.satisfaction_reference)))
    survive = float(gammaincc(c.gap_shape, c.gap_shape * rate * d))
    return churn / (churn + (1.0 - churn) * survive), rate, survive


@pytest.mark.parametrize("d", [0.5, 3.0, 12.0])
def test_churned_share_is_the_posterior_of_the_absence(d: float) -> None:
    model = ReturnGapModel(CONFIG)
    posterior, _, _ = _closed_form(model, d, 0.6)
    gaps = model.continuation(np.full(N, d), np.full(N, 0.6), np.random.default_rng(1).random((N, 2)))
    share = float(np.isinf(gaps).mean())
    se = np.sqrt(posterior * (1 - posterior) / N)
    assert abs(share - posterior) < 4 * se + 1e-9, (share, posterior)
    # A longer absence makes churn more likely: the posterior grows with d.
    assert posterior > _closed_form(model, d / 2, 0.6)[0]


@pytest.mark.parametrize("d", [0.5, 3.0, 12.0])
def test_residual_gaps_are_the_gap_beyond_the_absence(d: float) -> None:
    """Non-churned draws are > 0 and distributed as G - d | G > d (KS against direct rejection sampling)."""
    model = ReturnGapModel(CONFIG)
    _, rate, _ = _closed_form(model, d, 0.6)
    gaps = model.continuation(np.full(N, d), np.full(N, 0.6), np.random.default_rng(2).random((N, 2)))
    back = gaps[np.isfinite(gaps)]
    assert len(back) > 1000 and (back > 0).all()
    k = CONFIG.gap_shape
    rng = np.random.default_rng(3)
    direct = rng.gamma(k, 1.0 / k, size=4_000_000) / rate
    direct = direct[direct > d][:20_000] - d
    assert len(direct) > 1000
    assert stats.ks_2samp(back, direct).pvalue > 0.001
    # And not the plain gap: a residual under a falling hazard (shape < 1) is longer than a fresh gap.
    plain = rng.gamma(k, 1.0 / k, size=20_000) / rate
    assert stats.ks_2samp(back, plain).pvalue < 1e-6


def test_no_absence_gives_back_the_plain_gap() -> None:
    """d = 0: churn with probability c, else a Gamma(k, mean 1 / rate) gap, as `sample` draws at session end."""
    model = ReturnGapModel(CONFIG)
    gaps = model.continuation(np.zeros(N), np.full(N, 0.4), np.random.default_rng(4).random((N, 2)))
    c = float(model.churn_probability(np.array([CONFIG.satisfaction_reference]))[0])
    assert abs(np.isinf(gaps).mean() - c) < 4 * np.sqrt(c * (1 - c) / N)
    rate = float(model.rate(np.array([CONFIG.satisfaction_reference]), np.array([0.4]))[0])
    back = gaps[np.isfinite(gaps)]
    k = CONFIG.gap_shape
    assert stats.kstest(back, stats.gamma(k, scale=1.0 / (k * rate)).cdf).pvalue > 0.001


def test_users_who_cannot_churn_always_come_back() -> None:
    model = ReturnGapModel(CONFIG)
    u = np.random.default_rng(5).random((1000, 2))
    assert np.isfinite(model.continuation(np.full(1000, 20.0), np.full(1000, 0.5), u, can_churn=False)).all()
    # The same uniforms with churn allowed churn many of them after 20 days away.
    assert np.isinf(model.continuation(np.full(1000, 20.0), np.full(1000, 0.5), u)).mean() > 0.3


def test_continuation_is_seeded_per_user() -> None:
    seeds = user_seeds(0, 5)
    assert seeds == user_seeds(0, 5) and len(set(seeds)) == 5
    np.testing.assert_array_equal(continuation_uniforms(seeds[0]), continuation_uniforms(seeds[0]))
    # A child of the episode seed: not the first draws of the episode's own stream.
    assert not np.allclose(continuation_uniforms(seeds[0]), np.random.default_rng(seeds[0]).random(2))


def test_absence_is_measured_from_the_end_of_the_last_train_session() -> None:
    day = 86400.0
    train = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": [1, 2, 3, 4],
                          "timestamp": [0.0, 5 * day, 5 * day + 600, 9 * day]})
    d = absent_days(train, 10 * day)
    assert d["a"] == pytest.approx(5 - 600 / day) and d["b"] == pytest.approx(1.0)


def test_an_episode_can_start_later_in_the_horizon() -> None:
    from recoworld.envs.recoworld_env import RecoWorldEnv

    env = RecoWorldEnv(WorldConfig(horizon_days=10.0))
    _, info = env.reset(seed=0, options={"start_day": 4.5})
    assert info["day"] == 4 and info["time_days"] == pytest.approx(4.5)
    done, turns = False, []
    while not done:
        _, _, terminated, truncated, info = env.step(np.arange(env.config.slate_size))
        turns.append(info["time_days"])
        done = terminated or truncated
    assert min(turns) > 4.5 and info["episode_stats"]["days_active"] <= 6  # days 4..9 at most
    for bad in (-1.0, 10.0, "3"):
        with pytest.raises(ConfigError, match="start_day"):
            env.reset(seed=0, options={"start_day": bad})
    # The default is day 0, as before.
    assert env.reset(seed=0)[1]["time_days"] == 0.0
