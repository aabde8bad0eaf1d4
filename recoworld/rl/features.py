"""Observation wrappers that make `RecoWorld-v0` learnable by generic RL libraries.

The raw observation is a `Dict` of ~2,000 numbers (50 candidates x 35 features plus
history). A generic MLP policy would have to discover, from scratch, that what matters
about a candidate is how it relates to *this* user's history: a bilinear interaction that
costs far more samples than a few minutes of PPO can afford. `UserRelativeObservation`
computes those relations once, in the env, and hands the policy a small vector:

Per candidate (C rows of `N_CANDIDATE_FEATURES`, candidate-major):

| column | meaning                                                          |
|--------|------------------------------------------------------------------|
| 0      | mean cosine similarity to history items the user engaged with    |
| 1      | mean cosine similarity to history items the user skipped         |
| 2      | max cosine similarity to any history item (repetition)           |
| 3      | cosine similarity to the last instruction's direction (0 if none) |
| 4-6    | quality, log-duration, log-popularity (as in `candidate_features`) |
| 7      | available (the env's `candidate_mask`)                           |

Global (`N_GLOBAL_FEATURES`): the instruction flags [present, more, less, different],
the shares of skip/click/like/share/padding in the history, and the clock squashed to
[0, 1) by tanh (day / 7, session / 10, turn / 10, days since the last session). Nothing
depends on the horizon, so a policy can be evaluated on a longer horizon than it trained on.

With `action_mask=True` (default) the observation is
`Dict(action_mask=Box(0, 1, (K * C,)), observations=Box(...))`, the format of RLlib's
`ActionMaskingTorchRLModule`: the candidate mask is repeated once per slate slot, because
a `MultiDiscrete([C] * K)` action's logits are the K slots' logits concatenated.
Already-consumed candidates then can never be sampled while at least one is available.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from recoworld.catalog.features import FeatureLayout
from recoworld.errors import ConfigError

N_CANDIDATE_FEATURES = 8
N_GLOBAL_FEATURES = 4 + 5 + 4


def user_relative_features(observation: dict[str, np.ndarray]) -> np.ndarray:
    """The flat float32 vector `UserRelativeObservation` shows the policy (see the module table)."""
    cand = observation["candidate_features"]
    layout = FeatureLayout.from_width(cand.shape[1])
    emb = cand[:, layout.embedding]
    reactions = observation["history_reactions"]
    sims = emb @ observation["history_features"][:, layout.embedding].T  # (C, H); padding rows are zeros
    engaged, skipped, seen = reactions >= 1, reactions == 0, reactions >= 0
    per_candidate = np.column_stack(
        [
            _masked_mean(sims, engaged),
            _masked_mean(sims, skipped),
            sims[:, seen].max(axis=1) if seen.any() else np.zeros(len(emb), np.float32),
            emb @ observation["instruction"][4:],
            cand[:, layout.scalars],
            observation["candidate_mask"],
        ]
    )
    h = max(len(reactions), 1)
    shares = np.bincount(reactions.astype(np.int64) + 1, minlength=5)[[1, 2, 3, 4, 0]] / h
    day, session, turn, gap = observation["context"]
    clock = np.tanh([day / 7.0, session / 10.0, turn / 10.0, gap])
    vec = np.concatenate([per_candidate.ravel(), observation["instruction"][:4], shares, clock])
    return np.clip(vec, -1.0, 1.0).astype(np.float32)


def _masked_mean(sims: np.ndarray, rows: np.ndarray) -> np.ndarray:
    n = int(rows.sum())
    return sims[:, rows].sum(axis=1) / n if n else np.zeros(len(sims), np.float32)


def slate_action_mask(candidate_mask: np.ndarray, slate_size: int) -> np.ndarray:
    """(K * C,) float32: the candidate mask once per slot, matching `MultiDiscrete([C] * K)` logits."""
    return np.tile(candidate_mask.astype(np.float32), slate_size)


class UserRelativeObservation(gym.ObservationWrapper):
    """Replace the raw `Dict` observation by compact user-relative features (see module docstring).

    Args:
        env: a `RecoWorld-v0` env (or a wrapper around one) with the standard `Dict` observation.
        action_mask: also expose a per-slot action mask, as `Dict(action_mask, observations)`.

    Example:
        >>> import gymnasium as gym
        >>> env = UserRelativeObservation(gym.make("RecoWorld-v0", slate_size=3, n_candidates=10))
        >>> obs, info = env.reset(seed=0)
        >>> obs["action_mask"].shape, obs["observations"].shape
        ((30,), (93,))
    """

    def __init__(self, env: gym.Env[Any, Any], action_mask: bool = True) -> None:
        super().__init__(env)
        raw = env.observation_space
        if not isinstance(raw, spaces.Dict) or "candidate_features" not in raw.spaces:
            raise ConfigError(
                f"UserRelativeObservation expects RecoWorld's Dict observation, got {raw}"
            )
        if not isinstance(env.action_space, spaces.MultiDiscrete):
            raise ConfigError(f"UserRelativeObservation expects a MultiDiscrete slate action, got {env.action_space}")
        self.n_candidates = int(raw["candidate_features"].shape[0])
        self.slate_size = int(env.action_space.shape[0])
        self.action_mask = action_mask
        n_features = self.n_candidates * N_CANDIDATE_FEATURES + N_GLOBAL_FEATURES
        features = spaces.Box(-1.0, 1.0, (n_features,), np.float32)
        self.observation_space = (
            spaces.Dict(
                {
                    "action_mask": spaces.Box(0.0, 1.0, (self.slate_size * self.n_candidates,), np.float32),
                    "observations": features,
                }
            )
            if action_mask
            else features
        )

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        features = user_relative_features(observation)
        if not self.action_mask:
            return features
        return {
            "action_mask": slate_action_mask(observation["candidate_mask"], self.slate_size),
            "observations": features,
        }
