"""The `oracle` headroom reference: reads the hidden mindset, and beats random on retention."""

from __future__ import annotations

import numpy as np

from recoworld.agents import OracleRecommender, make_recommender
from recoworld.catalog import cached_catalog
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.evaluation.simulation import SimulationConfig, simulate

SMALL_WORLD = {"slate_size": 3, "n_candidates": 10, "history_len": 10, "horizon_days": 7,
               "catalog": {"n_items": 400, "seed": 0}, "expose_mindset": True}


def test_oracle_reads_the_mindset_and_falls_back_without_one() -> None:
    env = RecoWorldEnv(SMALL_WORLD)
    oracle = make_recommender("oracle", env.catalog, 3, seed=0)
    assert isinstance(oracle, OracleRecommender)
    obs, info = env.reset(seed=1)
    assert "mindset" not in info  # reset info carries none: the first turn falls back to greedy
    slate = oracle.act(obs, info)
    assert oracle.fallback_turns == 1
    for _ in range(5):
        obs, _, terminated, truncated, info = env.step(slate)
        if terminated or truncated:
            break
        slate = oracle.act(obs, info)
        assert len(set(slate.tolist())) == 3 and obs["candidate_mask"][slate].all()
    assert oracle.fallback_turns == 1
    # the ranking follows the mindset: interests pointing at one candidate put it first
    mindset = dict(info["mindset"])
    target = int(np.flatnonzero(obs["candidate_mask"])[-1])
    mindset["interests"] = env.catalog.embeddings[obs["candidate_ids"][target]].tolist()
    mindset["memory"] = []
    assert oracle.rank(obs, mindset)[0] == target


def test_oracle_beats_random_on_retention_in_a_small_world() -> None:
    world = WorldConfig.model_validate(SMALL_WORLD)
    result = simulate(SimulationConfig(n_users=150, agents=["random", "oracle"], seed=3, world=world),
                      catalog=cached_catalog(world.catalog))
    eps = result.episodes.pivot(index="user_id", columns="recommender", values="retention")
    diff = eps["oracle"] - eps["random"]
    half = 1.96 * diff.std(ddof=1) / np.sqrt(len(diff))
    assert diff.mean() - half > 0, (diff.mean(), half)
