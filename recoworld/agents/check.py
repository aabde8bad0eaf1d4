"""`check_recommender`: try a recommender against a small world before a long run does, like `check_env`.

It plays a few short episodes of `RecoWorld-v0` and checks the contract of
`recoworld.agents.base.Recommender`, rule by rule (`RULES`): `begin_episode(seed)` runs, `act`
runs and returns `slate_size` distinct integer candidate positions in range, and
`observe(reactions, info)` runs. The first violation raises `RecommenderCheckError`, naming
the method, the step and what was wrong; the error also says which rule broke and which
held until then, so that `recoworld check-agent` can print a verdict per rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recoworld.agents.base import Recommender
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

#: The small world the check plays in when none is given.
CHECK_WORLD: dict[str, Any] = {"n_candidates": 20, "horizon_days": 3, "max_steps": 60}

#: The rules checked on every turn, in the order a turn meets them: rule -> what it asks.
RULES: dict[str, str] = {
    "begin_episode": "begin_episode(seed) runs",
    "act": "act(observation, info) runs",
    "shape": "act returns one candidate position per slate slot: shape (slate_size,)",
    "integers": "the positions are integers",
    "range": "the positions are in 0..n_candidates-1",
    "distinct": "the positions are distinct",
    "observe": "observe(reactions, info) runs",
}


class RecommenderCheckError(ConfigError):
    """A recommender broke its contract during `check_recommender`: `rule` (a key of `RULES`) broke,
    after the rules in `held` had held on every turn played."""

    def __init__(self, message: str, rule: str | None = None, held: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.rule, self.held = rule, held


@dataclass(frozen=True)
class CheckResult:
    """What a passed check played: every rule held on each of these turns."""

    episodes: int
    turns: int
    slate_size: int
    n_candidates: int


def check_recommender(
    agent: Recommender, catalog: Catalog | None = None, *, episodes: int = 2, seed: int = 0,
    world: dict[str, Any] | None = None,
) -> CheckResult:
    """Play `episodes` short episodes; raise `RecommenderCheckError` at the first broken rule.

    `catalog`: the one the agent was built for (agents may index it by catalog id); `world`:
    `RecoWorld-v0` keywords, `slate_size` defaults to the agent's.
    """
    from recoworld.envs.recoworld_env import RecoWorldEnv  # agents come after envs in the data flow

    if not isinstance(agent, Recommender):
        raise RecommenderCheckError(f"expected a recoworld.agents.Recommender, got {type(agent).__name__}")
    env = RecoWorldEnv({**CHECK_WORLD, "slate_size": agent.slate_size, **(world or {})}, catalog=catalog)
    turn = _Turn(type(agent).__name__, agent.slate_size, env.config.n_candidates)
    turns = 0
    for episode in range(episodes):
        turn.where = (episode, 0)
        turn.call("begin_episode", agent.begin_episode, seed + episode)
        obs, info = env.reset(seed=seed + episode)
        for step in range(env.config.max_steps):
            turn.where = (episode, step)
            turn.check_slate(turn.call("act", agent.act, obs, info))
            obs, _, terminated, truncated, info = env.step(turn.slate)
            turn.call("observe", agent.observe, info["reactions"], info)
            turns += 1
            if terminated or truncated:
                break
    return CheckResult(episodes, turns, agent.slate_size, env.config.n_candidates)


class _Turn:
    """The rules of one turn, checked in `RULES` order; remembers which have held so far."""

    def __init__(self, name: str, k: int, n_candidates: int) -> None:
        self.name, self.k, self.n_candidates = name, k, n_candidates
        self.held: set[str] = set()
        self.where = (0, 0)
        self.slate = np.empty(0, dtype=np.int64)

    def fail(self, rule: str, message: str) -> RecommenderCheckError:
        episode, step = self.where
        return RecommenderCheckError(f"{message} (episode {episode}, step {step})", rule,
                                     frozenset(self.held - {rule}))

    def call(self, method: str, fn: Any, *args: Any) -> Any:
        try:
            out = fn(*args)
        except Exception as err:  # the agent's error, reported with where it happened
            raise self.fail(method, f"{self.name}.{method}() raised {type(err).__name__}: {err}") from err
        self.held.add(method)
        return out

    def check_slate(self, action: Any) -> None:
        k, slate = self.k, np.asarray(action)
        if slate.shape != (k,):
            raise self.fail("shape", f"{self.name}.act() returned shape {slate.shape}, expected ({k},): one "
                                     "candidate position per slate slot")
        self.held.add("shape")
        if slate.dtype.kind not in "iu":
            raise self.fail("integers", f"{self.name}.act() returned {slate.dtype} values {slate.tolist()}; "
                                        "candidate positions are integers")
        self.held.add("integers")
        if slate.min() < 0 or slate.max() >= self.n_candidates:
            raise self.fail("range", f"{self.name}.act() returned {slate.tolist()}: positions must be in "
                                     f"0..{self.n_candidates - 1} (n_candidates)")
        self.held.add("range")
        if len(set(slate.tolist())) != k:
            raise self.fail("distinct", f"{self.name}.act() returned {slate.tolist()}, with repeats: a slate shows "
                                        "distinct candidates")
        self.held.add("distinct")
        self.slate = slate
