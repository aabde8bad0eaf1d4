"""The retention reward of configs/ppo_retention.yaml: satisfaction credited to the turns, the session's rating."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recoworld.envs.vector_env import RecoWorldVectorEnv
from recoworld.mindset import interview_score
from tests.conftest import require

ROOT = Path(__file__).parents[1]
WORLD = {"slate_size": 2, "n_candidates": 6, "history_len": 5, "horizon_days": 5, "max_steps": 400,
         "catalog": {"n_items": 300, "seed": 1}}


def env_pair(**weights: float):  # -> (plain, shaped) training envs of 3 users
    from recoworld.rl.train_config import TrainConfig
    from recoworld.rl.training_env import make_training_env, training_env_config

    config = {**training_env_config(TrainConfig.load(None, world=WORLD)), "num_envs": 3}
    return make_training_env(config), make_training_env({**config, **weights})


def random_slates(rng: np.random.Generator, users: int = 3) -> np.ndarray:
    return np.stack([rng.choice(6, 2, replace=False) for _ in range(users)])


def test_satisfaction_terms_sum_over_each_session_to_its_end_minus_its_start() -> None:
    """Summed over a session, the terms are w x (satisfaction it ended on - satisfaction it began with). The end is
    checked against the user's own interview, the 1..5 band of that satisfaction, and must differ from the next
    session's recovered start (what the users hold after the step), or the probe would not be needed."""
    require("ray")
    from recoworld.rl.training_env import SatisfactionReward, satisfaction_of

    plain, shaped = env_pair(satisfaction_reward=2.0)
    wrapper = shaped.env.env
    assert isinstance(wrapper, SatisfactionReward)
    users = wrapper.probe.users
    plain.reset(seed=3)
    shaped.reset(seed=3)
    rng = np.random.default_rng(0)
    start = satisfaction_of(users, np.arange(3))
    extra = np.zeros(3)
    sessions, recovered_elsewhere = 0, 0
    for _ in range(600):
        restarting = shaped.unwrapped._autoreset.copy()
        actions = random_slates(rng)
        _, r0, *_ = plain.step(actions)
        _, r1, term, trunc, info = shaped.step(actions)
        extra += np.where(restarting, 0.0, r1 - r0)
        now = satisfaction_of(users, np.arange(3))
        for i in np.flatnonzero(info["left"] & info["_left"] & ~restarting):
            ended_on = start[i] + extra[i] / 2.0
            score = info["interview_score"][i]
            assert score in {interview_score(ended_on - 1e-9), interview_score(ended_on + 1e-9)}
            recovered_elsewhere += not (term[i] or trunc[i]) and abs(now[i] - ended_on) > 1e-6
            sessions += 1
            extra[i] = 0.0
            start[i] = now[i]  # the next session begins where the recovery left it
        for i in np.flatnonzero(restarting):  # a new user: the episode's first session
            extra[i], start[i] = 0.0, now[i]
    assert sessions >= 10 and recovered_elsewhere >= 5


def test_rating_term_is_paid_once_per_session_end_from_the_interview() -> None:
    require("ray")
    plain, shaped = env_pair(rating_reward=1.5)
    plain.reset(seed=4)
    shaped.reset(seed=4)
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(400):
        restarting = shaped.unwrapped._autoreset.copy()
        actions = random_slates(rng)
        _, r0, *_ = plain.step(actions)
        _, r1, _, _, info = shaped.step(actions)
        left = info["left"] & info["_left"] & ~restarting
        want = np.array([1.5 * (info["interview_score"][i] - 3) if left[i] else 0.0 for i in range(3)])
        np.testing.assert_allclose(r1 - r0, want)
        ends += int(left.sum())
    assert ends >= 10


def test_without_weights_the_training_env_and_its_reward_are_unchanged() -> None:
    """The new terms are opt-in: at 0 no wrapper is added, and the env's own reward is what the policy gets."""
    require("ray")
    from recoworld.rl.training_env import SatisfactionReward, make_training_env

    plain, same = env_pair(satisfaction_reward=0.0, rating_reward=0.0)
    env = same
    while not isinstance(env, RecoWorldVectorEnv):
        assert not isinstance(env, SatisfactionReward)
        env = env.env
    raw = RecoWorldVectorEnv(num_envs=3, config=WORLD)
    plain.reset(seed=5)
    raw.reset(seed=[5 * 3 + i for i in range(3)])  # DisjointRunnerSeeds
    rng = np.random.default_rng(2)
    for _ in range(100):
        actions = random_slates(rng)
        np.testing.assert_array_equal(plain.step(actions)[1], raw.step(actions)[1])
    with pytest.raises(Exception, match="satisfaction_reward is implemented for the vector env only"):
        from recoworld.rl.train_config import TrainConfig
        from recoworld.rl.training_env import training_env_config

        make_training_env({**training_env_config(TrainConfig.load(None, world=WORLD)), "satisfaction_reward": 1.0})


def test_retention_config_trains_without_the_teacher_on_the_satisfaction_reward() -> None:
    from recoworld.rl.train_config import TrainConfig

    cfg = TrainConfig.load(ROOT / "configs" / "ppo_retention.yaml")
    assert cfg.teacher.rounds == 0 and cfg.satisfaction_reward > 0
    assert set(cfg.eval.baselines) == {"random", "popular", "greedy", "diverse", "instruct"} and cfg.eval.oracle


@pytest.mark.slow
def test_retention_config_runs_end_to_end_and_writes_its_evaluation(tmp_path: Path) -> None:
    """configs/ppo_retention.yaml with tiny sizes: trains, evaluates, and writes evaluation.parquet."""
    require("ray")
    out = tmp_path / "run"
    cmd = [sys.executable, "experiments/train_ppo.py", "--config", "configs/ppo_retention.yaml", "--out", str(out),
           "--iterations", "2", "--train-batch-size", "256", "--minibatch-size", "64", "--num-envs-per-env-runner",
           "8", "--eval-users", "4", "--eval-every", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "teacher round 0 of" not in proc.stdout  # no DAgger round ran
    evals = pd.read_parquet(out / "evaluation.parquet")
    assert {"recommender", "users", "retention", "retention_ci", "ppo_minus_this", "ppo_minus_this_ci",
            "gap_closed", "iteration"} <= set(evals.columns)
    assert sorted(evals["iteration"].unique()) == [1, 2]
    final = evals[evals["iteration"] == 2].set_index("recommender")
    assert set(final.index) == {"ppo", "random", "popular", "greedy", "diverse", "instruct", "oracle"}
    assert (final["users"] == 4).all()


def test_the_critic_reads_the_users_hidden_state_and_the_policy_head_does_not() -> None:
    """`critic_hidden_state`: each observation carries the users' hidden state under `critic`; the value head
    reads it, the policy's logits do not depend on it (the deployed policy never has it)."""
    require("ray")
    import torch
    from ray.rllib.core.columns import Columns

    from recoworld.rl.rl_module import SlateScorerRLModule
    from recoworld.rl.training_env import CRITIC_STATE, HiddenStateForCritic

    _, env = env_pair(satisfaction_reward=1.0, critic_hidden_state=True)
    assert isinstance(env, HiddenStateForCritic)
    users = env.unwrapped.world.users
    obs, _ = env.reset(seed=6)
    rng = np.random.default_rng(3)
    for _ in range(30):
        assert env.observation_space.contains(obs)
        state = obs["critic"]
        assert state.shape == (3, len(CRITIC_STATE))
        np.testing.assert_allclose(state[:, 0], users.satisfaction, rtol=1e-6)
        np.testing.assert_allclose(state[:, 2], np.minimum(users.fatigue, 1.0), rtol=1e-6)
        np.testing.assert_allclose(state[:, 5], np.tanh(users.patience_left / 20.0), rtol=1e-6)
        obs, *_ = env.step(random_slates(rng))
    module = SlateScorerRLModule(observation_space=env.single_observation_space,
                                 action_space=env.single_action_space, model_config={"hidden": [8]})
    batch = {key: torch.from_numpy(value) for key, value in obs.items()}
    other = {**batch, "critic": torch.from_numpy(rng.uniform(-1, 1, obs["critic"].shape).astype(np.float32))}
    with torch.no_grad():
        logits = [module.forward_inference({Columns.OBS: b})[Columns.ACTION_DIST_INPUTS] for b in (batch, other)]
        values = [module.compute_values({Columns.OBS: b}) for b in (batch, other)]
    torch.testing.assert_close(logits[0], logits[1])
    assert not torch.allclose(values[0], values[1])


def test_the_critics_hidden_state_needs_the_shared_scorer() -> None:
    from recoworld.rl.train_config import TrainConfig

    with pytest.raises(Exception, match=r"critic_hidden_state: true needs ppo\.network: shared_scorer"):
        TrainConfig.load(None, world=WORLD, critic_hidden_state=True, ppo={"network": "mlp"})
