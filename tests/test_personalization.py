"""Personalization pays in the default world (issue 27).

Real platforms earn more clicks and keep more users with personalized recommendations: YouTube's
got about twice the CTR of its most-viewed page (Davidson et al., RecSys 2010), and Netflix reports
that personalization lowers churn (Gomez-Uribe & Hunt, ACM TMIS 2015). The default world once had
it the other way round: random slates beat history-similarity ranking on CTR and retention, and
led every heuristic on retention. These tests pin the direction, on the same users for every
recommender (common random numbers), with paired 95% intervals over users.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recoworld.evaluation.simulation import SimulationConfig

_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "stylized_facts.py"
_spec = importlib.util.spec_from_file_location("stylized_facts", _SCRIPT)
assert _spec is not None and _spec.loader is not None
facts = importlib.util.module_from_spec(_spec)
sys.modules["stylized_facts"] = facts
_spec.loader.exec_module(facts)

#: Users and days: 200 users over the default 30 days keep a paired retention difference of 0.03
#: apart from zero; fewer let the sign of the greedy-random difference flip with the seed.
N_USERS = 200
HEURISTICS = ["random", "popular", "greedy", "diverse", "instruct"]


@pytest.fixture(scope="module")
def default_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The default world with the heuristics and the taste ranker, on the same users."""
    return facts.simulate_with_taste(SimulationConfig(n_users=N_USERS, agents=HEURISTICS, seed=0))


def _per_user(values: pd.DataFrame, column: str, agent: str) -> pd.Series:
    return values[values["recommender"] == agent].set_index("user_id")[column].sort_index()


def _paired(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Mean of a - b over the users both saw, and its 95% half-width."""
    diff = (a - b).dropna()
    return float(diff.mean()), float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff)))


def _ctr(trajectories: pd.DataFrame, agent: str) -> pd.Series:
    return facts.per_user_ctr(trajectories[trajectories["recommender"] == agent]).sort_index()


def test_a_ranker_that_knows_the_taste_earns_clicks(default_world) -> None:
    trajectories, episodes = default_world
    lift = facts.personalization_lift(trajectories, episodes)
    assert lift["CTR lift (taste / random)"] >= 1.5, lift
    mean, half = _paired(_ctr(trajectories, facts.TASTE), _ctr(trajectories, "random"))
    assert mean - half > 0, (mean, half)


def test_personalization_does_not_cost_retention(default_world) -> None:
    _, episodes = default_world
    random = _per_user(episodes, "retention", "random")
    for agent in (facts.TASTE, "greedy"):
        mean, half = _paired(_per_user(episodes, "retention", agent), random)
        assert mean + half >= 0, (agent, mean, half)  # not below random beyond noise


def test_random_is_not_the_best_heuristic_on_retention(default_world) -> None:
    _, episodes = default_world
    retention = episodes[episodes["recommender"].isin(HEURISTICS)].groupby("recommender")["retention"].mean()
    assert retention.idxmax() != "random", retention.to_dict()
