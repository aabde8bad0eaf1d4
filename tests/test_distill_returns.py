"""The distilled surrogate's return model (`recoworld.calibration.returns`, issue 15): the replayed satisfaction is
the parametric user's own, and the Gamma GLM recovers how gaps depend on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recoworld.calibration.returns import fit_gap_glm, fit_returns, replay_satisfaction
from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig, DynamicsConfig, ReturnConfig
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams


def _parametric_log(dynamics: DynamicsConfig, returns: ReturnConfig, n_users: int = 6,
                    sessions: int = 3, choice_model: ChoiceModel | None = None,
                    ) -> tuple[pd.DataFrame, np.ndarray, dict, object]:
    """Items the parametric user (with `choice_model`, when given) reviewed (the columns `replay_satisfaction`
    reads) and its satisfaction after each session, as the simulator held it."""
    catalog = cached_catalog(CatalogConfig(n_items=300, n_topics=6, seed=3))
    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=n_users)
    users = ParametricUsers(catalog, dynamics=dynamics, returns=returns, choice_model=choice_model)
    users.reset(profiles)
    streams = UserStreams([np.random.default_rng(100 + i) for i in range(n_users)])
    rng = np.random.default_rng(1)
    rows, ends = [], []
    now = np.zeros(n_users)
    for user in range(n_users):
        step = 0
        for session in range(1, sessions + 1):
            users.start_sessions(np.array([user]), now[user:user + 1], streams)
            for _ in range(30):
                step += 1
                slate = rng.integers(0, len(catalog), (1, 5))
                fb = users.review(slate, streams, rows=np.array([user]))
                left = bool(fb.left[0])
                gap = float(users.end_sessions(np.array([user]), now[user:user + 1], streams)[0]) if left else np.nan
                for pos in np.flatnonzero(fb.reactions[0] >= 0):
                    rows.append({"recommender": "r", "user_id": profiles[user].user_id, "session": session,
                                 "step": step, "item": int(slate[0, pos]), "reaction": int(fb.reactions[0, pos]),
                                 "disliked": bool(fb.disliked[0, pos]), "novelty": 0.0, "left": left,
                                 "return_gap_days": gap, "intent": None if fb.instructions[0] is None
                                 else fb.instructions[0].intent.model_dump_json()})
                if left:
                    ends.append(float(users.satisfaction[user]))
                    now[user] += gap if np.isfinite(gap) else 1.0
                    break
    return pd.DataFrame(rows), np.array(ends), {p.user_id: p for p in profiles}, catalog


def test_the_replayed_satisfaction_is_the_parametric_users_own() -> None:
    # fatigue off: the replay's novelty (the distill table's) cannot differ from the simulator's memory slots
    dynamics = DynamicsConfig(fatigue_repetition=0.0, fatigue_low_quality=0.0, dislike_margin=1.0)
    returns = ReturnConfig(churn_bias=-20.0, base_rate=2.0)
    items, ends, profiles, catalog = _parametric_log(dynamics, returns)
    sat = replay_satisfaction(items, profiles, catalog, dynamics, returns)
    last = items.groupby(["user_id", "session"], sort=False).tail(1).index.to_numpy()
    assert len(last) == len(ends) >= 10
    assert items["disliked"].any() and (items["reaction"] >= 1).any() and (items["reaction"] == 0).any()
    assert items["intent"].notna().any(), "instructions move interests too"
    np.testing.assert_allclose(sat[last], ends, atol=1e-5)
    assert ends.std() > 0.02, "sessions end at different satisfactions: there is something to fit on"


def test_the_gap_glm_recovers_the_satisfaction_effect() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(0.2, 0.9, 5000)
    mean = np.exp(0.3 - 3.0 * (s - 0.5))
    gaps = rng.gamma(1.5, mean / 1.5)
    beta, se, shape = fit_gap_glm(gaps, s, 0.5)
    assert beta[0] == pytest.approx(0.3, abs=3 * se[0]) and beta[1] == pytest.approx(-3.0, abs=3 * se[1])
    assert 0 < se[1] < 0.2 and shape == pytest.approx(1.5, rel=0.08)


def test_fit_returns_gives_happier_sessions_quicker_returns_and_refuses_a_reversed_effect() -> None:
    dynamics, returns = DynamicsConfig(), ReturnConfig()
    items, _, profiles, catalog = _parametric_log(dynamics, ReturnConfig(churn_bias=-20.0), n_users=12)
    items = items.assign(churned=False)
    last = items.groupby(["user_id", "session"], sort=False).tail(1).index
    items["leaves"] = items.index.isin(last)
    sat = replay_satisfaction(items, profiles, catalog, dynamics, returns)
    rng = np.random.default_rng(0)
    stated = np.where(sat > np.median(sat[last]), 0.5, 3.0) * rng.uniform(0.8, 1.2, len(items))
    fields, report = fit_returns(items.assign(return_gap_days=stated), profiles, catalog, dynamics, returns)
    assert fields["satisfaction_effect"] > 1.0 and report["satisfaction_effect"]["ci95"][0] > 0
    assert 0 <= fields["satisfaction_reference"] <= 1 and fields["churn_satisfaction"] == 0.0
    ReturnConfig(**fields)  # within the model's bounds
    reversed_gaps = np.where(sat > np.median(sat[last]), 3.0, 0.5) * rng.uniform(0.8, 1.2, len(items))
    fields, report = fit_returns(items.assign(return_gap_days=reversed_gaps), profiles, catalog, dynamics, returns)
    assert fields["satisfaction_effect"] == 0.0 and "came back later" in report["satisfaction_effect_note"]


def test_churn_depends_on_satisfaction_only_when_both_outcomes_are_seen_enough() -> None:
    dynamics, returns = DynamicsConfig(), ReturnConfig()
    items, _, profiles, catalog = _parametric_log(dynamics, ReturnConfig(churn_bias=-20.0), n_users=12)
    last = items.groupby(["user_id", "session"], sort=False).tail(1).index
    items["leaves"] = items.index.isin(last)
    sat = replay_satisfaction(items, profiles, catalog, dynamics, returns)
    unhappy = sat < np.median(sat[last])
    fields, _ = fit_returns(items.assign(churned=unhappy), profiles, catalog, dynamics, returns)
    assert fields["churn_satisfaction"] > 1.0, "unhappy sessions churned"
    few = items.index.isin(last[:3])  # 3 churned session ends: separable, so no slope, only the share
    fields, report = fit_returns(items.assign(churned=few), profiles, catalog, dynamics, returns)
    assert fields["churn_satisfaction"] == 0.0 and "only the churn share" in report["churn_note"]
    assert fields["churn_bias"] == pytest.approx(np.log(3 / (len(last) - 3)))
