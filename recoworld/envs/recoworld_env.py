"""`RecoWorld-v0`: one simulated user over many sessions, rewarded for retention.

## Description
An episode is one user over a horizon of days. Each session the platform's retrieval
stage offers candidates, the agent picks a slate, and the user reviews it item by item
(click, skip, like, share, dwell), possibly says what it wants (a reflective
instruction) and possibly leaves. After a session the user comes back after a gap that
depends on how the session went, or never. The agent sees only what a platform sees.

## Action Space
`MultiDiscrete([n_candidates] * slate_size)`: slot k shows candidate `action[k]`.
Duplicates: with `on_duplicate="replace"` (default) a repeated candidate is replaced by
the first unused candidate in retrieval order, and `info["duplicates_replaced"]` counts
the replacements; with `on_duplicate="error"` a repeat raises `InvalidActionError`.

## Observation Space
A `Dict` (H = history_len, C = n_candidates, F = embedding_dim + 3):

| key                  | shape  | meaning                                                    |
|----------------------|--------|------------------------------------------------------------|
| `candidate_ids`      | (C,)   | catalog indices of the candidates, in retrieval order      |
| `candidate_features` | (C, F) | embedding, quality, log-duration, log-popularity            |
| `candidate_mask`     | (C,)   | 1 = available, 0 = already consumed in this episode        |
| `history_ids`        | (H,)   | last items the user reviewed, oldest first, -1 = padding   |
| `history_features`   | (H, F) | their features (zeros for padding)                         |
| `history_reactions`  | (H,)   | -1 pad, 0 skip, 1 click, 2 like, 3 share                   |
| `history_dwell`      | (H,)   | minutes spent on each                                      |
| `instruction`        | (4+D,) | [present, more, less, different] + direction in item space (see channels) |
| `context`            | (4,)   | day, session index, turn in session, days since last session |

The instruction's text is in `info["instruction"]`. The mindset is hidden; it appears
in `info["mindset"]` only when the env is made with `expose_mindset=True`.

## Catalog search
`env.search` (a `recoworld.envs.search.PlatformSearch`; None with `retrieval.search_cap=0`)
finds items in the whole catalog by topic, subtopic, semantic-ID prefix or text query, and
admits at most `retrieval.search_cap` (5) of them per turn into the candidates, in place of
the lowest-priority ones; the agent then picks them by position as usual.
`info["searched"]` (K,) marks slate items that entered through search this turn.

## Instruction channels
`instruction_channel` sets what the recommender is told when the user speaks:
- `structured` (default): `obs["instruction"]` = [1, more, less, different] + the parsed
  intent's direction; `info["instruction"]` the text; `info["instruction_intent"]` the intent.
- `text`: `obs["instruction"]` = [1, 0, 0, 0] + the text's embedding mapped into item space
  (`recoworld.catalog.text_space`: a ridge map from the catalog's item-text embeddings, by
  `instruction_encoder`, to the item embeddings, fit once per catalog); `info["instruction"]`
  the text; `info["instruction_intent"]` is `{}`.
- `none` (ablation): `obs["instruction"]` all zeros, `info["instruction"]` None, intent `{}`.
Retrieval, the measures and the reward use the true instruction in every channel.
`info["logged_instruction"]` and `info["logged_intent"]` always carry what the user said,
for trajectories and metrics; recommenders must not read them.

## Rewards
Per turn: `dwell * minutes + click * clicks + like * likes + share * shares`, plus
`instruction_following` (0 by default) times the share of the slate that honours the
session's latest instruction. When the user leaves, add
`return_bonus * exp(-gap_days / return_tau_days)`, or `churn_penalty` when the user
never returns. Weights live in `RewardConfig` (`reward=` override).

## Instructions and retrieval
Candidates come from four blocks, in order: items that answer the session's latest
instruction (`retrieval.instruction_share`, drawn from the whole catalog among the items
that honour its intent), similarity to engaged history, popularity, and uniform
exploration. `info["instruction_followed"]` is the share of the slate that honours the
instruction in force, and `info["instruction_satisfiable"]` whether the candidates held
enough honouring items (one for `more`, a whole slate for `less`/`different`);
`info["instruction_similarity"]` is the mean cosine of the slate's items to the
instruction's text direction in item space. All are None while no instruction is in force.
An LLM judge scores the logged turns at evaluation time (`recoworld.evaluation.judge`).

## Episode End
Terminates when the user churns or the next session falls beyond `horizon_days`;
truncates after `max_steps` turns.

## Arguments
`gym.make("RecoWorld-v0", slate_size=10, n_candidates=50, horizon_days=30, ...)`: any
`WorldConfig` field as a keyword (nested ones as dicts, e.g. `reward={"click": 1}`),
`user_backend="llm"` with `llm={...}` (an `LLMConfig`) makes the user an LLM user;
plus `catalog=`, `population=` (a `PopulationSpec`: each episode's user comes from a segment
drawn with probability proportional to its size; or a list of `UserProfile`, drawn uniformly) and
`user_simulator=` (any `BatchUserSimulator` holding one user, e.g. `ScriptedUsers`)
objects. `reset(options={"profile": UserProfile})` fixes the user; `options["start_day"]` (default 0)
opens the first session that many days into the horizon, which still counts from day 0 (a user
simulated from a log's cutoff who was away at it: `recoworld.validity`).

## Vectorized
`gym.make_vec("RecoWorld-v0", num_envs=B, vectorization_mode="vector_entry_point")`
returns `RecoWorldVectorEnv`: B users in one batched world, user i identical to this
env reset with seed `seed + i` (see `recoworld.envs.vector_env`).

## Implementation
This env is the B = 1 view of the batched world core (`recoworld.envs.world.World`):
the turn, the info (`TurnInfo`) and the observation are written once, there.

## Version History
* v0: initial release.
* v0, fix (2026-12): with a `PopulationSpec`, every episode's user used to come from the largest
  segment (the spec's split of a population of one); the segment is now drawn by its share.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig, build
from recoworld.envs.observation import action_space, observation_space
from recoworld.envs.search import PlatformSearch
from recoworld.envs.world import (
    EpisodeStats,
    StepBatch,
    World,
    build_users,
    check_population,
    check_render_mode,
    draw_profile,
    reset_options,
    resolve_catalog,
)
from recoworld.errors import ConfigError, InvalidActionError, ResetNeeded
from recoworld.mindset import REACTION_NAMES
from recoworld.population import PopulationSpec, UserProfile
from recoworld.simulators.base import BatchUserSimulator

_ROW = np.zeros(1, dtype=np.int64)
_RESET_OPTIONS = frozenset({"profile", "start_day"})


class RecoWorldEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    # Gymnasium declares `metadata` an instance attribute (a ClassVar here would be an override mypy refuses).
    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 1}  # noqa: RUF012

    def __init__(
        self,
        config: WorldConfig | dict[str, Any] | None = None,
        *,
        catalog: Catalog | dict[str, Any] | None = None,
        population: PopulationSpec | list[UserProfile] | None = None,
        user_simulator: BatchUserSimulator | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if catalog is not None and not isinstance(catalog, Catalog):
            # `catalog={...}` from gym.make or an RLlib env_config means the catalog *config*.
            overrides["catalog"] = catalog
            catalog = None
        self.config = cfg = build(WorldConfig, "RecoWorld config", config, **overrides)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.catalog = resolve_catalog(catalog, cfg)
        self.population = check_population(population)
        self.users = user_simulator if user_simulator is not None else build_users(self.catalog, cfg, 1)
        self.world = World(self.catalog, cfg, self.users, 1)
        # The platform's catalog search for this user (`recoworld.envs.search`); None when search_cap is 0.
        self.search = PlatformSearch(self.world) if cfg.retrieval.search_cap else None
        self.observation_space = observation_space(self.catalog, cfg)
        self.action_space = action_space(cfg)
        self._needs_reset = True
        self._last_render = ""
        # The last step's arrays and which of its slate items entered through search: what a log reads
        # (`TrajectoryLog.add_step`), so every writer derives its columns from one place. None after reset.
        self.last_batch: StepBatch | None = None
        self.last_searched: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        options = reset_options(options, "{'profile': UserProfile(...)}", _RESET_OPTIONS)
        super().reset(seed=seed)
        profile = options.get("profile")
        if profile is not None and not isinstance(profile, UserProfile):
            raise ConfigError(f"options['profile'] must be a UserProfile, got {type(profile).__name__}")
        start = self._start_day(options)
        self.world.streams[0] = self.np_random  # the user's one random stream is the env's
        self.profile = profile if profile is not None else draw_profile(self.population, self.catalog,
                                                                         self.np_random)
        self.world.reset(_ROW, [self.profile], np.full(1, start))
        if self.search is not None:
            self.search.new_turn()
        self._needs_reset = False
        self._last_render = ""
        self.last_batch, self.last_searched = None, None
        return self._observation(), self.world.reset_info(0)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("call reset() before step(), and again after an episode ends")
        act = np.asarray(action)
        k = self.config.slate_size
        if act.shape != (k,):
            raise InvalidActionError(f"action must have shape ({k},) (slate_size), got shape {act.shape}")
        admitted = self.search.admitted_items if self.search is not None else np.empty(0, dtype=np.int64)
        batch = self.world.step(act[None, :], None, lambda _: "action")
        info: dict[str, Any] = dict(self.world.turn_infos(batch)[0])
        info["searched"] = np.isin(batch.slates[0], admitted) if len(admitted) else np.zeros(k, dtype=bool)
        self.last_batch, self.last_searched = batch, info["searched"][None]
        if self.search is not None:
            self.search.new_turn()
        terminated, truncated = bool(batch.terminated[0]), bool(batch.truncated[0])
        self._needs_reset = terminated or truncated
        if self.render_mode == "ansi":
            self._last_render = self._describe(batch)
        return self._observation(), float(batch.reward[0]), terminated, truncated, info

    # Gymnasium types render's frame with a TypeVar bound to nothing (RenderFrame), which no concrete frame
    # type matches; "ansi" frames are text.
    def render(self) -> str | None:  # type: ignore[override]
        return self._last_render if self.render_mode == "ansi" else None

    def episode_stats(self) -> EpisodeStats:
        """Retention is the share of days in the horizon on which the user had a session."""
        return self.world.episode_stats(0)

    def _start_day(self, options: dict[str, Any]) -> float:
        """`options["start_day"]` (default 0): the day of the episode's first session. A user simulated
        from a log's cutoff who was away at it comes back that far into the horizon, which still counts
        from day 0 (`recoworld.validity`); the days before hold no session."""
        day = options.get("start_day", 0.0)
        if isinstance(day, bool) or not isinstance(day, (int, float, np.integer, np.floating)) or not (
                0.0 <= float(day) < self.config.horizon_days):
            raise ConfigError(f"options['start_day'] must be a number of days in [0, horizon_days="
                              f"{self.config.horizon_days:g}), got {day!r}")
        return float(day)

    def _observation(self) -> dict[str, np.ndarray]:
        return {key: value[0] for key, value in self.world.observe().items()}

    def _describe(self, batch: StepBatch) -> str:
        w = self.world
        lines = [f"day {int(batch.day[0])} session {int(batch.session[0])} turn {int(batch.turn[0])}"]
        for item, r, dwell in zip(batch.slates[0], batch.reactions[0], batch.dwell_min[0]):
            lines.append(f"  {REACTION_NAMES[int(r)]:>6} {dwell:5.1f}m  {w.catalog.titles[item]}")
        if batch.instructions[0]:
            lines.append(f'  user says: "{batch.instructions[0].text}"')
        if batch.left[0]:
            lines.append("  user left the session")
        return "\n".join(lines)
