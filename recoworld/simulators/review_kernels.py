"""Compiled steps of a parametric slate review (`ParametricUsers.review`), one user row at a time.

The click utility but relevance and the engagement level stay numpy, so that a `ChoiceModel`
can be injected; relevance enters through the model's compiled `relevance_term`. The three
compiled parts replace several dozen numpy passes over (B, K) arrays with loops that touch
each number once:

1. `slate_geometry`: novelty against memory and earlier items, and the fatigue path
   (before any choice; the embedding products themselves are batched numpy matmuls);
2. `relevance_in_order`: each position's relevance when the user reaches it, its click, utility and
   dislike (a click pulls interests toward the item, which moves every later relevance through the
   Gram matrix);
3. `settle`: time, patience and satisfaction along the slate, where the user leaves, and
   the new state (interest drift, satisfaction averages, memory).

The user's satisfaction and fatigue rule (`satisfaction_step`, `fatigue_step` and their parts)
lives here once, for the review, the returns replay of a distilled world and the oracle.

Rows never read each other, so a user's review does not depend on the batch around it,
and the arithmetic of one row is the same whether B is 1 or 1,000.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numba
import numpy as np

from recoworld.mindset import UNSEEN
from recoworld.simulators.choice import call_relevance_term

#: The dynamics the compiled user reads from its `params` array, in the array's order: `settle_params` packs them by
#: these names (every one a `DynamicsConfig` field), and the kernels read each at its name's index below (module
#: constants, which numba compiles in as literals), so the packing side and the compiled side cannot disagree.
SETTLE_PARAMS: tuple[str, ...] = (
    "browse_minutes", "satisfaction_rate", "skip_weight", "skip_satisfaction", "skip_relevance",
    "dislike_satisfaction", "dislike_weight", "satisfaction_collapse", "interest_drift", "dislike_push",
    "satisfaction_short_ema", "satisfaction_long_ema", "repetition_similarity", "click_satisfaction",
    "click_relevance", "click_quality", "click_fatigue", "fatigue_repetition", "fatigue_recovery", "fatigue_novelty",
    "fatigue_low_quality", "low_quality_threshold",
)
BROWSE_MINUTES = SETTLE_PARAMS.index("browse_minutes")
SATISFACTION_RATE = SETTLE_PARAMS.index("satisfaction_rate")
SKIP_WEIGHT = SETTLE_PARAMS.index("skip_weight")
SKIP_SATISFACTION = SETTLE_PARAMS.index("skip_satisfaction")
SKIP_RELEVANCE = SETTLE_PARAMS.index("skip_relevance")
DISLIKE_SATISFACTION = SETTLE_PARAMS.index("dislike_satisfaction")
DISLIKE_WEIGHT = SETTLE_PARAMS.index("dislike_weight")
SATISFACTION_COLLAPSE = SETTLE_PARAMS.index("satisfaction_collapse")
INTEREST_DRIFT = SETTLE_PARAMS.index("interest_drift")
DISLIKE_PUSH = SETTLE_PARAMS.index("dislike_push")
SATISFACTION_SHORT_EMA = SETTLE_PARAMS.index("satisfaction_short_ema")
SATISFACTION_LONG_EMA = SETTLE_PARAMS.index("satisfaction_long_ema")
REPETITION_SIMILARITY = SETTLE_PARAMS.index("repetition_similarity")
CLICK_SATISFACTION = SETTLE_PARAMS.index("click_satisfaction")
CLICK_RELEVANCE = SETTLE_PARAMS.index("click_relevance")
CLICK_QUALITY = SETTLE_PARAMS.index("click_quality")
CLICK_FATIGUE = SETTLE_PARAMS.index("click_fatigue")
FATIGUE_REPETITION = SETTLE_PARAMS.index("fatigue_repetition")
FATIGUE_RECOVERY = SETTLE_PARAMS.index("fatigue_recovery")
FATIGUE_NOVELTY = SETTLE_PARAMS.index("fatigue_novelty")
FATIGUE_LOW_QUALITY = SETTLE_PARAMS.index("fatigue_low_quality")
LOW_QUALITY_THRESHOLD = SETTLE_PARAMS.index("low_quality_threshold")


def settle_params(values: Mapping[str, float]) -> np.ndarray:
    """The `params` array of the kernels: `values[name]` for every name of `SETTLE_PARAMS`, in its order (other
    keys are ignored; a missing one raises KeyError). `settle_params(dict(dynamics_config))` is the usual call."""
    return np.array([values[name] for name in SETTLE_PARAMS], dtype=np.float64)


@numba.njit(inline="always")
def _unit_clip(x: float) -> float:
    return min(max(x, 0.0), 1.0)


# ---------------------------------------------------------------- the user's satisfaction and fatigue rule
# One copy, called by the compiled review below, by the replay that fits a distilled world's returns
# (`recoworld.calibration.returns.replay_satisfaction`) and by the oracle (`recoworld.agents.oracle`): a change
# to the user model reaches all three.


@numba.njit(nogil=True, cache=True)
def satisfaction_pull(clicked: bool, disliked: bool, relevance: float, quality: float, fatigue: float,
                      params: np.ndarray) -> tuple[float, float]:
    """(target, weight): the satisfaction one reviewed item pulls toward, and how hard, as a share of
    `satisfaction_rate`. A click pulls toward a target that rises with relevance and quality and falls with
    fatigue, at the full rate; a skip toward one that follows relevance (scrolling past relevant items is
    ordinary, past irrelevant ones wearing), less hard; a dislike lower and harder still."""
    if clicked:
        target = _unit_clip(params[CLICK_SATISFACTION] + params[CLICK_RELEVANCE] * relevance
                            + params[CLICK_QUALITY] * quality - params[CLICK_FATIGUE] * fatigue)
        weight = 1.0
    else:
        target = _unit_clip(params[SKIP_SATISFACTION] + params[SKIP_RELEVANCE] * relevance) * (1.0 - fatigue)
        weight = params[SKIP_WEIGHT]
    if disliked:
        target = min(target, params[DISLIKE_SATISFACTION])
        weight = max(weight, params[DISLIKE_WEIGHT])
    return target, weight


@numba.njit(nogil=True, cache=True)
def satisfaction_step(satisfaction: float, clicked: bool, disliked: bool, relevance: float, quality: float,
                      fatigue: float, params: np.ndarray) -> float:
    """Satisfaction after one reviewed item: a step toward its `satisfaction_pull` target."""
    target, weight = satisfaction_pull(clicked, disliked, relevance, quality, fatigue, params)
    return satisfaction + params[SATISFACTION_RATE] * weight * (target - satisfaction)


@numba.njit(nogil=True, cache=True)
def fatigue_increase(similarity: float, quality_fatigue: float, params: np.ndarray) -> float:
    """Fatigue one item adds: repetition (its highest similarity to what was seen, from `repetition_similarity`
    up to 1) plus `quality_fatigue`, what its quality adds (`low_quality_fatigue`)."""
    tau = params[REPETITION_SIMILARITY]
    return params[FATIGUE_REPETITION] * _unit_clip((similarity - tau) / (1.0 - tau)) + quality_fatigue


@numba.njit(nogil=True, cache=True)
def fatigue_step(fatigue: float, increase: float, params: np.ndarray) -> float:
    """Fatigue after an item that adds `increase`: the old level decays by `fatigue_recovery` per item. Not
    capped: the user's state, and what the rule reads, is min(fatigue, 1)."""
    rho = params[FATIGUE_RECOVERY]
    return fatigue + rho * (increase / rho - fatigue)


@numba.njit(nogil=True, cache=True)
def novelty_appetite(novelty: float, fatigue: float, params: np.ndarray) -> float:
    """The appetite for novelty: the user's propensity, raised by fatigue."""
    return min(novelty + params[FATIGUE_NOVELTY] * fatigue, 1.0)


@numba.njit(nogil=True, cache=True)
def low_quality_fatigue(quality: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Fatigue each item adds by its quality alone: none from `low_quality_threshold` up, rising linearly to
    `fatigue_low_quality` at quality 0."""
    threshold = params[LOW_QUALITY_THRESHOLD]
    out = np.empty(len(quality))
    for i in range(len(quality)):
        out[i] = params[FATIGUE_LOW_QUALITY] * _unit_clip((threshold - quality[i]) / threshold)
    return out


@numba.njit(nogil=True, cache=True)
def satisfaction_pulls(clicked: bool, relevance: np.ndarray, quality: np.ndarray, fatigue: float,
                       params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`satisfaction_pull` of each candidate (no dislike) at one fatigue: (targets, weights)."""
    n = len(relevance)
    targets, weights = np.empty(n), np.empty(n)
    for i in range(n):
        targets[i], weights[i] = satisfaction_pull(clicked, False, relevance[i], quality[i], fatigue, params)
    return targets, weights


@numba.njit(nogil=True, cache=True)
def repetition_fatigue(similarity: np.ndarray, params: np.ndarray) -> np.ndarray:
    """`fatigue_increase` of each similarity, quality aside."""
    out = np.empty(len(similarity))
    for i in range(len(similarity)):
        out[i] = fatigue_increase(similarity[i], 0.0, params)
    return out


@numba.njit(nogil=True, cache=True)
def review_inputs(
    emb: np.ndarray, quality: np.ndarray, duration: np.ndarray, slates: np.ndarray, memory_items: np.ndarray,
    interests: np.ndarray, rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a review gathers, in one pass over the rows: each row's context (R, K + M, D), the embedding rows of
    its slate then of its memory (an empty slot, -1, is `emb`'s last row, the zero row appended to the catalog's),
    the slate's quality and duration (R, K), and the row's interests in `emb`'s precision (R, D): the values of
    numpy's gathers and cast, copied once. A slate item outside the catalog, or a row outside the batch,
    raises IndexError (a row from the end, negative, is numpy's too)."""
    r, k = slates.shape
    m, d, n = memory_items.shape[1], emb.shape[1], emb.shape[0]
    context = np.empty((r, k + m, d), dtype=emb.dtype)
    item_quality = np.empty((r, k))
    item_duration = np.empty((r, k))
    row_interests = np.empty((r, d), dtype=emb.dtype)
    for j in range(r):
        u = rows[j]
        if u < -memory_items.shape[0] or u >= memory_items.shape[0]:
            raise IndexError("user row outside the batch")
        for i in range(k):
            item = slates[j, i]
            if item < 0 or item >= quality.shape[0]:
                raise IndexError("slate item outside the catalog")
            item_quality[j, i] = quality[item]
            item_duration[j, i] = duration[item]
            for x in range(d):
                context[j, i, x] = emb[item, x]
        for i in range(m):
            item = memory_items[u, i]
            if item < 0:
                item += n
            for x in range(d):
                context[j, k + i, x] = emb[item, x]
        for x in range(d):
            row_interests[j, x] = interests[u, x]
    return context, item_quality, item_duration, row_interests


@numba.njit(nogil=True, cache=True)
def slate_geometry(
    sims: np.ndarray, slates: np.ndarray, quality_fatigue: np.ndarray, fatigue: np.ndarray, novelty: np.ndarray,
    rows: np.ndarray, params: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row j (state row `rows[j]`) and slate position: the highest similarity to anything seen
    lately or earlier in the slate (floored at 0), the item's novelty, the fatigue path and the
    appetite for novelty.

    `sims` (R, K, K + M) are each slate item's similarities to the slate, then to the memory
    (an empty memory slot has similarity 0)."""
    r, k, width = sims.shape
    max_sim = np.empty((r, k))
    item_novelty = np.empty((r, k))
    fat = np.empty((r, k))
    appetite = np.empty((r, k))
    for j in range(r):
        u = rows[j]
        f = fatigue[u]
        for i in range(k):
            top = np.float32(0.0)
            for c in range(i):  # earlier in the slate, then the memory: the same maximum, without a test per column
                if sims[j, i, c] > top:
                    top = sims[j, i, c]
            for c in range(k, width):
                if sims[j, i, c] > top:
                    top = sims[j, i, c]
            s = np.float64(top)
            max_sim[j, i] = s
            item_novelty[j, i] = 1.0 - min(s, 1.0)
            f = fatigue_step(f, fatigue_increase(s, quality_fatigue[slates[j, i]], params), params)
            fat[j, i] = min(f, 1.0)
            appetite[j, i] = novelty_appetite(novelty[u], fat[j, i], params)
    return max_sim, item_novelty, fat, appetite


@numba.njit(nogil=True, cache=True)
def relevance_in_order(rel: np.ndarray, sims: np.ndarray, noise: np.ndarray, base: np.ndarray, term: int,
                       w_rel: float, eta: float, margin: float,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(R, K) relevance of each position when the user reaches it, whether it is clicked, its utility and whether
    it is disliked. The relevance's utility is `term(x, w_rel)` (`term`: the address of the choice model's
    `relevance_term`); with the click noise `noise[..., 0]`, the click threshold is -noise - base (click <=>
    base + term + noise > 0), and a click at position p moves every relevance by x <- x + eta * (sims[p, i] - x),
    through the slate's Gram matrix (the first K columns of `sims`). The utility is base + term; a dislike is a
    skip whose term lies more than `margin` below the threshold (no extra draw)."""
    r, k = rel.shape
    seen = np.empty((r, k))
    click = np.empty((r, k), dtype=np.bool_)
    utility = np.empty((r, k))
    dislike = np.empty((r, k), dtype=np.bool_)
    current = np.empty(k)
    for j in range(r):
        current[:] = rel[j]
        for pos in range(k):
            x = current[pos]
            seen[j, pos] = x
            term_utility = call_relevance_term(term, x, w_rel)
            threshold = -noise[j, pos, 0] - base[j, pos]
            clicked = term_utility > threshold
            click[j, pos] = clicked
            utility[j, pos] = base[j, pos] + term_utility
            dislike[j, pos] = not clicked and term_utility - threshold < -margin
            if clicked:
                for i in range(k):
                    current[i] = current[i] + eta * (np.float64(sims[j, pos, i]) - current[i])
    return seen, click, utility, dislike


@numba.njit(nogil=True, cache=True)
def settle(
    slates: np.ndarray, rows: np.ndarray, click: np.ndarray, level: np.ndarray, dislike: np.ndarray,
    utility: np.ndarray, completion_noise: np.ndarray, rel_seen: np.ndarray, fat: np.ndarray, max_sim: np.ndarray,
    emb: np.ndarray, quality: np.ndarray, duration: np.ndarray, params: np.ndarray,
    interests: np.ndarray, satisfaction: np.ndarray, sat_short: np.ndarray, sat_long: np.ndarray,
    fatigue: np.ndarray, time_left: np.ndarray, patience: np.ndarray, patience_left: np.ndarray,
    consumed: np.ndarray, memory_items: np.ndarray, memory_reactions: np.ndarray, memory_dwell: np.ndarray,
    memory_disliked: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walk each row's slate in order until the user leaves, then write the row's new state in place.

    Along the slate: time spent (a click watches `duration * completion`, a skip costs
    `browse_minutes`), patience (reset by a click), and satisfaction moving toward each item's
    target (`satisfaction_step`). The user leaves at the first position where time or patience runs out or
    satisfaction collapses. The state then takes that position's values; interests drift toward
    each consumed item in order and are pushed away from disliked ones.

    `params` packs the dynamics named by `SETTLE_PARAMS` (`settle_params`). Returns reactions (int8,
    -1 = unseen), dwell minutes (float32), left, disliked, and the exit kind (index of
    `_PARAMETRIC_EXITS`; -1 for users who stay)."""
    browse, collapse = params[BROWSE_MINUTES], params[SATISFACTION_COLLAPSE]
    eta, push, tau = params[INTEREST_DRIFT], params[DISLIKE_PUSH], params[REPETITION_SIMILARITY]
    short_ema, long_ema = params[SATISFACTION_SHORT_EMA], params[SATISFACTION_LONG_EMA]
    r, k = slates.shape
    d, m = emb.shape[1], memory_items.shape[1]
    reactions = np.full((r, k), UNSEEN, dtype=np.int8)
    dwell = np.zeros((r, k), dtype=np.float32)
    left = np.zeros(r, dtype=np.bool_)
    disliked = np.zeros((r, k), dtype=np.bool_)
    exit_kind = np.full(r, -1, dtype=np.int64)
    drift = np.empty(d, dtype=np.float32)
    for j in range(r):
        u = rows[j]
        sat, short, long = satisfaction[u], sat_short[u], sat_long[u]
        spent_total, last_click, stop = 0.0, -1, k - 1
        time_at, patience_at, repeated = 0.0, 0, 0
        for i in range(k):
            c = click[j, i]
            if c:
                spent = duration[j, i] * (1.0 / (1.0 + math.exp(-(utility[j, i] + completion_noise[j, i]))))
                last_click = i
            else:
                spent = browse
            disliked[j, i] = dislike[j, i]
            sat = satisfaction_step(sat, c, dislike[j, i], rel_seen[j, i], quality[j, i], fat[j, i], params)
            short = short + short_ema * (sat - short)
            long = long + long_ema * (sat - long)
            spent_total += spent
            time_at = time_left[u] - spent_total
            patience_at = patience[u] - (i - last_click) if last_click >= 0 else patience_left[u] - (i + 1)
            reactions[j, i] = level[j, i]
            dwell[j, i] = spent
            if max_sim[j, i] >= tau:
                repeated += 1
            if time_at <= 0 or patience_at <= 0 or sat < collapse:
                left[j] = True
                stop = i
                if time_at <= 0:
                    exit_kind[j] = 0  # out of time, whatever the feed
                elif repeated / (i + 1) >= 0.5:
                    exit_kind[j] = 1  # mostly near-duplicates of what was seen
                elif patience_at <= 0:
                    exit_kind[j] = 2  # bored
                else:
                    exit_kind[j] = 3  # irrelevant
                break
        # Interest drift, in closed form: each consumed item pulls by eta, later ones weigh more.
        n_consumed = 0
        for i in range(stop + 1):
            n_consumed += click[j, i]
        if n_consumed:
            drift[:] = 0.0
            after = n_consumed
            for i in range(stop + 1):
                if click[j, i]:
                    after -= 1
                    weight = np.float32(eta * (1.0 - eta) ** after)
                    e = emb[slates[j, i]]
                    for x in range(d):
                        drift[x] += weight * e[x]
            keep = (1.0 - eta) ** n_consumed
            for x in range(d):
                interests[u, x] = keep * interests[u, x] + drift[x]
        if disliked[j].any():  # each disliked item pushes interests away, keeping the norm at most 1
            norm2 = 0.0
            for x in range(d):
                away = 0.0
                for i in range(stop + 1):
                    if disliked[j, i]:
                        away += np.float64(emb[slates[j, i], x])
                interests[u, x] = interests[u, x] - push * away
                norm2 += interests[u, x] * interests[u, x]
            scale = max(1.0, math.sqrt(norm2))
            for x in range(d):
                interests[u, x] = interests[u, x] / scale
        consumed[u] += n_consumed
        satisfaction[u], sat_short[u], sat_long[u] = sat, short, long
        fatigue[u] = fat[j, stop]
        time_left[u] = max(time_at, 0.0)
        patience_left[u] = max(patience_at, 0)
        # Memory keeps the last M slots of [memory, slate]; unseen positions enter as empty slots.
        shift = min(k, m)
        for slot in range(m - shift):
            memory_items[u, slot] = memory_items[u, slot + shift]
            memory_reactions[u, slot] = memory_reactions[u, slot + shift]
            memory_dwell[u, slot] = memory_dwell[u, slot + shift]
            memory_disliked[u, slot] = memory_disliked[u, slot + shift]
        for slot in range(m - shift, m):
            i = k - m + slot
            seen = i <= stop
            memory_items[u, slot] = slates[j, i] if seen else -1
            memory_reactions[u, slot] = reactions[j, i]
            memory_dwell[u, slot] = dwell[j, i]
            memory_disliked[u, slot] = disliked[j, i]
    return reactions, dwell, left, disliked, exit_kind
