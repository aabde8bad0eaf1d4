"""What a platform sees and how it is paid: the observation, action and reward shared by every env.

`RecoWorld-v0` (one user) and the population world (many users on one platform) show
the recommender the same observation layout, take the same slate action and pay the
same engagement reward, so a policy trained in one runs in the other. This module is
that shared contract: the spaces, the per-user history buffer, the slate check and
the reward, written once.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from recoworld.catalog import N_SCALAR_FEATURES, Catalog
from recoworld.config import RewardConfig, WorldConfig
from recoworld.errors import InvalidActionError
from recoworld.mindset import UNSEEN, Instruction, ReactionType
from recoworld.simulators.instructions import intent_direction

INTENTS = ("more", "less", "different")
#: Dwell is in minutes, the world clock in days.
MINUTES_PER_DAY = 1440.0
# Plain ints: comparing arrays with IntEnum members costs an enum lookup per use in the hot loop.
_LEVELS = np.array([int(ReactionType.CLICK), int(ReactionType.LIKE), int(ReactionType.SHARE)])


def observation_space(catalog: Catalog, cfg: WorldConfig) -> spaces.Dict:
    """The `Dict` space of one user's observation (see the `RecoWorld-v0` manual for the table)."""
    n, c, h, d = len(catalog), cfg.n_candidates, cfg.history_len, catalog.embedding_dim
    f = d + N_SCALAR_FEATURES
    max_dwell = max(float(catalog.duration_min.max()), cfg.dynamics.browse_minutes)
    return spaces.Dict(
        {
            "candidate_ids": spaces.Box(0, n - 1, (c,), np.int64),
            "candidate_features": spaces.Box(-1.0, 1.0, (c, f), np.float32),
            "candidate_mask": spaces.Box(0, 1, (c,), np.int8),
            "history_ids": spaces.Box(-1, n - 1, (h,), np.int64),
            "history_features": spaces.Box(-1.0, 1.0, (h, f), np.float32),
            "history_reactions": spaces.Box(UNSEEN, int(ReactionType.SHARE), (h,), np.int64),
            "history_dwell": spaces.Box(0.0, max_dwell, (h,), np.float32),
            "instruction": spaces.Box(-1.0, 1.0, (4 + d,), np.float32),
            "context": spaces.Box(
                np.zeros(4, np.float32),
                np.array([cfg.horizon_days, cfg.max_steps, cfg.max_steps, cfg.horizon_days], np.float32),
            ),
        }
    )


def action_space(cfg: WorldConfig) -> spaces.MultiDiscrete:
    """Slot k of the slate shows candidate `action[k]`."""
    return spaces.MultiDiscrete(np.full(cfg.slate_size, cfg.n_candidates, dtype=np.int64))


class History:
    """The platform log of one user: the last `history_len` reviewed items and reactions."""

    def __init__(self, history_len: int) -> None:
        self.ids = np.full(history_len, -1, dtype=np.int64)
        self.reactions = np.full(history_len, UNSEEN, dtype=np.int64)
        self.dwell = np.zeros(history_len, dtype=np.float32)

    def record(self, slate: np.ndarray, reactions: np.ndarray, dwell: np.ndarray) -> None:
        """Append the reviewed part of a slate (positions after the user left are not logged)."""
        seen = reactions != UNSEEN
        h = len(self.ids)
        self.ids = np.concatenate([self.ids, slate[seen]])[-h:]
        self.reactions = np.concatenate([self.reactions, reactions[seen]])[-h:]
        self.dwell = np.concatenate([self.dwell, dwell[seen]])[-h:]


def build_observation(
    features: np.ndarray,
    candidates: np.ndarray,
    consumed: np.ndarray,
    history: History,
    instruction: np.ndarray,
    context: np.ndarray,
) -> dict[str, np.ndarray]:
    """One user's observation. `features` is the (N, F) item feature table the platform shows."""
    hist = history.ids
    hist_feat = features[np.maximum(hist, 0)]
    hist_feat[hist < 0] = 0.0  # padding
    return {
        "candidate_ids": candidates.astype(np.int64),
        "candidate_features": features[candidates],
        "candidate_mask": (~consumed[candidates]).astype(np.int8),
        "history_ids": hist.copy(),
        "history_features": hist_feat,
        "history_reactions": history.reactions.copy(),
        "history_dwell": history.dwell.copy(),
        "instruction": instruction.copy(),
        "context": context.astype(np.float32),
    }


def instruction_vector(instruction: Instruction, catalog: Catalog) -> np.ndarray:
    """[present, more, less, different] + the intent's direction in item space."""
    vec = np.zeros(4 + catalog.embedding_dim, dtype=np.float32)
    vec[0] = 1.0
    vec[1 + INTENTS.index(instruction.intent.kind)] = 1.0
    vec[4:] = intent_direction(instruction.intent, catalog)
    return vec


def slate_positions(action: np.ndarray, cfg: WorldConfig) -> tuple[np.ndarray, int]:
    """Validate a slate action; returns candidate positions and how many duplicates were replaced.

    With `on_duplicate="replace"` a repeated candidate is replaced by the first unused
    candidate in retrieval order; with `"error"` a repeat raises `InvalidActionError`.
    """
    k, c = cfg.slate_size, cfg.n_candidates
    act = np.asarray(action)
    if act.shape != (k,):
        raise InvalidActionError(f"action must have shape ({k},) (slate_size), got shape {act.shape}")
    if act.dtype.kind not in "iu":
        if act.dtype.kind != "f" or not np.all(act == np.round(act)):
            raise InvalidActionError(f"action must hold integer candidate positions, got {act!r}")
        act = act.astype(np.int64)
    if act.min() < 0 or act.max() >= c:
        i = int(np.flatnonzero((act < 0) | (act >= c))[0])
        raise InvalidActionError(
            f"action[{i}]={int(act[i])} is out of range: candidate positions are 0..{c - 1} (n_candidates={c})"
        )
    slots = act.tolist()
    if len(set(slots)) == k:
        return act.astype(np.int64), 0
    if cfg.on_duplicate == "error":
        dup = next(i for i, pos in enumerate(slots) if pos in slots[:i])
        raise InvalidActionError(
            f"action[{dup}]={int(act[dup])} repeats an earlier slot; a slate shows distinct items "
            "(or make the env with on_duplicate='replace')"
        )
    used = np.zeros(c, dtype=bool)
    out = act.astype(np.int64).copy()
    free = iter(range(c))
    replaced = 0
    for slot, pos in enumerate(out):
        if used[pos]:
            pos = next(p for p in free if not used[p] and p not in out[slot + 1 :])
            out[slot] = pos
            replaced += 1
        used[pos] = True
    return out, replaced


def engagement_reward(reward: RewardConfig, reactions: np.ndarray, dwell: np.ndarray) -> np.ndarray:
    """Per-turn engagement over the last axis: dwell minutes plus clicks, likes and shares.

    Reactions are ordinal (a share is also a like and a click), so each level counts the
    reactions at or above it. Works for one slate (K,) or a batch (B, K).
    """
    at_least = (reactions[..., None] >= _LEVELS).sum(axis=-2)  # (..., 3): clicks, likes, shares
    weights = np.array([reward.click, reward.like, reward.share])
    return reward.dwell * dwell.sum(axis=-1).astype(np.float64) + at_least @ weights


def return_reward(reward: RewardConfig, gap_days: np.ndarray) -> np.ndarray:
    """The session-end term: a bonus that decays with the gap, or the churn penalty (gap = inf)."""
    gap = np.asarray(gap_days, dtype=np.float64)
    return np.where(np.isinf(gap), reward.churn_penalty, reward.return_bonus * np.exp(-gap / reward.return_tau_days))
