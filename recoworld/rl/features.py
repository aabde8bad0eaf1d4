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

`UserRelativeVectorObservation` is the same wrapper for a vector env (`RecoWorldVectorEnv`,
as `recoworld train`'s env runners use): one batched `user_relative_features` call over the
users' axis. Both wrappers and `RLlibRecommender` share that one implementation, and a
user's features are bit for bit the same alone as in a batch.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorObservationWrapper
from gymnasium.vector.utils import batch_space

from recoworld.catalog.features import FeatureLayout
from recoworld.errors import ConfigError

N_CANDIDATE_FEATURES = 8
N_GLOBAL_FEATURES = 4 + 5 + 4


def user_relative_features(observation: dict[str, np.ndarray]) -> np.ndarray:
    """The float32 features `UserRelativeObservation` shows the policy (see the module table).

    Takes one observation (`candidate_features` of shape (C, F)) and returns a flat vector,
    or a batch (B, C, F) and returns (B, n_features). The single case is the batch of one,
    so a user's features are bit for bit the same alone or in a vector env."""
    if observation["candidate_features"].ndim == 2:
        return user_relative_features({key: value[None] for key, value in observation.items()})[0]
    cand = observation["candidate_features"]  # (B, C, F)
    layout = FeatureLayout.from_width(cand.shape[-1])
    emb = cand[..., layout.embedding]
    reactions = observation["history_reactions"]  # (B, H)
    instruction = observation["instruction"]
    # (B, C, H); padding rows are zeros. Row by row the same BLAS product as one (C, D) @ (D, H).
    sims = emb @ observation["history_features"][..., layout.embedding].swapaxes(-1, -2)
    engaged, skipped, seen = reactions >= 1, reactions == 0, reactions >= 0
    repetition = np.where(seen[:, None, :], sims, -np.inf).max(axis=-1, initial=-np.inf)
    per_candidate = np.concatenate(
        [
            _masked_mean(sims, engaged)[..., None],
            _masked_mean(sims, skipped)[..., None],
            np.where(seen.any(axis=1)[:, None], repetition, 0.0).astype(np.float32)[..., None],
            (emb @ instruction[:, 4:, None]),
            cand[..., layout.scalars],
            observation["candidate_mask"][..., None].astype(np.float32),
        ],
        axis=-1,
    )  # (B, C, N_CANDIDATE_FEATURES)
    h = max(reactions.shape[1], 1)
    counts = (reactions[..., None] == _SHARE_ORDER).sum(axis=1)  # skip, click, like, share, padding
    shares = counts / h
    context = observation["context"]
    scale = np.array([7.0, 10.0, 10.0, 1.0], np.float32)
    clock = np.tanh(context / scale)
    vec = np.concatenate([per_candidate.reshape(len(cand), -1), instruction[:, :4], shares, clock], axis=1)
    return np.clip(vec, -1.0, 1.0).astype(np.float32)


#: History reaction codes in the order of the share features: skip, click, like, share, padding.
_SHARE_ORDER = np.array([0, 1, 2, 3, -1])


def _masked_mean(sims: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """(B, C) mean of `sims` (B, C, H) over each row's `selected` (B, H) history items, 0 for none.

    The sum runs one history item after another (a cumulative sum, unselected items adding
    exactly 0), the order the single-user version has always summed in."""
    total = np.cumsum(np.where(selected[:, None, :], sims, np.float32(0.0)), axis=-1)[..., -1]
    n = selected.sum(axis=1).astype(np.float32)[:, None]
    return np.divide(total, n, out=np.zeros_like(total), where=n > 0)


def slate_action_mask(candidate_mask: np.ndarray, slate_size: int) -> np.ndarray:
    """float32 (K * C,): the candidate mask (C,) once per slot, matching `MultiDiscrete([C] * K)`
    logits; a batch of masks (B, C) gives (B, K * C)."""
    return np.tile(candidate_mask.astype(np.float32), slate_size)


def user_relative_observation(
    observation: dict[str, np.ndarray], slate_size: int, action_mask: bool = True
) -> np.ndarray | dict[str, np.ndarray]:
    """What both wrappers show the policy for one raw observation or a batch of them."""
    features = user_relative_features(observation)
    if not action_mask:
        return features
    return {"action_mask": slate_action_mask(observation["candidate_mask"], slate_size), "observations": features}


def user_relative_space(
    raw: spaces.Space[Any], action: spaces.Space[Any], action_mask: bool = True
) -> tuple[spaces.Space[Any], int]:
    """The policy's (single-user) observation space for RecoWorld's `raw` Dict observation and
    slate `action` space, and the slate size."""
    if not isinstance(raw, spaces.Dict) or "candidate_features" not in raw.spaces:
        raise ConfigError(f"UserRelativeObservation expects RecoWorld's Dict observation, got {raw}")
    if not isinstance(action, spaces.MultiDiscrete):
        raise ConfigError(f"UserRelativeObservation expects a MultiDiscrete slate action, got {action}")
    n_candidates = int(raw["candidate_features"].shape[0])
    slate_size = int(action.shape[0])
    features = spaces.Box(-1.0, 1.0, (n_candidates * N_CANDIDATE_FEATURES + N_GLOBAL_FEATURES,), np.float32)
    if not action_mask:
        return features, slate_size
    mask = spaces.Box(0.0, 1.0, (slate_size * n_candidates,), np.float32)
    return spaces.Dict({"action_mask": mask, "observations": features}), slate_size


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
        self.observation_space, self.slate_size = user_relative_space(env.observation_space, env.action_space,
                                                                      action_mask)
        self.action_mask = action_mask

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        return user_relative_observation(observation, self.slate_size, self.action_mask)


class UserRelativeVectorObservation(VectorObservationWrapper):
    """`UserRelativeObservation` for a vector env (e.g. `RecoWorldVectorEnv`): the same features
    and mask for each user, computed for all users in one batched call.

    Example:
        >>> import gymnasium as gym
        >>> envs = UserRelativeVectorObservation(gym.make_vec(
        ...     "RecoWorld-v0", num_envs=4, vectorization_mode="vector_entry_point", slate_size=3, n_candidates=10))
        >>> obs, info = envs.reset(seed=0)
        >>> obs["action_mask"].shape, obs["observations"].shape
        ((4, 30), (4, 93))
    """

    def __init__(self, env: VectorEnv[Any, Any, Any], action_mask: bool = True) -> None:
        super().__init__(env)
        self.single_observation_space, self.slate_size = user_relative_space(
            env.single_observation_space, env.single_action_space, action_mask)
        self.observation_space = batch_space(self.single_observation_space, env.num_envs)
        self.action_mask = action_mask

    def observations(self, observations: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        return user_relative_observation(observations, self.slate_size, self.action_mask)
