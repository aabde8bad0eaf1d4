"""Slate Thompson sampling (Eide et al. 2022): likelihood, in-slate rule, training, persistence."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recoworld.agents import make_recommender
from recoworld.agents.slate_ts import SlateGRUModel, SlateTSRecommender, inslate_fill, slate_logits
from recoworld.agents.torch_utils import save_checkpoint
from recoworld.catalog import Catalog
from recoworld.data.finn import (
    NO_CLICK,
    from_trajectories,
    load_finn,
    pack_events,
    save_finn,
    turn_events,
)
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.evaluation.simulation import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _small_world(catalog: Catalog) -> RecoWorldEnv:
    return RecoWorldEnv(catalog=catalog, slate_size=4, n_candidates=20, horizon_days=3)


def _run(env: RecoWorldEnv, agent: SlateTSRecommender, seed: int, turns: int) -> list[np.ndarray]:
    obs, info = env.reset(seed=seed)
    agent.begin_episode(seed)
    actions = []
    for _ in range(turns):
        action = agent.act(obs, info)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        agent.observe(info["reactions"], info)
        if terminated or truncated:
            obs, info = env.reset(seed=seed + len(actions))
            agent.begin_episode(seed + len(actions))
    return actions


# ---------------------------------------------------------------------- the likelihood, by hand


def test_slate_logits_match_hand_computation() -> None:
    z = torch.tensor([1.0, 0.0])
    vecs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    slate = torch.tensor([NO_CLICK, 5, 6, 0])  # no-click slot, two items, one padded slot
    bias = torch.tensor([0.0, 0.1, 0.2, 0.7, 0.0])  # b[3] applies: three non-pad slots

    dot = slate_logits(z, vecs, slate, bias, "dot")
    assert dot.tolist() == pytest.approx([0.7, 1.0, 0.0, -100.0])
    dist = slate_logits(z, vecs, slate, bias, "distance")
    assert dist.tolist() == pytest.approx([0.7, 0.0, -math.sqrt(2.0), -100.0], abs=1e-4)

    p_click_first = math.exp(1.0) / (math.exp(0.7) + math.exp(1.0) + math.exp(0.0))
    assert torch.log_softmax(dot, -1)[1].item() == pytest.approx(math.log(p_click_first), abs=1e-6)
    huge = slate_logits(torch.tensor([100.0, 0.0]), vecs, slate, bias, "dot")
    assert huge[1].item() == 20.0  # clamped to [-100, 20]


def test_model_log_likelihood_of_a_first_step_by_hand() -> None:
    """With zero GRU weights the first user state is 0, so every shown item scores 0."""
    model = SlateGRUModel(np.zeros(8, dtype=np.int64), width=4, dim=3, seed=0)
    with torch.no_grad():
        for p in model.gru.parameters():
            p.zero_()
        model.noclick_bias[3] = math.log(2.0)
    click = torch.tensor([[5, NO_CLICK]])
    slate = torch.tensor([[[NO_CLICK, 5, 6, 0], [NO_CLICK, 7, 0, 0]]])
    click_idx = torch.tensor([[1, 0]])
    ll = model.log_likelihood(click, click_idx, slate)
    # step 0: P(click 5) = 1 / (2 + 1 + 1)
    assert ll[0, 0].item() == pytest.approx(math.log(0.25), abs=1e-6)
    # padded click (0) and unknown click (2) contribute nothing
    ll_masked = model.log_likelihood(torch.tensor([[0, 2]]), click_idx, slate)
    assert ll_masked.abs().sum().item() == 0.0


def test_kl_is_zero_only_at_the_prior() -> None:
    model = SlateGRUModel(np.array([0, 0, 1]), width=3, dim=2, prior_group_scale=1.0, seed=0)
    with torch.no_grad():
        model.group_mean.zero_()
        model.group_rho.fill_(-30.0)  # group means almost exactly 0
        model.group_scale_raw.fill_(math.log(math.expm1(1.0 - 1e-2)))  # sigma_g = 1
        model.item_mean.zero_()
        model.item_rho.fill_(math.log(math.expm1(1.0)))  # s = 1: q(v) equals the prior
    kl_groups_only = model.kl().item()
    assert kl_groups_only > 0  # the (nearly) point-mass group posterior is far from N(0, 1)
    with torch.no_grad():
        model.item_mean.fill_(1.0)
    assert model.kl().item() == pytest.approx(kl_groups_only + 3 * 2 * 0.5, rel=1e-4)  # + m^2 / 2 per coordinate


# ---------------------------------------------------------------------- the in-slate rule


def test_inslate_fill_per_slot_takes_each_draws_best_unchosen_item() -> None:
    rankings = np.array([[5, 6, 7], [5, 8, 6], [9, 5, 6]])
    # slot 1: draw 1's best, 5; slot 2: draw 2's best is taken, so its next, 8; slot 3: draw 3's best, 9
    assert inslate_fill(rankings, 3).tolist() == [5, 8, 9]
    assert inslate_fill(np.array([[1, 2], [1, 2]]), 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="no item"):
        inslate_fill(np.array([[1], [1]]), 2)
    with pytest.raises(ValueError, match="one draw per slot"):
        inslate_fill(np.array([[1, 2, 3]]), 2)


def test_inslate_fill_rank_major_and_skips_repeats() -> None:
    rankings = np.array([[5, 6, 7], [5, 8, 6], [9, 5, 6]])
    # rank-1 items of draws 1..3 are 5, 5, 9 -> 5, 9; then rank-2 items 6, 8, 5 -> 6
    assert inslate_fill(rankings, 3, "rank-major").tolist() == [5, 9, 6]
    with pytest.raises(ValueError, match="distinct"):
        inslate_fill(np.array([[1], [1]]), 2, "rank-major")
    with pytest.raises(ValueError, match="rule"):
        inslate_fill(rankings, 3, "diagonal")


def test_inslate_agent_fills_slates_from_several_draws(catalog: Catalog) -> None:
    env = _small_world(catalog)
    agent = SlateTSRecommender(4, catalog, seed=1, policy="inslate", learn_online=False)
    obs, info = env.reset(seed=0)
    agent.begin_episode(0)
    action = agent.act(obs, info)
    assert len(set(action.tolist())) == 4 and action.max() < 20
    # the same draws, replayed through the rule, give the same slate
    agent.begin_episode(0)
    scores = agent.model.candidate_scores(np.empty(0, np.int64), obs["candidate_ids"] + 3, agent._act_gen, 4)
    expected = inslate_fill(np.stack([agent.top_k(s, obs) for s in scores]), 4)
    assert action.tolist() == expected.tolist()


# ---------------------------------------------------------------------- the FINN format and training


def _tiny_finn(path: Path, rng: np.random.Generator) -> Path:
    """40 users x 6 steps; slates of 4 items (3..14); everyone clicks item 5 when shown, else nothing."""
    users, steps, width = 40, 6, 5
    slate = np.zeros((users, steps, width), dtype=np.int64)
    slate[:, :, 0] = NO_CLICK
    click = np.full((users, steps), NO_CLICK, dtype=np.int64)
    click_idx = np.zeros((users, steps), dtype=np.int64)
    for u in range(users):
        for t in range(steps):
            items = rng.choice(np.arange(3, 15), size=4, replace=False)
            slate[u, t, 1:] = items
            if 5 in items:
                click[u, t] = 5
                click_idx[u, t] = 1 + int(np.flatnonzero(items == 5)[0])
    click[:3, -1] = 0  # a few padded steps
    np.savez(path, userId=np.arange(users), click=click, click_idx=click_idx,
             slate_lengths=(slate != 0).sum(-1), slate=slate, interaction_type=np.full((users, steps), 2))
    return path


def test_training_on_a_tiny_finn_file(tmp_path: Path) -> None:
    data = load_finn(_tiny_finn(tmp_path / "data.npz", np.random.default_rng(0)))
    assert data.n_items == 15 and data.observed.sum() == 40 * 6 - 3
    groups = np.concatenate([[2, 2, 2], np.arange(12) % 2])  # reserved items in their own group
    model = SlateGRUModel(groups, width=5, dim=4, seed=0)
    before = model.mean_log_likelihood(data)
    losses = model.fit(data, steps=150, generator=torch.Generator().manual_seed(0), batch_size=16, lr=0.05)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    after = model.mean_log_likelihood(data)
    assert after > before + 0.2
    scores = model.candidate_scores(np.array([NO_CLICK]), np.arange(3, 15))[0]
    assert int(np.argmax(scores)) + 3 == 5  # the item everyone clicks ranks first


def test_finn_reader_names_bad_fields(tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", userId=np.arange(2), click=np.ones((2, 3), np.int64))
    with pytest.raises(ConfigError, match="lacks FINN fields"):
        load_finn(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_finn(tmp_path / "missing.npz")
    path = _tiny_finn(tmp_path / "ok.npz", np.random.default_rng(1))
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["click_idx"] = arrays["click_idx"][:, :2]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match="click_idx"):
        load_finn(tmp_path / "bad.npz")


def test_turn_events_and_finn_round_trip(tmp_path: Path) -> None:
    # skip, like, unseen: one click step over the two reviewed items
    events = turn_events(np.array([10, 11, 12]), np.array([0, 2, -1]))
    assert [(row.tolist(), c, i) for row, c, i in events] == [([1, 13, 14], 14, 2)]
    none = turn_events(np.array([10, 11]), np.array([0, 0]))
    assert [(row.tolist(), c, i) for row, c, i in none] == [([1, 13, 14], NO_CLICK, 0)]
    two = turn_events(np.array([10, 11]), np.array([1, 3]))
    assert [(c, i) for _, c, i in two] == [(13, 1), (14, 2)]
    data = pack_events([events + none + two, none], width=4, max_steps=3)
    assert data.slate.shape == (3, 3, 4) and data.userId.tolist() == [0, 0, 1]  # 4 steps -> two windows
    back = load_finn(save_finn(data, tmp_path / "out" / "data.npz"))
    assert all(np.array_equal(getattr(back, f), getattr(data, f)) for f in ("click", "click_idx", "slate"))


def test_offline_training_from_logged_trajectories(catalog: Catalog, tmp_path: Path) -> None:
    world = {"slate_size": 4, "n_candidates": 20, "horizon_days": 3, "catalog": {"n_items": 600, "seed": 3}}
    simulate(SimulationConfig(n_users=4, agents=["greedy"], seed=0, world=world), catalog=catalog, out=tmp_path)
    trajectories = pd.read_parquet(tmp_path / "trajectories" / "greedy.parquet")
    data = from_trajectories(trajectories)
    assert len(data) >= 4 and data.slate.shape[2] == 5
    clicks = int((trajectories["reaction"] >= 1).sum())
    no_click_turns = int(trajectories.groupby(["user_id", "step"])["reaction"].max().lt(1).sum())
    assert int(data.observed.sum()) == clicks + no_click_turns
    agent = SlateTSRecommender(4, catalog, seed=0, policy="greedy", learn_online=False, item_dim=8)
    before = agent.model.mean_log_likelihood(data)
    losses = agent.fit_trajectories(trajectories, steps=60)
    assert len(losses) == 60 and all(np.isfinite(losses))
    assert agent.model.mean_log_likelihood(data) > before


# ---------------------------------------------------------------------- online use, determinism, persistence


def test_online_refits_and_same_seed_same_slates(catalog: Catalog) -> None:
    def run() -> tuple[list[np.ndarray], SlateTSRecommender]:
        agent = SlateTSRecommender(4, catalog, seed=7, policy="ts", item_dim=6, refit_every=10, refit_steps=5)
        return _run(_small_world(catalog), agent, seed=3, turns=30), agent

    actions_a, agent_a = run()
    actions_b, _ = run()
    assert len(agent_a.losses) == 15  # three refits of five steps
    assert all(np.array_equal(a, b) for a, b in zip(actions_a, actions_b))


def test_save_and_load_a_trained_agent(catalog: Catalog, tmp_path: Path) -> None:
    agent = SlateTSRecommender(4, catalog, seed=0, policy="greedy", item_dim=6, refit_every=10, refit_steps=10)
    _run(_small_world(catalog), agent, seed=0, turns=20)
    path = agent.save(tmp_path / "slate.pt")

    fresh = SlateTSRecommender(4, catalog, seed=99, policy="greedy", item_dim=6)
    env = _small_world(catalog)
    obs, info = env.reset(seed=5)
    history, cands = np.array([NO_CLICK, 40]), obs["candidate_ids"] + 3
    assert not np.allclose(fresh.model.candidate_scores(history, cands), agent.model.candidate_scores(history, cands))
    fresh.load(path)
    assert np.allclose(fresh.model.candidate_scores(history, cands), agent.model.candidate_scores(history, cands))
    agent.begin_episode(5)
    fresh.begin_episode(5)
    assert np.array_equal(fresh.act(obs, info), agent.act(obs, info))

    with pytest.raises(ConfigError, match="item_dim"):
        SlateTSRecommender(4, catalog, item_dim=5).load(path)
    with pytest.raises(ConfigError, match="slate-ts"):
        SlateTSRecommender(4, catalog, item_dim=6).load(save_checkpoint(tmp_path / "x.pt", "other", {}, {}))


def test_registry_builds_the_three_policies(catalog: Catalog) -> None:
    for name, policy in (("slate-greedy", "greedy"), ("slate-ts", "ts"), ("slate-inslate-ts", "inslate")):
        agent = make_recommender(name, catalog, 4, seed=0)
        assert isinstance(agent, SlateTSRecommender) and agent.config.policy == policy
    with pytest.raises(ConfigError, match="policy"):
        SlateTSRecommender(4, catalog, policy="softmax")


# ---------------------------------------------------------------------- the experiment script


def test_reproduce_slate_ts_script_runs_with_a_tiny_budget() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "reproduce_slate_ts.py"), "--seeds", "2", "--users", "2",
         "--days", "2", "--refit-every", "5", "--refit-steps", "2", "--item-dim", "4"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "slate-inslate-ts" in out.stdout and "click rate" in out.stdout and "±" in out.stdout
    assert "claim" in out.stdout
