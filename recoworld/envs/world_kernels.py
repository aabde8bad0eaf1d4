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
def record(
    rows: np.ndarray, slates: np.ndarray, reactions: np.ndarray, dwell: np.ndarray, history_ids: np.ndarray,
    history_reactions: np.ndarray, history_dwell: np.ndarray, consumed: np.ndarray, taste_fresh: np.ndarray,
) -> None:
    """Append row j's reviewed items (a prefix of its slate: the positions it did not leave
    before) to user `rows[j]`'s history, which keeps the last H right-aligned (padding first);
    mark what the user engaged with as consumed; and mark its taste ranking stale when the
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
                consumed[u, slates[j, i]] = True
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
