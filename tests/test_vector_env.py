"""The native vector env: B independent `RecoWorld-v0` users in one batched world step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from recoworld.envs import RecoWorldEnv, RecoWorldVectorEnv
from recoworld.errors import ConfigError, InvalidActionError

WORLD: dict[str, Any] = {"slate_size": 5, "n_candidates": 30, "horizon_days": 4, "catalog": {"n_items": 500, "seed": 3}}


def policy(t: int, i: int) -> np.ndarray:
    """A deterministic policy that varies with the step and the user, so users see different slates."""
    return (np.arange(5) * (1 + (t + i) % 3) + t) % 30


def test_make_vec_with_the_vector_entry_point_returns_the_native_vector_env() -> None:
    env = gym.make_vec("RecoWorld-v0", num_envs=3, vectorization_mode="vector_entry_point", **WORLD)
    assert isinstance(env, RecoWorldVectorEnv)
    assert env.num_envs == 3
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    single = RecoWorldEnv(WORLD)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert info["user_id"].shape == (3,) and info["_user_id"].all()
    obs, reward, terminated, truncated, info = env.step(np.stack([policy(0, i) for i in range(3)]))
    assert env.observation_space.contains(obs)
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["reactions"].shape == (3, 5) and info["_reactions"].all()


def _vector_log(n: int, seed: int, steps: int) -> list[list[tuple[Any, ...]]]:
    env = RecoWorldVectorEnv(n, WORLD)
    obs, _ = env.reset(seed=seed)
    logs: list[list[tuple[Any, ...]]] = [[("reset", obs["candidate_ids"][i].tolist())] for i in range(n)]
    resetting = np.zeros(n, dtype=bool)
    for t in range(steps):
        obs, reward, terminated, truncated, info = env.step(np.stack([policy(t, i) for i in range(n)]))
        for i in range(n):
            if resetting[i]:  # NEXT_STEP autoreset: this step started user i's next episode
                assert reward[i] == 0 and not terminated[i] and not truncated[i] and not info["_reactions"][i]
                logs[i].append(("reset", obs["candidate_ids"][i].tolist()))
            else:
                logs[i].append((float(reward[i]), bool(terminated[i]), bool(truncated[i]),
                                info["reactions"][i].tolist(), info["dwell_min"][i].tolist(),
                                obs["candidate_ids"][i].tolist(), obs["history_ids"][i].tolist()))
        resetting = terminated | truncated
    return logs


def _single_log(seed: int, user: int, steps: int) -> list[tuple[Any, ...]]:
    env = RecoWorldEnv(WORLD)
    obs, _ = env.reset(seed=seed)
    log: list[tuple[Any, ...]] = [("reset", obs["candidate_ids"].tolist())]
    done = False
    for t in range(steps):
        if done:  # the step the vector env spends resetting user `user`
            obs, _ = env.reset()
            log.append(("reset", obs["candidate_ids"].tolist()))
            done = False
            continue
        obs, reward, terminated, truncated, info = env.step(policy(t, user))
        log.append((float(reward), terminated, truncated, info["reactions"].tolist(), info["dwell_min"].tolist(),
                    obs["candidate_ids"].tolist(), obs["history_ids"].tolist()))
        done = terminated or truncated
    return log


def test_user_i_reproduces_recoworld_v0_with_seed_plus_i_exactly_across_episodes() -> None:
    n, seed, steps = 4, 11, 300
    vector = _vector_log(n, seed, steps)
    for i in range(n):
        single = _single_log(seed + i, i, steps)
        assert sum(entry[0] == "reset" for entry in single) >= 3  # several episodes, so autoreset is covered
        assert vector[i] == single


def test_a_bigger_batch_does_not_change_a_user() -> None:
    small, big = _vector_log(2, 5, 80), _vector_log(6, 5, 80)
    assert small == big[:2]


def test_episode_stats_and_info_masks_mark_the_users_they_cover() -> None:
    env = RecoWorldVectorEnv(4, WORLD)
    env.reset(seed=2)
    ended = 0
    for t in range(300):
        _, _, terminated, truncated, info = env.step(np.stack([policy(t, i) for i in range(4)]))
        done = terminated | truncated
        if done.any():
            assert (info["_episode_stats"] == done).all()
            retention = info["episode_stats"]["retention"][done]
            assert ((retention > 0) & (retention <= 1)).all()
            ended += int(done.sum())
        else:
            assert "episode_stats" not in info
    assert ended >= 4


def test_partial_reset_with_a_mask_restarts_only_those_users() -> None:
    env = RecoWorldVectorEnv(3, WORLD)
    env.reset(seed=1)
    for t in range(3):
        env.step(np.stack([policy(t, i) for i in range(3)]))
    before = env.world.steps.copy()
    env.reset(options={"reset_mask": np.array([False, True, False])})
    assert env.world.steps[1] == 0 and (env.world.steps[[0, 2]] == before[[0, 2]]).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda env: env.step(np.zeros((2, 5), dtype=np.int64)), r"actions must have shape \(3, 5\)"),
        (lambda env: env.step(np.array([[0, 1, 2, 3, 4]] * 2 + [[0, 1, 2, 3, 99]])), r"actions\[2\]\[4\]=99"),
        (lambda env: env.reset(seed=[1, 2]), "a list of 3 seeds"),
        (lambda env: env.reset(options={"reset_mask": [True]}), "reset_mask"),
        (lambda env: env.reset(options={"profiles": []}), "unknown key.*'profiles'.*'reset_mask'"),
    ],
)
def test_bad_input_names_the_field(call: Any, message: str) -> None:
    env = RecoWorldVectorEnv(3, WORLD)
    env.reset(seed=0)
    with pytest.raises((InvalidActionError, ConfigError), match=message):
        call(env)


def test_num_envs_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match="num_envs"):
        RecoWorldVectorEnv(0, WORLD)


def test_an_intents_info_is_its_model_dump() -> None:
    """Infos give an intent as `world.intent_dict`, which must be `model_dump()` (fresh copies) for
    every field `Intent` has."""
    from recoworld.envs.world import intent_dict
    from recoworld.mindset import Intent

    assert list(Intent.model_fields) == ["kind", "topics", "related", "attributes"]
    for intent in (Intent(kind="more"), Intent(kind="less", topics=["a", "b"], related=["c"]),
                   Intent(kind="different", topics=["x"], attributes={"quality": "high"})):
        dumped = intent_dict(intent)
        assert dumped == intent.model_dump() and list(dumped) == list(intent.model_dump())
        assert dumped["topics"] is not intent.topics and dumped["attributes"] is not intent.attributes
