"""LLM users: a chat model decides each turn; the parametric user keeps the world's physics.

`LLMUsers` is a `BatchUserSimulator`, so the world and recommenders cannot tell B LLM users
from B parametric ones (the single-user env is B = 1). Each turn the model sees the
persona, the current mindset (numbers and feeling), a bounded memory (recent items, earlier
session summaries) and the slate, and answers with a validated `TurnDecision`: a reaction and
dwell per item (and a short reason with `LLMConfig.reasons`), the new satisfaction, fatigue and
feeling, whether it is disengaging (then with an instruction or null) and whether it leaves
(then with the exit's kind and words). At session end it writes a summary
and says when it will come back.

Each user is an `LLMUser` (an internal helper) over a `ParametricUsers` of its own with
B = 1, which holds the state in its arrays and is driven through the same batch protocol:
the LLM's decision is loaded back with `ParametricUsers.set_mindset`, so interests drift
toward what was watched, time and patience run out the same way (both still force the user
to leave), and when the model gives no usable answer (after the backend's retries and
repair) the parametric user decides that step instead. Such a fallback is flagged in
`BatchFeedback.fallback` (hence in `info["llm_fallback"]` and the trajectory) and counted
in `LLMUsers.stats`. Budget exhaustion is not a fallback: `BudgetExceeded` propagates and
stops the study; so does `FallbackRateExceeded`, the backend's circuit breaker, once too many
recent calls failed (`LLMConfig.max_fallback_rate`): a dead server stops the run instead of
turning it into a run of parametric users. Either way the step's other calls in flight are
cancelled. With `LLMConfig.reasons`, the per-item reasons of model decisions go into
`BatchFeedback.reasons` (empty without).

All randomness of user row i comes from `streams[i]`: every model call takes its sampling
seed from it, and so do the parametric fallback's draws. A row therefore behaves the same
whatever the batch and however the replies interleave, and a rerun with the same seeds hits
the record/replay cache for every call and reproduces the run exactly. A step's turns (and
its session ends) are in flight together on this thread's event loop (`review_all`), at most
`LLMConfig.concurrency` at once; `utility_bonus` is ignored, since an LLM user's choice is
the model's and the prompt says nothing of what other users liked.

Review modes (`LLMConfig.review_mode`). `slate` (the default) is the one call per turn above:
the model sees the whole slate and answers for every item at once, so it can look ahead.
`item` is the blueprint's user, who reviews one item at a time: one call per item, in slate
order, each answered with an `ItemDecision` (reaction, dwell, reason if asked, the satisfaction,
fatigue and feeling after it, and whether it leaves). Each decision goes through the same
physics as a slate turn's item and is loaded into the parametric state before the next call,
so call k's prompt shows the mindset and memory left by item k - 1, and only item k itself:
earlier items appear as memory, later ones never. The turn stops at the first item where the
user leaves (by its own word, or time or patience running out); later positions are UNSEEN
and cost no call. An instruction is asked for on the slate's last item only (the one point
where the user has seen the whole feed and stays); a user who leaves gives none, as in slate
mode. A failed item call (after retries and repair) hands the rest of the slate, from that
item on, to the parametric user as one review, and the turn is flagged `fallback`; the model's
decisions before it stand, with their reasons (`reasons` then covers a prefix of the reviewed
items). Users of a step are still in flight together; one user's items are sequential. Every
item call is an ordinary backend call (cache, budgets, usage), so a turn costs up to
`slate_size` calls, with shorter prompts than a slate turn's (`experiments/bench_llm.py
--review-modes slate item` measures both).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Coroutine, Generator, Sequence
from typing import Any, TypeAlias, TypeVar

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.llm.backend import ChatBackend, Structured, shared_backend
from recoworld.llm.config import SamplingParams
from recoworld.llm.errors import LLMError
from recoworld.mindset import (
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
from recoworld.simulators.base import BatchFeedback, SlateFeedback
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.prompts import (
    SESSION_END_SCHEMA,
    ItemDecision,
    SessionEnd,
    StatedInstruction,
    TurnDecision,
    item_messages,
    item_schema,
    session_end_messages,
    turn_messages,
    turn_schema,
)
from recoworld.streams import UserStreams

#: A user who says "right away" still comes back no sooner than an hour later.
MIN_GAP_DAYS = 1.0 / 24.0
_SEED_RANGE = 2**31 - 1
_ROW0 = np.zeros(1, dtype=np.int64)

T = TypeVar("T")
Call = tuple[list[dict[str, str]], Structured[Any], SamplingParams]
#: An item-by-item turn: yields each item's call, is sent the decision (or the `LLMError`), returns the feedback.
ItemTurn = Generator[Call, "ItemDecision | LLMError", SlateFeedback]
#: What a turn's call is answered with: the mode's decision, or the `LLMError` its call raised.
Reply: TypeAlias = "TurnDecision | ItemDecision | LLMError"
#: A turn in either mode: yields its calls, is sent their replies, returns the feedback.
Turn = Generator[Call, Reply, SlateFeedback]
REVIEW_MODES = ("slate", "item")


class LLMUser:
    """One LLM user (a row of `LLMUsers`) over its own B = 1 `ParametricUsers` (see the module docstring).

    `rng` arguments are the user's own stream (`streams[row]` of the batch).
    """

    def __init__(
        self,
        catalog: Catalog,
        backend: ChatBackend,
        fallback: ParametricUsers,
        *,
        recent_items: int = 8,
        session_memory: int = 3,
        stats: Counter[str] | None = None,
        review_mode: str = "slate",
        reasons: bool = False,
    ) -> None:
        if review_mode not in REVIEW_MODES:
            raise ValueError(f"review_mode must be one of {', '.join(REVIEW_MODES)}, got {review_mode!r}")
        self.review_mode = review_mode
        self.reasons = reasons
        self.catalog = catalog
        self.backend = backend
        self.fallback = fallback
        self.recent_items = recent_items
        self.session_memory = session_memory
        self.stats: Counter[str] = Counter() if stats is None else stats
        self._topics = list(catalog.topic_names)

    @classmethod
    def from_world(
        cls, catalog: Catalog, config: WorldConfig, backend: ChatBackend | None = None,
        stats: Counter[str] | None = None,
    ) -> LLMUser:
        """The LLM user of a world config; by default on the process-wide backend for `config.llm`."""
        parametric = ParametricUsers(catalog, config.choice, config.dynamics, config.returns)
        return cls(catalog, backend or shared_backend(config.llm), parametric, stats=stats,
                   review_mode=config.llm.review_mode, reasons=config.llm.reasons)

    # ------------------------------------------------------------------ lifecycle

    def reset(self, profile: UserProfile) -> None:
        self.fallback.reset([profile])
        self.profile = profile
        self._sessions: list[str] = []
        self._feeling = self.fallback.mindset(0).summary
        self._session_items: list[tuple[int, str]] = []
        self.last_interview: Interview | None = None

    def start_session(self, now_days: float, rng: np.random.Generator) -> None:
        self.fallback.start_sessions(_ROW0, np.array([now_days]), UserStreams([rng]))
        self._session_items = []

    def review(self, slate: np.ndarray, rng: np.random.Generator) -> SlateFeedback:
        turn: Turn = self._turn(slate, rng)
        reply: Reply | None = None  # the first step starts the turn
        while True:
            try:
                call = next(turn) if reply is None else turn.send(reply)
            except StopIteration as done:
                return done.value
            try:
                reply = self.backend.complete(*call)
            except LLMError as err:
                reply = err

    async def areview(self, slate: np.ndarray, rng: np.random.Generator) -> SlateFeedback:
        turn: Turn = self._turn(slate, rng)
        reply: Reply | None = None  # the first step starts the turn
        while True:
            try:
                call = next(turn) if reply is None else turn.send(reply)
            except StopIteration as done:
                return done.value
            try:
                reply = await self.backend.acomplete(*call)
            except LLMError as err:
                reply = err

    def _turn(self, slate: np.ndarray, rng: np.random.Generator) -> Turn:
        """One turn as a generator of model calls, each answered with the decision or the `LLMError`:
        the sync and async paths only drive it, so the turn's logic exists once."""
        if self.review_mode == "item":
            return (yield from self._item_turn(np.asarray(slate), rng))
        reply = yield self._turn_call(slate, rng)
        if isinstance(reply, LLMError):
            return self._fall_back(slate, rng, reply)
        return self._apply(slate, reply)  # type: ignore[arg-type]

    def end_session(self, now_days: float, rng: np.random.Generator) -> float:
        """Days until the next session, `inf` when the user never comes back."""
        parametric_gap = self._parametric_end(now_days, rng)
        call = self._end_call(rng)
        try:
            end = self.backend.complete(*call)
        except LLMError as err:
            return self._end_fall_back(err, parametric_gap)
        return self._apply_end(end, now_days)

    async def aend_session(self, now_days: float, rng: np.random.Generator) -> float:
        parametric_gap = self._parametric_end(now_days, rng)
        call = self._end_call(rng)
        try:
            end = await self.backend.acomplete(*call)
        except LLMError as err:
            return self._end_fall_back(err, parametric_gap)
        return self._apply_end(end, now_days)

    def mindset(self) -> Mindset:
        return self.fallback.mindset(0).model_copy(update={"summary": self._feeling})

    # ------------------------------------------------------------------ a turn

    def _params(self, rng: np.random.Generator) -> SamplingParams:
        return self.backend.config.sampling.model_copy(update={"seed": int(rng.integers(_SEED_RANGE))})

    def _turn_call(self, slate: np.ndarray, rng: np.random.Generator) -> Call:
        items = [int(i) for i in slate]
        messages = turn_messages(self.catalog, self.profile, self.mindset(), self._feeling, self._sessions,
                                 self.recent_items, items, self.reasons)
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

        durations = [float(self.catalog.duration_min[i]) for i in items]
        spec = Structured(TurnDecision, json_schema=turn_schema(items, self._topics, durations, self.reasons),
                          check=check)
        return messages, spec, self._params(rng)

    def _apply(self, slate: np.ndarray, d: TurnDecision) -> SlateFeedback:
        """Play the decision through the world's physics and load the result into the parametric state."""
        users, cat = self.fallback, self.catalog
        dyn = users.dyn
        before = users.mindset(0)
        k = len(slate)
        reactions = np.full(k, UNSEEN, dtype=np.int8)
        dwell = np.zeros(k, dtype=np.float32)
        interests = np.asarray(before.interests, dtype=np.float64)
        time_left, patience = before.time_left_min, before.patience_left
        memory, reasons = list(before.memory), []
        disliked = np.zeros(k, dtype=bool)
        left, forced = False, None
        for pos, (item, r) in enumerate(zip(slate.tolist(), d.reactions)):
            disliked[pos] = r.reaction == "dislike"
            level = ReactionType.SKIP if disliked[pos] else ReactionType[r.reaction.upper()]
            if level == ReactionType.SKIP:
                minutes, patience = dyn.browse_minutes, patience - 1
                if disliked[pos]:
                    interests = _pushed_away(interests, cat.embeddings[item], dyn.dislike_push)
            else:
                minutes = float(np.clip(r.dwell_min, dyn.browse_minutes, cat.duration_min[item]))
                patience = int(users.patience[0])
                interests = (1.0 - dyn.interest_drift) * interests + dyn.interest_drift * cat.embeddings[item]
            reactions[pos], dwell[pos] = level, minutes
            if self.reasons:
                reasons.append(r.reason)
            memory.append(MemoryEntry(item=item, topic=cat.topic_names[cat.topic[item]], reaction=level.name.lower(),
                                      dwell_min=round(minutes, 3), disliked=bool(disliked[pos])))
            self._session_items.append((item, r.reaction))
            time_left -= minutes
            if time_left <= 0 or patience <= 0:
                left, forced = True, "out_of_time" if time_left <= 0 else "bored"
                break
        exit_reason = _exit_reason(d.leave, d.exit_reason, d.exit_text, forced) if left or d.leave else None
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
        return SlateFeedback(reactions, dwell, instruction, left, reasons, disliked=disliked,
                             exit_reason=exit_reason)

    def _fall_back(self, slate: np.ndarray, rng: np.random.Generator, err: LLMError, start: int = 0,
                   done: SlateFeedback | None = None) -> SlateFeedback:
        """The parametric user reviews `slate[start:]` (all of it in slate mode; in item mode the rest
        from the item whose call failed, after the model's decisions in `done`)."""
        slate = np.asarray(slate)
        batch = self.fallback.review(slate[None, start:], UserStreams([rng]))
        reactions, dwell = batch.reactions[0], batch.dwell_min[0]
        disliked = batch.disliked[0] if batch.disliked is not None else np.zeros(len(reactions), dtype=bool)
        if done is not None:
            reactions = np.concatenate([done.reactions[:start], reactions])
            dwell = np.concatenate([done.dwell_min[:start], dwell])
            before = done.disliked[:start] if done.disliked is not None else np.zeros(start, dtype=bool)
            disliked = np.concatenate([before, disliked])
        fb = SlateFeedback(reactions, dwell, batch.instructions[0], bool(batch.left[0]),
                           reasons=[] if done is None else done.reasons[:start], fallback=True, disliked=disliked,
                           exit_reason=batch.exit_reasons[0] if batch.exit_reasons is not None else None)
        seen = fb.reactions[start:] != UNSEEN
        for item, level, no in zip(slate[start:][seen].tolist(), fb.reactions[start:][seen].tolist(),
                                   disliked[start:][seen].tolist()):
            self._session_items.append((item, "dislike" if no else ReactionType(level).name.lower()))
        self._feeling = self.fallback.mindset(0).summary
        self.stats["fallback_turns"] += 1
        self.stats[f"fallback_{err.reason}"] += 1
        return fb

    # ------------------------------------------------------------------ an item-by-item turn

    def _item_turn(self, slate: np.ndarray, rng: np.random.Generator) -> ItemTurn:
        """One turn in `item` mode (see the module docstring), as a generator the sync and async
        paths both drive: it yields item k's call only after decision k - 1 is in the state."""
        k = len(slate)
        done = SlateFeedback(np.full(k, UNSEEN, dtype=np.int8), np.zeros(k, dtype=np.float32), None, False,
                             disliked=np.zeros(k, dtype=bool))
        stated: StatedInstruction | None = None
        for pos in range(k):
            reply = yield self._item_call(slate, pos, rng)
            if isinstance(reply, LLMError):
                return self._fall_back(slate, rng, reply, start=pos, done=done)
            level, minutes, forced = self._apply_item(int(slate[pos]), reply)
            done.reactions[pos], done.dwell_min[pos] = level, minutes
            done.disliked[pos] = reply.reaction == "dislike"  # type: ignore[index]
            done.left = forced is not None or reply.leave
            if done.left:
                done.exit_reason = _exit_reason(reply.leave, reply.exit_reason, reply.exit_text, forced)
            if self.reasons:
                done.reasons.append(reply.reason)
            stated = reply.instruction
            self.stats["llm_item_decisions"] += 1
            if done.left:
                break
        users = self.fallback
        users.turn[0] += 1
        if stated is not None and not done.left:
            done.instruction = Instruction(text=stated.text, intent=Intent(kind=stated.kind, topics=stated.topics))
            users.apply_intent(0, done.instruction.intent)
        self.stats["llm_turns"] += 1
        return done

    def _item_call(self, slate: np.ndarray, pos: int, rng: np.random.Generator) -> Call:
        item, last = int(slate[pos]), pos == len(slate) - 1
        messages = item_messages(self.catalog, self.profile, self.mindset(), self._feeling, self._sessions,
                                 self.recent_items, item, pos, len(slate), self.reasons)
        topics = set(self._topics)

        def check(d: ItemDecision) -> ItemDecision:
            """The item shown, and an instruction only on the last item (unknown topics dropped)."""
            if d.item != item:
                raise ValueError(f"the reply is about item id {d.item}; the feed shows item id {item}")
            instruction = d.instruction if last else None
            if instruction is not None:
                kept = [t for t in instruction.topics if t in topics]
                instruction = instruction.model_copy(update={"topics": kept}) if instruction.text else None
            return d.model_copy(update={"instruction": instruction})

        schema = item_schema(item, self._topics, last, float(self.catalog.duration_min[item]), self.reasons)
        spec = Structured(ItemDecision, json_schema=schema, check=check)
        return messages, spec, self._params(rng)

    def _apply_item(self, item: int, d: ItemDecision) -> tuple[int, float, str | None]:
        """One item's decision through the physics of `_apply`, loaded into the parametric state
        (so the next item's prompt shows it); the reaction level, minutes spent and what forced the user
        to leave (`out_of_time`, `bored` for patience; None when nothing did)."""
        users, cat = self.fallback, self.catalog
        dyn = users.dyn
        before = users.mindset(0)
        interests = np.asarray(before.interests, dtype=np.float64)
        disliked = d.reaction == "dislike"
        level = ReactionType.SKIP if disliked else ReactionType[d.reaction.upper()]
        if level == ReactionType.SKIP:
            minutes, patience = dyn.browse_minutes, before.patience_left - 1
            if disliked:
                interests = _pushed_away(interests, cat.embeddings[item], dyn.dislike_push)
        else:
            minutes = float(np.clip(d.dwell_min, dyn.browse_minutes, cat.duration_min[item]))
            patience = int(users.patience[0])
            interests = (1.0 - dyn.interest_drift) * interests + dyn.interest_drift * cat.embeddings[item]
        time_left = before.time_left_min - minutes
        memory = [*before.memory, MemoryEntry(item=item, topic=cat.topic_names[cat.topic[item]],
                                              reaction=level.name.lower(), dwell_min=round(minutes, 3),
                                              disliked=disliked)]
        self._session_items.append((item, d.reaction))
        users.set_mindset(0, before.model_copy(update={
            "interests": interests.tolist(), "satisfaction": d.satisfaction, "fatigue": d.fatigue,
            "time_left_min": max(time_left, 0.0), "patience_left": max(patience, 0), "memory": memory,
        }))
        if d.feeling:
            self._feeling = d.feeling
        forced = "out_of_time" if time_left <= 0 else "bored" if patience <= 0 else None
        return int(level), minutes, forced

    # ------------------------------------------------------------------ session end

    def _end_call(self, rng: np.random.Generator) -> Call:
        messages = session_end_messages(self.catalog, self.profile, self.mindset(), self._feeling,
                                        self._session_items)
        return messages, Structured(SessionEnd, json_schema=SESSION_END_SCHEMA), self._params(rng)

    def _parametric_end(self, now_days: float, rng: np.random.Generator) -> float:
        """The parametric session end: the fallback's gap, and the state's bookkeeping either way."""
        return float(self.fallback.end_sessions(_ROW0, np.array([now_days]), UserStreams([rng]))[0])

    def _apply_end(self, end: SessionEnd, now_days: float) -> float:
        self.stats["llm_session_ends"] += 1
        self._remember_session(now_days, end.summary)
        score = int(end.rating) if end.rating is not None else interview_score(self.mindset().satisfaction)
        self.last_interview = Interview(score=score, text=end.summary)
        if not end.come_back:
            return float("inf")
        earliest = float(self.fallback.earliest_return(_ROW0, np.array([now_days]))[0])
        return max(end.return_in_days, earliest, MIN_GAP_DAYS)

    def _end_fall_back(self, err: LLMError, parametric_gap: float) -> float:
        self.stats["fallback_session_ends"] += 1
        self.stats[f"fallback_{err.reason}"] += 1
        self.last_interview = self.fallback.interview(0)
        self._remember_session(float(self.fallback.last_session_end[0]), self._feeling)
        return parametric_gap

    def _remember_session(self, now_days: float, summary: str) -> None:
        self._sessions = [*self._sessions, f"day {int(now_days)}: {summary}"][-self.session_memory :]


def _pushed_away(interests: np.ndarray, item: np.ndarray, push: float) -> np.ndarray:
    """A dislike pushes interests away from the item (as `ParametricUsers` does), keeping the norm at most 1."""
    vec = interests - push * np.asarray(item, dtype=np.float64)
    return vec / max(1.0, float(np.linalg.norm(vec)))


def _exit_reason(said_leave: bool, kind: str | None, text: str, forced: str | None) -> ExitReason:
    """Why an LLM user left: what it said when it chose to leave (`other` if it gave no kind), else what
    forced it out (`out_of_time` for the time budget, `bored` for patience)."""
    if said_leave and kind is not None:
        return ExitReason(kind=kind, text=text)  # type: ignore[arg-type]
    if forced is not None and not said_leave:
        words = "Out of time for today." if forced == "out_of_time" else "Nothing worth watching for too long."
        return ExitReason(kind=forced, text=words)  # type: ignore[arg-type]
    return ExitReason(kind=forced or "other", text=text)  # type: ignore[arg-type]


async def review_all(
    users: Sequence[LLMUser], slates: Sequence[np.ndarray], rngs: Sequence[np.random.Generator]
) -> list[SlateFeedback]:
    """One turn for many users with their model calls in flight together (bounded by the
    backend's `concurrency`); results come back in input order."""
    if not len(users) == len(slates) == len(rngs):
        raise ValueError(f"review_all needs one slate and rng per user, got {len(users)} users, "
                         f"{len(slates)} slates, {len(rngs)} rngs")
    return await _gather([u.areview(s, r) for u, s, r in zip(users, slates, rngs)])


async def _gather(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """`asyncio.gather`, but an error that stops the run (a budget, the circuit breaker) cancels the
    calls still in flight instead of leaving them on this thread's loop for the next step to run."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class LLMUsers:
    """B LLM users behind the `BatchUserSimulator` protocol (see the module docstring).

    Each row is an `LLMUser` with its own B = 1 parametric state; every draw of row i
    (sampling seeds, fallback decisions, return gaps) comes from `streams[i]`, so a step
    with many calls in flight gives exactly what one call at a time gives. `stats` counts
    model turns, session ends and fallbacks (by reason) of all rows, across resets.
    """

    def __init__(
        self, catalog: Catalog, world_config: WorldConfig, n_users: int = 1, backend: ChatBackend | None = None
    ) -> None:
        if n_users < 0:
            raise ValueError(f"n_users must be >= 0, got {n_users}")
        self.catalog = catalog
        self.config = world_config
        self.backend = backend or shared_backend(world_config.llm)
        self.stats: Counter[str] = Counter()
        self.users = [self._new_user() for _ in range(n_users)]

    def _new_user(self) -> LLMUser:
        return LLMUser.from_world(self.catalog, self.config, self.backend, stats=self.stats)

    def __len__(self) -> int:
        return len(self.users)

    # ------------------------------------------------------------------ the protocol

    def reset(self, profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> None:
        """With `rows=None` the batch becomes `profiles` (resized to their number); otherwise
        re-initialise just `rows`. Draws nothing."""
        if rows is None:
            while len(self.users) < len(profiles):
                self.users.append(self._new_user())
            del self.users[len(profiles):]
            rows_list = list(range(len(profiles)))
        else:
            rows_list = np.asarray(rows, dtype=np.int64).tolist()
            if len(rows_list) != len(profiles):
                raise ValueError(f"reset got {len(profiles)} profiles for {len(rows_list)} rows")
        for r, profile in zip(rows_list, profiles):
            self.users[r].reset(profile)

    def start_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> None:
        rows_list = np.asarray(rows, dtype=np.int64).tolist()
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), (len(rows_list),)).tolist()
        for r, t in zip(rows_list, now):
            self.users[r].start_session(t, streams[r])

    def review(
        self, slates: np.ndarray, streams: UserStreams, rows: np.ndarray | None = None,
        utility_bonus: np.ndarray | None = None,
    ) -> BatchFeedback:
        """Row j of `slates` (R, K) is reviewed by user `rows[j]` (every user in order when
        `rows` is None); only those users' model calls are made, in flight together.
        `utility_bonus` is ignored (see the module docstring)."""
        del utility_bonus
        slates = np.asarray(slates)
        rows_list = list(range(len(self.users))) if rows is None else np.asarray(rows, dtype=np.int64).tolist()
        if slates.ndim != 2 or len(slates) != len(rows_list):
            raise ValueError(f"review needs one slate row per reviewing user: got slates of shape {slates.shape} "
                             f"for {len(rows_list)} users")
        fbs = _run(review_all([self.users[r] for r in rows_list], list(slates), [streams[r] for r in rows_list]))
        k = slates.shape[1]
        reactions = np.full((len(fbs), k), UNSEEN, dtype=np.int8)
        dwell = np.zeros((len(fbs), k), dtype=np.float32)
        disliked = np.zeros((len(fbs), k), dtype=bool)
        for j, fb in enumerate(fbs):
            reactions[j], dwell[j] = fb.reactions, fb.dwell_min
            if fb.disliked is not None:
                disliked[j] = fb.disliked
        return BatchFeedback(
            reactions, dwell, np.array([fb.left for fb in fbs], dtype=bool), [fb.instruction for fb in fbs],
            fallback=np.array([fb.fallback for fb in fbs], dtype=bool), reasons=[list(fb.reasons) for fb in fbs],
            disliked=disliked, exit_reasons=[fb.exit_reason if fb.left else None for fb in fbs],
        )

    def end_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> np.ndarray:
        """Gap in days to each user's next session (`inf` = churned), the session-end calls in flight together."""
        rows_list = np.asarray(rows, dtype=np.int64).tolist()
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), (len(rows_list),)).tolist()

        async def end_all() -> list[float]:
            return await _gather([self.users[r].aend_session(t, streams[r]) for r, t in zip(rows_list, now)])

        return np.array(_run(end_all()), dtype=np.float64)

    def mindset(self, row: int) -> Mindset:
        return self.users[row].mindset()

    def interview(self, row: int) -> Interview | None:
        """The end-of-session interview of the row's last session: the model's rating (or the band of the
        mindset's satisfaction when it gave none) and its summary; the parametric one after a fallback."""
        return self.users[row].last_interview


_LOOPS = threading.local()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on this thread's own event loop, kept across calls so that a backend's async
    client (bound to the loop it first ran on) and its open connections are reused."""
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)
