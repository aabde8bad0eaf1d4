"""Compiled steps of a world turn (`recoworld.envs.world.World`), one user row at a time.

Each replaces a handful of numpy passes over (R, K) and (R, H) arrays, which cost more in
call overhead than in arithmetic when R is one user (`RecoWorld-v0`). Rows never read each
other, so a row's result does not depend on the batch around it.
"""

from __future__ import annotations

import numba
import numpy as np

from recoworld.mindset import UNSEEN


@numba.njit(nogil=True, cache=True)
def replace_duplicates(slots: np.ndarray, n_candidates: int) -> np.ndarray:
    """Fix the (R, K) slates with repeated candidates in place; returns the slots replaced per row.

    A repeat is replaced by the first candidate, in retrieval order, that the slate neither
    shows before it nor lists after it. Policies that sample each slot independently (RLlib's
    `MultiDiscrete`, `action_space.sample()`) repeat often, so this path runs every turn and
    must cost what the distinct one does (issue 28), not a Python loop per slate.
    """
    r, k = slots.shape
    replaced = np.zeros(r, dtype=np.int64)
    used = np.zeros(n_candidates, dtype=np.bool_)
    later = np.zeros(n_candidates, dtype=np.int64)  # times a candidate is listed after the current slot
    for j in range(r):
        repeats = False
        for i in range(k):
            repeats |= used[slots[j, i]]
            used[slots[j, i]] = True
        for i in range(k):
            used[slots[j, i]] = False
        if not repeats:
            continue
        for i in range(k):
            later[slots[j, i]] += 1
        free = 0  # candidates before it are used or listed later: never a replacement again
        for i in range(k):
            pos = slots[j, i]
            later[pos] -= 1
            if used[pos]:
                while used[free] or later[free] > 0:
                    free += 1
                pos = free
                slots[j, i] = pos
                replaced[j] += 1
            used[pos] = True
        for i in range(k):
            used[slots[j, i]] = False
    return replaced


def pack_consumed(consumed: np.ndarray) -> np.ndarray:
    """The (B, N) consumed bools bit-packed, item i of a row at bit i % 8 of byte i // 8: the
    observation's candidate mask reads 50 scattered items a user, and the packed rows (N/8 bytes)
    stay in cache where the bools (N bytes a user, megabytes a batch) do not."""
    return np.packbits(consumed, axis=-1, bitorder="little")


@numba.njit(nogil=True, cache=True)
def record(
    rows: np.ndarray, slates: np.ndarray, reactions: np.ndarray, dwell: np.ndarray, history_ids: np.ndarray,
    history_reactions: np.ndarray, history_dwell: np.ndarray, consumed: np.ndarray, consumed_bits: np.ndarray,
    taste_fresh: np.ndarray,
) -> None:
    """Append row j's reviewed items (a prefix of its slate: the positions it did not leave
    before) to user `rows[j]`'s history, which keeps the last H right-aligned (padding first);
    mark what the user engaged with as consumed (in the (B, N) bools and their bit-packed (B, ceil(N/8))
    copy, `pack_consumed`'s layout, which the observation reads); and mark its taste ranking stale when the
    taste query changes: a new engaged item, or an engaged item leaving the history window."""
    r, k = slates.shape
    h = history_ids.shape[1]
    for j in range(r):
        u = rows[j]
        seen = 0
        for i in range(k):
            if reactions[j, i] != UNSEEN:
                seen += 1
            if reactions[j, i] > 0:
                item = slates[j, i]
                consumed[u, item] = True
                consumed_bits[u, item >> 3] |= np.uint8(1 << (item & 7))
                taste_fresh[u] = False
        for c in range(min(seen, h)):
            if history_reactions[u, c] > 0:
                taste_fresh[u] = False
        # The new history is the H entries of [history, slate] that end after the reviewed prefix;
        # entry c moves from position seen + c, never behind itself, so the shift runs in place.
        for c in range(h):
            at = seen + c
            if at < h:
                history_ids[u, c] = history_ids[u, at]
                history_reactions[u, c] = history_reactions[u, at]
                history_dwell[u, c] = history_dwell[u, at]
            else:
                history_ids[u, c] = slates[j, at - h]
                history_reactions[u, c] = reactions[j, at - h]
                history_dwell[u, c] = dwell[j, at - h]


@numba.njit(nogil=True, cache=True)
def instruction_measures(
    rows: np.ndarray, slates: np.ndarray, candidates: np.ndarray, active: np.ndarray, topics: np.ndarray,
    high_quality: np.ndarray, asked_more: np.ndarray, item_topic: np.ndarray, item_good: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row j, the share of its slate that honours user `rows[j]`'s instruction in force, and
    1/0: whether its candidates held enough honouring items (one for "more", a whole slate
    otherwise); nan where no instruction is in force. An item honours an instruction when its
    topic is one it allows and, if it asked for quality, the item is of at least median quality."""
    r, k = slates.shape
    followed = np.full(r, np.nan)
    satisfiable = np.full(r, np.nan)
    for j in range(r):
        u = rows[j]
        if not active[u]:
            continue
        shown = 0
        for i in range(k):
            item = slates[j, i]
            shown += topics[u, item_topic[item]] and (item_good[item] or not high_quality[u])
        need = 1 if asked_more[u] else k
        offered = 0
        for c in range(candidates.shape[1]):  # counted until there are enough: only enough or not is told
            item = candidates[u, c]
            offered += topics[u, item_topic[item]] and (item_good[item] or not high_quality[u])
            if offered >= need:
                break
        followed[j] = shown / k
        satisfiable[j] = 1.0 if offered >= need else 0.0
    return followed, satisfiable


@numba.njit(nogil=True, cache=True)
def put_rows(into: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """`into[rows] = values` for distinct `rows` of a 2-D array: a turn writes the candidates of about every
    user, and numpy's fancy assignment of whole rows costs several times these copies."""
    for j in range(len(rows)):
        u = rows[j]
        for c in range(values.shape[1]):
            into[u, c] = values[j, c]


@numba.njit(nogil=True, cache=True)
def advance_clock(
    rows: np.ndarray, days: np.ndarray, now: np.ndarray, steps: np.ndarray, turn: np.ndarray, session: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A turn's clock: user `rows[j]` spent `days[j]` more (its slate's dwell), one more step and turn.
    Returns the turn's day, session, turn, step and time in days per row (copies: the world moves on).
    A dozen numpy passes over (R,) arrays did this, each dearer in call overhead than its arithmetic."""
    r = len(rows)
    day = np.empty(r, dtype=np.int64)
    sessions = np.empty(r, dtype=np.int64)
    turns = np.empty(r, dtype=np.int64)
    step = np.empty(r, dtype=np.int64)
    time_days = np.empty(r, dtype=np.float64)
    for j in range(r):
        u = rows[j]
        steps[u] += 1
        turn[u] += 1
        now[u] += days[j]
        day[j] = np.int64(np.floor(now[u]))
        sessions[j] = session[u]
        turns[j] = turn[u]
        step[j] = steps[u]
        time_days[j] = now[u]
    return day, sessions, turns, step, time_days
