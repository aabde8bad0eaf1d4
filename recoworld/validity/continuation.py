"""Simulating users from where they stand at a log's cutoff (validate's out-of-sample side).

A world simulated "from the cutoff" by starting every user with a session on day 0 puts every
user on the platform at once, while at a real cutoff most users are away: some have churned,
others are in a long gap. The out-of-sample facts then measure that difference, not the fitted
behaviour. Here each compared user continues from their state at the cutoff, known from the
train part alone: `absent_days` is how long ago their last train session ended, and the
world's own return model (`ReturnGapModel.continuation`, at neutral satisfaction, since how
the last session went is not known) turns that absence into a posterior: churned, or back
after the residual gap. Users who come back inside the horizon start their episode that late
(`RecoWorldEnv.reset(options={"start_day": ...})`); the others have no activity in the period
and are still compared, as real users who never come back are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recoworld.agents import agent_label, make_recommender
from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, SESSION_GAP_MINUTES, sessionize
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.evaluation.simulation import run_episode
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.errors import BudgetExceeded
from recoworld.population import UserProfile
from recoworld.simulators.return_gap import ReturnGapModel


@dataclass(frozen=True)
class Continuation:
    """Where each compared user stands at the cutoff, and how their simulation from it went."""

    trajectories: pd.DataFrame  # the episodes of the users who came back inside the horizon
    first_gap: pd.Series  # user -> days from the cutoff to their first session (inf: churned)
    absent_days: pd.Series  # user -> days from the end of their last train session to the cutoff
    stopped: str | None = None  # why the simulation stopped early (an LLM budget), else None


def absent_days(train: pd.DataFrame, cutoff: float, gap_minutes: float = SESSION_GAP_MINUTES) -> pd.Series:
    """Per user of `train` (interactions before `cutoff`, seconds): days from the end of their last
    session, cut as calibration cuts them (`sessionize`), to the cutoff."""
    sessions = sessionize(train, gap_minutes)
    last_end = sessions.groupby("user_id")["end"].max()
    return ((cutoff - last_end) / SECONDS_PER_DAY).clip(lower=0.0).rename("absent_days")


def user_seeds(seed: int, n: int) -> list[int]:
    """One episode seed per user, drawn as `recoworld.evaluation.simulate` draws them."""
    _, episodes = np.random.SeedSequence(seed).spawn(2)
    return episodes.generate_state(n, dtype=np.uint32).astype(int).tolist()


def continuation_uniforms(episode_seed: int) -> np.ndarray:
    """The two uniforms of a user's continuation, from a child of the user's own episode seed: the same
    user and seed always continue the same way, and the episode's stream (the env's, seeded with the
    episode seed itself) is not shifted or reused by them."""
    return np.random.default_rng(np.random.SeedSequence(episode_seed).spawn(1)[0]).random(2)


def first_gaps(
    world: WorldConfig, profiles: Sequence[UserProfile], absent: pd.Series, train_counts: pd.Series,
    seeds: Sequence[int],
) -> np.ndarray:
    """Days from the cutoff to each profile's first session (inf: churned), from the world's return model.

    A user with fewer train interactions than the world's `churn_after` cannot have churned,
    as in the simulation (`ParametricUsers.end_sessions`)."""
    ids = [p.user_id for p in profiles]
    d = absent.reindex(ids).fillna(0.0).to_numpy(np.float64)
    propensity = np.array([p.return_propensity for p in profiles], dtype=np.float64)
    can_churn = train_counts.reindex(ids).fillna(0).to_numpy(np.float64) >= world.returns.churn_after
    uniforms = np.array([continuation_uniforms(s) for s in seeds], dtype=np.float64).reshape(len(ids), 2)
    return ReturnGapModel(world.returns).continuation(d, propensity, uniforms, can_churn)


def simulate_from_cutoff(
    world: WorldConfig, catalog: Catalog, profiles: Sequence[UserProfile], agent: str, seed: int,
    absent: pd.Series, train_counts: pd.Series,
) -> Continuation:
    """Each profile continued from the cutoff for `world.horizon_days` against `agent` (module docstring).

    Users whose first gap is inf or reaches past the horizon play no episode; the others start
    theirs with their first session that many days after the cutoff (day 0)."""
    seeds = user_seeds(seed, len(profiles))
    gaps = first_gaps(world, profiles, absent, train_counts, seeds)
    env = RecoWorldEnv(world, catalog=catalog, population=list(profiles))
    recommender = make_recommender(agent, catalog, world.slate_size, seed, llm=world.llm)
    log = TrajectoryLog(catalog, agent_label(agent))
    stopped: str | None = None
    for profile, episode_seed, gap in zip(profiles, seeds, gaps.tolist()):
        if not gap < world.horizon_days:
            continue
        try:
            run_episode(env, recommender, profile, episode_seed, log, start_day=gap)
        except BudgetExceeded as err:  # keep what was played, as `simulate` does
            stopped = str(err)
            break
    ids = [p.user_id for p in profiles]
    return Continuation(log.table().to_pandas(), pd.Series(gaps, index=ids, name="first_gap"),
                        absent.reindex(ids).fillna(0.0), stopped)
