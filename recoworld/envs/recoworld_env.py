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
| `instruction`        | (4+D,) | [present, more, less, different] + direction in item space |
| `context`            | (4,)   | day, session index, turn in session, days since last session |

The instruction's text is in `info["instruction"]`. The mindset is hidden; it appears
in `info["mindset"]` only when the env is made with `expose_mindset=True`.

## Rewards
Per turn: `dwell * minutes + click * clicks + like * likes + share * shares`. When the
user leaves, add `return_bonus * exp(-gap_days / return_tau_days)`, or `churn_penalty`
when the user never returns. Weights live in `RewardConfig` (`reward=` override).

## Episode End
Terminates when the user churns or the next session falls beyond `horizon_days`;
truncates after `max_steps` turns.

## Arguments
`gym.make("RecoWorld-v0", slate_size=10, n_candidates=50, horizon_days=30, ...)`: any
`WorldConfig` field as a keyword (nested ones as dicts, e.g. `reward={"click": 1}`),
`user_backend="llm"` with `llm={...}` (an `LLMConfig`) makes the user an `LLMUser`;
plus `catalog=`, `population=` (a `PopulationSpec` or a list of `UserProfile`) and
`user_simulator=` objects. `reset(options={"profile": UserProfile})` fixes the user.

## Version History
* v0: initial release.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import WorldConfig, build
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
from recoworld.errors import ConfigError, ResetNeeded
from recoworld.mindset import REACTION_NAMES, Instruction
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.retrieval import CandidateRetriever
from recoworld.simulators.base import SlateFeedback, UserSimulator
from recoworld.simulators.parametric import ParametricUser


class RecoWorldEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        config: WorldConfig | dict[str, Any] | None = None,
        *,
        catalog: Catalog | dict[str, Any] | None = None,
        population: PopulationSpec | list[UserProfile] | None = None,
        user_simulator: UserSimulator | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if catalog is not None and not isinstance(catalog, Catalog):
            # `catalog={...}` from gym.make or an RLlib env_config means the catalog *config*.
            overrides["catalog"] = catalog
            catalog = None
        self.config = cfg = build(WorldConfig, "RecoWorld config", config, **overrides)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.catalog = catalog if catalog is not None else cached_catalog(cfg.catalog)
        if cfg.n_candidates > len(self.catalog):
            raise ConfigError(
                f"n_candidates={cfg.n_candidates} exceeds the catalog size {len(self.catalog)}"
            )
        if isinstance(population, list) and not population:
            raise ConfigError("population: an empty list of profiles; pass at least one UserProfile")
        if population is not None and not (isinstance(population, PopulationSpec) or (
                isinstance(population, list) and all(isinstance(p, UserProfile) for p in population))):
            raise ConfigError(f"population must be a PopulationSpec or a list of UserProfile, "
                              f"got {type(population).__name__}")
        self.population = population if population is not None else PopulationSpec.default()
        if user_simulator is not None:
            self.user = user_simulator
        elif cfg.user_backend == "llm":
            from recoworld.simulators.llm_user import LLMUser

            self.user = LLMUser.from_world(self.catalog, cfg)
        else:
            self.user = ParametricUser.from_configs(self.catalog, cfg.choice, cfg.dynamics, cfg.returns)
        self.retriever = CandidateRetriever(self.catalog, cfg.retrieval, cfg.n_candidates)

        self._features = self.catalog.item_features
        self.observation_space = observation_space(self.catalog, cfg)
        self.action_space = action_space(cfg)
        self._needs_reset = True

    # ------------------------------------------------------------------ Gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"options must be a dict such as {{'profile': UserProfile(...)}}, "
                              f"got {type(options).__name__}")
        options = options or {}
        profile = options.get("profile")
        if profile is None:
            profile = self._draw_profile()
        elif not isinstance(profile, UserProfile):
            raise ConfigError(f"options['profile'] must be a UserProfile, got {type(profile).__name__}")
        self.profile = profile
        cfg = self.config
        self._history = History(cfg.history_len)
        self._consumed = np.zeros(len(self.catalog), dtype=bool)
        self._instruction: Instruction | None = None
        self._instruction_vec = np.zeros(self.observation_space["instruction"].shape, np.float32)
        self._now = 0.0
        self._session = 0
        self._steps = 0
        self._days_active: set[int] = set()
        self._last_session_start = 0.0
        self.user.reset(profile, self.np_random)
        self._open_session(gap=0.0)
        self._needs_reset = False
        self._last_render = ""
        return self._observation(), {"user_id": profile.user_id, "segment": profile.segment,
                                     **self._clock_info()}

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded("call reset() before step(), and again after an episode ends")
        positions, replaced = slate_positions(action, self.config)
        slate = self._candidates[positions]
        fb = self.user.review(slate, self.np_random)
        self._steps += 1
        self._turn += 1
        self._record(slate, fb)
        reward = float(engagement_reward(self.config.reward, fb.reactions, fb.dwell_min))
        self._now += float(fb.dwell_min.sum()) / MINUTES_PER_DAY
        info: dict[str, Any] = {
            "slate": slate,
            "reactions": fb.reactions,
            "dwell_min": fb.dwell_min,
            "instruction": fb.instruction.text if fb.instruction else None,
            "instruction_intent": fb.instruction.intent.model_dump() if fb.instruction else {},
            "left": fb.left,
            "duplicates_replaced": replaced,
            "engagement_reward": reward,
            "return_gap_days": None,
            "churned": False,
            "llm_fallback": fb.fallback,
            **self._clock_info(),  # of the turn just played, even if a new session opens below
        }
        if fb.reasons:
            info["reasons"] = fb.reasons
        if fb.instruction is not None:
            self._instruction = fb.instruction
            self._instruction_vec = instruction_vector(fb.instruction, self.catalog)
        terminated = False
        if fb.left:
            gap = self.user.end_session(self._now, self.np_random)
            reward += float(return_reward(self.config.reward, np.inf if gap is None else gap))
            if gap is None:
                info["churned"] = True
                terminated = True
            else:
                info["return_gap_days"] = gap
                if self._now + gap >= self.config.horizon_days:
                    terminated = True
                else:
                    self._now += gap
                    self._open_session(gap)
        else:
            self._candidates = self.retriever.retrieve(self._history.ids, self._history.reactions, self.np_random)
        truncated = not terminated and self._steps >= self.config.max_steps
        if terminated or truncated:
            self._needs_reset = True
            info["episode_stats"] = self.episode_stats()
        if self.config.expose_mindset:
            info["mindset"] = self.user.mindset().model_dump()
        if self.render_mode == "ansi":
            self._last_render = self._describe(slate, fb)
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> str | None:
        return self._last_render if self.render_mode == "ansi" else None

    # ------------------------------------------------------------------ helpers

    def episode_stats(self) -> dict[str, float]:
        """Retention is the share of days in the horizon on which the user had a session."""
        horizon_days = int(np.ceil(self.config.horizon_days))
        return {
            "sessions": float(self._session),
            "days_active": float(len(self._days_active)),
            "retention": len(self._days_active) / horizon_days,
            "turns": float(self._steps),
        }

    def _draw_profile(self) -> UserProfile:
        if isinstance(self.population, list):
            return self.population[int(self.np_random.integers(len(self.population)))]
        return sample_population(self.population, self.catalog, self.np_random, n=1)[0]

    def _open_session(self, gap: float) -> None:
        self._session += 1
        self._turn = 0
        self._gap = gap
        self._last_session_start = self._now
        self._days_active.add(int(np.floor(self._now)))
        self.user.start_session(self._now, self.np_random)
        self._candidates = self.retriever.retrieve(self._history.ids, self._history.reactions, self.np_random)

    def _record(self, slate: np.ndarray, fb: SlateFeedback) -> None:
        self._history.record(slate, fb.reactions, fb.dwell_min)
        self._consumed[slate[fb.reactions > 0]] = True

    def _clock_info(self) -> dict[str, Any]:
        return {"day": math.floor(self._now), "session": self._session, "turn": self._turn,
                "step": self._steps, "time_days": self._now}

    def _observation(self) -> dict[str, np.ndarray]:
        context = np.array([self._now, self._session, self._turn, self._gap], dtype=np.float32)
        return build_observation(
            self._features, self._candidates, self._consumed, self._history, self._instruction_vec, context
        )

    def _describe(self, slate: np.ndarray, fb: SlateFeedback) -> str:
        lines = [f"day {int(self._now)} session {self._session} turn {self._turn}"]
        for item, r, w in zip(slate, fb.reactions, fb.dwell_min):
            lines.append(f"  {REACTION_NAMES[int(r)]:>6} {w:5.1f}m  {self.catalog.titles[item]}")
        if fb.instruction:
            lines.append(f'  user says: "{fb.instruction.text}"')
        if fb.left:
            lines.append("  user left the session")
        return "\n".join(lines)
