"""Parametric mindset users: the fast, numeric user model, vectorized over a batch.

`ParametricUsers` holds B users' mindsets as arrays and reviews B slates at once. Items
are reviewed in order; after each one the mindset moves (interests drift toward what
was consumed, satisfaction follows the experience, fatigue follows repetition and low
quality) and the user may leave. Everything that does not depend on the reactions
(similarities, novelty, noise) is computed for the whole slate before the loop, and the
interest drift is carried through the slate's Gram matrix, so the sequential part is a
handful of (B,) array operations per position.

It implements `BatchUserSimulator`: the single-user env is the same model with B = 1.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import ChoiceConfig, DynamicsConfig, ReturnConfig
from recoworld.mindset import (
    REACTION_NAMES,
    UNSEEN,
    ExitReason,
    Instruction,
    Intent,
    Interview,
    MemoryEntry,
    Mindset,
    ReactionType,
    interview_score,
)
from recoworld.population import UserProfile
from recoworld.simulators.base import BatchFeedback
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.instructions import InstructionWriter, intent_direction
from recoworld.simulators.return_gap import ReturnGapModel
from recoworld.streams import UserStreams

_INITIAL_SATISFACTION = 0.6
#: A parametric user's exit reasons, by the index `_exit_reasons` picks (shared: `ExitReason` is frozen).
_PARAMETRIC_EXITS = (
    ExitReason(kind="out_of_time", text="Out of time for today."),
    ExitReason(kind="repetitive", text="The feed kept showing me the same things."),
    ExitReason(kind="bored", text="Nothing worth watching for too long."),
    ExitReason(kind="irrelevant", text="None of this is what I am interested in."),
)
#: A parametric user's interview answers, by score 1..5 (shared: `Interview` is frozen).
_PARAMETRIC_INTERVIEWS = tuple(
    Interview(score=score, text=text) for score, text in enumerate(
        ("That was a waste of my time.", "Mostly not for me today.", "It was okay, nothing special.",
         "I enjoyed most of what I saw.", "Great session, exactly my kind of thing."), start=1)
)
_SHORT_EMA, _LONG_EMA = 0.5, 0.1


@functools.cache
def _novelty_mask(k: int, m: int) -> np.ndarray:
    """(K, K + M) weights of a slate's similarities: earlier slate items and every memory slot count,
    the item itself and later items score 0 (a floor the maximum keeps)."""
    return np.hstack([np.tril(np.ones((k, k), dtype=np.float32), -1), np.ones((k, m), dtype=np.float32)])


@functools.cache
def _powers(base: float, k: int) -> np.ndarray:
    return base ** np.arange(k + 1)


@functools.cache
def _positions(k: int) -> np.ndarray:
    return np.arange(k)


def _unit_clip(x: np.ndarray) -> np.ndarray:
    """np.clip(x, 0, 1) without np.clip's per-call overhead, which dominates on small arrays."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _recurrence(x0: np.ndarray, rate: np.ndarray | float, target: np.ndarray) -> np.ndarray:
    """Path of x_k = x_{k-1} + rate_k * (target_k - x_{k-1}) over the K positions, from x0: (B,) and
    (B, K) (or a scalar rate) -> (B, K).

    A plain loop over positions: each is three (B,) operations, cheaper for a slate of ~10 than
    any closed form, and elementwise, so a user's path never depends on the batch around it.
    One user runs on Python floats (numpy's per-call overhead would dominate), with the same
    operations in the same order, so the two paths agree bit for bit.
    """
    b, k = target.shape
    constant = not isinstance(rate, np.ndarray)
    if b == 1:
        x, path = float(x0[0]), []
        for r, t in zip([float(rate)] * k if constant else rate[0].tolist(), target[0].tolist()):
            x = x + r * (t - x)
            path.append(x)
        return np.array([path])
    out = np.empty((b, k))
    x = np.asarray(x0, dtype=np.float64)
    for i in range(k):
        x = x + (rate if constant else rate[:, i]) * (target[:, i] - x)
        out[:, i] = x
    return out


def _relevance_in_order(
    rel: np.ndarray, gram: np.ndarray, threshold: np.ndarray, w_rel: float, eta: float
) -> np.ndarray:
    """Relevance of each slate position when the user reaches it, (B, K).

    A click at position p moves every later relevance: rel <- rel + eta * (gram[p] - rel).
    Between clicks nothing changes, so the loop jumps from one click position to the next.
    """
    b, k = rel.shape
    rel_seen = np.empty((b, k))
    done = 0  # positions before `done` are decided
    while done < k:
        later = w_rel * rel[:, done:] > threshold[:, done:]
        any_click = later.any(axis=0)
        if not any_click.any():
            break
        pos = done + int(any_click.argmax())
        rel_seen[:, done : pos + 1] = rel[:, done : pos + 1]
        rel = rel + (eta * later[:, pos - done])[:, None] * (gram[:, pos, :] - rel)
        done = pos + 1
    rel_seen[:, done:] = rel[:, done:]
    return rel_seen


def _relevance_in_order_one(
    rel: np.ndarray, gram: np.ndarray, threshold: np.ndarray, w_rel: float, eta: float
) -> np.ndarray:
    """`_relevance_in_order` for one user, on Python floats.

    The single-user env reviews one slate per step, where numpy's per-call overhead on
    1-element arrays costs more than the arithmetic; the same operations in the same order
    give bit-identical results (tests/test_user_dynamics.py checks the two paths agree).
    """
    current, rows, limits = rel.tolist(), gram.tolist(), threshold.tolist()
    seen = []
    for pos, limit in enumerate(limits):
        r = current[pos]
        seen.append(r)
        if w_rel * r > limit:
            current = [x + eta * (g - x) for x, g in zip(current, rows[pos])]
    return np.asarray(seen)


class ParametricUsers:
    """B simulated users whose mindsets live in arrays (struct of arrays)."""

    def __init__(
        self,
        catalog: Catalog,
        choice: ChoiceConfig | None = None,
        dynamics: DynamicsConfig | None = None,
        returns: ReturnConfig | None = None,
        *,
        choice_model: ChoiceModel | None = None,
    ) -> None:
        """`choice_model` replaces the logit built from `choice` (e.g. a subclass in a test that
        makes every item a click); the dynamics around it stay the same."""
        if choice_model is not None and choice is not None:
            raise ValueError("pass either choice (a ChoiceConfig) or choice_model (a ChoiceModel), not both")
        self.catalog = catalog
        self.choice = choice_model if choice_model is not None else ChoiceModel(choice or ChoiceConfig())
        self.dyn = dynamics or DynamicsConfig()
        self.returns = ReturnGapModel(returns or ReturnConfig())
        self.writer = InstructionWriter(catalog)
        d = catalog.embedding_dim
        # float32 like the catalog: the slate's embedding products are the bulk of a review, and
        # float32 halves their memory traffic; their results continue in float64.
        self._emb_padded = np.vstack([catalog.embeddings, np.zeros((1, d), np.float32)]).astype(np.float32)
        self._quality = catalog.quality.astype(np.float64)
        low = np.minimum(np.maximum((0.4 - self._quality) / 0.4, 0.0), 1.0)
        self._low_quality_fatigue = self.dyn.fatigue_low_quality * low
        self._duration = catalog.duration_min.astype(np.float64)
        self._popularity = catalog.popularity_z
        self.profiles: list[UserProfile] = []
        self._favourites: list[list[str]] = []
        self._d = catalog.embedding_dim

    # ------------------------------------------------------------------ lifecycle

    def reset(self, profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> None:
        """Initialise one mindset per profile (all rows, or just `rows`). Draws nothing."""
        state = self._initial_state(list(profiles))
        if rows is None:
            self.profiles = list(profiles)
            self._favourites = [list(p.topic_interests) for p in profiles]
            for name, value in state.items():
                setattr(self, name, value)
            return
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(profiles):
            raise ValueError(f"reset got {len(profiles)} profiles for {len(rows)} rows")
        for j, r in enumerate(rows.tolist()):
            self.profiles[r] = profiles[j]
            self._favourites[r] = list(profiles[j].topic_interests)
        for name, value in state.items():
            getattr(self, name)[rows] = value

    def _initial_state(self, profiles: list[UserProfile]) -> dict[str, np.ndarray]:
        b, m = len(profiles), self.dyn.memory_size
        long_term = np.stack([p.interest_vector(self.catalog) for p in profiles]).astype(np.float64)
        novelty = np.array([p.novelty_trait for p in profiles], dtype=np.float64)
        patience = np.array([p.patience for p in profiles], dtype=np.int64)
        budget = np.array([p.time_budget_min for p in profiles], dtype=np.float64)
        satisfaction = np.full(b, _INITIAL_SATISFACTION)
        return {
            "long_term": long_term, "interests": long_term.copy(),
            "novelty_trait": novelty, "novelty": novelty.copy(),
            "patience": patience, "patience_left": patience.copy(),
            "budget": budget, "time_left": budget.copy(),
            "return_propensity": np.array([p.return_propensity for p in profiles], dtype=np.float64),
            "conformity": np.array([p.popularity_affinity for p in profiles], dtype=np.float64),
            "activity": np.array([p.activity for p in profiles], dtype=np.float64),
            "satisfaction": satisfaction, "sat_short": satisfaction.copy(), "sat_long": satisfaction.copy(),
            "fatigue": np.zeros(b),
            "memory_items": np.full((b, m), -1, dtype=np.int64),
            "memory_reactions": np.full((b, m), UNSEEN, dtype=np.int8),
            "memory_dwell": np.zeros((b, m), dtype=np.float32),
            "memory_disliked": np.zeros((b, m), dtype=bool),
            "turn": np.zeros(b, dtype=np.int64),
            "consumed": np.zeros(b, dtype=np.int64),  # clicks so far: churn waits for `returns.churn_after`
            "last_instruction_turn": np.full(b, -(10**9), dtype=np.int64),
            "last_session_end": np.full(b, -np.inf),
            # Day from which the long-term interests are the profile's `shifted_interests`; inf: no (more) shift.
            "shift_day": np.array([np.inf if p.interest_shift_day is None else p.interest_shift_day
                                   for p in profiles], dtype=np.float64),
        }

    def start_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> None:
        """Open a session for `rows` at times `now_days`, recovering from the gap."""
        users = np.asarray(rows, dtype=np.int64)
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), users.shape)
        # Before the first session last_session_end is -inf: an infinite gap, which recovers
        # every state to its reset value (already the case) and starts a new day.
        prev = self.last_session_end[users]
        gap = now - prev
        new_day = np.floor(now) > np.floor(prev)
        r = self.returns.config
        self._shift_interests(users, now)
        keep_interest = np.exp(-gap / r.interest_memory_days)[:, None]
        self.interests[users] = self.long_term[users] + (self.interests[users] - self.long_term[users]) * keep_interest
        self.fatigue[users] *= np.exp(-gap / r.fatigue_recovery_days)
        sat = _INITIAL_SATISFACTION + (self.satisfaction[users] - _INITIAL_SATISFACTION) * np.exp(
            -gap / r.satisfaction_recovery_days
        )
        self.satisfaction[users] = sat
        self.sat_short[users] = sat
        self.sat_long[users] = sat
        self.time_left[users] = np.where(new_day, self.budget[users], self.time_left[users])
        self.patience_left[users] = self.patience[users]
        jitter = streams.normal(users, self.dyn.novelty_jitter)
        self.novelty[users] = _unit_clip(self.novelty_trait[users] + jitter)

    def _shift_interests(self, users: np.ndarray, now: np.ndarray) -> None:
        """Users whose `interest_shift_day` has come take their shifted long-term interests (once); the
        short-term interests then regress toward them like after any gap, and instructions name the new topics."""
        due = users[now >= self.shift_day[users]]
        for u in due.tolist():
            profile = self.profiles[u]
            self.long_term[u] = profile.shifted_vector(self.catalog)
            self._favourites[u] = list(profile.shifted_interests or profile.topic_interests)
            self.shift_day[u] = np.inf

    def end_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> np.ndarray:
        """Gap in days to each user's next session (`inf` = churned).

        A user who spent today's whole budget cannot come back before tomorrow.
        """
        users = np.asarray(rows, dtype=np.int64)
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), users.shape)
        gap = self.returns.sample(self.satisfaction[users], self.return_propensity[users], streams, users,
                                  self.consumed[users] >= self.returns.config.churn_after)
        gap = np.maximum(gap, self.earliest_return(users, now))
        self.last_session_end[users] = now
        return gap

    def earliest_return(self, rows: np.ndarray, now_days: np.ndarray) -> np.ndarray:
        """Smallest possible gap: 0, or the time to tomorrow for users who spent today's whole budget."""
        exhausted = self.time_left[rows] <= self.dyn.browse_minutes
        return np.where(exhausted, np.floor(now_days) + 1.0 - now_days, 0.0)

    # ------------------------------------------------------------------ reviewing

    def review(
        self, slates: np.ndarray, streams: UserStreams, rows: np.ndarray | None = None,
        utility_bonus: np.ndarray | None = None,
    ) -> BatchFeedback:
        """Users `rows` (all, in order, when None) review their slates (R, K) in order.

        `utility_bonus` (R, K) is added to each item's click utility: what the user's world adds
        to the item itself, such as social proof on a shared platform.

        Only the interest drift feeds back into later choices within a slate, so only it
        runs position by position; satisfaction, fatigue, patience and time are linear
        recurrences over the slate, solved for all positions at once. Positions after the
        one where a user leaves are then masked out, which gives exactly the item-by-item
        process because no position depends on a later one.
        """
        b, k = slates.shape
        users = np.arange(b) if rows is None else np.asarray(rows, dtype=np.int64)
        at: slice | np.ndarray = slice(None) if rows is None else users  # state rows of the reviewers
        dyn, choice = self.dyn, self.choice
        positions = _positions(k)
        memory_items = self.memory_items[at]
        interests = self.interests[at]
        # Memory slots hold -1 when empty; -1 indexes the zero row appended to the table,
        # so empty slots have similarity 0 and never count as "seen before".
        context = np.take(self._emb_padded, np.concatenate([slates, memory_items], axis=1), axis=0)
        emb = context[:, :k]  # (R, K, D)
        quality = self._quality[slates]
        duration = self._duration[slates]
        rel = (emb @ interests.astype(np.float32)[:, :, None])[:, :, 0].astype(np.float64)

        # Novelty: 1 - max similarity to anything seen lately or earlier in this slate.
        # Kept in float32: the maxima and the drift read them as float64 exactly (the cast is exact).
        sims = emb @ context.transpose(0, 2, 1)
        gram = sims[:, :, :k]
        max_sim = (sims * _novelty_mask(k, sims.shape[2] - k)).max(axis=2).astype(np.float64)
        novelty = 1.0 - np.minimum(max_sim, 1.0)
        tau = dyn.repetition_similarity
        fatigue_inc = dyn.fatigue_repetition * _unit_clip((max_sim - tau) / (1.0 - tau)) + (
            self._low_quality_fatigue[slates]
        )
        rho = dyn.fatigue_recovery
        fat = np.minimum(_recurrence(self.fatigue[at], rho, fatigue_inc / rho), 1.0)
        appetite = np.minimum(self.novelty[at][:, None] + 0.3 * fat, 1.0)

        # Choices in order: a click pulls interests toward the item, which moves the
        # relevance of every later item through the slate's Gram matrix. Between clicks
        # nothing changes, so the loop jumps from one click position to the next.
        noise = streams.logistic(users, (k, 4))
        popularity = self._popularity[slates] if choice.config.popularity else 0.0
        base = choice.utility(0.0, quality, novelty, appetite, fat, positions, popularity,
                              self.conformity[at][:, None], self.activity[at][:, None], duration)
        if utility_bonus is not None:
            base = base + utility_bonus
        w_rel, eta = choice.config.relevance, dyn.interest_drift
        # click <=> base + w_rel * relevance + noise > 0 <=> w_rel * relevance > threshold
        threshold = -noise[..., 0] - base
        if b == 1:
            rel_seen = _relevance_in_order_one(rel[0], gram[0], threshold[0], w_rel, eta)[None, :]
        else:
            rel_seen = _relevance_in_order(rel, gram, threshold, w_rel, eta)
        click = w_rel * rel_seen > threshold
        utility = base + w_rel * rel_seen
        level = choice.engagement(click, utility, noise[..., 1:3])
        # "Not interested": a skip whose utility (with the same click noise) is far below the click
        # threshold; no extra draw, so a row's stream is consumed exactly as without dislikes.
        dislike = ~click & (w_rel * rel_seen - threshold < -dyn.dislike_margin)

        # Everything else, for all positions at once, as if the whole slate were reviewed.
        completion = 1.0 / (1.0 + np.exp(-(utility + noise[..., 3])))
        spent = np.where(click, duration * completion, dyn.browse_minutes)
        time_path = self.time_left[at][:, None] - np.cumsum(spent, axis=1)
        target = np.where(
            click,
            _unit_clip(0.35 + 0.4 * rel_seen + 0.35 * quality - 0.3 * fat),
            _unit_clip(dyn.skip_satisfaction + dyn.skip_relevance * rel_seen) * (1.0 - fat),
        )
        rate = np.where(click, dyn.satisfaction_rate, dyn.satisfaction_rate * dyn.skip_weight)
        if dislike.any():  # a dislike pulls satisfaction lower, and harder, than a skip
            target = np.where(dislike, np.minimum(target, dyn.dislike_satisfaction), target)
            rate = np.where(dislike, np.maximum(rate, dyn.satisfaction_rate * dyn.dislike_weight), rate)
        sat = _recurrence(self.satisfaction[at], rate, target)
        last_click = np.maximum.accumulate(np.where(click, positions, -1), axis=1)
        patience_path = np.where(
            last_click >= 0,
            self.patience[at][:, None] - (positions - last_click),
            self.patience_left[at][:, None] - (positions + 1),
        )
        leaving = (time_path <= 0) | (patience_path <= 0) | (sat < dyn.satisfaction_collapse)
        left = leaving.any(axis=1)
        stop = np.where(left, leaving.argmax(axis=1), k - 1)
        reviewed = positions <= stop[:, None]

        reactions = np.where(reviewed, level, UNSEEN).astype(np.int8)
        dwell = np.where(reviewed, spent, 0.0)
        last = (np.arange(b), stop)
        consumed = click & reviewed
        disliked = dislike & reviewed
        interests = self._consume(interests, emb, consumed)
        if disliked.any():
            interests = self._push_away(interests, emb, disliked)
        self.interests[at] = interests
        self.consumed[at] += consumed.sum(axis=1)
        self.satisfaction[at] = sat[last]
        self.sat_short[at] = _recurrence(self.sat_short[at], _SHORT_EMA, sat)[last]
        self.sat_long[at] = _recurrence(self.sat_long[at], _LONG_EMA, sat)[last]
        self.fatigue[at] = fat[last]
        self.time_left[at] = np.maximum(time_path[last], 0.0)
        self.patience_left[at] = np.maximum(patience_path[last], 0)
        self._remember(at, slates, reactions, dwell, disliked)
        self.turn[at] += 1
        instructions = self._instruct(users, left, streams)
        exits = self._exit_reasons(left, stop, time_path, patience_path, max_sim, reviewed)
        return BatchFeedback(reactions, dwell.astype(np.float32), left, instructions, disliked=disliked,
                             exit_reasons=exits)

    def _exit_reasons(self, left: np.ndarray, stop: np.ndarray, time_path: np.ndarray, patience_path: np.ndarray,
                      max_sim: np.ndarray, reviewed: np.ndarray) -> list[ExitReason | None]:
        """Why each leaving row left, from what triggered it at the position it stopped (see `ExitReason`).

        The time budget comes first (a user out of time leaves whatever the feed); otherwise a slate
        whose reviewed items were mostly near-duplicates of what was seen makes it `repetitive`;
        otherwise patience running out is `bored` and a satisfaction collapse `irrelevant`."""
        out: list[ExitReason | None] = [None] * len(left)
        gone = np.flatnonzero(left)
        if not len(gone):
            return out
        p = stop[gone]
        seen = reviewed[gone]  # every leaving row reviewed at least its first item
        repeated = ((max_sim[gone] >= self.dyn.repetition_similarity) & seen).sum(axis=1) / seen.sum(axis=1)
        kind = np.select([time_path[gone, p] <= 0, repeated >= 0.5, patience_path[gone, p] <= 0], [0, 1, 2], 3)
        for j, i in zip(gone.tolist(), kind.tolist()):
            out[j] = _PARAMETRIC_EXITS[i]
        return out

    def _push_away(self, interests: np.ndarray, emb: np.ndarray, disliked: np.ndarray) -> np.ndarray:
        """Each disliked item pushes interests away from it by `dislike_push` (after the slate's drift),
        keeping the norm at most 1."""
        # Only rows with a dislike are touched: a row's state must not depend on the batch around it.
        rows = np.flatnonzero(disliked.any(axis=1))
        # einsum, not `@`: a batched product may go to BLAS, whose summation order depends on the batch.
        push = np.einsum("bk,bkd->bd", disliked[rows].astype(np.float64), emb[rows].astype(np.float64))
        vec = interests[rows] - self.dyn.dislike_push * push
        norm = np.sqrt(np.einsum("bd,bd->b", vec, vec))
        out = interests.copy()
        out[rows] = vec / np.maximum(1.0, norm)[:, None]
        return out

    def interview(self, user: int) -> Interview:
        """The end-of-session interview: the 1..5 band of the session's final satisfaction, and a sentence."""
        return _PARAMETRIC_INTERVIEWS[interview_score(float(self.satisfaction[user])) - 1]

    def _consume(self, interests: np.ndarray, emb: np.ndarray, consumed: np.ndarray) -> np.ndarray:
        """The slate's sequential interest drift in one shot.

        interests <- (1 - eta) interests + eta e_k for each consumed k, in order, expands to
        (1 - eta)^n interests + sum_k eta (1 - eta)^(consumed after k) e_k.
        """
        if not consumed.any():
            return interests
        eta = self.dyn.interest_drift
        keep_pow = _powers(1.0 - eta, consumed.shape[1])  # keep_pow[n] = (1 - eta)^n
        seen_so_far = consumed.cumsum(axis=1)
        n_consumed = seen_so_far[:, -1:]
        weights = (eta * consumed) * keep_pow[n_consumed - seen_so_far]  # (1 - eta)^(consumed after k)
        drift = (weights.astype(emb.dtype)[:, None, :] @ emb)[:, 0]
        return keep_pow[n_consumed] * interests + drift

    def _remember(self, at: slice | np.ndarray, slates: np.ndarray, reactions: np.ndarray,
                  dwell: np.ndarray, disliked: np.ndarray | None = None) -> None:
        seen = reactions != UNSEEN
        m = self.dyn.memory_size
        flags = np.zeros(reactions.shape, dtype=bool) if disliked is None else disliked
        self.memory_disliked[at] = np.concatenate([self.memory_disliked[at], flags], axis=1)[:, -m:]
        self.memory_items[at] = np.concatenate([self.memory_items[at], np.where(seen, slates, -1)], axis=1)[:, -m:]
        self.memory_reactions[at] = np.concatenate([self.memory_reactions[at], reactions], axis=1)[:, -m:]
        self.memory_dwell[at] = np.concatenate([self.memory_dwell[at], dwell.astype(np.float32)], axis=1)[:, -m:]

    def _instruct(self, users: np.ndarray, left: np.ndarray, streams: UserStreams) -> list[Instruction | None]:
        """Users who sense they are slipping (falling trend or low satisfaction) say why."""
        dyn = self.dyn
        slipping = ((self.sat_short[users] - self.sat_long[users]) < -dyn.instruction_trend) | (
            self.satisfaction[users] < dyn.instruction_level
        )
        ready = (self.turn[users] - self.last_instruction_turn[users]) > dyn.instruction_cooldown
        out: list[Instruction | None] = [None] * len(users)
        speaking = slipping & ready & ~left
        for j in np.flatnonzero(speaking).tolist():
            u = int(users[j])
            instr = self.writer.write(
                self.memory_items[u], self._favourites[u], self.interests[u], float(self.novelty[u]), streams[u]
            )
            self.apply_intent(u, instr.intent)
            out[j] = instr
        return out

    def apply_intent(self, user: int, intent: Intent) -> None:
        """Saying what one wants shifts what one will respond to, and buys the feed more patience."""
        direction = intent_direction(intent, self.catalog)
        vec = self.interests[user] + self.dyn.instruction_strength * direction
        self.interests[user] = vec / max(1.0, float(np.linalg.norm(vec)))
        self.patience_left[user] += self.patience[user] // 2
        self.last_instruction_turn[user] = self.turn[user]

    def set_mindset(self, user: int, mindset: Mindset) -> None:
        """Load a mindset decided elsewhere (an LLM user's turn) into the arrays, so later
        parametric steps, fallbacks and the return-gap model continue from it.

        The satisfaction trend is not loaded but derived: the new satisfaction moves the
        short and long averages as one observed step would.
        """
        if len(mindset.interests) != self._d:
            raise ValueError(f"mindset.interests has {len(mindset.interests)} dims, the catalog has {self._d}")
        s = mindset.satisfaction
        self.interests[user] = np.asarray(mindset.interests, dtype=np.float64)
        self.satisfaction[user] = s
        self.sat_short[user] += _SHORT_EMA * (s - self.sat_short[user])
        self.sat_long[user] += _LONG_EMA * (s - self.sat_long[user])
        self.fatigue[user] = mindset.fatigue
        self.novelty[user] = mindset.novelty_propensity
        self.time_left[user] = mindset.time_left_min
        self.patience_left[user] = mindset.patience_left
        m = self.dyn.memory_size
        recent = mindset.memory[-m:]
        pad = m - len(recent)
        self.memory_items[user] = [-1] * pad + [e.item for e in recent]
        self.memory_reactions[user] = [UNSEEN] * pad + [int(ReactionType[e.reaction.upper()]) for e in recent]
        self.memory_dwell[user] = [0.0] * pad + [e.dwell_min for e in recent]
        self.memory_disliked[user] = [False] * pad + [e.disliked for e in recent]

    # ------------------------------------------------------------------ inspection

    def mindset(self, user: int) -> Mindset:
        cat = self.catalog
        items, reactions, dwell = self.memory_items[user], self.memory_reactions[user], self.memory_dwell[user]
        memory = [
            MemoryEntry(item=int(i), topic=cat.topic_names[cat.topic[i]],
                        reaction=REACTION_NAMES[int(r)], dwell_min=round(float(w), 3), disliked=bool(x))
            for i, r, w, x in zip(items, reactions, dwell, self.memory_disliked[user])
            if i >= 0
        ]
        return Mindset(
            interests=[round(float(x), 5) for x in self.interests[user]],
            satisfaction=float(self.satisfaction[user]),
            satisfaction_trend=float(self.sat_short[user] - self.sat_long[user]),
            fatigue=float(self.fatigue[user]),
            novelty_propensity=float(self.novelty[user]),
            time_left_min=float(self.time_left[user]),
            patience_left=int(self.patience_left[user]),
            memory=memory,
            summary=self._summary(user),
        )

    def _summary(self, user: int) -> str:
        s, f, n = self.satisfaction[user], self.fatigue[user], self.novelty[user]
        mood = "enjoying the feed" if s > 0.6 else "lukewarm about the feed" if s > 0.35 else "frustrated"
        energy = "fresh" if f < 0.2 else "a bit bored" if f < 0.5 else "tired of seeing the same things"
        want = "wants something new" if n > 0.6 else "happy with familiar things" if n < 0.3 else "open to a mix"
        return f"Feeling {mood}, {energy}; {want}."
