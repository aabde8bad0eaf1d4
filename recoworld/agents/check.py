"""`check_recommender`: try a recommender against a small world before a long run does, like `check_env`.

It plays a few short episodes of `RecoWorld-v0` and checks the contract of
`recoworld.agents.base.Recommender`: `begin_episode(seed)` runs, `act` returns `slate_size`
distinct integer candidate positions in range, and `observe(reactions, info)` runs. The first
violation raises `RecommenderCheckError`, naming the method, the step and what was wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recoworld.agents.base import Recommender
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

#: The small world the check plays in when none is given.
CHECK_WORLD: dict[str, Any] = {"n_candidates": 20, "horizon_days": 3, "max_steps": 60}


class RecommenderCheckError(ConfigError):
    """A recommender broke its contract during `check_recommender`."""


def check_recommender(
    agent: Recommender, catalog: Catalog | None = None, *, episodes: int = 2, seed: int = 0,
    world: dict[str, Any] | None = None,
) -> None:
    """Play `episodes` short episodes; raise `RecommenderCheckError` at the first broken rule.

    `catalog`: the one the agent was built for (agents may index it by catalog id); `world`:
    `RecoWorld-v0` keywords, `slate_size` defaults to the agent's.
    """
    from recoworld.envs.recoworld_env import RecoWorldEnv  # agents come after envs in the data flow

    if not isinstance(agent, Recommender):
        raise RecommenderCheckError(f"expected a recoworld.agents.Recommender, got {type(agent).__name__}")
    env = RecoWorldEnv({**CHECK_WORLD, "slate_size": agent.slate_size, **(world or {})}, catalog=catalog)
    name = type(agent).__name__
    for episode in range(episodes):
        _call(name, "begin_episode", episode, 0, agent.begin_episode, seed + episode)
        obs, info = env.reset(seed=seed + episode)
        for step in range(env.config.max_steps):
            action = _call(name, "act", episode, step, agent.act, obs, info)
            _check_slate(name, action, agent.slate_size, env.config.n_candidates, episode, step)
            obs, _, terminated, truncated, info = env.step(np.asarray(action))
            _call(name, "observe", episode, step, agent.observe, info["reactions"], info)
            if terminated or truncated:
                break


def _call(name: str, method: str, episode: int, step: int, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # the agent's error, reported with where it happened
        raise RecommenderCheckError(f"{name}.{method}() raised {type(err).__name__}: {err} "
                                    f"(episode {episode}, step {step})") from err


def _check_slate(name: str, action: Any, k: int, n_candidates: int, episode: int, step: int) -> None:
    where = f"(episode {episode}, step {step})"
    slate = np.asarray(action)
    if slate.shape != (k,):
        raise RecommenderCheckError(f"{name}.act() returned shape {slate.shape}, expected ({k},): one candidate "
                                    f"position per slate slot {where}")
    if slate.dtype.kind not in "iu":
        raise RecommenderCheckError(f"{name}.act() returned {slate.dtype} values {slate.tolist()}; "
                                    f"candidate positions are integers {where}")
    if slate.min() < 0 or slate.max() >= n_candidates:
        raise RecommenderCheckError(f"{name}.act() returned {slate.tolist()}: positions must be in "
                                    f"0..{n_candidates - 1} (n_candidates) {where}")
    if len(set(slate.tolist())) != k:
        raise RecommenderCheckError(f"{name}.act() returned {slate.tolist()}, with repeats: a slate shows "
                                    f"distinct candidates {where}")
