"""Scripted users: a `BatchUserSimulator` whose behaviour is declared, not sampled.

For tests and demos that need to know exactly what a user will do: "this user clicks the
first two items on turn 1, instructs on turn 3, leaves after four turns and never comes
back". Each row follows a `Script`; nothing is drawn, so the streams are ignored and every
run is the same.

    users = ScriptedUsers(catalog, Script(
        reactions=[[1, 2], [0, 0, 3]],          # turn 1, turn 2 (missing positions: default_reaction)
        instruct_on_turns={3: "less news, more science"},
        leave_after_turns=4,                    # every session ends on its 4th turn
        return_gaps=[1.0, 0.5, math.inf],       # after sessions 1, 2, 3 (inf = churn)
    ))

Turns are numbered from 1 over the whole episode (since `reset`), not per session, so
`instruct_on_turns={3: ...}` means the third slate the user reviews. `leave_after_turns`
is per session: an int for every session, or a list whose i-th entry is session i's (the
last entry repeats). `return_gaps` likewise: the gap after session i, the last repeating.
An instruction is given on its turn exactly as declared, even on a turn the user leaves.
Richer reactions: `dislike_on_turns={2: [0, 3]}` marks positions 0 and 3 of turn 2 "not
interested" (they become skips with the `disliked` flag); `exit_reason` ("bored", ... or an
`ExitReason`) is given at every session end; `interview_score` (1..5, default: the band of
`satisfaction`) and `interview` are the end-of-session interview.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from recoworld.catalog import Catalog
from recoworld.errors import ConfigError
from recoworld.mindset import (
    EXIT_REASONS,
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
from recoworld.streams import UserStreams

#: How many reviewed items a scripted user's `Mindset.memory` shows.
MEMORY = 10


def _reaction(value: Any, where: str) -> int:
    try:
        level = operator.index(value)
    except TypeError:
        raise ConfigError(f"Script.{where}: a reaction is an int from -1 (unseen) to 3 (share), "
                          f"got {value!r}") from None
    if isinstance(value, bool) or not UNSEEN <= level <= ReactionType.SHARE:
        raise ConfigError(f"Script.{where}: a reaction is an int from -1 (unseen) to 3 (share), got {value!r}")
    return int(level)


def _instruction(value: Any, turn: Any) -> Instruction:
    if isinstance(value, Instruction):
        return value
    if isinstance(value, str):
        return Instruction(text=value, intent=Intent(kind="different"))
    try:
        return Instruction.model_validate(value)
    except ValidationError as err:
        raise ConfigError.from_validation(f"Script.instruct_on_turns[{turn!r}]", err) from None


def _count_list(value: int | Sequence[int], name: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ConfigError(f"Script.{name}: turns per session are ints >= 1 (one, or one per session), got {value!r}")
    return values


def _minutes(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"Script.{name}: minutes must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Script:
    """What one scripted user does (see the module docstring). Invalid values raise `ConfigError`."""

    reactions: Sequence[Sequence[int]] = ()
    """per turn (turn 1 first), the reaction at each slate position: -1 unseen, 0 skip .. 3 share"""
    default_reaction: int = int(ReactionType.SKIP)
    """for turns and positions `reactions` does not cover"""
    instruct_on_turns: Mapping[int, Instruction | str] = field(default_factory=dict)
    """episode turn (from 1) -> the instruction given on it; a str is an `Instruction` with intent 'different'"""
    leave_after_turns: int | Sequence[int] = 3
    """the session ends on its n-th turn: one n for every session, or one per session (the last repeats)"""
    return_gaps: Sequence[float] = (1.0,)
    """days from the end of session i to the next (the last repeats); `inf` = churn"""
    dwell_min: float = 2.0
    """minutes on each clicked, liked or shared item"""
    skip_dwell_min: float = 0.0
    """minutes on each skipped item"""
    satisfaction: float = 0.6
    """the static satisfaction `mindset` reports"""
    summary: str = "A scripted user, doing as declared."
    dislike_on_turns: Mapping[int, Sequence[int]] = field(default_factory=dict)
    """episode turn (from 1) -> slate positions marked "not interested" (recorded as skips with the flag)"""
    exit_reason: ExitReason | str | None = None
    """why the user leaves, at every session end: an `ExitReason` or a kind (`recoworld.mindset.EXIT_REASONS`)"""
    interview_score: int | None = None
    """the end-of-session interview's 1..5 score; None: the band of `satisfaction`"""
    interview: str = "It went as scripted."

    def __post_init__(self) -> None:
        turns = tuple(tuple(_reaction(v, f"reactions[{t}][{k}]") for k, v in enumerate(turn))
                      for t, turn in enumerate(self.reactions))
        object.__setattr__(self, "reactions", turns)
        object.__setattr__(self, "default_reaction", _reaction(self.default_reaction, "default_reaction"))
        instructions = {}
        for turn, value in dict(self.instruct_on_turns).items():
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
                raise ConfigError(f"Script.instruct_on_turns: turns are numbered from 1, got {turn!r}")
            instructions[turn] = _instruction(value, turn)
        object.__setattr__(self, "instruct_on_turns", instructions)
        object.__setattr__(self, "leave_after_turns", _count_list(self.leave_after_turns, "leave_after_turns"))
        gaps = tuple(self.return_gaps)
        if not gaps or any(not isinstance(g, (int, float)) or math.isnan(g) or g < 0 for g in gaps):
            raise ConfigError(f"Script.return_gaps: days >= 0 (inf = churn), at least one, got {self.return_gaps!r}")
        object.__setattr__(self, "return_gaps", tuple(float(g) for g in gaps))
        object.__setattr__(self, "dwell_min", _minutes(self.dwell_min, "dwell_min"))
        object.__setattr__(self, "skip_dwell_min", _minutes(self.skip_dwell_min, "skip_dwell_min"))
        if not isinstance(self.satisfaction, (int, float)) or not 0.0 <= self.satisfaction <= 1.0:
            raise ConfigError(f"Script.satisfaction: a number in [0, 1], got {self.satisfaction!r}")
        dislikes = {}
        for turn, positions in dict(self.dislike_on_turns).items():
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
                raise ConfigError(f"Script.dislike_on_turns: turns are numbered from 1, got {turn!r}")
            if isinstance(positions, (str, bytes)) or any(
                    isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in positions):
                raise ConfigError(f"Script.dislike_on_turns[{turn}]: slate positions (ints >= 0), got {positions!r}")
            dislikes[turn] = tuple(positions)
        object.__setattr__(self, "dislike_on_turns", dislikes)
        if isinstance(self.exit_reason, str):
            if self.exit_reason not in EXIT_REASONS:
                raise ConfigError(f"Script.exit_reason: one of {', '.join(EXIT_REASONS)}, got {self.exit_reason!r}")
            object.__setattr__(self, "exit_reason", ExitReason(kind=self.exit_reason))  # type: ignore[arg-type]
        elif self.exit_reason is not None and not isinstance(self.exit_reason, ExitReason):
            raise ConfigError(f"Script.exit_reason: an ExitReason, a kind or None, got {self.exit_reason!r}")
        score = self.interview_score
        if score is not None and (isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5):
            raise ConfigError(f"Script.interview_score: an int from 1 to 5 (or None), got {score!r}")

    def turn_reactions(self, turn: int, k: int) -> np.ndarray:
        """(k,) reactions on episode turn `turn` (from 1) for a slate of `k` items."""
        declared = self.reactions[turn - 1][:k] if turn <= len(self.reactions) else ()
        return np.array([*declared, *[self.default_reaction] * (k - len(declared))], dtype=np.int8)

    def session_turns(self, session: int) -> int:
        """Turns of session `session` (from 0)."""
        counts = cast("tuple[int, ...]", self.leave_after_turns)  # a tuple since __post_init__
        return counts[min(session, len(counts) - 1)]

    def gap_after(self, session: int) -> float:
        """Days from the end of session `session` (from 0) to the next one."""
        return self.return_gaps[min(session, len(self.return_gaps) - 1)]


class ScriptedUsers:
    """B users that follow their `Script`s; a `BatchUserSimulator` that draws nothing.

    `scripts`: one `Script` for every row, or one per row (then `reset` with `rows=None`
    needs as many profiles as scripts). `catalog` gives the mindset's interests and the
    memory's topics.
    """

    def __init__(self, catalog: Catalog, scripts: Script | Sequence[Script] = Script()) -> None:
        self.catalog = catalog
        if isinstance(scripts, Script):
            self._shared: Script | None = scripts
            self.scripts: list[Script] = []
        else:
            self._shared = None
            self.scripts = list(scripts)
            if not self.scripts or not all(isinstance(s, Script) for s in self.scripts):
                raise ConfigError("ScriptedUsers: scripts must be a Script or a non-empty list of Scripts")
        self.profiles: list[UserProfile] = []
        self._alloc(0)

    def _alloc(self, b: int) -> None:
        self.turn = np.zeros(b, dtype=np.int64)  # turns reviewed this episode
        self.session = np.zeros(b, dtype=np.int64)  # sessions ended this episode
        self.session_turn = np.zeros(b, dtype=np.int64)
        self.last_session_end = np.full(b, -np.inf)
        self._memory: list[list[MemoryEntry]] = [[] for _ in range(b)]

    def script(self, row: int) -> Script:
        return self._shared if self._shared is not None else self.scripts[row]

    def __len__(self) -> int:
        return len(self.profiles)

    # ------------------------------------------------------------------ the protocol

    def reset(self, profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> None:
        if rows is None:
            if self._shared is None and len(profiles) != len(self.scripts):
                raise ConfigError(f"ScriptedUsers holds {len(self.scripts)} scripts, one per user, "
                                  f"got {len(profiles)} profiles")
            self.profiles = list(profiles)
            self._alloc(len(profiles))
            return
        rows_list = np.asarray(rows, dtype=np.int64).tolist()
        if len(rows_list) != len(profiles):
            raise ValueError(f"reset got {len(profiles)} profiles for {len(rows_list)} rows")
        for r, profile in zip(rows_list, profiles):
            self.profiles[r] = profile
            self.turn[r] = self.session[r] = self.session_turn[r] = 0
            self.last_session_end[r] = -np.inf
            self._memory[r] = []

    def start_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> None:
        del now_days, streams  # a scripted session starts the same whenever it starts
        self.session_turn[np.asarray(rows, dtype=np.int64)] = 0

    def review(
        self, slates: np.ndarray, streams: UserStreams, rows: np.ndarray | None = None,
        utility_bonus: np.ndarray | None = None,
    ) -> BatchFeedback:
        del streams, utility_bonus  # declared, not sampled
        slates = np.asarray(slates)
        rows_list = list(range(len(self.profiles))) if rows is None else np.asarray(rows, dtype=np.int64).tolist()
        if slates.ndim != 2 or len(slates) != len(rows_list):
            raise ValueError(f"review needs one slate row per reviewing user: got slates of shape {slates.shape} "
                             f"for {len(rows_list)} users")
        r_count, k = slates.shape
        reactions = np.empty((r_count, k), dtype=np.int8)
        dwell = np.zeros((r_count, k), dtype=np.float32)
        left = np.zeros(r_count, dtype=bool)
        disliked = np.zeros((r_count, k), dtype=bool)
        exits: list[ExitReason | None] = [None] * r_count
        instructions: list[Instruction | None] = []
        for j, r in enumerate(rows_list):
            script = self.script(r)
            self.turn[r] += 1
            self.session_turn[r] += 1
            turn = int(self.turn[r])
            reactions[j] = script.turn_reactions(turn, k)
            for pos in script.dislike_on_turns.get(turn, ()):  # type: ignore[union-attr]
                if pos < k:
                    disliked[j, pos], reactions[j, pos] = True, ReactionType.SKIP
            dwell[j] = np.where(reactions[j] > ReactionType.SKIP, script.dwell_min,
                                np.where(reactions[j] == ReactionType.SKIP, script.skip_dwell_min, 0.0))
            left[j] = self.session_turn[r] >= script.session_turns(int(self.session[r]))
            exits[j] = script.exit_reason if left[j] else None  # type: ignore[assignment]
            instructions.append(cast("dict[int, Instruction]", script.instruct_on_turns).get(turn))  # as normalised
            self._remember(r, slates[j], reactions[j], dwell[j])
        return BatchFeedback(reactions, dwell, left, instructions, disliked=disliked, exit_reasons=exits)

    def interview(self, row: int) -> Interview:
        """The end-of-session interview the script declares (score: the band of `satisfaction` unless given)."""
        script = self.script(row)
        score = script.interview_score if script.interview_score is not None else interview_score(script.satisfaction)
        return Interview(score=score, text=script.interview)

    def end_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> np.ndarray:
        del streams
        rows_arr = np.asarray(rows, dtype=np.int64)
        now = np.broadcast_to(np.asarray(now_days, dtype=np.float64), rows_arr.shape)
        gaps = np.array([self.script(r).gap_after(int(self.session[r])) for r in rows_arr.tolist()],
                        dtype=np.float64)
        self.session[rows_arr] += 1
        self.session_turn[rows_arr] = 0
        self.last_session_end[rows_arr] = now
        return gaps

    def mindset(self, row: int) -> Mindset:
        """A plausible, static mindset: the profile's interests and traits, the script's satisfaction."""
        profile, script = self.profiles[row], self.script(row)
        return Mindset(
            interests=[round(float(x), 5) for x in profile.interest_vector(self.catalog)],
            satisfaction=float(script.satisfaction), satisfaction_trend=0.0, fatigue=0.0,
            novelty_propensity=float(profile.novelty_trait), time_left_min=float(profile.time_budget_min),
            patience_left=int(profile.patience), memory=list(self._memory[row]), summary=script.summary,
        )

    def _remember(self, row: int, slate: np.ndarray, reactions: np.ndarray, dwell: np.ndarray) -> None:
        cat = self.catalog
        seen = [MemoryEntry(item=int(i), topic=cat.topic_names[cat.topic[int(i)]], reaction=REACTION_NAMES[int(a)],
                            dwell_min=round(float(w), 3))
                for i, a, w in zip(slate.tolist(), reactions.tolist(), dwell.tolist()) if a != UNSEEN]
        self._memory[row] = [*self._memory[row], *seen][-MEMORY:]
