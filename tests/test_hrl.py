"""The hierarchical novelty-seeking recommender (Li et al. 2023) and its flat ablation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recoworld.agents import make_recommender
from recoworld.agents.hrl_novelty import HIGH_FEATURES, LOW_FEATURES, NoveltyRecommender
from recoworld.catalog import Catalog
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _env(catalog: Catalog) -> RecoWorldEnv:
    return RecoWorldEnv(catalog=catalog, slate_size=4, n_candidates=20, horizon_days=4)


def _episodes(env: RecoWorldEnv, agent: NoveltyRecommender, seeds: range) -> list[np.ndarray]:
    actions = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        agent.begin_episode(seed)
        done = False
        while not done:
            action = agent.act(obs, info)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            agent.observe(info["reactions"], info)
            done = terminated or truncated
    return actions


def test_slates_are_valid_and_seeded(catalog: Catalog) -> None:
    def run() -> list[np.ndarray]:
        return _episodes(_env(catalog), NoveltyRecommender(4, catalog, seed=3, low_batch=8, high_batch=4), range(3))

    first, second = run(), run()
    assert all(len(set(a.tolist())) == 4 and a.max() < 20 for a in first)
    assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


def test_both_levels_learn_online(catalog: Catalog) -> None:
    agent = NoveltyRecommender(4, catalog, seed=0, low_batch=8, high_batch=4)
    low0, high0 = agent.low.weight.detach().clone(), agent.high.weight.detach().clone()
    _episodes(_env(catalog), agent, range(2))
    assert not torch.equal(agent.low.weight, low0)
    assert not torch.equal(agent.high.weight, high0)

    flat = NoveltyRecommender(4, catalog, seed=0, hierarchical=False, low_batch=8)
    _episodes(_env(catalog), flat, range(2))
    assert flat.name == "flat-novelty" and not torch.equal(flat.low.weight, low0)
    assert torch.equal(flat.high.weight, torch.zeros_like(flat.high.weight))  # no high level to train

    frozen = NoveltyRecommender(4, catalog, seed=0, learn_online=False)
    _episodes(_env(catalog), frozen, range(1))
    assert torch.equal(frozen.low.weight, low0)


def test_the_low_level_follows_the_goal(catalog: Catalog) -> None:
    """With weight only on goal match, a high goal yields more novel slates than a low one."""
    env = RecoWorldEnv(catalog=catalog, slate_size=5, n_candidates=40, horizon_days=4)
    novelty = {}
    for goal_index, goal in ((0, 0.1), (4, 0.9)):
        agent = NoveltyRecommender(5, catalog, seed=0, learn_online=False, explore=False)
        with torch.no_grad():
            agent.low.weight.zero_()
            agent.low.weight[0, LOW_FEATURES.index("goal_match | novelty^2")] = 5.0
            agent.high.weight.zero_()
            agent.high.weight[goal_index, 0] = 10.0  # always this goal
        obs, info = env.reset(seed=1)
        agent.begin_episode(1)
        for _ in range(3):  # build some history first
            obs, _, _, _, info = env.step(agent.act(obs, info))
        agent.act(obs, info)
        assert agent.last_trace is not None and agent.last_trace["goal"] == goal
        novelty[goal] = float(np.mean(agent.last_trace["novelty"]))
    assert novelty[0.9] > novelty[0.1] + 0.2


def test_high_level_state_reflects_what_the_user_clicks(catalog: Catalog) -> None:
    agent = NoveltyRecommender(4, catalog, seed=0, learn_online=False)
    env = _env(catalog)
    obs, info = env.reset(seed=0)
    neutral = agent.high_state(obs)
    assert neutral.shape == (len(HIGH_FEATURES),) and neutral[1] == 0.0 and neutral[2] == 0.0
    shown = []
    for _ in range(8):  # this user clicks exactly the novel items of each slate (novelty > 0.5), skips the rest
        slate = agent.act(obs, info)
        assert agent.last_trace is not None
        novelty = np.asarray(agent.last_trace["novelty"])
        shown.append(novelty)
        obs, _, terminated, truncated, info = env.step(slate)
        agent.observe((novelty > 0.5).astype(np.int64), info)
        if terminated or truncated:
            break
    assert any((n > 0.5).any() for n in shown) and any((n <= 0.5).any() for n in shown), "novel and familiar shown"
    state = agent.high_state(obs)
    assert state[1] > 0 and state[2] > 0
    assert np.allclose(agent.goal_probabilities(state), 1 / len(agent.config.goals))  # untrained: uniform


def test_save_and_load_round_trip(catalog: Catalog, tmp_path: Path) -> None:
    agent = NoveltyRecommender(4, catalog, seed=0, low_batch=8, high_batch=4)
    _episodes(_env(catalog), agent, range(2))
    path = agent.save(tmp_path / "hrl.pt")
    fresh = NoveltyRecommender(4, catalog, seed=1).load(path)
    for layer in ("low", "high", "value"):
        assert torch.equal(getattr(fresh, layer).weight, getattr(agent, layer).weight)
    agent.config = agent.config.model_copy(update={"learn_online": False})
    fresh.config = fresh.config.model_copy(update={"learn_online": False})
    assert all(np.array_equal(a, b) for a, b in zip(_episodes(_env(catalog), agent, range(5, 6)),
                                                      _episodes(_env(catalog), fresh, range(5, 6))))
    with pytest.raises(ConfigError, match="hierarchical"):
        NoveltyRecommender(4, catalog, hierarchical=False).load(path)
    with pytest.raises(ConfigError, match="goals"):
        NoveltyRecommender(4, catalog, goals=(0.2, 0.8)).load(path)


def test_registry_and_config_errors(catalog: Catalog) -> None:
    assert make_recommender("hrl-novelty", catalog, 4, 0).config.hierarchical
    assert not make_recommender("flat-novelty", catalog, 4, 0).config.hierarchical
    with pytest.raises(ConfigError, match="goals"):
        NoveltyRecommender(4, catalog, goals=(0.5, 1.5))


def test_reproduce_hrl_script_runs_with_a_tiny_budget() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "reproduce_hrl.py"), "--seeds", "2", "--train-episodes", "2",
         "--eval-users", "4", "--days", "3"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for word in ("hrl-novelty", "flat-novelty", "greedy", "retention", "±", "claim"):
        assert word in out.stdout
