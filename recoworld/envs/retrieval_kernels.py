"""Compiled inner loops of candidate retrieval (`recoworld.envs.retrieval`), one row at a time.

Each kernel is the exact per-row rule its caller documents, written as a loop so that a
batch costs one call instead of a dozen numpy passes over (R, K) or (R, N) arrays, and a
scan stops at the k-th hit instead of taking a cumulative sum over every entry. Rows never
read each other, so a row's result does not depend on the batch around it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def first_unblocked(ranked: np.ndarray, blocked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first `k` unblocked items of `ranked` (R, L; -1 = none), -1 padded, and which
    rows ran out while their ranking was full (items beyond it may qualify)."""
    r, depth = ranked.shape
    picks = np.full((r, k), -1, dtype=np.int64)
    used_up = np.zeros(r, dtype=np.bool_)
    for row in range(r):
        found = 0
        for i in range(depth):
            if found == k:
                break
            item = ranked[row, i]
            if item >= 0 and not blocked[row, item]:
                picks[row, found] = item
                found += 1
        used_up[row] = found < k and depth > 0 and ranked[row, depth - 1] >= 0
    return picks, used_up


@numba.njit(nogil=True, cache=True)
def popular_items(uniforms: np.ndarray, cdf: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """One item per uniform, `searchsorted(cdf, u, side="right")` exactly: the guide table gives
    the answer at the left edge of the uniform's slice, and a short walk finishes it."""
    n = cdf.shape[0]
    out = np.empty(uniforms.shape, dtype=np.int64)
    flat_u, flat_out = uniforms.ravel(), out.ravel()
    for j in range(flat_u.shape[0]):
        u = flat_u[j]
        item = guide[min(np.int64(u * n), n - 1)]
        while item < n - 1 and cdf[item] <= u:
            item += 1
        flat_out[j] = item
    return out


@numba.njit(nogil=True, cache=True)
def fill_from_draws(out: np.ndarray, start: np.ndarray, count: np.ndarray, drawn: np.ndarray,
                    blocked: np.ndarray) -> np.ndarray:
    """Write the first `count[j]` distinct unblocked items of `drawn[j]` into `out[j, start[j]:]`
    and block them; a row whose draws fall short keeps nothing and is returned as short."""
    r = drawn.shape[0]
    short = np.zeros(r, dtype=np.bool_)
    for j in range(r):
        need, at = count[j], start[j]
        for item in drawn[j]:
            if need == 0:
                break
            if not blocked[j, item]:
                blocked[j, item] = True
                out[j, at] = item
                at += 1
                need -= 1
        if need > 0:  # undo the partial picks: the caller draws this row exactly instead
            short[j] = True
            for i in range(start[j], at):
                blocked[j, out[j, i]] = False
    return short
