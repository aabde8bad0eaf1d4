"""Parametric mindset users: the fast, numeric user model, vectorized over a batch.

`ParametricUsers` holds B users' mindsets as arrays and reviews B slates at once. Items
are reviewed in order; after each one the mindset moves (interests drift toward what
was consumed, satisfaction follows the experience, fatigue follows repetition and low
quality) and the user may leave. The loops over users and positions are compiled
(`recoworld.simulators.review_kernels`); the choice model's utility and engagement stay
numpy arrays over the whole batch, so a `ChoiceModel` can be swapped in.

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
from recoworld.population import UserProfile, interest_vectors
from recoworld.simulators.base import BatchFeedback
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.instructions import InstructionWriter, intent_direction
from recoworld.simulators.return_gap import ReturnGapModel
from recoworld.simulators.review_kernels import (
    low_quality_fatigue,
    relevance_in_order,
    review_inputs,
    settle,
    settle_params,
    slate_geometry,
)
from recoworld.streams import UserStreams

#: A parametric user's exit reasons, by the index `review_kernels.settle` picks (shared: `ExitReason` is frozen).
_PARAMETRIC_EXITS = (
    ExitReason(kind="out_of_time", text="Out of time for today."),
    ExitReason(kind="repetitive", text="The feed kept showing me the same things."),
    ExitReason(kind="bored", text="Nothing worth watching for too long."),
    ExitReason(kind="irrelevant", text="None of this is what I am interested in."),
)
#: The exit reason of each `settle` exit kind, by index: the kinds 0..3, then None for -1 (users who stay).
_EXIT_OF_KIND: tuple[ExitReason | None, ...] = (*_PARAMETRIC_EXITS, None)
#: A parametric user's interview answers, by score 1..5 (shared: `Interview` is frozen).
_PARAMETRIC_INTERVIEWS = tuple(
    Interview(score=score, text=text) for score, text in enumerate(
        ("That was a waste of my time.", "Mostly not for me today.", "It was okay, nothing special.",
         "I enjoyed most of what I saw.", "Great session, exactly my kind of thing."), start=1)
)


@functools.cache
def _positions(k: int) -> np.ndarray:
    return np.arange(k)


def _unit_clip(x: np.ndarray) -> np.ndarray:
    """np.clip(x, 0, 1) without np.clip's per-call overhead, which dominates on small arrays."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


class ParametricUsers:
    """B simulated users whose mindsets live in arrays (struct of arrays)."""

    # The mindset, one row per user, set by `reset` (by the names `_initial_state` gives them).
    long_term: np.ndarray  # (B, D) float64: the interests sessions recover towards
    interests: np.ndarray  # (B, D) float64: the current interests
    novelty_trait: np.ndarray  # (B,) float64: the profile's novelty propensity
    novelty: np.ndarray  # (B,) float64: the current one
    patience: np.ndarray  # (B,) int64: items a session tolerates without a click
    patience_left: np.ndarray  # (B,) int64
    budget: np.ndarray  # (B,) float64: minutes a day
    time_left: np.ndarray  # (B,) float64: minutes left today
    return_propensity: np.ndarray  # (B,) float64
    conformity: np.ndarray  # (B,) float64: the profile's popularity affinity
    activity: np.ndarray  # (B,) float64: the click logit's per-user offset
    satisfaction: np.ndarray  # (B,) float64
    sat_short: np.ndarray  # (B,) float64
    sat_long: np.ndarray  # (B,) float64
    fatigue: np.ndarray  # (B,) float64
    memory_items: np.ndarray  # (B, M) int64, -1 where empty
    memory_reactions: np.ndarray  # (B, M) int8, UNSEEN where empty
    memory_dwell: np.ndarray  # (B, M) float32
    memory_disliked: np.ndarray  # (B, M) bool
    turn: np.ndarray  # (B,) int64
    consumed: np.ndarray  # (B,) int64: clicks so far
    last_instruction_turn: np.ndarray  # (B,) int64
    last_session_end: np.ndarray  # (B,) float64 days, -inf before the first session
    shift_day: np.ndarray  # (B,) float64 day of the interest shift, inf for none
    taste_tables: np.ndarray  # (B, topics, minutes bins): only in a world with tastes

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
        # float32 like the catalog: the slate's embedding products are the bulk of a review, and
        # float32 halves their memory traffic; their results continue in float64.
        self._emb_padded = np.vstack([catalog.embeddings, np.zeros((1, catalog.embedding_dim))]).astype(np.float32)
        # the dynamics the compiled review reads, packed by name (`review_kernels.SETTLE_PARAMS`)
        self._settle_params = settle_params(dict(self.dyn))
        self._quality = catalog.quality.astype(np.float64)
        self._low_quality_fatigue = low_quality_fatigue(self._quality, self._settle_params)
        self._duration = catalog.duration_min.astype(np.float64)
        self._popularity = catalog.popularity_z
        self._taste = self.choice.taste_on(catalog)  # a distilled world's tastes beyond the favourite topics
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
        long_term = interest_vectors(profiles, self.catalog).astype(np.float64)
        novelty = np.array([p.novelty_trait for p in profiles], dtype=np.float64)
        patience = np.array([p.patience for p in profiles], dtype=np.int64)
        budget = np.array([p.time_budget_min for p in profiles], dtype=np.float64)
        satisfaction = np.full(b, self.dyn.initial_satisfaction)
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
        } | ({} if self._taste is None else {"taste_tables": self._taste.tables(profiles)})

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
        initial = self.dyn.initial_satisfaction
        sat = initial + (self.satisfaction[users] - initial) * np.exp(
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

        The slate's geometry (relevance, similarity to what was seen, fatigue) comes first, then
        the choice model's utility of every position, then the choices in order (a click pulls
        interests toward the item, which moves every later relevance), and last the walk along
        the slate until the user leaves (`recoworld.simulators.review_kernels`). Positions after
        the one where a user leaves are never reached: their reactions are UNSEEN.
        """
        b, k = slates.shape
        users = np.arange(b) if rows is None else np.asarray(rows, dtype=np.int64)
        dyn, choice = self.dyn, self.choice
        slates = np.ascontiguousarray(slates, dtype=np.int64)
        # Memory slots hold -1 when empty; -1 indexes the zero row appended to the table, so empty
        # slots have similarity 0 and never count as "seen before".
        context, quality, duration, interests = review_inputs(
            self._emb_padded, self._quality, self._duration, slates, self.memory_items, self.interests, users)
        emb = context[:, :k]  # (R, K, D)
        rel = (emb @ interests[:, :, None])[:, :, 0].astype(np.float64)
        sims = emb @ context.transpose(0, 2, 1)  # (R, K, K + M): the slate's Gram matrix, then the memory
        max_sim, novelty, fat, appetite = slate_geometry(
            sims, slates, self._low_quality_fatigue, self.fatigue, self.novelty, users, self._settle_params,
        )
        noise = streams.logistic(users, (k, 4))
        popularity = self._popularity[slates] if choice.config.popularity else 0.0
        base = choice.base_utility(quality, novelty, appetite, fat, _positions(k), popularity,
                                   self.conformity[users][:, None], self.activity[users][:, None], duration)
        if self._taste is not None:
            base = base + self._taste.bonus(self.taste_tables[users], slates)
        if utility_bonus is not None:
            base = base + utility_bonus
        # click <=> base + relevance term + noise > 0; "not interested": a skip whose relevance term is far
        # below the click threshold (no extra draw, so a row's stream is consumed exactly as without dislikes)
        base = np.ascontiguousarray(np.broadcast_to(base, (b, k)), dtype=np.float64)
        rel_seen, click, utility, dislike = relevance_in_order(
            rel, sims, noise, base, choice.relevance_address, choice.config.relevance, dyn.interest_drift,
            dyn.dislike_margin)
        level = np.asarray(choice.engagement(click, utility, noise[..., 1:3]), dtype=np.int8)
        reactions, dwell, left, disliked, exit_kind = settle(
            slates, users, click, level, dislike, utility,
            np.ascontiguousarray(noise[..., 3]), rel_seen, fat, max_sim, self._emb_padded, quality, duration,
            self._settle_params, self.interests, self.satisfaction, self.sat_short, self.sat_long, self.fatigue,
            self.time_left, self.patience, self.patience_left, self.consumed, self.memory_items,
            self.memory_reactions, self.memory_dwell, self.memory_disliked,
        )
        self.turn[users] += 1
        instructions = self._instruct(users, left, streams)
        exits: list[ExitReason | None] = list(map(_EXIT_OF_KIND.__getitem__, exit_kind.tolist()))
        return BatchFeedback(reactions, dwell, left, instructions, disliked=disliked, exit_reasons=exits)

    def interview(self, user: int) -> Interview:
        """The end-of-session interview: the 1..5 band of the session's final satisfaction, and a sentence."""
        return _PARAMETRIC_INTERVIEWS[interview_score(float(self.satisfaction[user])) - 1]

    def _instruct(self, users: np.ndarray, left: np.ndarray, streams: UserStreams) -> list[Instruction | None]:
        """Users who sense they are slipping (falling trend or low satisfaction) say why."""
        dyn = self.dyn
        slipping = ((self.sat_short[users] - self.sat_long[users]) < -dyn.instruction_trend) | (
            self.satisfaction[users] < dyn.instruction_level
        )
        ready = (self.turn[users] - self.last_instruction_turn[users]) > dyn.instruction_cooldown
        out: list[Instruction | None] = [None] * len(users)
        speaking = np.flatnonzero(slipping & ready & ~left)
        if not len(speaking):
            return out
        speakers = users[speaking]
        rows = speakers.tolist()
        said = self.writer.write_many(self.memory_items[speakers], [self._favourites[u] for u in rows],
                                      self.interests[speakers], self.novelty[speakers], [streams[u] for u in rows])
        self.apply_intents(speakers, [instruction.intent for instruction in said])
        for j, instruction in zip(speaking.tolist(), said):
            out[j] = instruction
        return out

    def apply_intent(self, user: int, intent: Intent) -> None:
        """One user's `apply_intents` (LLM users replay their instruction on the parametric state)."""
        self.apply_intents(np.array([user]), [intent])

    def apply_intents(self, users: np.ndarray, intents: Sequence[Intent]) -> None:
        """Saying what one wants shifts what one will respond to, and buys the feed more patience
        (one intent per user of `users`, distinct users)."""
        directions = np.stack([intent_direction(intent, self.catalog) for intent in intents])
        vec = self.interests[users] + self.dyn.instruction_strength * directions
        # Each row's norm by np.linalg.norm's own formula, sqrt(row @ row): a stacked (1, D) @ (D, 1) product
        # takes the same BLAS dot per row, in one call; rows longer than 1 are scaled back to it.
        norms = np.sqrt(np.matmul(vec[:, None, :], vec[:, :, None])[:, 0, 0])
        vec /= np.where(norms > 1.0, norms, 1.0)[:, None]
        self.interests[users] = vec
        self.patience_left[users] += self.patience[users] // 2
        self.last_instruction_turn[users] = self.turn[users]

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
        self.sat_short[user] += self.dyn.satisfaction_short_ema * (s - self.sat_short[user])
        self.sat_long[user] += self.dyn.satisfaction_long_ema * (s - self.sat_long[user])
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
