from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import recoworld  # noqa: F401  (registers the env)
from recoworld.catalog import Catalog
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError, InvalidActionError, ResetNeeded
from recoworld.mindset import UNSEEN

SMALL = {"slate_size": 4, "n_candidates": 12, "horizon_days": 6}


def rollout(env: gym.Env, seed: int, steps: int = 400) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    action_rng = np.random.default_rng(seed)
    out = [(info["user_id"], obs["candidate_ids"].tolist())]
    for _ in range(steps):
        action = action_rng.permutation(env.action_space.nvec[0])[: len(env.action_space.nvec)]
        obs, reward, term, trunc, info = env.step(action)
        out.append((reward, info["reactions"].tolist(), info["instruction"], obs["candidate_ids"].tolist(), term))
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("env_id", ["RecoWorld-v0", "recoworld:RecoWorld-v0"])
def test_make_and_check_env(env_id: str) -> None:
    env = gym.make(env_id, **SMALL)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.action_space == gym.spaces.MultiDiscrete([12] * 4)


def test_same_seed_same_trajectory_and_different_seeds_differ() -> None:
    a = rollout(gym.make("RecoWorld-v0", **SMALL), seed=5)
    b = rollout(gym.make("RecoWorld-v0", **SMALL), seed=5)
    c = rollout(gym.make("RecoWorld-v0", **SMALL), seed=6)
    assert a == b
    assert a != c


def test_episode_spans_sessions_and_ends_within_the_horizon() -> None:
    env = RecoWorldEnv(**SMALL)
    env.reset(seed=1)
    sessions, days, term = set(), [], False
    rng = np.random.default_rng(0)
    while not term:
        _, reward, term, trunc, info = env.step(rng.permutation(12)[:4])
        assert not trunc
        sessions.add(info["session"])
        days.append(info["time_days"])
        if info["left"] and not info["churned"]:
            assert info["return_gap_days"] > 0
            assert reward >= info["engagement_reward"]  # the return bonus is added at session end
    stats = info["episode_stats"]
    assert len(sessions) == stats["sessions"] >= 2
    assert max(days) < 6 and np.all(np.diff(days) >= 0)
    assert 0 < stats["retention"] <= 1
    with pytest.raises(ResetNeeded):
        env.step(np.arange(4))


def test_reward_follows_the_documented_formula() -> None:
    reward = {"dwell": 0.3, "click": 1.0, "like": 2.0, "share": 5.0, "return_bonus": 7.0, "return_tau_days": 2.0}
    env = RecoWorldEnv(**SMALL, reward=reward)
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(300):
        _, r, term, trunc, info = env.step(rng.permutation(12)[:4])
        reactions = info["reactions"]
        expected = (0.3 * info["dwell_min"].sum() + 1.0 * (reactions >= 1).sum() + 2.0 * (reactions >= 2).sum()
                    + 5.0 * (reactions >= 3).sum())
        assert info["engagement_reward"] == pytest.approx(expected, rel=1e-5)
        if info["return_gap_days"] is not None:
            expected += 7.0 * np.exp(-info["return_gap_days"] / 2.0)
        elif info["churned"]:
            expected += env.config.reward.churn_penalty
        assert r == pytest.approx(expected, rel=1e-5)
        if term or trunc:
            break


def test_observation_hides_the_mindset_unless_asked() -> None:
    env = RecoWorldEnv(**SMALL)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(4))
    assert "mindset" not in info
    env = RecoWorldEnv(**SMALL, expose_mindset=True)
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.arange(4))
    assert 0 <= info["mindset"]["satisfaction"] <= 1
    history = obs["history_reactions"]
    assert set(history.tolist()) <= {UNSEEN, 0, 1, 2, 3}


def test_instruction_appears_in_observation_and_info(catalog: Catalog) -> None:
    env = RecoWorldEnv(catalog=catalog, slate_size=10, n_candidates=40, horizon_days=30)
    obs, _ = env.reset(seed=3)
    anchor = obs["candidate_features"][0, :-3]
    for _ in range(500):
        # Over-exploit: the candidates most similar to one fixed item, every turn.
        sims = obs["candidate_features"][:, :-3] @ anchor
        obs, _, term, trunc, info = env.step(np.argsort(-sims)[:10])
        if info["instruction"]:
            assert obs["instruction"][0] == 1.0 and obs["instruction"][1:4].sum() == 1.0
            assert info["instruction_intent"]["kind"] in ("more", "less", "different")
            return
        if term or trunc:
            obs, _ = env.reset()
    pytest.fail("no instruction in 500 over-exploiting turns")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_vector_envs(mode: str) -> None:
    envs = gym.make_vec("RecoWorld-v0", num_envs=2, vectorization_mode=mode, **SMALL)
    try:
        obs, _ = envs.reset(seed=[1, 2])
        assert obs["candidate_features"].shape[:2] == (2, 12)
        for _ in range(20):
            obs, reward, term, trunc, _ = envs.step(np.tile(np.arange(4), (2, 1)))
            assert reward.shape == (2,) and term.shape == trunc.shape == (2,)
            assert envs.observation_space.contains(obs)
    finally:
        envs.close()


def test_vector_envs_are_deterministic() -> None:
    def run(mode: str) -> list:
        envs = gym.make_vec("RecoWorld-v0", num_envs=2, vectorization_mode=mode, **SMALL)
        envs.reset(seed=[3, 4])
        rewards = []
        for _ in range(30):
            _, r, _, _, _ = envs.step(np.tile(np.arange(4), (2, 1)))
            rewards.append(r.tolist())
        envs.close()
        return rewards

    assert run("sync") == run("async")


def test_bad_actions_name_the_problem() -> None:
    env = RecoWorldEnv(**SMALL)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"shape \(4,\)"):
        env.step(np.arange(5))
    with pytest.raises(InvalidActionError, match=r"action\[2\]=12 is out of range"):
        env.step(np.array([0, 1, 12, 3]))
    with pytest.raises(InvalidActionError, match=r"action\[0\]=-1"):
        env.step(np.array([-1, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match="integer"):
        env.step(np.array([0.5, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match=r"action\[0\]=inf is not an integer candidate position"):
        env.step(np.array([np.inf, 1, 2, 3]))
    with pytest.raises(InvalidActionError, match=r"action\[2\]=nan .*the slate: \[0.0, 1.0, nan, 3.0\]"):
        env.step(np.array([0, 1, np.nan, 3]))  # issue 31: the value and its place, not "got array()"
    with pytest.raises(InvalidActionError, match="integer"):
        env.step(np.array(["a", "b", "c", "d"]))
    strict = RecoWorldEnv(**SMALL, on_duplicate="error")
    strict.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"action\[2\]=1 repeats"):
        strict.step(np.array([0, 1, 1, 3]))


def test_duplicates_are_replaced_deterministically() -> None:
    env = RecoWorldEnv(**SMALL)
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([5, 5, 0, 5]))
    assert info["duplicates_replaced"] == 2
    # Slots keep their first use; repeats take the first unused candidates in retrieval order (1, 2).
    assert info["slate"].tolist() == obs["candidate_ids"][[5, 1, 0, 2]].tolist()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slate_size": 0}, "slate_size"),
        ({"slate_size": 20, "n_candidates": 10}, "slate_size must be <= n_candidates"),
        ({"slate_sise": 3}, "slate_sise"),
        ({"horizon_days": -1}, "horizon_days"),
        ({"reward": {"return_tau_days": 0}}, "reward.return_tau_days"),
        ({"on_duplicate": "ignore"}, "on_duplicate"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        gym.make("RecoWorld-v0", **kwargs)


def test_candidates_exceeding_a_custom_catalog(catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match="n_candidates=700"):
        RecoWorldEnv(catalog=catalog, n_candidates=700)


def test_ansi_render_shows_titles_and_reactions() -> None:
    env = RecoWorldEnv(**SMALL, render_mode="ansi")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(4))
    text = env.render()
    assert env.catalog.titles[info["slate"][0]] in text


def test_bad_reset_options_and_population_are_clear_errors() -> None:
    env = RecoWorldEnv({"catalog": {"n_items": 300}})
    with pytest.raises(ConfigError, match="options must be a dict"):
        env.reset(seed=0, options="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="population must be a PopulationSpec or a list of UserProfile, got str"):
        RecoWorldEnv({"catalog": {"n_items": 300}}, population="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [{"foo": 1}, {"user": 12345}, {"profile": None, "strat_day": 2}])
def test_unknown_reset_options_are_refused_naming_the_key(options: dict) -> None:
    """Issue 31: a misspelt key (`user` for `profile`) silently played a random user; the vector env refused it."""
    env = RecoWorldEnv({"catalog": {"n_items": 300}})
    unknown = next(k for k in options if k != "profile")
    with pytest.raises(ConfigError, match=f"unknown key.*'{unknown}'.*'profile', 'start_day'"):
        env.reset(seed=0, options=options)
    env.reset(seed=0, options={"profile": None, "start_day": 1.0})  # the known keys still work
