"""LLM users: a chat model decides each turn; the parametric user keeps the world's physics.

`LLMUser` is a `UserSimulator`, so envs and recommenders cannot tell it from a parametric
user. Each turn the model sees the persona, the current mindset (numbers and feeling), a
bounded memory (recent items, earlier session summaries) and the slate, and answers with a
validated `TurnDecision`: a reaction, dwell and reason per item, the new satisfaction,
fatigue and feeling, whether it is disengaging (with an instruction) and whether it leaves.
At session end it writes a summary and says when it will come back.

A `ParametricUser` runs underneath and holds the state in its arrays: the LLM's decision is
loaded back with `ParametricUsers.set_mindset`, so interests drift toward what was watched,
time and patience run out the same way (both still force the user to leave), and when the
model gives no usable answer (after the backend's retries and repair) the parametric user
decides that step instead. Such a fallback is flagged in `SlateFeedback.fallback` (hence in
`info["llm_fallback"]` and the trajectory) and counted in `stats`. Budget exhaustion is not
a fallback: `BudgetExceeded` propagates and stops the study.

Every model call takes its sampling seed from the env's rng, so a rerun with the same seed
hits the record/replay cache for every call and reproduces the run exactly.
`areview`/`aend_session` are the async twins used to keep many users' turns in flight;
`review_all` runs one turn for a batch of users concurrently, each user's turns in order.
`LLMUsers` puts B of them behind the batch interface of `ParametricUsers`, for the
population world.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.llm.backend import ChatBackend, Structured, shared_backend
from recoworld.llm.config import SamplingParams
from recoworld.llm.errors import LLMError
from recoworld.mindset import UNSEEN, Instruction, Intent, MemoryEntry, Mindset, ReactionType
from recoworld.population import UserProfile
from recoworld.simulators.base import SlateFeedback
from recoworld.simulators.parametric import BatchFeedback, ParametricUser
from recoworld.simulators.prompts import (
    SESSION_END_SCHEMA,
    SessionEnd,
    TurnDecision,
    session_end_messages,
    turn_messages,
    turn_schema,
)

#: A user who says "right away" still comes back no sooner than an hour later.
MIN_GAP_DAYS = 1.0 / 24.0
_SEED_RANGE = 2**31 - 1

T = TypeVar("T")
Call = tuple[list[dict[str, str]], Structured[Any], SamplingParams]


class LLMUser:
    """One simulated user whose decisions come from a chat model (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        backend: ChatBackend,
        fallback: ParametricUser,
        *,
        recent_items: int = 8,
        session_memory: int = 3,
    ) -> None:
        self.catalog = catalog
        self.backend = backend
        self.fallback = fallback
        self.recent_items = recent_items
        self.session_memory = session_memory
        self.stats: Counter[str] = Counter()
        self._topics = list(catalog.topic_names)

    @classmethod
    def from_world(cls, catalog: Catalog, config: WorldConfig, backend: ChatBackend | None = None) -> LLMUser:
        """The LLM user of a world config; by default on the process-wide backend for `config.llm`."""
        parametric = ParametricUser.from_configs(catalog, config.choice, config.dynamics, config.returns)
        return cls(catalog, backend or shared_backend(config.llm), parametric)

    @property
    def _users(self) -> Any:
        return self.fallback.users

    # ------------------------------------------------------------------ lifecycle

    def reset(self, profile: UserProfile, rng: np.random.Generator) -> None:
        self.fallback.reset(profile, rng)
        self.profile = profile
        self._sessions: list[str] = []
        self._feeling = self.fallback.mindset().summary
        self._session_items: list[tuple[int, str]] = []

    def start_session(self, now_days: float, rng: np.random.Generator) -> None:
        self.fallback.start_session(now_days, rng)
        self._session_items = []

    def review(self, slate: np.ndarray, rng: np.random.Generator) -> SlateFeedback:
        call = self._turn_call(slate, rng)
        try:
            decision = self.backend.complete(*call)
        except LLMError as err:
            return self._fall_back(slate, rng, err)
        return self._apply(slate, decision)

    async def areview(self, slate: np.ndarray, rng: np.random.Generator) -> SlateFeedback:
        call = self._turn_call(slate, rng)
        try:
            decision = await self.backend.acomplete(*call)
        except LLMError as err:
            return self._fall_back(slate, rng, err)
        return self._apply(slate, decision)

    def end_session(self, now_days: float, rng: np.random.Generator) -> float | None:
        parametric_gap = self.fallback.end_session(now_days, rng)
        call = self._end_call(rng)
        try:
            end = self.backend.complete(*call)
        except LLMError as err:
            return self._end_fall_back(err, parametric_gap)
        return self._apply_end(end, now_days)

    async def aend_session(self, now_days: float, rng: np.random.Generator) -> float | None:
        parametric_gap = self.fallback.end_session(now_days, rng)
        call = self._end_call(rng)
        try:
            end = await self.backend.acomplete(*call)
        except LLMError as err:
            return self._end_fall_back(err, parametric_gap)
        return self._apply_end(end, now_days)

    def mindset(self) -> Mindset:
        return self.fallback.mindset().model_copy(update={"summary": self._feeling})

    # ------------------------------------------------------------------ a turn

    def _params(self, rng: np.random.Generator) -> SamplingParams:
        return self.backend.config.sampling.model_copy(update={"seed": int(rng.integers(_SEED_RANGE))})

    def _turn_call(self, slate: np.ndarray, rng: np.random.Generator) -> Call:
        items = [int(i) for i in slate]
        messages = turn_messages(self.catalog, self.profile, self.mindset(), self._feeling, self._sessions,
                                 self.recent_items, items)
        topics = set(self._topics)

        def check(d: TurnDecision) -> TurnDecision:
            """Every slate item exactly once, in slate order; unknown ids and topics dropped."""
            first: dict[int, Any] = {}
            for r in d.reactions:
                first.setdefault(r.item, r)
            missing = [i for i in items if i not in first]
            if missing:
                unknown = sorted(set(first) - set(items))
                raise ValueError(f"no reaction for item ids {missing}"
                                 + (f"; ids {unknown} are not in the feed" if unknown else ""))
            instruction = d.instruction
            if instruction is not None:
                kept = [t for t in instruction.topics if t in topics]
                instruction = instruction.model_copy(update={"topics": kept}) if instruction.text else None
            return d.model_copy(update={"reactions": [first[i] for i in items], "instruction": instruction})

        spec = Structured(TurnDecision, json_schema=turn_schema(items, self._topics), check=check)
        return messages, spec, self._params(rng)

    def _apply(self, slate: np.ndarray, d: TurnDecision) -> SlateFeedback:
        """Play the decision through the world's physics and load the result into the parametric state."""
        users, cat = self._users, self.catalog
        dyn = users.dyn
        before = self.fallback.mindset()
        k = len(slate)
        reactions = np.full(k, UNSEEN, dtype=np.int8)
        dwell = np.zeros(k, dtype=np.float32)
        interests = np.asarray(before.interests, dtype=np.float64)
        time_left, patience = before.time_left_min, before.patience_left
        memory, reasons = list(before.memory), []
        left = False
        for pos, (item, r) in enumerate(zip(slate.tolist(), d.reactions)):
            level = ReactionType[r.reaction.upper()]
            if level == ReactionType.SKIP:
                minutes, patience = dyn.browse_minutes, patience - 1
            else:
                minutes = float(np.clip(r.dwell_min, dyn.browse_minutes, cat.duration_min[item]))
                patience = int(users.patience[0])
                interests = (1.0 - dyn.interest_drift) * interests + dyn.interest_drift * cat.embeddings[item]
            reactions[pos], dwell[pos] = level, minutes
            reasons.append(r.reason)
            memory.append(MemoryEntry(item=item, topic=cat.topic_names[cat.topic[item]], reaction=r.reaction,
                                      dwell_min=round(minutes, 3)))
            self._session_items.append((item, r.reaction))
            time_left -= minutes
            if time_left <= 0 or patience <= 0:
                left = True
                break
        left = left or d.leave
        users.set_mindset(0, before.model_copy(update={
            "interests": interests.tolist(), "satisfaction": d.satisfaction, "fatigue": d.fatigue,
            "time_left_min": max(time_left, 0.0), "patience_left": max(patience, 0), "memory": memory,
        }))
        users.turn[0] += 1
        if d.feeling:
            self._feeling = d.feeling
        instruction = None
        if d.instruction is not None and not left:
            stated = d.instruction
            instruction = Instruction(text=stated.text, intent=Intent(kind=stated.kind, topics=stated.topics))
            users.apply_intent(0, instruction.intent)
        self.stats["llm_turns"] += 1
        return SlateFeedback(reactions, dwell, instruction, left, reasons)

    def _fall_back(self, slate: np.ndarray, rng: np.random.Generator, err: LLMError) -> SlateFeedback:
        fb = self.fallback.review(slate, rng)
        fb.fallback = True
        seen = fb.reactions != UNSEEN
        for item, level in zip(slate[seen].tolist(), fb.reactions[seen].tolist()):
            self._session_items.append((item, ReactionType(level).name.lower()))
        self._feeling = self.fallback.mindset().summary
        self.stats["fallback_turns"] += 1
        self.stats[f"fallback_{err.reason}"] += 1
        return fb

    # ------------------------------------------------------------------ session end

    def _end_call(self, rng: np.random.Generator) -> Call:
        messages = session_end_messages(self.catalog, self.profile, self.mindset(), self._feeling,
                                        self._session_items)
        return messages, Structured(SessionEnd, json_schema=SESSION_END_SCHEMA), self._params(rng)

    def _apply_end(self, end: SessionEnd, now_days: float) -> float | None:
        self.stats["llm_session_ends"] += 1
        self._remember_session(now_days, end.summary)
        if not end.come_back:
            return None
        earliest = float(self._users.earliest_return(np.zeros(1, dtype=np.int64), np.array([now_days]))[0])
        return max(end.return_in_days, earliest, MIN_GAP_DAYS)

    def _end_fall_back(self, err: LLMError, parametric_gap: float | None) -> float | None:
        self.stats["fallback_session_ends"] += 1
        self.stats[f"fallback_{err.reason}"] += 1
        self._remember_session(self._users.last_session_end[0], self._feeling)
        return parametric_gap

    def _remember_session(self, now_days: float, summary: str) -> None:
        self._sessions = [*self._sessions, f"day {int(now_days)}: {summary}"][-self.session_memory :]


async def review_all(
    users: Sequence[LLMUser], slates: Sequence[np.ndarray], rngs: Sequence[np.random.Generator]
) -> list[SlateFeedback]:
    """One turn for many users with their model calls in flight together (bounded by the
    backend's `concurrency`); results come back in input order."""
    if not len(users) == len(slates) == len(rngs):
        raise ValueError(f"review_all needs one slate and rng per user, got {len(users)} users, "
                         f"{len(slates)} slates, {len(rngs)} rngs")
    return list(await asyncio.gather(*(u.areview(s, r) for u, s, r in zip(users, slates, rngs))))


class LLMUsers:
    """B LLM users behind the batch interface of `ParametricUsers`, for the population world.

    Each user is an `LLMUser` with its own parametric state and its own random stream,
    spawned from the world's rng at `reset`: what a user draws (sampling seeds, fallback
    decisions, return gaps) never depends on the other users or on the order in which
    replies arrive, so a step with many calls in flight gives exactly what one call at a
    time gives. A step's turns, and its session ends, are in flight together on this
    thread's event loop, at most `LLMConfig.concurrency` at once.
    """

    def __init__(self, catalog: Catalog, config: WorldConfig, n_users: int, backend: ChatBackend | None = None) -> None:
        backend = backend or shared_backend(config.llm)
        self.users = [LLMUser.from_world(catalog, config, backend) for _ in range(n_users)]
        self._rngs: list[np.random.Generator] = []

    @property
    def stats(self) -> Counter[str]:
        """Model turns, session ends and fallbacks (by reason) of all users together."""
        return sum((u.stats for u in self.users), Counter())

    def reset(self, profiles: list[UserProfile], rng: np.random.Generator) -> None:
        if len(profiles) != len(self.users):
            raise ValueError(f"LLMUsers holds {len(self.users)} users, got {len(profiles)} profiles")
        self._rngs = rng.spawn(len(profiles))
        for user, profile, user_rng in zip(self.users, profiles, self._rngs):
            user.reset(profile, user_rng)

    def start_sessions(self, users: np.ndarray, now_days: np.ndarray, rng: np.random.Generator) -> None:
        del rng  # each user draws from its own stream
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), np.shape(users))
        for u, t in zip(np.asarray(users).tolist(), now.tolist()):
            self.users[u].start_session(t, self._rngs[u])

    def review(self, slates: np.ndarray, users: np.ndarray) -> BatchFeedback:
        """`users` (indices) review their rows of `slates` (B, K); other rows stay unseen.

        Unlike `ParametricUsers.review` there is no utility bonus: an LLM user's choice is
        the model's, and the prompt says nothing of what other users liked.
        """
        b, k = slates.shape
        rows = np.asarray(users).tolist()
        fbs = _run(review_all([self.users[u] for u in rows], [slates[u] for u in rows], [self._rngs[u] for u in rows]))
        reactions, dwell = np.full((b, k), UNSEEN, dtype=np.int8), np.zeros((b, k), dtype=np.float32)
        left, fallback = np.zeros(b, dtype=bool), np.zeros(b, dtype=bool)
        instructions: list[Instruction | None] = [None] * b
        for u, fb in zip(rows, fbs):
            reactions[u], dwell[u], left[u], instructions[u], fallback[u] = (
                fb.reactions, fb.dwell_min, fb.left, fb.instruction, fb.fallback)
        return BatchFeedback(reactions, dwell, left, instructions, fallback)

    def end_sessions(self, users: np.ndarray, now_days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gap in days to each user's next session (`inf` = churned), the session-end calls in flight together."""
        del rng  # each user draws from its own stream
        rows = np.asarray(users).tolist()
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), (len(rows),)).tolist()

        async def end_all() -> list[float | None]:
            ends = (self.users[u].aend_session(t, self._rngs[u]) for u, t in zip(rows, now))
            return list(await asyncio.gather(*ends))

        return np.array([np.inf if g is None else g for g in _run(end_all())], dtype=np.float64)


_LOOPS = threading.local()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on this thread's own event loop, kept across calls so that a backend's async
    client (bound to the loop it first ran on) and its open connections are reused."""
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)
