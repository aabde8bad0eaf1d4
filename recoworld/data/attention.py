"""Item attention in time: how much of the crowd an item draws *now*, not over the whole log.

Attention on real platforms rises at release and decays: on a global time split of
MovieLens the recently popular items predict the future better than the all-time popular
ones (REFERENCE.md, "recency is strong"). A world whose popularity is the all-time count
cannot see that, and so orders recommenders the wrong way around.

The model is one exponentially decayed count per item, read at a time `at`:

    attention_i(at) = sum over the item's interactions k before `at` of 2 ** (-(at - t_k) / half_life)

`half_life_days=inf` gives back the all-time count. `fit_half_life` picks the half-life from
the log itself, honestly in time: the train period is cut `horizon_days` before its end, the
attention at that inner cutoff is computed from the interactions before it, and the
half-life whose attention best predicts the interactions of the `horizon_days` after it
(multinomial log-likelihood of which items were chosen, add-one smoothed) wins. Only the
data before the outer cutoff is ever read, so the future the world is judged on stays
unseen. The horizon matters: a world's popularity is read once, at the cutoff, and then
serves the whole simulated horizon, so the half-life that predicts the next day (what is hot
now) is shorter than the one that predicts the next two months (what is hot now and still
drawn then). Fit it for the horizon the world will simulate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

SECONDS_PER_DAY = 86400.0
#: Half-lives tried by `fit_half_life`, in days; `inf` is the all-time count.
HALF_LIFE_GRID = (1.0, 2.0, 4.0, 7.0, 14.0, 30.0, 60.0, 120.0, 240.0, np.inf)


def decay(times: np.ndarray, at: float, half_life_days: float) -> np.ndarray:
    """The weight of events at `times` (seconds) read at `at`: 2 ** (-age in days / half-life), 1 for every
    event when the half-life is infinite. One definition for item attention and users' interest drift."""
    times = np.asarray(times, dtype=np.float64)
    if not np.isfinite(half_life_days):
        return np.ones(len(times))
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    return np.exp2(-(at - times) / SECONDS_PER_DAY / half_life_days)


def item_attention(items: np.ndarray, times: np.ndarray, n_items: int, at: float,
                   half_life_days: float) -> np.ndarray:
    """(n_items,) decayed interaction counts at time `at` (seconds); interactions after `at` are ignored."""
    items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.float64)
    before = times <= at
    return np.bincount(items[before], weights=decay(times[before], at, half_life_days), minlength=n_items)


@dataclass(frozen=True)
class HalfLifeFit:
    """The fitted half-life and the evidence for it (calibration reports all of it)."""

    half_life_days: float
    loglik_per_choice: dict[float, float]  # every half-life tried -> held-out log-likelihood per choice
    inner_cutoff: float  # seconds: the attention is read here and judged on what follows
    held_out: int  # interactions the half-life was judged on


def fit_half_life(items: np.ndarray, times: np.ndarray, n_items: int, horizon_days: float = 60.0,
                  grid: tuple[float, ...] = HALF_LIFE_GRID) -> HalfLifeFit:
    """The half-life whose attention `horizon_days` before the train log's end best predicts the choices of
    those last days (module docstring); on a log shorter than twice the horizon, the inner cutoff is its
    middle instead. `items`/`times` are the train log only."""
    items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.float64)
    if not horizon_days > 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
    start, end = float(times.min()), float(times.max())
    inner = max(end - horizon_days * SECONDS_PER_DAY, (start + end) / 2)
    after = times > inner
    if not after.any() or after.all():
        raise ValueError("fit_half_life: the train log has no interactions on one side of its inner cutoff "
                         "(all timestamps equal?)")
    judged = items[after]
    scores = {}
    for half_life in grid:
        weight = item_attention(items, times, n_items, inner, half_life)
        # Add-one smoothing in the half-life's own units (one interaction's mean weight per item), so items
        # without recent interactions stay possible and every half-life is smoothed alike.
        p = weight + weight.sum() / max(int((times <= inner).sum()), 1)
        p = p / p.sum()
        scores[float(half_life)] = float(np.log(p[judged]).mean())
    best = max(scores, key=lambda h: (scores[h], h))
    return HalfLifeFit(best, scores, inner, int(after.sum()))


#: Half-lives the choice model is fitted with when calibration picks the attention's half-life itself
#: (`recoworld.calibration.calibrated`); `inf` is the all-time count up to each choice.
CHOICE_HALF_LIFE_GRID = (7.0, 14.0, 30.0, 60.0, 120.0, np.inf)


def attention_z(items: np.ndarray, times: np.ndarray, n_items: int, half_life_days: float, at: np.ndarray,
                candidates: np.ndarray) -> np.ndarray:
    """(E, K) popularity feature of `candidates[e]` at the time `at[e]` (seconds): the catalog's standardized log
    attention as the world reads it (`Catalog.popularity_z` of `items._popularity`), but at each choice's own time.

    A choice model fitted on popularity read at one time (the end of the log) learns a weight for a
    feature that is not the one its choices saw: an item popular at the end was often unreleased or
    unknown when earlier choices were made, and its count holds other users' later interactions. So
    here each choice sees only the attention of interactions (of all users) before it, at day
    resolution: with d = floor(at / day) and A[d] = A[d - 1] * 2 ** (-1 / half_life) + the
    interactions of day d - 1, an interaction of day k weighs 2 ** (-(d - 1 - k) / half_life) and
    nothing of day d or later is read. As in `items._popularity`, the decayed counts are rescaled to
    the number of interactions before day d (n_d), add-one smoothed, logged and standardized over the
    catalog: z = standardize(log(A[d] * n_d / sum(A[d]) + 1)). `half_life_days=inf` is the all-time
    count up to day d. `items`/`times` are every interaction the attention may read (the train log).
    """
    items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.float64)
    at, candidates = np.asarray(at, dtype=np.float64), np.asarray(candidates, dtype=np.int64)
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    out = np.zeros(candidates.shape)
    if not len(at):
        return out
    decay = float(np.exp2(-1.0 / half_life_days)) if np.isfinite(half_life_days) else 1.0
    day = np.floor(times / SECONDS_PER_DAY).astype(np.int64)
    event_day = np.floor(at / SECONDS_PER_DAY).astype(np.int64)
    by_day = np.argsort(day, kind="stable")
    day, items = day[by_day], items[by_day]
    events = np.argsort(event_day, kind="stable")
    first, last = int(event_day.min()), int(event_day.max())
    lo = int(np.searchsorted(day, first - 1))  # interactions before day first - 1: A[first - 1]
    # numpy's stubs type every bincount as integer counts; with weights it returns float64.
    attention = cast("npt.NDArray[np.float64]",
                     np.bincount(items[:lo], weights=decay ** (first - 2 - day[:lo]).astype(np.float64),
                                 minlength=n_items))
    seen = lo
    e_lo = 0
    for d in range(first, last + 1):
        hi = int(np.searchsorted(day, d))  # interactions of day d - 1 join the attention of day d
        attention = attention * decay + np.bincount(items[lo:hi], minlength=n_items)
        seen += hi - lo
        lo = hi
        e_hi = int(np.searchsorted(event_day[events], d, side="right"))
        if e_hi > e_lo:
            total = attention.sum()
            counts = attention * (seen / total) if total > 0 else attention
            log_pop = np.log(counts + 1.0)
            z = (log_pop - log_pop.mean()) / max(float(log_pop.std()), 1e-9)
            rows = events[e_lo:e_hi]
            out[rows] = z[candidates[rows]]
            e_lo = e_hi
    return out
