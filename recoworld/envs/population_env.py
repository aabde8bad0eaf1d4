"""`RecoWorldPopulation-v0`: many users on one platform at once, as a PettingZoo `ParallelEnv`.

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

| Creation | `PopulationParallelEnv(n_users=16, world={"slate_size": 5})` |
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
agent is left.

## Arguments
Any `PopulationWorldConfig` field as a keyword (`n_users`, `world`, `social`,
`new_item_share`), plus `catalog=`, `population=` (a `PopulationSpec`, or a list of
`UserProfile`s, one per slot) and `release_day=` ((N,) days). `reset(options={"profiles":
[...]})` fixes the users of one episode. For RLlib use
`recoworld.envs.population_rllib.PopulationMultiAgentEnv`.

## Version History
* v0: initial release.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pydantic import Field

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.envs.observation import (
    MINUTES_PER_DAY,
    History,
    action_space,
    build_observation,
    engagement_reward,
    instruction_vector,
    observation_space,
    return_reward,
    slate_positions,
)
from recoworld.errors import ConfigError, InvalidActionError, ResetNeeded
from recoworld.mindset import ReactionType
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.retrieval import CandidateRetriever
from recoworld.simulators.parametric import BatchFeedback, ParametricUsers

if TYPE_CHECKING:
    from recoworld.simulators.llm_user import LLMUsers

AgentID = str


class SocialConfig(StrictModel):
    """How users influence each other through the shared platform."""

    like_weight: float = Field(1.0, ge=0, description="live engagement added by a like")
    share_weight: float = Field(3.0, ge=0, description="live engagement added by a share")
    decay: float = Field(0.98, gt=0, le=1, description="per-step decay of live engagement")
    retrieval_weight: float = Field(0.5, ge=0, le=1, description="share of live engagement in retrieval popularity")
    utility_bonus: float = Field(0.8, ge=0, description="click-utility bonus of an item at full social proof")
    half_saturation: float = Field(5.0, gt=0, description="live engagement at which social proof is one half")


class PopulationWorldConfig(StrictModel):
    """Everything that defines one population world."""

    world: WorldConfig = WorldConfig()
    n_users: int = Field(16, ge=1, le=100_000)
    social: SocialConfig = SocialConfig()
    new_item_share: float = Field(0.0, ge=0, lt=1, description="share of items published during the horizon")


class SharedPlatform:
    """The state every user of the world shares: live engagement and item release days."""

    def __init__(self, catalog: Catalog, social: SocialConfig, release_day: np.ndarray) -> None:
        self.catalog = catalog
        self.social = social
        self.release_day = release_day
        self.engagement = np.zeros(len(catalog), dtype=np.float64)
        self._prior = catalog.popularity.astype(np.float64) / float(catalog.popularity.sum())
        self.features = catalog.item_features.copy()  # the popularity column follows live popularity

    def popularity(self) -> np.ndarray:
        """(N,) what retrieval samples the popular block from: prior blended with live engagement."""
        total = self.engagement.sum()
        if total <= 0:
            return self._prior
        w = self.social.retrieval_weight
        return (1 - w) * self._prior + w * self.engagement / total

    def social_proof(self, items: np.ndarray) -> np.ndarray:
        """In [0, 1): how much others have liked and shared these items lately."""
        e = self.engagement[items]
        return e / (e + self.social.half_saturation)

    def update(self, slates: np.ndarray, reactions: np.ndarray) -> np.ndarray:
        """Decay, then add this step's likes and shares; returns the new live popularity."""
        s = self.social
        self.engagement *= s.decay
        gain = np.where(reactions >= ReactionType.SHARE, s.share_weight,
                        np.where(reactions >= ReactionType.LIKE, s.like_weight, 0.0))
        np.add.at(self.engagement, slates.ravel(), gain.ravel())
        pop = self.popularity()
        log_pop = np.log(pop * len(pop) + 1e-9)
        self.features[:, -1] = (log_pop - log_pop.min()) / max(float(np.ptp(log_pop)), 1e-9)
        return pop

    def unreleased(self, now_days: float) -> np.ndarray:
        return self.release_day > now_days


def hold_back(release_day: np.ndarray, share: float, horizon_days: float, rng: np.random.Generator) -> np.ndarray:
    """Publish `share` of the items live on day 0 at uniform times over the horizon instead."""
    release = release_day.copy()
    if share > 0:
        live = np.flatnonzero(release <= 0)
        held = rng.choice(live, size=int(share * len(live)), replace=False)
        release[held] = rng.uniform(0.0, horizon_days, len(held))
    return release


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
        **overrides: Any,
    ) -> None:
        if isinstance(population, list):
            if not population:
                raise ConfigError("population: an empty list of profiles; pass at least one UserProfile")
            overrides.setdefault("n_users", len(population))
        self.config = cfg = build(PopulationWorldConfig, "population world config", config, **overrides)
        if isinstance(population, list) and len(population) != cfg.n_users:
            raise ConfigError(
                f"population: {len(population)} profiles for n_users={cfg.n_users}; pass one profile per user slot"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        world = cfg.world
        self.catalog = catalog if catalog is not None else cached_catalog(world.catalog)
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
        self.population = population if population is not None else PopulationSpec.default()
        self.users: ParametricUsers | LLMUsers
        if world.user_backend == "llm":
            from recoworld.simulators.llm_user import LLMUsers

            self.users = LLMUsers(self.catalog, world, cfg.n_users)
        else:
            self.users = ParametricUsers(self.catalog, world.choice, world.dynamics, world.returns)
        self.retriever = CandidateRetriever(self.catalog, world.retrieval, world.n_candidates)
        self.possible_agents: list[AgentID] = [f"user_{i}" for i in range(cfg.n_users)]
        self.agents: list[AgentID] = []
        self._obs_space = observation_space(self.catalog, world)
        self._act_space = action_space(world)
        self._rng = np.random.default_rng()
        self._last_render = ""

    # ------------------------------------------------------------------ PettingZoo API

    def observation_space(self, agent: AgentID) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: AgentID) -> spaces.Space:
        return self._act_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[AgentID, dict[str, np.ndarray]], dict[AgentID, dict[str, Any]]]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._act_space.seed(seed)
        cfg, world = self.config, self.config.world
        b, n = cfg.n_users, len(self.catalog)
        self.profiles = self._draw_profiles((options or {}).get("profiles"))
        self.platform = SharedPlatform(self.catalog, cfg.social, self._draw_release_days())
        self.retriever.set_popularity(self.platform.popularity())
        self.users.reset(self.profiles, self._rng)
        self._history = [History(world.history_len) for _ in range(b)]
        self._consumed = np.zeros((b, n), dtype=bool)
        self._instruction = np.zeros((b, 4 + self.catalog.embedding_dim), dtype=np.float32)
        self._now = self._rng.uniform(0.0, 1.0, b)  # first visits spread over day 0
        self._session = np.zeros(b, dtype=np.int64)
        self._turn = np.zeros(b, dtype=np.int64)
        self._steps = np.zeros(b, dtype=np.int64)
        self._gap = np.zeros(b)
        self._days_active: list[set[int]] = [set() for _ in range(b)]
        self._candidates = np.zeros((b, world.n_candidates), dtype=np.int64)
        self.agents = list(self.possible_agents)
        everyone = np.arange(b)
        self._open_sessions(everyone, np.zeros(b))
        obs = {a: self._observe(i) for i, a in enumerate(self.agents)}
        infos = {a: {"user_id": p.user_id, "segment": p.segment, **self._clock(i)}
                 for i, (a, p) in enumerate(zip(self.agents, self.profiles))}
        return obs, infos

    def step(self, actions: dict[AgentID, np.ndarray]) -> tuple[
        dict[AgentID, dict[str, np.ndarray]], dict[AgentID, float], dict[AgentID, bool],
        dict[AgentID, bool], dict[AgentID, dict[str, Any]],
    ]:
        if not self.agents:
            raise ResetNeeded("call reset() before step(), and again after every agent is done")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise InvalidActionError(f"no action for live agents {missing[:5]}; every live agent acts each step")
        world = self.config.world
        live = np.array([self._slot(a) for a in self.agents], dtype=np.int64)
        slates = self._candidates[:, : world.slate_size].copy()  # finished users review a placeholder
        replaced = np.zeros(len(live), dtype=np.int64)
        for j, u in enumerate(live):
            positions, replaced[j] = slate_positions(actions[self.possible_agents[u]], world)
            slates[u] = self._candidates[u, positions]
        fb = self._review(slates, live)
        reactions, dwell = fb.reactions[live], fb.dwell_min[live]
        reward = engagement_reward(world.reward, reactions, dwell)
        self._steps[live] += 1
        self._turn[live] += 1
        self._now[live] += dwell.sum(axis=1) / MINUTES_PER_DAY
        for j, u in enumerate(live):
            self._history[u].record(slates[u], reactions[j], dwell[j])
            self._consumed[u, slates[u][reactions[j] > 0]] = True
            if fb.instructions[u] is not None:
                self._instruction[u] = instruction_vector(fb.instructions[u], self.catalog)
        infos = {self.possible_agents[u]: self._turn_info(int(u), slates[u], reactions[j], dwell[j], fb.instructions[u],
                                                          bool(fb.left[u]), int(replaced[j]), float(reward[j]),
                                                          fb.fallback is not None and bool(fb.fallback[u]))
                 for j, u in enumerate(live)}
        self.retriever.set_popularity(self.platform.update(slates[live], reactions))

        terminated = np.zeros(len(live), dtype=bool)
        leaving = live[fb.left[live]]
        if len(leaving):
            gaps = self.users.end_sessions(leaving, self._now[leaving], self._rng)
            reward[fb.left[live]] += return_reward(world.reward, gaps)
            ends = np.isinf(gaps) | (self._now[leaving] + gaps >= world.horizon_days)
            terminated[np.flatnonzero(fb.left[live])[ends]] = True
            for u, g in zip(leaving, gaps):
                info = infos[self.possible_agents[u]]
                info["churned"] = bool(np.isinf(g))
                info["return_gap_days"] = None if np.isinf(g) else float(g)
            back = ~ends
            self._now[leaving[back]] += gaps[back]
            self._open_sessions(leaving[back], gaps[back])
        truncated = ~terminated & (self._steps[live] >= world.max_steps)
        staying = live[~(terminated | truncated | fb.left[live])]
        self._retrieve(staying)

        obs, rewards, terms, truncs = {}, {}, {}, {}
        for j, u in enumerate(live):
            agent = self.possible_agents[u]
            obs[agent] = self._observe(int(u))
            rewards[agent] = float(reward[j])
            terms[agent] = bool(terminated[j])
            truncs[agent] = bool(truncated[j])
            if terminated[j] or truncated[j]:
                infos[agent]["episode_stats"] = self.episode_stats(int(u))
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        if self.render_mode == "ansi":
            self._last_render = (f"step {int(self._steps.max())}: {len(self.agents)} users live, "
                                 f"mean reward {float(reward.mean()):.2f}")
        return obs, rewards, terms, truncs, infos

    def render(self) -> str | None:
        return self._last_render if self.render_mode == "ansi" else None

    def close(self) -> None:
        self.agents = []

    # ------------------------------------------------------------------ helpers

    def episode_stats(self, user: int) -> dict[str, float]:
        """Retention is the share of days in the horizon on which the user had a session."""
        horizon_days = math.ceil(self.config.world.horizon_days)
        return {
            "sessions": float(self._session[user]),
            "days_active": float(len(self._days_active[user])),
            "retention": len(self._days_active[user]) / horizon_days,
            "turns": float(self._steps[user]),
        }

    def _slot(self, agent: AgentID) -> int:
        return int(agent.rsplit("_", 1)[1])

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

    def _draw_release_days(self) -> np.ndarray:
        return hold_back(self._release_day, self.config.new_item_share, self.config.world.horizon_days, self._rng)

    def _review(self, slates: np.ndarray, live: np.ndarray) -> BatchFeedback:
        """Parametric users review every row at once (finished users' rows are placeholders, cheaper
        than masking); LLM users review only the live rows, each row one model call."""
        if isinstance(self.users, ParametricUsers):
            bonus = self.config.social.utility_bonus * self.platform.social_proof(slates)
            return self.users.review(slates, self._rng, bonus)
        return self.users.review(slates, live)

    def _open_sessions(self, users: np.ndarray, gaps: np.ndarray) -> None:
        if not len(users):
            return
        self._session[users] += 1
        self._turn[users] = 0
        self._gap[users] = gaps
        for u in users:
            self._days_active[u].add(math.floor(self._now[u]))
        self.users.start_sessions(users, self._now[users], self._rng)
        self._retrieve(users)

    def _retrieve(self, users: np.ndarray) -> None:
        for u in users:
            h = self._history[u]
            self._candidates[u] = self.retriever.retrieve(
                h.ids, h.reactions, self._rng, self.platform.unreleased(float(self._now[u]))
            )

    def _observe(self, user: int) -> dict[str, np.ndarray]:
        context = np.array([self._now[user], self._session[user], self._turn[user], self._gap[user]], np.float32)
        return build_observation(self.platform.features, self._candidates[user], self._consumed[user],
                                 self._history[user], self._instruction[user], context)

    def _clock(self, user: int) -> dict[str, Any]:
        return {"day": math.floor(self._now[user]), "session": int(self._session[user]),
                "turn": int(self._turn[user]), "step": int(self._steps[user]), "time_days": float(self._now[user])}

    def _turn_info(self, user: int, slate: np.ndarray, reactions: np.ndarray, dwell: np.ndarray,
                   instruction: Any, left: bool, replaced: int, reward: float, fallback: bool) -> dict[str, Any]:
        profile = self.profiles[user]
        return {
            "user_id": profile.user_id, "segment": profile.segment,
            "slate": slate, "reactions": reactions, "dwell_min": dwell,
            "instruction": instruction.text if instruction else None,
            "instruction_intent": instruction.intent.model_dump() if instruction else {},
            "left": left, "duplicates_replaced": replaced, "engagement_reward": reward,
            "return_gap_days": None, "churned": False, "llm_fallback": fallback,
            **self._clock(user),
        }


def parallel_env(**kwargs: Any) -> PopulationParallelEnv:
    """PettingZoo-style constructor: `recoworld.envs.population_env.parallel_env(n_users=8)`."""
    return PopulationParallelEnv(**kwargs)
