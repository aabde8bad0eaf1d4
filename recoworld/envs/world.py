"""The world core: B users on one catalog, advanced together in numpy.

Everything that happens between a recommender's slate and the next observation lives
here once: retrieval, the users' review, history and consumption, sessions and return
gaps, the clock, rewards, observations and the per-turn info. The three envs are views
that differ only in who acts and how users are seeded:

| view | rows | platform | seeding |
|---|---|---|---|
| `RecoWorld-v0` (`RecoWorldEnv`) | 1 | none | Gymnasium's `np_random` |
| `RecoWorldVectorEnv` | B independent users | none | stream i as `RecoWorld-v0` with `seed + i` |
| `PopulationParallelEnv` | B users | shared (social proof, releases) | spawned from the world seed |

Rows advance in lockstep, but each row draws only from its own random stream (see
`recoworld.streams`) and every array operation is row-wise, so a row's trajectory does
not depend on the batch around it: row i of the vector env is `RecoWorld-v0` run with
that row's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress, repeat
from operator import is_not
from typing import Any, TypedDict, cast

import numpy as np

from recoworld.catalog import Catalog, cached_catalog
from recoworld.catalog.text_space import InstructionTextSpace, instruction_text_space
from recoworld.config import WorldConfig
from recoworld.envs.observation import (
    MINUTES_PER_DAY,
    build_observations,
    engagement_reward,
    instruction_vector,
    return_reward,
    slate_positions,
)
from recoworld.envs.platform import SharedPlatform
from recoworld.envs.retrieval import CandidateRetriever, InstructionTargets, TasteRankings
from recoworld.envs.world_kernels import advance_clock, instruction_measures, pack_consumed, put_rows, record
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.mindset import UNSEEN, ExitReason, Instruction, Intent, Interview
from recoworld.population import PopulationSpec, UserProfile, sample_profile
from recoworld.simulators.base import BatchUserSimulator, session_interviews
from recoworld.simulators.instructions import intent_direction, intent_key, intent_topics, wants_quality
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.surrogate import surrogate_users
from recoworld.streams import UserStreams


class EpisodeStats(TypedDict):
    """One user's episode. Retention is the share of days in the horizon with a session."""

    sessions: float
    days_active: float
    retention: float
    turns: float


class TurnInfo(TypedDict, total=False):
    """The `info` of one user's turn, the same in every view (`RecoWorld-v0`'s `step` info,
    the population env's per-agent info, row j of the vector env's batched info)."""

    user_id: str
    segment: str
    slate: np.ndarray  # (K,) catalog indices shown, in slot order
    reactions: np.ndarray  # (K,) ReactionType values, UNSEEN after the user left
    dwell_min: np.ndarray  # (K,) minutes per item
    instruction: str | None  # the reflective instruction's text, if the user gave one (None on channel "none")
    instruction_intent: dict[str, Any]  # its structured intent (empty without one, and on channels "text"/"none")
    # What the user really said, whatever `instruction_channel` shows the recommender: for logs and
    # metrics (`TrajectoryLog`); recommenders must not read these two keys.
    logged_instruction: str | None
    logged_intent: dict[str, Any]
    instruction_followed: float | None  # share of the slate honouring the session's latest instruction
    instruction_satisfiable: bool | None  # the candidates held enough items to honour it (1 for "more",
    # a whole slate for "less"/"different"); None while no instruction is in force
    instruction_similarity: float | None  # mean cosine of the slate's items to the instruction's text direction
    # in item space (`recoworld.catalog.text_space`); None while no instruction is in force
    left: bool  # the user ended the session after this turn
    disliked: np.ndarray  # (K,) bool: skips the user marked "not interested" (a dislike is reaction 0 + this flag)
    exit_reason: str  # why the user left (`recoworld.mindset.EXIT_REASONS`); only when the user left and said
    exit_text: str  # the user's short words on it; with `exit_reason`
    interview_score: int  # end-of-session interview, satisfaction 1..5; only when the session ended this turn
    interview: str  # the interview's one sentence; with `interview_score`
    duplicates_replaced: int  # slots the env replaced because they repeated a candidate
    searched: np.ndarray  # (K,) bool: items that entered the candidates through catalog search this turn
    # (`recoworld.envs.search`; only the views that offer search add it)
    engagement_reward: float  # the turn's engagement part of the reward
    return_gap_days: float | None  # days until the next session, when the session ended
    churned: bool  # the user will never come back
    llm_fallback: bool  # an LLM user's turn was decided by the parametric model
    reasons: list[str]  # LLM users: a short reason per reviewed item
    day: int  # clock of the turn just played
    session: int
    turn: int
    step: int
    time_days: float
    episode_stats: EpisodeStats  # only when the episode ended with this turn
    mindset: dict[str, Any]  # only with `expose_mindset=True`


@dataclass(kw_only=True)
class StepBatch:
    """What one world step did, row j for acting user `rows[j]` (arrays, for every view). Built by keyword
    only: its many arrays share shapes and dtypes, so a field passed out of place would go unnoticed."""

    rows: np.ndarray  # (R,)
    slates: np.ndarray  # (R, K) catalog indices
    reactions: np.ndarray  # (R, K) int8
    dwell_min: np.ndarray  # (R, K) float32
    instructions: list[Instruction | None]
    left: np.ndarray  # (R,) bool
    fallback: np.ndarray  # (R,) bool
    reasons: list[list[str]] | None
    replaced: np.ndarray  # (R,) int64
    engagement: np.ndarray  # (R,) float64
    followed: np.ndarray  # (R,) float64 share of the slate honouring the instruction in force; nan = none
    satisfiable: np.ndarray  # (R,) float64 1/0: the candidates could honour it; nan = none in force
    reward: np.ndarray  # (R,) float64: engagement, instruction term, session-end term
    return_gap: np.ndarray  # (R,) float64: nan = session goes on, inf = churned
    terminated: np.ndarray  # (R,) bool
    truncated: np.ndarray  # (R,) bool
    day: np.ndarray  # (R,) the clock of the turn just played
    session: np.ndarray
    turn: np.ndarray
    step: np.ndarray
    time_days: np.ndarray
    similarity_of: TurnSimilarity | None = field(default=None, repr=False, compare=False)  # what `similarity` is of
    disliked: np.ndarray | None = None  # (R, K) bool: skips marked "not interested"
    exit_reasons: list[ExitReason | None] | None = None  # (R,) why each leaving row left
    interviews: list[Interview | None] | None = None  # (R,) end-of-session interviews of leaving rows

    def exit_reason(self, j: int) -> ExitReason | None:
        """Why row j left, or None while it stays (a reason is only ever reported with the leaving)."""
        return self.exit_reasons[j] if self.exit_reasons is not None and self.left[j] else None

    @cached_property
    def similarity(self) -> np.ndarray | None:
        """(R,) mean cosine of each slate to the text of the instruction in force; nan = none. Worked out on
        first read: a population that builds no infos never reads it, and it cost a tenth of the turn."""
        return self.similarity_of.values() if self.similarity_of is not None else None


@dataclass(frozen=True)
class TurnSimilarity:
    """What a turn's instruction similarity is made of, taken at the turn (the instructions in force and
    the slates handed out may change after it): the rows with an instruction in force, their slates and
    the text directions of their instructions."""

    n_rows: int
    at: np.ndarray  # (A,) the rows with an instruction in force
    slates: np.ndarray  # (A, K) their slates
    texts: np.ndarray  # (A, D) float32 text directions in item space
    embeddings: np.ndarray  # (N, D) the catalog's unit item embeddings

    def values(self) -> np.ndarray:
        """Per row, the mean cosine of the slate's items to the text direction (nan where none is in force)."""
        out = np.full(self.n_rows, np.nan)
        if len(self.at):  # `take`: the same rows as fancy indexing, gathered faster
            emb = np.take(self.embeddings, self.slates, axis=0).astype(np.float64)  # (A, K, D)
            out[self.at] = np.einsum("akd,ad->a", emb, self.texts.astype(np.float64)) / self.slates.shape[1]
        return out


#: The stream of a row that no view has seeded: one object, told apart by identity and never drawn from
#: (`World.reset` refuses such a row; a placeholder shared by every row would correlate its users silently).
_UNSEEDED = np.random.default_rng(0)


class World:
    """The state of B users and the one implementation of a turn (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        config: WorldConfig,
        users: BatchUserSimulator,
        n_users: int,
        platform: SharedPlatform | None = None,
        retriever: CandidateRetriever | None = None,
    ) -> None:
        """`retriever` replaces the platform's candidate generator (a subclass with its own `retrieve`, e.g.
        a recommender that serves its own ranking as `recoworld.evaluation.transfer` does)."""
        self.catalog, self.config, self.users, self.n_users = catalog, config, users, n_users
        self.platform = platform
        self.retriever = retriever or CandidateRetriever(catalog, config.retrieval, config.n_candidates)
        self.streams = UserStreams([_UNSEEDED] * n_users)  # each view seeds every row before resetting it
        self.profiles: list[UserProfile] = []
        b, h, n = n_users, config.history_len, len(catalog)
        self.history_ids = np.full((b, h), -1, dtype=np.int64)
        self.history_reactions = np.full((b, h), UNSEEN, dtype=np.int64)
        self.history_dwell = np.zeros((b, h), dtype=np.float32)
        self.consumed = np.zeros((b, n), dtype=bool)
        self.consumed_bits = pack_consumed(self.consumed)  # what the observation reads (record keeps both)
        self.instruction = np.zeros((b, 4 + catalog.embedding_dim), dtype=np.float32)
        self.candidates = np.zeros((b, config.n_candidates), dtype=np.int64)
        # The session's latest instruction, as retrieval and the instruction-following measures need it.
        self.asked = InstructionTargets(np.zeros(b, dtype=bool), np.zeros((b, catalog.n_topics), dtype=bool),
                                        np.zeros(b, dtype=bool), np.zeros((b, catalog.embedding_dim)),
                                        np.full((b, self.retriever.instruction_depth), -1, dtype=np.int64))
        self.asked_more = np.zeros(b, dtype=bool)
        self.asked_text = np.zeros((b, catalog.embedding_dim), dtype=np.float32)  # the text's direction
        self._text_space: InstructionTextSpace | None = None
        # Per ask (`intent_key`) its row of `_ask_table`: what the ask means, worked out once per world.
        self._asks: dict[Hashable, int] = {}
        self._ask_table = _AskTable(catalog, 64)
        self.tastes = TasteRankings(np.zeros((b, self.retriever.taste_depth), dtype=np.int64), np.zeros(b, dtype=bool))
        self.now = np.zeros(b)
        self.gap = np.zeros(b)
        self.session = np.zeros(b, dtype=np.int64)
        self.turn = np.zeros(b, dtype=np.int64)
        self.steps = np.zeros(b, dtype=np.int64)
        self.days_active = np.zeros(b, dtype=np.int64)
        self.last_day = np.full(b, -1, dtype=np.int64)
        self._all = np.arange(b)
        self._item_topic = catalog.topic.astype(np.int64)
        self._item_good = catalog.quality >= catalog.median_quality  # what an ask for quality accepts

    def set_platform(self, platform: SharedPlatform) -> None:
        self.platform = platform
        self.retriever.set_popularity(platform.popularity())

    @property
    def features(self) -> np.ndarray:
        """(N, F) item features the platform shows (live popularity on a shared platform)."""
        return self.platform.features if self.platform is not None else self.catalog.item_features

    # ------------------------------------------------------------------ episodes

    def reset(self, rows: np.ndarray, profiles: Sequence[UserProfile], now_days: np.ndarray) -> None:
        """Start new episodes for `rows` (one profile each) and open their first sessions at `now_days`.

        The episode's clock and horizon count from day 0 whatever `now_days` is, so a first session
        later than 0 is a user who arrives (or comes back) that far into the horizon: what a
        simulation from a log's cutoff needs for users who were away at the cutoff
        (`ReturnGapModel.continuation`). Days before it hold no session and count as inactive; the
        views check that it lies inside the horizon (`RecoWorldEnv.reset`'s `start_day`).
        """
        rows = np.asarray(rows, dtype=np.int64)
        unseeded = [r for r in rows.tolist() if self.streams[r] is _UNSEEDED]
        if unseeded:
            raise RecoWorldError(
                f"World.reset: rows {unseeded[:5]}{' ...' if len(unseeded) > 5 else ''} have no random stream "
                "of their own; seed each row first (world.streams[row] = its generator), since users drawing "
                "from one shared stream would be correlated")
        if len(rows) == self.n_users and (rows == self._all).all():
            self.profiles = list(profiles)
            self.users.reset(profiles)
        else:
            for j, r in enumerate(rows.tolist()):
                self.profiles[r] = profiles[j]
            self.users.reset(profiles, rows)
        self.history_ids[rows] = -1
        self.history_reactions[rows] = UNSEEN
        self.history_dwell[rows] = 0.0
        self.consumed[rows] = False
        self.consumed_bits[rows] = 0
        self.instruction[rows] = 0.0
        self.asked.active[rows] = False
        self.tastes.forget(rows)
        self.now[rows] = now_days
        self.session[rows] = 0
        self.steps[rows] = 0
        self.days_active[rows] = 0
        self.last_day[rows] = -1
        self._open_sessions(rows, np.zeros(len(rows)))

    def step(
        self, actions: np.ndarray, rows: np.ndarray | None = None, label: Callable[[int], str] | None = None,
    ) -> StepBatch:
        """Users `rows` (all, in order, when None) are shown the slates `actions` (R, K) pick from
        their candidates; `label(j)` names the j-th acting row in action errors (`actions[row]` when None)."""
        cfg = self.config
        acting = self._all if rows is None else np.asarray(rows, dtype=np.int64)
        positions, replaced = slate_positions(actions, cfg, label or (lambda j: f"actions[{int(acting[j])}]"))
        # From the flat candidates: the items `candidates[acting[:, None], positions]` gathers, at half its cost.
        slates = np.take(self.candidates.ravel(), acting[:, None] * self.candidates.shape[1] + positions)
        followed, satisfiable = instruction_measures(
            acting, slates, self.candidates, self.asked.active, self.asked.topics, self.asked.high_quality,
            self.asked_more, self._item_topic, self._item_good)
        similarity = self._instruction_similarity(acting, slates)  # the instructions in force before this turn's
        bonus = self.platform.utility_bonus(slates) if self.platform is not None else None
        fb = self.users.review(slates, self.streams, rows, bonus)
        reactions, dwell = fb.reactions, fb.dwell_min
        disliked = fb.disliked if fb.disliked is not None else np.zeros(reactions.shape, dtype=bool)
        engagement = engagement_reward(cfg.reward, reactions, dwell)
        if cfg.reward.dislike:
            engagement = engagement + cfg.reward.dislike * disliked.sum(axis=1)
        day, session, turn, step, time_days = advance_clock(acting, dwell.sum(axis=1) / MINUTES_PER_DAY, self.now,
                                                            self.steps, self.turn, self.session)
        clock = {"day": day, "session": session, "turn": turn, "step": step, "time_days": time_days}
        record(acting, slates, reactions, dwell, self.history_ids, self.history_reactions, self.history_dwell,
               self.consumed, self.consumed_bits, self.tastes.fresh)
        instructions = fb.instructions  # mostly None: the speakers found without a Python-level loop
        said = list(compress(range(len(instructions)), map(is_not, instructions, repeat(None))))
        if said:
            self.listen(acting[said], cast(list[Instruction], [instructions[j] for j in said]))
        if self.platform is not None:
            self.retriever.set_popularity(self.platform.update(slates, reactions))

        reward = engagement.copy()
        if cfg.reward.instruction_following:
            reward += cfg.reward.instruction_following * np.where(np.isnan(followed), 0.0, followed)
        return_gap = np.full(len(acting), np.nan)
        terminated = np.zeros(len(acting), dtype=bool)
        leaving = np.flatnonzero(fb.left)
        interviews: list[Interview | None] = [None] * len(acting)
        if len(leaving):
            users = acting[leaving]
            self.asked.active[users] = False  # an instruction is about the session it was given in
            gaps = self.users.end_sessions(users, self.now[users], self.streams)
            for j, answer in zip(leaving.tolist(), session_interviews(self.users, users)):
                interviews[j] = answer
            reward[leaving] += return_reward(cfg.reward, gaps)
            return_gap[leaving] = gaps
            ends = np.isinf(gaps) | (self.now[users] + gaps >= cfg.horizon_days)
            terminated[leaving[ends]] = True
            back = users[~ends]
            self.now[back] += gaps[~ends]
            self._open_sessions(back, gaps[~ends])
        truncated = ~terminated & (self.steps[acting] >= cfg.max_steps)
        self._retrieve(acting[~(fb.left | terminated | truncated)])
        fallback = fb.fallback if fb.fallback is not None else np.zeros(len(acting), dtype=bool)
        return StepBatch(rows=acting, slates=slates, reactions=reactions, dwell_min=dwell, instructions=fb.instructions,
                         left=fb.left, fallback=fallback, reasons=fb.reasons, replaced=replaced, engagement=engagement,
                         followed=followed, satisfiable=satisfiable, reward=reward, return_gap=return_gap,
                         terminated=terminated, truncated=truncated, **clock, similarity_of=similarity,
                         disliked=disliked, exit_reasons=fb.exit_reasons, interviews=interviews)

    # ------------------------------------------------------------------ what the platform shows

    def observe(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Batched observations of `rows` (all when None), each key (R, ...)."""
        at = self._all if rows is None else np.asarray(rows, dtype=np.int64)
        return build_observations(self.features, at, self.candidates, self.consumed_bits, self.history_ids,
                                  self.history_reactions, self.history_dwell, self.instruction,
                                  (self.now, self.session, self.turn, self.gap))

    def clock(self, row: int) -> dict[str, Any]:
        now = float(self.now[row])
        return {"day": math.floor(now), "session": int(self.session[row]), "turn": int(self.turn[row]),
                "step": int(self.steps[row]), "time_days": now}

    def reset_info(self, row: int) -> dict[str, Any]:
        profile = self.profiles[row]
        return {"user_id": profile.user_id, "segment": profile.segment, **self.clock(row)}

    def turn_infos(self, batch: StepBatch, at: Sequence[int] | None = None) -> list[TurnInfo]:
        """Rows of a step as the per-user info dicts every view returns: entry j for `batch.rows[j]`, or,
        with `at`, one entry per j in `at` (the population env builds only the infos asked for).

        Columns become Python lists once, not element by element: a population step builds an
        info per live user, and per-element numpy scalar access would cost more than the turn."""
        r, k = batch.slates.shape
        js: Sequence[int] = range(r) if at is None else list(at)
        picked = np.asarray(js, dtype=np.int64)

        def column(values: np.ndarray) -> list[Any]:
            return values.tolist() if at is None else values[picked].tolist()

        def entries(values: Sequence[Any] | None) -> Sequence[Any]:
            if values is None:
                return [None] * len(js)
            return values if at is None else [values[j] for j in js]

        channel, expose = self.config.instruction_channel, self.config.expose_mindset
        similarity = column(batch.similarity) if batch.similarity is not None else [math.nan] * len(js)
        disliked = batch.disliked if batch.disliked is not None else np.zeros((r, k), dtype=bool)
        columns = zip(js, column(batch.rows), entries(batch.instructions), column(batch.return_gap),
                      column(batch.followed), column(batch.satisfiable), similarity, column(batch.left),
                      column(batch.replaced), column(batch.engagement), column(batch.fallback), column(batch.day),
                      column(batch.session), column(batch.turn), column(batch.step), column(batch.time_days),
                      column(batch.terminated | batch.truncated), entries(batch.interviews), entries(batch.reasons))
        infos: list[TurnInfo] = []
        for (j, row, instruction, gap, followed, satisfiable, sim, left, replaced, engagement, fallback, day,
             session, turn, step, time_days, end, interview, reasons) in columns:
            profile = self.profiles[row]
            intent = intent_dict(instruction.intent) if instruction else {}
            info: TurnInfo = {
                "user_id": profile.user_id, "segment": profile.segment,
                "slate": batch.slates[j], "reactions": batch.reactions[j], "dwell_min": batch.dwell_min[j],
                "instruction": self.shown_instruction(instruction),
                # Its own dump, not the log's dict: what a recommender edits must not reach the log.
                "instruction_intent": intent_dict(instruction.intent) if instruction and channel == "structured"
                else {},
                "logged_instruction": instruction.text if instruction else None,
                "logged_intent": intent,
                "instruction_followed": None if math.isnan(followed) else followed,
                "instruction_satisfiable": None if math.isnan(satisfiable) else bool(satisfiable),
                "instruction_similarity": None if math.isnan(sim) else sim,
                "left": left, "duplicates_replaced": replaced, "engagement_reward": engagement,
                "return_gap_days": None if math.isnan(gap) or math.isinf(gap) else gap,
                "churned": math.isinf(gap), "llm_fallback": fallback,
                "day": day, "session": session, "turn": turn, "step": step, "time_days": time_days,
                "disliked": disliked[j],
            }
            if reasons:
                info["reasons"] = reasons
            # Present only when there is something to say (like `reasons`), so Gymnasium's vector wrappers,
            # which type a key's array from its first value, never meet a None after an int.
            exit_reason = batch.exit_reason(j)
            if exit_reason is not None:
                info["exit_reason"], info["exit_text"] = exit_reason.kind, exit_reason.text
            if interview is not None:
                info["interview_score"], info["interview"] = interview.score, interview.text
            if end:
                info["episode_stats"] = self.episode_stats(row)
            if expose:
                info["mindset"] = self.users.mindset(row).model_dump()
            infos.append(info)
        return infos

    def shown_instruction(self, instruction: Instruction | None) -> str | None:
        """The words of an instruction as the recommender sees them: nothing on channel "none"."""
        return instruction.text if instruction and self.config.instruction_channel != "none" else None

    def episode_stats(self, row: int) -> EpisodeStats:
        horizon_days = math.ceil(self.config.horizon_days)
        days = float(self.days_active[row])
        return {"sessions": float(self.session[row]), "days_active": days,
                "retention": days / horizon_days, "turns": float(self.steps[row])}

    # ------------------------------------------------------------------ internals

    def _open_sessions(self, rows: np.ndarray, gaps: np.ndarray) -> None:
        if not len(rows):
            return
        self.session[rows] += 1
        self.turn[rows] = 0
        self.gap[rows] = gaps
        day = np.floor(self.now[rows]).astype(np.int64)
        self.days_active[rows] += day != self.last_day[rows]  # the clock only moves forward
        self.last_day[rows] = day
        self.users.start_sessions(rows, self.now[rows], self.streams)
        self._retrieve(rows)

    def _retrieve(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        unavailable = self.platform.unreleased(self.now[rows]) if self.platform is not None else None
        put_rows(self.candidates, rows, self.retriever.retrieve(
            np.take(self.history_ids, rows, axis=0), np.take(self.history_reactions, rows, axis=0), self.streams,
            rows, unavailable, self.asked, self.tastes,  # the world's own, read at `rows`
        ))

    def listen(self, rows: np.ndarray, instructions: Sequence[Instruction]) -> None:
        """Take in what users said (one instruction per row, distinct rows): the observation shows it,
        retrieval and the instruction measures answer it. Each ask's meaning is a row of the world's
        table, so the rows take theirs in a few gathers, not row by row."""
        rows = np.asarray(rows, dtype=np.int64)
        channel = self.config.instruction_channel
        directions = self.text_space.encode([instruction.text for instruction in instructions])
        self.asked_text[rows] = directions
        keys = [intent_key(instruction.intent) for instruction in instructions]
        asks, table, ids = self._asks, self._ask_table, []
        if len(asks) + len(keys) > 4096:  # before any row is looked up: a row of the table is rewritten after
            asks.clear()
        for instruction, key in zip(instructions, keys):
            at = asks.get(key)
            if at is None:  # what an ask means depends on its key alone: worked out once per world
                at = asks[key] = len(asks)
                table.put(at, key, instruction, self.catalog)
            ids.append(at)
        meant = np.asarray(ids, dtype=np.int64)
        if channel == "structured":
            self.instruction[rows] = table.shown[meant]
        elif channel == "text":  # the words only: present, no parsed kind, the text's direction
            self.instruction[rows, :4] = (1.0, 0.0, 0.0, 0.0)
            self.instruction[rows, 4:] = directions
        else:  # "none": the recommender is told nothing
            self.instruction[rows] = 0.0
        self.asked.topics[rows] = table.topics[meant]
        self.asked.high_quality[rows] = table.high_quality[meant]
        self.asked.direction[rows] = table.direction[meant]
        self.asked_more[rows] = table.more[meant]
        self.asked.active[rows] = True
        ranking = table.ranking
        self.asked.ranked[rows] = self.retriever.rank_kept([ranking[at] for at in ids], self.asked, rows, shared=True)

    @property
    def text_space(self) -> InstructionTextSpace:
        """Instruction text -> item space for this catalog (fit on first use, shared per catalog)."""
        if self._text_space is None:
            self._text_space = instruction_text_space(self.catalog, self.config.instruction_encoder)
        return self._text_space

    def _instruction_similarity(self, rows: np.ndarray, slates: np.ndarray) -> TurnSimilarity:
        """What the turn's similarity of `rows`' slates to the instructions in force is made of, for
        `StepBatch.similarity` to work out when read."""
        a = np.flatnonzero(self.asked.active[rows])
        return TurnSimilarity(len(rows), a, np.take(slates, a, axis=0),
                              np.take(self.asked_text, np.take(rows, a), axis=0), self.catalog.embeddings)


class _AskTable:
    """What each ask a world has heard means, row `World._asks[key]` per ask: its observation vector, the
    topics that honour it, whether it wants quality, its direction, whether it asks for more, and the key
    its ranking is kept under (`ranking_key`)."""

    def __init__(self, catalog: Catalog, capacity: int) -> None:
        self.shown = np.zeros((capacity, 4 + catalog.embedding_dim), dtype=np.float32)
        self.topics = np.zeros((capacity, catalog.n_topics), dtype=bool)
        self.high_quality = np.zeros(capacity, dtype=bool)
        self.direction = np.zeros((capacity, catalog.embedding_dim), dtype=np.float32)
        self.more = np.zeros(capacity, dtype=bool)
        self.ranking: list[Hashable] = []

    def put(self, at: int, key: tuple[str, tuple[str, ...], tuple[str, ...], bool], instruction: Instruction,
            catalog: Catalog) -> None:
        if at >= len(self.more):  # twice the rows, the asks so far kept
            for name in ("shown", "topics", "high_quality", "direction", "more"):
                old = getattr(self, name)
                grown = np.zeros((2 * len(old), *old.shape[1:]), dtype=old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)
        intent = instruction.intent
        self.shown[at] = instruction_vector(instruction, catalog)
        self.topics[at] = intent_topics(intent, catalog)
        self.high_quality[at] = wants_quality(intent)
        self.direction[at] = intent_direction(intent, catalog)
        self.more[at] = intent.kind == "more"
        if at == len(self.ranking):
            self.ranking.append(ranking_key(key))
        else:
            self.ranking[at] = ranking_key(key)


def ranking_key(key: tuple[str, tuple[str, ...], tuple[str, ...], bool]) -> Hashable:
    """The key an ask's instruction ranking is kept under (`CandidateRetriever.rank_kept`): its `intent_key`,
    except that asks with the same ranking to the bit share one. A ranking reads the ask's direction and
    honouring topics alone, and of "more X, Y" both are the same for "more Y, X" and whatever it relates
    to: the direction is 0 + X + Y, whose additions are exact in either order, normalised. A quarter to
    a third of a population's new asks were such a pair's other order, each ranked against the whole catalog."""
    kind, topics, _, quality = key
    if kind == "more":
        return kind, tuple(sorted(topics)) if len(topics) == 2 else topics, (), quality
    return key


def intent_dict(intent: Intent) -> dict[str, Any]:
    """`intent.model_dump()`: a fresh dict of fresh lists, without pydantic's serializer, which cost
    a vector env's infos more than all the rest of them. An intent's fields are a string, lists of
    strings and a dict of strings, so copies of them are its whole dump (a test holds this to
    `model_dump` and to `Intent`'s fields)."""
    return {"kind": intent.kind, "topics": list(intent.topics), "related": list(intent.related),
            "attributes": dict(intent.attributes)}


# ---------------------------------------------------------------------- building a world


def resolve_catalog(catalog: Catalog | None, config: WorldConfig) -> Catalog:
    """The catalog object given, or the (cached) one `config.catalog` describes."""
    catalog = catalog if catalog is not None else cached_catalog(config.catalog)
    if config.n_candidates > len(catalog):
        raise ConfigError(f"n_candidates={config.n_candidates} exceeds the catalog size {len(catalog)}")
    return catalog


def check_population(population: object) -> PopulationSpec | list[UserProfile]:
    """A `PopulationSpec`, a non-empty list of `UserProfile`, or the default population for None."""
    if population is None:
        return PopulationSpec.default()
    if isinstance(population, list) and not population:
        raise ConfigError("population: an empty list of profiles; pass at least one UserProfile")
    if isinstance(population, PopulationSpec) or (
            isinstance(population, list) and all(isinstance(p, UserProfile) for p in population)):
        return population
    raise ConfigError(f"population must be a PopulationSpec or a list of UserProfile, got {type(population).__name__}")


def reset_options(options: object, example: str, allowed: frozenset[str]) -> dict[str, Any]:
    """`reset(options=...)` checked the same way in every view: a dict of known keys (or None). An unknown
    key is an error: a misspelt one (`user` for `profile`) would otherwise silently play a random user."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError(f"options must be a dict such as {example}, got {type(options).__name__}")
    unknown = sorted(map(repr, set(options) - allowed))
    if unknown:
        raise ConfigError(f"options: unknown key(s) {', '.join(unknown)}; reset takes "
                          f"{', '.join(map(repr, sorted(allowed)))}")
    return options


def draw_profile(population: PopulationSpec | list[UserProfile], catalog: Catalog,
                 rng: np.random.Generator) -> UserProfile:
    """One user for a new episode: a random profile of the list, or a fresh draw from the spec (its
    segment drawn by the segments' shares)."""
    if isinstance(population, list):
        return population[int(rng.integers(len(population)))]
    return sample_profile(population, catalog, rng)


def build_users(catalog: Catalog, config: WorldConfig, n_users: int) -> BatchUserSimulator:
    """The users `config.user_backend` names: parametric, LLM users on `config.llm`, or a distilled surrogate."""
    if config.user_backend == "llm":
        from recoworld.simulators.llm_user import LLMUsers  # the LLM stack loads only when used

        return LLMUsers(catalog, config, n_users)
    if config.user_backend == "surrogate":  # a distilled LLM user (recoworld distill) at parametric speed
        return surrogate_users(catalog, config)
    return ParametricUsers(catalog, config.choice, config.dynamics, config.returns)


def check_render_mode(render_mode: str | None, modes: list[str]) -> str | None:
    if render_mode is not None and render_mode not in modes:
        raise ConfigError(f"render_mode must be one of {modes}, got {render_mode!r}")
    return render_mode
