"""The population env (`recoworld_population_v0`): many users on one platform at once, a PettingZoo `ParallelEnv`.

PettingZoo envs are not Gymnasium envs, so there is no `gym.make` id: build it with
`PopulationParallelEnv(...)` or PettingZoo's usual `recoworld.envs.population_env.parallel_env(...)`
(docs/recipes/pettingzoo.md). `recoworld_population_v0` is its `metadata["name"]`.

## Description
Each agent is a *user slot* served by the recommender: at every step each live user
gets a slate from the same candidate pipeline as `RecoWorld-v0`, reviews it, and may
leave, come back after a gap or churn, exactly as in the single-user env. What the
users share is the platform:

* **Popularity and social proof.** Likes and shares add to an item's live engagement
  (decaying over steps). It changes what others *see*: the retrieval stage's popular
  block samples from a blend of the catalog prior and live engagement, and the
  popularity feature in observations shows the live value. It changes what others
  *prefer*: an item's click utility gets a bonus that saturates with its engagement.
  All users of a step see the engagement of earlier steps only, so the order of agents
  within a step never matters.
* **Creators publishing over time.** Every item has a release day; a user is offered it
  only once their clock has passed that day. `release_day` sets it per item (a creator
  study does this), and `new_item_share` holds back a random share of the catalog and
  releases it uniformly over the horizon.

Users keep their own clocks (each one's sessions and gaps follow its own mindset) and
move in lockstep *turns*: the platform state a user sees at turn t reflects everyone's
engagement up to turn t - 1.

## LLM users
`world={"user_backend": "llm", "llm": {...}}` (an `LLMConfig`) makes every user an
`LLMUser` (see `recoworld.simulators.llm_user.LLMUsers`). The live users' turns of one
step, and the session ends that follow, are sent to the chat model together, at most
`llm.concurrency` requests in flight; each user draws from its own random stream, so
results do not depend on the concurrency or on the order replies arrive. A turn the
model could not decide falls back to the parametric user and shows as
`info["llm_fallback"]`. Social proof reaches LLM users only through what they are
shown (retrieval and the popularity feature): the click-utility bonus is a term of the
parametric choice model, so it applies neither to the model's choices nor to fallback
turns.

| Creation | `PopulationParallelEnv(n_users=16, world={"slate_size": 5})` or `parallel_env(n_users=16, ...)` |
|---|---|
| Agents | `user_0` .. `user_{n_users-1}` |
| Action Shape | `MultiDiscrete([n_candidates] * slate_size)` per agent, as `RecoWorld-v0` |
| Observation | the `RecoWorld-v0` `Dict` per agent (see `recoworld.envs.observation`) |

## Rewards
Per agent, the `RecoWorld-v0` reward: engagement each turn, plus the return bonus or
churn penalty when a session ends.

## Episode End
An agent terminates when its user churns or its next session falls beyond the
horizon, and is truncated after `world.max_steps` turns; the episode ends when no
agent is left. No wrapper counts steps (there is no `max_episode_steps`, as there is no
registration): the horizon in days ends every episode, and `world.max_steps` is the safety cap.

## Arguments
Any `PopulationWorldConfig` field as a keyword (`n_users`, `world`, `social`,
`new_item_share`), plus `catalog=`, `population=` (a `PopulationSpec`, or a list of
`UserProfile`s, one per slot) and `release_day=` ((N,) days). `reset(options={"profiles":
[...]})` fixes the users of one episode. For RLlib use
`recoworld.rl.multi_agent.PopulationMultiAgentEnv`.

## Infos on demand
`infos="full"` (the default) returns every live agent's `TurnInfo` from `reset` and `step`, as
`RecoWorld-v0` does. Building them (a dict of some 25 keys per live user) costs about a seventh of a
population user-step (`experiments/bench_env.py`: 26,700 user-steps/s with them, 30,900 without, on a
shared machine), wasted where nothing reads them, as in a training loop that needs only observations
and rewards. `infos="none"` returns an empty dict per
live agent instead, and `env.last_infos()` (every agent of the last `reset` or `step`) or
`env.last_infos(["user_3"])` builds the same dicts afterwards, on demand; `env.last_batch` holds
the last step's arrays (`recoworld.envs.world.StepBatch`, row j for slot `rows[j]`), which is
how the study runner logs its trajectories. An option, not a lazily filled mapping: a dict that
fills itself on first access would look empty to the C code (pydantic, pandas) that reads a
dict's storage directly, and PettingZoo wants plain dicts keyed by every live agent.

## Version History
* v0: initial release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import compress
from operator import attrgetter
from typing import Any, ClassVar, Literal, cast, get_args

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import Field

from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.envs.observation import OBSERVATION_KEYS, action_space, observation_space
from recoworld.envs.platform import SharedPlatform, SocialConfig, hold_back
from recoworld.envs.world import (
    EpisodeStats,
    StepBatch,
    World,
    build_users,
    check_population,
    check_render_mode,
    resolve_catalog,
)
from recoworld.errors import ConfigError, InvalidActionError, ResetNeeded
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.streams import UserStreams

AgentID = str
Infos = Literal["full", "none"]
_ndim = attrgetter("ndim")


class PopulationWorldConfig(StrictModel):
    """Everything that defines one population world."""

    world: WorldConfig = WorldConfig()
    n_users: int = Field(16, ge=1, le=100_000)
    social: SocialConfig = SocialConfig()
    new_item_share: float = Field(0.0, ge=0, lt=1, description="share of items published during the horizon")


class PopulationParallelEnv(ParallelEnv[AgentID, dict[str, np.ndarray], np.ndarray]):
    metadata: ClassVar[dict[str, Any]] = {"name": "recoworld_population_v0", "render_modes": ["ansi"],
                                          "is_parallelizable": True}

    def __init__(
        self,
        config: PopulationWorldConfig | dict[str, Any] | None = None,
        *,
        catalog: Catalog | None = None,
        population: PopulationSpec | list[UserProfile] | None = None,
        release_day: np.ndarray | None = None,
        render_mode: str | None = None,
        infos: Infos = "full",
        **overrides: Any,
    ) -> None:
        if infos not in get_args(Infos):
            raise ConfigError(f"infos must be one of {list(get_args(Infos))}, got {infos!r}")
        self.infos_mode = infos
        if isinstance(population, list) and population:
            overrides.setdefault("n_users", len(population))
        self.config = cfg = build(PopulationWorldConfig, "population world config", config, **overrides)
        self.population = check_population(population)
        if isinstance(self.population, list) and len(self.population) != cfg.n_users:
            raise ConfigError(
                f"population: {len(self.population)} profiles for n_users={cfg.n_users}; "
                "pass one profile per user slot"
            )
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        world = cfg.world
        self.catalog = resolve_catalog(catalog, world)
        n = len(self.catalog)
        if release_day is not None:
            release_day = np.asarray(release_day, dtype=np.float64)
            if release_day.shape != (n,):
                raise ConfigError(f"release_day must have shape ({n},) (one day per catalog item), "
                                  f"got {release_day.shape}")
        self._release_day = release_day if release_day is not None else np.zeros(n)
        if int((self._release_day <= 0).sum() * (1 - cfg.new_item_share)) < world.n_candidates:
            raise ConfigError(
                f"only {int((self._release_day <= 0).sum() * (1 - cfg.new_item_share))} items are published on "
                f"day 0, fewer than n_candidates={world.n_candidates}; publish more items earlier"
            )
        self.users = build_users(self.catalog, world, cfg.n_users)
        self.world = World(self.catalog, world, self.users, cfg.n_users)
        self.possible_agents: list[AgentID] = [f"user_{i}" for i in range(cfg.n_users)]
        self._slots = {agent: i for i, agent in enumerate(self.possible_agents)}
        self.agents: list[AgentID] = []
        self._obs_space = observation_space(self.catalog, world)
        self._act_space = action_space(world)
        self._rng = np.random.default_rng()
        self._last_render = ""
        self._last_batch: StepBatch | None = None
        self._last_agents: list[AgentID] = []  # the agents of the last reset or step, in its row order
        self._last_order: dict[AgentID, int] | None = None  # agent -> its row, built on the first subset asked

    # ------------------------------------------------------------------ PettingZoo API

    def observation_space(self, agent: AgentID) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: AgentID) -> spaces.Space:
        return self._act_space

    @property
    def profiles(self) -> list[UserProfile]:
        return self.world.profiles

    @property
    def platform(self) -> SharedPlatform:
        assert self.world.platform is not None
        return self.world.platform

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[AgentID, dict[str, np.ndarray]], dict[AgentID, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._act_space.seed(seed)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"options must be a dict such as {{'profiles': [...]}}, got {type(options).__name__}")
        cfg = self.config
        b = cfg.n_users
        profiles = self._draw_profiles((options or {}).get("profiles"))
        release = hold_back(self._release_day, cfg.new_item_share, cfg.world.horizon_days, self._rng)
        self.world.set_platform(SharedPlatform(self.catalog, cfg.social, release))
        self.world.streams = UserStreams.spawn(self._rng, b)
        self.world.reset(np.arange(b), profiles, self._rng.uniform(0.0, 1.0, b))  # first visits spread over day 0
        self.agents = list(self.possible_agents)
        self._last_batch, self._last_agents, self._last_order = None, list(self.agents), None
        batch = self.world.observe()
        obs = {a: {k: v[i] for k, v in batch.items()} for i, a in enumerate(self.agents)}
        return obs, self._infos_of_step()

    def step(self, actions: dict[AgentID, np.ndarray]) -> tuple[
        dict[AgentID, dict[str, np.ndarray]], dict[AgentID, float], dict[AgentID, bool],
        dict[AgentID, bool], dict[AgentID, dict[str, Any]],
    ]:
        if not self.agents:
            raise ResetNeeded("call reset() before step(), and again after every agent is done")
        if not isinstance(actions, Mapping):
            raise InvalidActionError(f"actions must be a dict of agent -> slate, got {type(actions).__name__}")
        agents, slots = self.agents, self._slots
        # The checks run as C loops (key views, map) and name the offenders only when one fails.
        if not actions.keys() <= slots.keys():
            unknown = [a for a in actions if a not in slots]
            raise InvalidActionError(f"actions for unknown agents {unknown[:5]}; agents are "
                                     f"{self.possible_agents[0]}..{self.possible_agents[-1]}")
        if not all(map(actions.__contains__, agents)):
            missing = [a for a in agents if a not in actions]
            raise InvalidActionError(f"no action for live agents {missing[:5]}; every live agent acts each step")
        live = np.fromiter(map(slots.__getitem__, agents), dtype=np.int64, count=len(agents))
        batch = self.world.step(self._slates(actions), live, lambda j: f"actions[{agents[j]!r}]")
        obs = _per_agent(agents, self.world.observe(live))
        rewards = dict(zip(agents, batch.reward.tolist()))
        terms = dict(zip(agents, batch.terminated.tolist()))
        truncs = dict(zip(agents, batch.truncated.tolist()))
        self._last_batch, self._last_agents, self._last_order = batch, agents, None
        infos = self._infos_of_step()
        ended = batch.terminated | batch.truncated
        self.agents = list(compress(agents, (~ended).tolist())) if ended.any() else list(agents)
        if self.render_mode == "ansi":
            self._last_render = (f"step {int(self.world.steps.max())}: {len(self.agents)} users live, "
                                 f"mean reward {float(batch.reward.mean()):.2f}")
        return obs, rewards, terms, truncs, infos

    def render(self) -> str | None:
        return self._last_render if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.agents = []

    # ------------------------------------------------------------------ infos on demand

    @property
    def last_batch(self) -> StepBatch | None:
        """The last step's arrays (row j for slot `rows[j]`, agent `possible_agents[rows[j]]`); None after reset."""
        return self._last_batch

    def last_infos(self, agents: Iterable[AgentID] | None = None) -> dict[AgentID, dict[str, Any]]:
        """The infos of the last `reset` or `step` for `agents` (default: every agent it returned), as
        `infos="full"` returns them; fresh dicts on every call."""
        wanted, at = self._last_agents, None
        if agents is not None:
            if self._last_order is None:  # once a step: a loop asking agent by agent pays it once
                self._last_order = {a: j for j, a in enumerate(self._last_agents)}
            order = self._last_order
            wanted = list(agents)
            absent = [a for a in wanted if a not in order]
            if absent:
                raise ConfigError(f"last_infos: agents {absent[:5]} were not in the last reset or step; its agents "
                                  f"are {self._last_agents[:5]}{' ...' if len(self._last_agents) > 5 else ''}")
            at = [order[a] for a in wanted]
        if self._last_batch is None:
            return {a: self.world.reset_info(self._slots[a]) for a in wanted}
        # A TurnInfo is a plain dict at run time: no copy per agent (PettingZoo types infos as dicts).
        return dict(zip(wanted, cast(list[dict[str, Any]], self.world.turn_infos(self._last_batch, at))))

    def _infos_of_step(self) -> dict[AgentID, dict[str, Any]]:
        if self.infos_mode == "full":
            return self.last_infos()
        return {a: {} for a in self._last_agents}

    # ------------------------------------------------------------------ helpers

    def _slates(self, actions: Mapping[AgentID, Any]) -> np.ndarray:
        """(live agents, K) the live agents' slates, stacked in one call when every one is a (K,) array
        (as `np.stack` of `np.asarray` of each, which the other inputs take)."""
        k, agents = self.config.world.slate_size, self.agents
        given = list(map(actions.__getitem__, agents))
        # Every slate a (k,) ndarray, checked by C loops: its type, then ndim, then length (len needs ndim >= 1).
        if (given and set(map(type, given)) == {np.ndarray} and set(map(_ndim, given)) == {1}
                and set(map(len, given)) == {k}):
            return np.concatenate(given).reshape(len(given), k)  # np.stack's rows and dtype, a third of its cost
        acts = []  # other inputs, and the error that names the first bad slate
        for agent, act in zip(agents, given):
            act = np.asarray(act)
            if act.shape != (k,):
                raise InvalidActionError(f"actions[{agent!r}] must have shape ({k},) (slate_size), "
                                         f"got shape {act.shape}")
            acts.append(act)
        return np.stack(acts)

    def episode_stats(self, user: int) -> EpisodeStats:
        """Retention is the share of days in the horizon on which the user had a session."""
        return self.world.episode_stats(user)

    def _draw_profiles(self, given: list[UserProfile] | None) -> list[UserProfile]:
        b = self.config.n_users
        if given is None and isinstance(self.population, list):
            given = self.population
        if given is not None:
            if len(given) != b or not all(isinstance(p, UserProfile) for p in given):
                raise ConfigError(f"options['profiles'] must be {b} UserProfile objects (n_users), got {len(given)}")
            return list(given)
        assert isinstance(self.population, PopulationSpec)
        return sample_population(self.population, self.catalog, self._rng, n=b)


def _per_agent(agents: list[AgentID], observed: dict[str, np.ndarray]) -> dict[AgentID, dict[str, np.ndarray]]:
    """Each agent's observation: a dict of its row of every key (views, split in C). The world's nine
    keys are written as a dict display, which builds a thousand agents' dicts in half the time of
    `dict(zip(keys, row))`."""
    keys = tuple(observed)
    if keys != OBSERVATION_KEYS:
        return {agent: dict(zip(keys, row)) for agent, row in zip(agents, zip(*observed.values()))}
    k0, k1, k2, k3, k4, k5, k6, k7, k8 = keys
    return {agent: {k0: a, k1: b, k2: c, k3: d, k4: e, k5: f, k6: g, k7: h, k8: i}
            for agent, a, b, c, d, e, f, g, h, i in zip(agents, *observed.values())}


def parallel_env(**kwargs: Any) -> PopulationParallelEnv:
    """PettingZoo-style constructor: `recoworld.envs.population_env.parallel_env(n_users=8)`."""
    return PopulationParallelEnv(**kwargs)
