"""Why users left, counted: `recoworld.evaluation.exits` on hand-made trajectories and on a real run."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.evaluation.exits import (
    REASONS,
    UNSTATED,
    exit_counts,
    exit_overview,
    exit_quotes,
    exit_shares,
    exits,
    interview_means,
)
from recoworld.evaluation.simulation import SimulationConfig, simulate

SLOTS = 3  # every turn below is repeated on each of its slate's positions, as a trajectory does


def _turn(rec: str, user: str, session: int, step: int, *, reason: str | None = None, text: str | None = None,
          score: int | None = None, interview: str | None = None, left: bool = False,
          churned: bool = False) -> list[dict[str, Any]]:
    row = {"recommender": rec, "arm": "baseline", "shard": None, "user_id": user, "session": session, "step": step,
           "time_days": step / 10, "left": left, "churned": churned, "exit_reason": reason, "exit_text": text,
           "interview_score": score, "interview": interview}
    return [{**row, "position": p} for p in range(SLOTS)]


def _left(rec: str, user: str, session: int, step: int, reason: str | None, text: str | None,
          score: int | None = 3, churned: bool = False) -> list[dict[str, Any]]:
    return _turn(rec, user, session, step, reason=reason, text=text, score=score,
                 interview=None if score is None else f"score {score}", left=True, churned=churned)


@pytest.fixture()
def trajectories() -> pd.DataFrame:
    rows = [
        *_turn("greedy", "u1", 1, 1),
        *_left("greedy", "u1", 1, 2, "repetitive", "Same things again.", score=2),
        *_left("greedy", "u1", 2, 3, "bored", "Dull.", score=3),
        *_left("greedy", "u2", 1, 1, "repetitive", "Same things again.", score=4),
        *_left("greedy", "u2", 2, 2, "repetitive", "I have seen all this.", score=1, churned=True),
        *_left("greedy", "u3", 1, 1, None, None, score=None),
        *_turn("keeper", "u1", 1, 1),  # a recommender whose users never left
        *_turn("keeper", "u1", 1, 2),
        *_left("diverse", "u1", 1, 1, "out_of_time", "Out of time.", score=5),
    ]
    return pd.DataFrame(rows)


def test_each_exit_is_one_turn_not_one_slot(trajectories: pd.DataFrame) -> None:
    left = exits(trajectories)
    assert len(left) == 6  # 5 greedy + 1 diverse, each once although each turn has 3 rows
    assert left["exit_reason"].tolist() == ["repetitive", "bored", "repetitive", "repetitive", UNSTATED,
                                            "out_of_time"]


def test_counts_per_recommender_and_reason_keep_a_recommender_without_exits(trajectories: pd.DataFrame) -> None:
    counts = exit_counts(trajectories)
    assert counts.index.tolist() == ["greedy", "keeper", "diverse"]  # order of appearance
    assert counts.columns.tolist() == list(REASONS)
    assert counts.loc["greedy"].to_dict() == {**dict.fromkeys(REASONS, 0), "repetitive": 3, "bored": 1,
                                              UNSTATED: 1}
    assert counts.loc["keeper"].sum() == 0 and counts.loc["diverse", "out_of_time"] == 1
    # asked for by name, a recommender absent from the trajectories is a row of zeros too
    assert exit_counts(trajectories, ["diverse", "absent"]).loc["absent"].sum() == 0

    shares = exit_shares(counts)
    assert shares.loc["greedy", "repetitive"] == pytest.approx(3 / 5)
    assert shares.loc["greedy"].sum() == pytest.approx(1.0) and shares.loc["diverse"].sum() == pytest.approx(1.0)
    assert shares.loc["keeper"].isna().all()  # no exits: shares undefined, not 0


def test_overview_and_interviews(trajectories: pd.DataFrame) -> None:
    overview = exit_overview(trajectories)
    assert overview.loc["greedy", "exits"] == 5 and overview.loc["greedy", "left_for_good"] == 1
    assert overview.loc["greedy", "interview_mean"] == pytest.approx((2 + 3 + 4 + 1) / 4)  # u3 had no interview
    assert overview.loc["keeper", "exits"] == 0 and math.isnan(overview.loc["keeper", "interview_mean"])
    means = interview_means(trajectories)
    assert means.loc["greedy", "repetitive"] == pytest.approx((2 + 4 + 1) / 3)
    assert means.loc["diverse", "out_of_time"] == 5 and math.isnan(means.loc["greedy", "out_of_time"])


def test_quotes_are_the_most_said_words_with_their_first_speaker(trajectories: pd.DataFrame) -> None:
    quotes = exit_quotes(trajectories, per_reason=2)
    assert set(quotes) == {"greedy", "diverse"}  # "keeper" has nothing to quote
    assert list(quotes["greedy"]) == ["repetitive", "bored"]  # most frequent reason first; no words: not quoted
    first, second = quotes["greedy"]["repetitive"]
    assert (first.text, first.count, first.user_id, first.session) == ("Same things again.", 2, "u1", 1)
    assert (first.interview_score, first.interview) == (2, "score 2")
    assert (second.text, second.count, second.user_id) == ("I have seen all this.", 1, "u2")
    assert [q.text for q in exit_quotes(trajectories, per_reason=1)["greedy"]["repetitive"]] == ["Same things again."]


def test_no_exits_anywhere() -> None:
    quiet = pd.DataFrame(_turn("a", "u1", 1, 1) + _turn("b", "u1", 1, 1))
    assert exit_counts(quiet).to_numpy().sum() == 0 and exit_counts(quiet).index.tolist() == ["a", "b"]
    assert exit_quotes(quiet) == {} and interview_means(quiet).empty
    assert exit_overview(quiet)["exits"].tolist() == [0, 0]


def test_a_real_run_counts_every_session_its_users_ended(catalog: Catalog) -> None:
    world = WorldConfig(slate_size=3, n_candidates=12, horizon_days=3, catalog={"n_items": 600, "seed": 3})
    traj = simulate(SimulationConfig(n_users=4, agents=["greedy", "random"], seed=5, world=world),
                    catalog=catalog).trajectories
    turns = traj.drop_duplicates(["recommender", "user_id", "step"])
    counts = exit_counts(traj)
    assert counts.sum(axis=1).to_dict() == turns.groupby("recommender", sort=False)["left"].sum().to_dict()
    said = set(turns.loc[turns["left"], "exit_text"])
    quoted = {q.text for per in exit_quotes(traj).values() for qs in per.values() for q in qs}
    assert quoted and quoted <= said
    assert np.isin(counts.columns[counts.sum() > 0], ["bored", "irrelevant", "repetitive", "out_of_time"]).all()
