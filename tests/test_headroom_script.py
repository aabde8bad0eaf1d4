"""experiments/headroom.py: its oracle variants replace exactly the part of the mindset they name, and its table
pairs every row with the same users the training evaluation plays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recoworld.agents.oracle import OracleRecommender
from recoworld.catalog import Catalog
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.rl.evaluation import baseline_agents, evaluate
from recoworld.rl.train_config import TrainConfig
from tests.scripts import ROOT, load_script


def _turns(n: int = 12) -> list[tuple[dict[str, Any], dict[str, Any], Catalog]]:
    """(observation, info with the mindset) of `n` turns of a greedy-played user, after the first."""
    cfg = TrainConfig.load(ROOT / "configs" / "ppo_retention.yaml")
    env = RecoWorldEnv(cfg.eval_world(), expose_mindset=True)
    observation, info = env.reset(seed=3)
    turns = []
    while len(turns) < n:
        observation, _, terminated, truncated, info = env.step(np.arange(env.config.slate_size))
        if terminated or truncated:
            observation, info = env.reset()
        elif info.get("mindset"):
            turns.append((observation, info, env.catalog))
    return turns


def test_each_forgetful_oracle_replaces_only_its_part() -> None:
    headroom = load_script("experiments/headroom.py", "headroom")
    for observation, info, catalog in _turns():
        oracle = OracleRecommender(3, catalog)
        mindset = info["mindset"]
        for forget in ("fatigue", "novelty_propensity", "satisfaction", "memory"):
            forgetful = headroom.Forgetful(3, catalog, forget=forget)
            forgetful.begin_episode(0)
            expected = oracle.rank(observation, {**mindset, forget: headroom.ASSUMED[forget]})
            np.testing.assert_array_equal(forgetful.act(observation, info), expected)
        interests_only = headroom.Forgetful(3, catalog, forget="relevance")
        interests_only.begin_episode(0)
        relevance = catalog.embeddings[observation["candidate_ids"]].astype(np.float64) @ np.asarray(
            mindset["interests"])
        expected = interests_only.top_k(relevance, observation)
        np.testing.assert_array_equal(interests_only.act(observation, info), expected)


def test_the_table_pairs_every_row_with_the_training_evaluation_users(tmp_path: Path) -> None:
    headroom = load_script("experiments/headroom.py", "headroom")
    out = tmp_path / "episodes.parquet"
    table = headroom.main(headroom.Args(users=3, out=out))
    assert set(table["recommender"]) == {"random", "instruct", "oracle", *headroom.FORGETFUL.values(),
                                         "instruct+repetition", "instruct+topic-posterior", "instruct+watch-time",
                                         "noisy-relevance-0.3", "noisy-relevance-1"}
    assert table.loc[table["recommender"] != "instruct", "instruct_minus_this"].notna().all()
    # The mindset in info changes no draw: instruct's users retain as in the evaluation `recoworld train` runs.
    cfg = TrainConfig.load(ROOT / "configs" / "ppo_retention.yaml")
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_users": 3})})
    alone = evaluate(cfg, baseline_agents(["instruct"])).set_index("user_id")["retention"]
    episodes = pd.read_parquet(out)
    played = episodes[episodes["recommender"] == "instruct"].set_index("user_id")["retention"]
    pd.testing.assert_series_equal(played.sort_index(), alone.sort_index())
