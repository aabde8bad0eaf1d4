"""Stylized facts of the synthetic default world, each next to the band real logs document.

Runs the default world (`recoworld.evaluation.simulation.simulate`) with the built-in baseline
recommenders and prints one table: a row per fact, a column per recommender, the band, and
whether each value falls inside it. A second table is the personalization lift: what a
relevance ranker that knows each user's taste (`TasteRecommender`) earns over random slates
from the same candidates, in CTR and retention, and its CTR over the popular recommender's (the
most-viewed page of Davidson et al.). The facts themselves are computed by
`recoworld.validity` (the same code that compares a calibrated world with a real log), so a
fact means the same thing here and in `recoworld validate`. Where a band is sourced and
where it is an assumption is documented in `recoworld/validity/bands.py` (the one definition of the bands,
which the summaries of `recoworld simulate` and `recoworld bench` also warn by) and in `recoworld/config.py`.

    python experiments/stylized_facts.py [--users 300] [--agents random popular greedy diverse instruct]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import tyro

from recoworld.agents import Observation, Recommender, make_recommender
from recoworld.catalog import Catalog, cached_catalog, embedding_part
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.population import UserProfile, sample_population
from recoworld.validity import event_facts, from_trajectories
from recoworld.validity.bands import BANDS, LIFT_BANDS, Band

TASTE = "taste"


class TasteRecommender(Recommender):
    """The relevance ranker of the personalization lift: candidates by cosine to the user's long-term
    taste, the profile's topic mix (what an onboarding question "which topics do you like?" tells a
    platform). It knows the taste, not the moving mindset (current interests, novelty appetite,
    fatigue), so it measures what relevance alone earns, not the oracle's headroom.

    It finds the user by `info["user_id"]`, which every `reset` and `step` info carries."""

    name = TASTE

    def __init__(self, slate_size: int, profiles: list[UserProfile], catalog: Catalog) -> None:
        super().__init__(slate_size)
        self.tastes = {p.user_id: p.interest_vector(catalog).astype(np.float64) for p in profiles}
        self._user: str | None = None

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        self._user = info.get("user_id", self._user)
        if self._user is None:
            raise ValueError("TasteRecommender needs info['user_id'] to know whose taste to rank by")
        relevance = embedding_part(observation["candidate_features"]) @ self.tastes[self._user]
        return self.top_k(relevance, observation)


def per_user_ctr(trajectories: pd.DataFrame) -> pd.Series:
    """Each user's share of reviewed items clicked (the bench's `ctr`): every user counts once, so
    a recommender that keeps users scrolling into their tired late turns is not judged on those."""
    reviewed = trajectories[trajectories["reaction"] >= 0]
    return (reviewed["reaction"] >= 1).groupby(reviewed["user_id"]).mean()


def personalization_lift(trajectories: pd.DataFrame, episodes: pd.DataFrame, agent: str = TASTE,
                         baseline: str = "random") -> dict[str, float]:
    """`agent`'s mean per-user CTR and mean retention over `baseline`'s (the same users), keyed like `LIFT_BANDS`;
    and its CTR over the popular recommender's when that one ran (Davidson et al.'s own comparison)."""
    ran = set(trajectories["recommender"].unique())
    ctr = {a: per_user_ctr(trajectories[trajectories["recommender"] == a]).mean()
           for a in (agent, baseline, "popular") if a in ran}
    retention = episodes.groupby("recommender")["retention"].mean()
    lift = {"CTR lift (taste / random)": float(ctr[agent] / ctr[baseline]),
            "retention ratio (taste / random)": float(retention[agent] / retention[baseline])}
    if "popular" in ctr:
        lift["CTR lift (taste / popular)"] = float(ctr[agent] / ctr["popular"])
    return lift


@dataclass
class Args:
    users: int = 300
    """users drawn from the default population (the same users for every recommender)"""
    agents: list[str] = field(default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"])
    """built-in recommenders to run"""
    seed: int = 0
    """seed of the population and the episodes"""


def facts_of(trajectories: pd.DataFrame, episodes: pd.DataFrame, config: SimulationConfig) -> dict[str, float]:
    """The stylized facts of one recommender's run, keyed like `BANDS`."""
    catalog = cached_catalog(config.world.catalog)
    log = from_trajectories(trajectories, catalog, catalog, config.world.horizon_days, "world")
    facts = event_facts(log, catalog)
    stat = {(name, key): value for name, fact in facts.items() for key, value in fact.stats.items()}
    # Turns per session use the env's own sessions: consumption-cut sessions cannot see turns without a click.
    turns = trajectories.drop_duplicates(["user_id", "step"]).groupby(["user_id", "session"]).size()
    return {
        "click rate / impression": stat[("positive rate", "per impression")],
        "likes / click": stat[("positive rate", "of consumptions")],
        "item Gini": stat[("popularity", "Gini")],
        "top 1% share": stat[("popularity", "top 1% share")],
        "top 10% share": stat[("popularity", "top 10% share")],
        "session items (median)": stat[("session length", "p50 (items)")],
        "session turns (mean)": float(turns.mean()),
        "gap median (days)": stat[("session gap", "p50 (days)")],
        "gap mean (days)": stat[("session gap", "mean (days)")],
        "gap p90 (days)": stat[("session gap", "p90 (days)")],
        "gap p99 (days)": stat[("session gap", "p99 (days)")],
        "return day 1": stat.get(("return curve", "day 1"), np.nan),
        "return day 7": stat.get(("return curve", "day 7"), np.nan),
        "retention (days active)": float(episodes["retention"].mean()),
        "churn (30 days)": float(episodes["churned"].mean()),
    }


def simulate_with_taste(config: SimulationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`config.agents`, and random and the taste ranker (the lift's two), on the same users (trajectories, episodes)."""
    catalog = cached_catalog(config.world.catalog)
    profiles = sample_population(config.population, catalog, np.random.default_rng(config.seed), n=config.n_users)

    def build(name: str, catalog: Catalog, k: int, seed: int | None) -> Recommender:
        return TasteRecommender(k, profiles, catalog) if name == TASTE else make_recommender(name, catalog, k, seed)

    agents = [*config.agents, *(a for a in ("random", TASTE) if a not in config.agents)]
    result = simulate(config.model_copy(update={"agents": agents}), catalog=catalog, build_agent=build,
                      profiles=profiles)
    return result.trajectories, result.episodes


def banded(values: dict[str, float], bands: dict[str, Band]) -> pd.DataFrame:
    """One row per fact: its value, band, whether it holds and the band's source."""
    return pd.DataFrame({"value": values,
                         "band": {f: f"{bands[f].low:g}-{bands[f].high:g}" for f in values},
                         "in band": {f: bands[f].holds(v) for f, v in values.items()},
                         "source": {f: bands[f].source for f in values}})


def stylized_facts(config: SimulationConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per fact, one column per recommender, plus the band and its source; and the
    personalization lift (`LIFT_BANDS`)."""
    trajectories, episodes = simulate_with_taste(config)
    columns = {}
    for name in config.agents:
        traj = trajectories[trajectories["recommender"] == name]
        columns[name] = facts_of(traj, episodes[episodes["recommender"] == name], config)
    table = pd.DataFrame(columns)
    table["band"] = [f"{BANDS[f].low:g}-{BANDS[f].high:g}" for f in table.index]
    table["in band"] = [f"{sum(BANDS[f].holds(v) for v in table.loc[f, config.agents])}/{len(config.agents)}"
                        for f in table.index]
    table["source"] = [BANDS[f].source for f in table.index]
    return table, banded(personalization_lift(trajectories, episodes), LIFT_BANDS)


def main(args: Args) -> None:
    config = SimulationConfig(n_users=args.users, agents=args.agents, seed=args.seed)
    start = time.perf_counter()
    table, lift = stylized_facts(config)
    with pd.option_context("display.width", 250, "display.max_colwidth", 90, "display.float_format", "{:.3f}".format):
        print(table.to_string())
        print()
        print(lift.to_string())
    n_agents = len(set(args.agents) | {"random", TASTE})
    print(f"\n{args.users} users x {n_agents} recommenders in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(tyro.cli(Args))
