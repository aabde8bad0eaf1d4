"""What a platform sees and how it is paid: the observation, action and reward shared by every env.

`RecoWorld-v0` (one user), the vector env (B independent users) and the population world
(many users on one platform) show the recommender the same observation layout, take the
same slate action and pay the same engagement reward, so a policy trained in one runs in
the others. This module is that shared contract: the spaces, the batched observation,
the slate check and the reward, written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from gymnasium import spaces
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from recoworld.catalog import Catalog
from recoworld.config import RewardConfig, WorldConfig
from recoworld.envs.world_kernels import pack_consumed, replace_duplicates
from recoworld.errors import InvalidActionError
from recoworld.mindset import UNSEEN, Instruction, ReactionType
from recoworld.simulators.instructions import intent_direction

INTENTS = ("more", "less", "different")
#: Dwell is in minutes, the world clock in days.
MINUTES_PER_DAY = 1440.0
# Plain ints: comparing arrays with IntEnum members costs an enum lookup per use in the hot loop.
_LEVELS = np.array([int(ReactionType.CLICK), int(ReactionType.LIKE), int(ReactionType.SHARE)])
_LEVEL_LIST = _LEVELS.tolist()


def observation_space(catalog: Catalog, cfg: WorldConfig) -> spaces.Dict:
    """The `Dict` space of one user's observation (see the `RecoWorld-v0` manual for the table)."""
    n, c, h, d = len(catalog), cfg.n_candidates, cfg.history_len, catalog.embedding_dim
    f = catalog.feature_layout.width
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


def build_observations(
    features: np.ndarray, rows: np.ndarray, candidates: np.ndarray, consumed: np.ndarray, history_ids: np.ndarray,
    history_reactions: np.ndarray, history_dwell: np.ndarray, instruction: np.ndarray, context: tuple[np.ndarray, ...],
) -> dict[str, np.ndarray]:
    """The observations of users `rows`, every key batched on axis 0, read from the world's (B, ...)
    state arrays; `features` is the (N, F) table the platform shows, `consumed` the (B, N) bools
    or their bit-packed copy (`world_kernels.pack_consumed`, as the world keeps it), `context` the
    (B,) clock columns (time in days, session, turn, gap before the session). Every array is freshly
    allocated, so views of one row are safe to keep."""
    if consumed.dtype == np.bool_:
        consumed = pack_consumed(consumed)
    features = np.ascontiguousarray(features, dtype=np.float32)  # a no-op for the world's table
    arrays = _fill_observations(features, rows, candidates, consumed, history_ids, history_reactions, history_dwell,
                                instruction, *context)
    return dict(zip(OBSERVATION_KEYS, arrays))


#: The observation's keys, in the order `build_observations` gives them.
OBSERVATION_KEYS = ("candidate_ids", "candidate_features", "candidate_mask", "history_ids", "history_features",
                     "history_reactions", "history_dwell", "instruction", "context")


#: Items `_copy_block` moves: 64 bytes of float32, one 512-bit register or two 256-bit ones. A constant, so
#: the loop over a row's blocks compiles with a known step (a block size read from the array costs a third).
_BLOCK_ITEMS = 16


def _copy_block_typed(typingctx: Any, dst: Any, dst_at: Any, src: Any, src_at: Any) -> Any:
    """Copy `_BLOCK_ITEMS` items from item `src_at` of the C-contiguous `src` to item `dst_at` of `dst`.

    An element loop over a feature row compiles to a vector loop guarded by a check that the two
    arrays do not overlap and followed by a scalar tail, all paid per row of 35 floats; a memcpy of
    a constant size promises no overlap and compiles to one load and one store."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype
            and dst.layout == "C" and src.layout == "C"):
        return None
    sig = types.void(dst, dst_at, src, src_at)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        dst_v, dst_at_v, src_v, src_at_v = args
        dst_data = context.make_array(signature.args[0])(context, builder, dst_v).data
        src_data = context.make_array(signature.args[2])(context, builder, src_v).data
        itemsize = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memcpy(builder, builder.gep(dst_data, [dst_at_v]), builder.gep(src_data, [src_at_v]),
                           context.get_constant(types.intp, _BLOCK_ITEMS), itemsize)
        return context.get_dummy_value()

    return sig, codegen


_copy_block: Any = intrinsic(_copy_block_typed)


@numba.njit(nogil=True, cache=True, inline="always")
def _copy_row(dst: np.ndarray, dst_at: int, src: np.ndarray, src_at: int, width: int) -> None:
    """`dst[dst_at:dst_at + width] = src[src_at:src_at + width]` (flat C-contiguous arrays of one dtype)
    as whole blocks, the last one overlapping the one before it rather than leaving a tail."""
    block = _BLOCK_ITEMS
    if width < block:
        for e in range(width):
            dst[dst_at + e] = src[src_at + e]
        return
    for e in range(0, width - block, block):
        _copy_block(dst, dst_at + e, src, src_at + e)
    _copy_block(dst, dst_at + width - block, src, src_at + width - block)


@numba.njit(nogil=True, cache=True)
def _fill_observations(
    features: np.ndarray, rows: np.ndarray, candidates: np.ndarray, consumed: np.ndarray, history_ids: np.ndarray,
    history_reactions: np.ndarray, history_dwell: np.ndarray, instruction: np.ndarray, now: np.ndarray,
    session: np.ndarray, turn: np.ndarray, gap: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The keys of `OBSERVATION_KEYS`, gathered in separate passes (history padding, id -1, has zero
    features); `features` is C-contiguous float32. One pass per kind of gather, not one pass over users
    doing all of them: the feature copies, most of the bytes, then only read the ids just written and
    the feature table, and run a third faster in the envs (issue 32; same values either way)."""
    r, c, h, f = rows.shape[0], candidates.shape[1], history_ids.shape[1], features.shape[1]
    cand_ids = np.empty((r, c), dtype=np.int64)
    cand_feat = np.empty((r, c, f), dtype=np.float32)
    cand_mask = np.empty((r, c), dtype=np.int8)
    hist_ids = np.empty((r, h), dtype=np.int64)
    hist_feat = np.empty((r, h, f), dtype=np.float32)
    hist_reactions = np.empty((r, h), dtype=np.int64)
    hist_dwell = np.empty((r, h), dtype=np.float32)
    instr = np.empty((r, instruction.shape[1]), dtype=np.float32)
    context = np.empty((r, 4), dtype=np.float32)
    for j in range(r):
        u = rows[j]
        for i in range(c):
            item = candidates[u, i]
            cand_ids[j, i] = item
            cand_mask[j, i] = 1 - ((consumed[u, item >> 3] >> (item & 7)) & 1)  # bit-packed
        for i in range(h):
            hist_ids[j, i] = history_ids[u, i]
            hist_reactions[j, i] = history_reactions[u, i]
            hist_dwell[j, i] = history_dwell[u, i]
        for e in range(instruction.shape[1]):
            instr[j, e] = instruction[u, e]
        context[j, 0] = np.float32(now[u])
        context[j, 1] = np.float32(np.float64(session[u]))
        context[j, 2] = np.float32(np.float64(turn[u]))
        context[j, 3] = np.float32(gap[u])
    table = features.reshape(features.size)
    ids = cand_ids.reshape(r * c)
    out = cand_feat.reshape(r * c * f)
    for k in range(r * c):
        _copy_row(out, k * f, table, ids[k] * f, f)
    ids = hist_ids.reshape(r * h)
    out = hist_feat.reshape(r * h * f)
    for k in range(r * h):
        if ids[k] >= 0:
            _copy_row(out, k * f, table, ids[k] * f, f)
        else:  # padding: zero features (written here, not by a zero-filled allocation of every row)
            for e in range(f):
                out[k * f + e] = 0.0
    return cand_ids, cand_feat, cand_mask, hist_ids, hist_feat, hist_reactions, hist_dwell, instr, context


def instruction_vector(instruction: Instruction, catalog: Catalog) -> np.ndarray:
    """[present, more, less, different] + the intent's direction in item space."""
    vec = np.zeros(4 + catalog.embedding_dim, dtype=np.float32)
    vec[0] = 1.0
    vec[1 + INTENTS.index(instruction.intent.kind)] = 1.0
    vec[4:] = intent_direction(instruction.intent, catalog)
    return vec


def slate_positions(
    actions: np.ndarray, cfg: WorldConfig, label: Callable[[int], str],
) -> tuple[np.ndarray, np.ndarray]:
    """Validate R slate actions (R, K); returns candidate positions and duplicates replaced per row.

    `label(j)` names row j in errors (`"action"` in the single-user env, `"actions[3]"` in
    the vector env); it is called only when an error is raised, so a batch of many users pays
    nothing for its names. With `on_duplicate="replace"` a repeated candidate is replaced by
    the first unused candidate in retrieval order; with `"error"` a repeat raises
    `InvalidActionError`.
    """
    c = cfg.n_candidates
    act = np.asarray(actions)
    if act.dtype.kind not in "iu":
        whole = np.isfinite(act) & (act == np.round(act)) if act.dtype.kind == "f" else np.zeros(act.shape, bool)
        if act.dtype.kind != "f" and act.size:
            raise InvalidActionError(f"{label(0)} holds {act.dtype} values {act[0].tolist()}; give integer "
                                     "candidate positions")
        if not whole.all():
            j, i = (int(x[0]) for x in np.nonzero(~whole))
            raise InvalidActionError(f"{label(j)}[{i}]={act[j, i].item()!r} is not an integer candidate position "
                                     f"(the slate: {act[j].tolist()})")
        act = act.astype(np.int64)
    bad = (act < 0) | (act >= c)
    if bad.any():
        j, i = (int(x[0]) for x in np.nonzero(bad))
        raise InvalidActionError(
            f"{label(j)}[{i}]={int(act[j, i])} is out of range: candidate positions are 0..{c - 1} "
            f"(n_candidates={c})"
        )
    out = np.array(act, dtype=np.int64)  # a copy: rows are fixed in place below
    if cfg.on_duplicate == "error":
        ordered = np.sort(out, axis=1)
        repeats = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if len(repeats):
            j = int(repeats[0])
            listed = out[j].tolist()
            dup = next(i for i, pos in enumerate(listed) if pos in listed[:i])
            raise InvalidActionError(
                f"{label(j)}[{dup}]={listed[dup]} repeats an earlier slot; a slate shows distinct items "
                "(or make the env with on_duplicate='replace')"
            )
        return out, np.zeros(len(out), dtype=np.int64)
    return out, replace_duplicates(out, c)


def engagement_reward(reward: RewardConfig, reactions: np.ndarray, dwell: np.ndarray) -> np.ndarray:
    """Per-turn engagement over the last axis: dwell minutes plus clicks, likes and shares.

    Reactions are ordinal (a share is also a like and a click), so each level counts the
    reactions at or above it. Works for one slate (K,) or a batch (B, K).
    """
    if reactions.ndim == 2 and len(reactions) >= 64:  # a batch: one count per level, 4x cheaper than (R, K, 3)
        at_least = np.stack([np.count_nonzero(reactions >= level, axis=-1) for level in _LEVEL_LIST], axis=-1)
    else:
        at_least = (reactions[..., None] >= _LEVELS).sum(axis=-2)  # (..., 3): clicks, likes, shares
    weights = np.array([reward.click, reward.like, reward.share])
    return reward.dwell * dwell.sum(axis=-1).astype(np.float64) + at_least @ weights


def return_reward(reward: RewardConfig, gap_days: np.ndarray) -> np.ndarray:
    """The session-end term: a bonus that decays with the gap, or the churn penalty (gap = inf)."""
    gap = np.asarray(gap_days, dtype=np.float64)
    return np.where(np.isinf(gap), reward.churn_penalty, reward.return_bonus * np.exp(-gap / reward.return_tau_days))
