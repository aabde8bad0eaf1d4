"""`RecoWorldVectorEnv`: B independent `RecoWorld-v0` users in one batched world.

## Description
The native vector form of `RecoWorld-v0`: B users, each alone on its own platform (no
social proof between them), advanced by one numpy step of the world core instead of B
Python envs. User i is *exactly* `RecoWorld-v0` reset with seed `seed + i`: the same
profile, candidates, reactions, rewards and episode ends, episode after episode, because
each user draws only from its own random stream and the core's arithmetic is row-wise.

Create it with `gym.make_vec("RecoWorld-v0", num_envs=B, vectorization_mode="vector_entry_point")`
(any `RecoWorld-v0` keyword works) or `RecoWorldVectorEnv(num_envs=B, ...)`.

## Spaces
`single_observation_space` / `single_action_space` are `RecoWorld-v0`'s; the batched
spaces add a leading axis of size B.

## Autoreset
`metadata["autoreset_mode"]` is `AutoresetMode.NEXT_STEP`, Gymnasium 1.x's default and
what RLlib's `SingleAgentEnvRunner` expects: the step that ends user i's episode returns
its final observation with `terminated`/`truncated` set; on the *next* `step` user i's
action is ignored, a new episode starts (a new profile drawn from its stream) and that
step returns the reset observation with reward 0 and both flags False.
`reset(options={"reset_mask": mask})` resets just the masked users.

## Info
A dict of arrays in Gymnasium's vector format, each key with a boolean `_key` mask of
the users it holds: the `TurnInfo` keys for users that stepped (`reactions`, `dwell_min`,
`left`, `instruction`, `instruction_intent` (None without one), `engagement_reward`,
`return_gap_days` (nan while the session goes on), `churned`, ...), `user_id`/`segment` and
the clock for every user, and `episode_stats` (a dict of arrays) for users whose episode just ended.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig, build
from recoworld.envs.observation import action_space, observation_space
from recoworld.envs.world import (
    StepBatch,
    World,
    build_users,
    check_population,
    draw_profile,
    intent_dict,
    reset_options,
    resolve_catalog,
)
from recoworld.errors import ConfigError, InvalidActionError
from recoworld.population import PopulationSpec, UserProfile

#: Per-user info keys of a step, copied from `StepBatch` (key -> attribute).
_STEP_KEYS = {"reactions": "reactions", "dwell_min": "dwell_min", "left": "left",
              "duplicates_replaced": "replaced", "engagement_reward": "engagement",
              "return_gap_days": "return_gap", "llm_fallback": "fallback",
              "instruction_followed": "followed", "instruction_satisfiable": "satisfiable",
              "instruction_similarity": "similarity", "disliked": "disliked"}
_STATS: tuple[Literal["sessions", "days_active", "retention", "turns"], ...] = (
    "sessions", "days_active", "retention", "turns")  # `EpisodeStats`' keys


class RecoWorldVectorEnv(VectorEnv[dict[str, np.ndarray], np.ndarray, np.ndarray]):
    # Gymnasium declares `metadata` an instance attribute (a ClassVar here would be an override mypy refuses).
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        num_envs: int = 1,
        config: WorldConfig | dict[str, Any] | None = None,
        *,
        catalog: Catalog | dict[str, Any] | None = None,
        population: PopulationSpec | list[UserProfile] | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
        if catalog is not None and not isinstance(catalog, Catalog):
            overrides["catalog"] = catalog
            catalog = None
        overrides.pop("render_mode", None)  # make_vec passes it through; a batch of users has no text render
        self.config = cfg = build(WorldConfig, "RecoWorld config", config, **overrides)
        self.num_envs = num_envs
        self.catalog = resolve_catalog(catalog, cfg)
        self.population = check_population(population)
        self.users = build_users(self.catalog, cfg, num_envs)
        self.world = World(self.catalog, cfg, self.users, num_envs)
        self.single_observation_space = observation_space(self.catalog, cfg)
        self.single_action_space = action_space(cfg)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._started = False
        # Each user's `user_id` and `segment`, as the infos give them (copied): set when an episode starts.
        self._user_ids = np.full(num_envs, None, dtype=object)
        self._segments = np.full(num_envs, None, dtype=object)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        b = self.num_envs
        seeds = _per_user_seeds(seed, b)
        mask = np.ones(b, dtype=bool)
        options = reset_options(options, "{'reset_mask': (num_envs,) bool}", frozenset({"reset_mask"}))
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (b,) or mask.dtype != bool:
                raise ConfigError(f"options['reset_mask'] must be a ({b},) bool array, got {mask!r}")
        if not self._started and not mask.all():
            raise ConfigError("the first reset must reset every user; reset_mask applies to later resets")
        rows = np.flatnonzero(mask)
        for r in rows.tolist():
            if seeds[r] is not None or not self._started:
                self.world.streams[r] = seeding.np_random(seeds[r])[0]
        self._start_episodes(rows)
        self._started = True
        self._autoreset[rows] = False
        return self.world.observe(), self._infos(None, rows)

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise ConfigError("call reset() before step()")
        b, k = self.num_envs, self.config.slate_size
        acts = np.asarray(actions)
        if acts.shape != (b, k):
            raise InvalidActionError(f"actions must have shape ({b}, {k}) (num_envs, slate_size), "
                                     f"got shape {acts.shape}")
        resetting = np.flatnonzero(self._autoreset)
        rewards = np.zeros(b)
        terminated = np.zeros(b, dtype=bool)
        truncated = np.zeros(b, dtype=bool)
        batch = None
        if len(resetting) < b:
            acting = None if not len(resetting) else np.flatnonzero(~self._autoreset)
            batch = self.world.step(acts if acting is None else acts[acting], acting)
            rewards[batch.rows] = batch.reward
            terminated[batch.rows] = batch.terminated
            truncated[batch.rows] = batch.truncated
        self._start_episodes(resetting)
        self._autoreset = terminated | truncated
        return self.world.observe(), rewards, terminated, truncated, self._infos(batch, resetting)

    # ------------------------------------------------------------------ helpers

    def _start_episodes(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        streams = self.world.streams
        profiles = [draw_profile(self.population, self.catalog, streams[r]) for r in rows.tolist()]
        self.world.reset(rows, profiles, np.zeros(len(rows)))
        self._user_ids[rows] = [p.user_id for p in profiles]
        self._segments[rows] = [p.segment for p in profiles]

    def _infos(self, batch: StepBatch | None, resetting: np.ndarray) -> dict[str, Any]:
        """Gymnasium's vector info: arrays over all users plus `_key` masks of the users each key covers."""
        b, w = self.num_envs, self.world
        everyone = np.ones(b, dtype=bool)
        info: dict[str, Any] = {
            "user_id": self._user_ids.copy(), "_user_id": everyone,
            "segment": self._segments.copy(), "_segment": everyone,
        }
        clock = {"day": np.floor(w.now).astype(np.int64), "session": w.session.copy(), "turn": w.turn.copy(),
                 "step": w.steps.copy(), "time_days": w.now.copy()}
        if batch is not None:
            rows = batch.rows
            for key in clock:  # users that stepped report the clock of the turn they played
                clock[key][rows] = getattr(batch, key)
            stepped = np.zeros(b, dtype=bool)
            stepped[rows] = True
            everyone_stepped = len(rows) == b  # rows are distinct: the scatter below writes every entry
            for key, attr in _STEP_KEYS.items():
                value = getattr(batch, attr)
                if everyone_stepped:  # no filler to write first: the usual step, no user autoresetting
                    full = np.empty((b, *value.shape[1:]), dtype=value.dtype)
                else:
                    full = np.zeros((b, *value.shape[1:]), dtype=value.dtype)
                    if value.dtype.kind == "f":  # nan: nothing to report for that user
                        full[:] = np.nan
                full[rows] = value
                info[key], info[f"_{key}"] = full, stepped
            info["churned"], info["_churned"] = np.isinf(info["return_gap_days"]), stepped
            text, intent = np.full(b, None, dtype=object), np.full(b, None, dtype=object)
            structured = self.config.instruction_channel == "structured"
            # Only the few rows with an instruction (or leaving) are visited, by their positions in Python
            # ints: a loop over every row, or numpy scalars as indices, cost more than the rest of the infos.
            given = [(j, instruction) for j, instruction in enumerate(batch.instructions) if instruction is not None]
            for (_, instruction), row in zip(given, rows[[j for j, _ in given]].tolist()):
                text[row] = w.shown_instruction(instruction)
                intent[row] = intent_dict(instruction.intent) if structured else None
            info["instruction"], info["_instruction"] = text, stepped
            info["instruction_intent"], info["_instruction_intent"] = intent, stepped
            said = {key: np.full(b, None, dtype=object) for key in ("exit_reason", "exit_text", "interview_score",
                                                                      "interview")}
            leaving = np.flatnonzero(batch.left)  # reasons and interviews come only with leaving
            exit_reasons, interviews = batch.exit_reasons, batch.interviews
            for j, row in zip(leaving.tolist(), rows[leaving].tolist()):
                exit_reason = exit_reasons[j] if exit_reasons is not None else None  # `batch.exit_reason(j)`: j left
                interview = interviews[j] if interviews is not None else None
                if exit_reason is not None:
                    said["exit_reason"][row], said["exit_text"][row] = exit_reason.kind, exit_reason.text
                if interview is not None:
                    said["interview_score"][row], said["interview"][row] = interview.score, interview.text
            for key, values in said.items():
                info[key], info[f"_{key}"] = values, stepped
            ended = np.zeros(b, dtype=bool)
            ended[rows] = batch.terminated | batch.truncated
            if ended.any():  # their state still holds the episode: it is replaced on the next step
                stats = {s: np.zeros(b) for s in _STATS}
                for r in np.flatnonzero(ended).tolist():
                    episode = w.episode_stats(r)
                    for s in _STATS:
                        stats[s][r] = episode[s]
                info["episode_stats"], info["_episode_stats"] = stats, ended
        for key, value in clock.items():
            info[key], info[f"_{key}"] = value, everyone
        return info


def _per_user_seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    """Gymnasium's vector seeding: an int seeds user i with `seed + i`; a list gives each its own."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    if isinstance(seed, (list, tuple)) and len(seed) == n:
        return list(seed)
    raise ConfigError(f"seed must be None, an int or a list of {n} seeds (one per user), got {seed!r}")
