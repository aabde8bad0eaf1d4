"""The `oracle` headroom reference: reads the hidden mindset, and beats random on retention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from recoworld.agents import OracleRecommender, make_recommender
from recoworld.catalog import cached_catalog
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.studies.runner import prepare, run_shard
from recoworld.studies.spec import StudySpec

SMALL_WORLD = {"slate_size": 3, "n_candidates": 10, "history_len": 10, "horizon_days": 7,
               "catalog": {"n_items": 400, "seed": 0}, "expose_mindset": True}


def _yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


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


def test_simulate_bench_and_study_turn_the_mindset_on_for_the_oracle(tmp_path: Path) -> None:
    """Issue 31: without `expose_mindset` the oracle played greedy on every turn, its summary row greedy's.
    Now its world exposes the mindset, and `fallback_turns` says how often it fell back (each episode's
    first turn, whose reset info has no mindset)."""
    blind = {k: v for k, v in SMALL_WORLD.items() if k != "expose_mindset"}
    code = CliRunner().invoke(app, ["simulate", "--users", "6", "--days", "7", "--agents", "greedy,oracle",
                                    "--config", str(_yaml(tmp_path / "world.yaml", blind)),
                                    "--out", str(tmp_path / "sim")])
    assert code.exit_code == 0, code.output
    summary = pd.read_csv(tmp_path / "sim" / "summary.csv").set_index("recommender")
    assert summary.loc["greedy", "fallback_turns"] == 0 and summary.loc["oracle", "fallback_turns"] == 6
    assert "oracle: 6 turns decided by its fallback" in code.output
    greedy = pd.read_parquet(tmp_path / "sim" / "trajectories" / "greedy.parquet")
    oracle = pd.read_parquet(tmp_path / "sim" / "trajectories" / "oracle.parquet")
    assert not np.array_equal(greedy["item"], oracle["item"][: len(greedy)]), "the oracle played greedy's slates"
    spec = StudySpec(name="o", n_users=4, shard_size=4, recommenders=["oracle"], world=blind)
    setup = prepare(spec)
    _, episodes = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0))
    assert episodes.to_pandas()["fallback_turns"].tolist() == [1] * 4  # the first turn only, in the study too
