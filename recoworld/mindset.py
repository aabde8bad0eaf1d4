"""The simulated user's hidden state and what it says: Mindset, Reaction, Instruction.

One schema serves parametric and LLM users, so an LLM user can be initialised from,
compared with, or fall back to a parametric one. These are boundary objects (LLM
outputs, `info`, logs); hot loops keep the same state in numpy arrays.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReactionType(IntEnum):
    """Ordinal engagement: each level implies the ones below it (a share is also a like and a click)."""

    SKIP = 0
    CLICK = 1
    LIKE = 2
    SHARE = 3


#: Reaction code for slate positions the user never reached (left mid-slate).
UNSEEN = -1
REACTION_NAMES: dict[int, str] = {UNSEEN: "unseen", **{r.value: r.name.lower() for r in ReactionType}}

# Dislike ("not interested") is explicit negative feedback. It is NOT a reaction level: a
# disliked item is a SKIP (reaction 0) with a separate boolean flag (`BatchFeedback.disliked`,
# `info["disliked"]`, the trajectory's `disliked` column), so every ordinal comparison on
# reactions (`>= 1` clicks, `> 0` engagement) stays correct, and only code that wants the
# negative signal reads the flag.

#: Why a user closed the app (`ExitReason.kind`).
EXIT_REASONS = ("bored", "irrelevant", "repetitive", "out_of_time", "satisfied", "other")
ExitKind = Literal["bored", "irrelevant", "repetitive", "out_of_time", "satisfied", "other"]


class ExitReason(BaseModel):
    """Why a user left the session: a structured kind and a short text.

    Parametric users derive it from what triggered leaving: `out_of_time` (today's time budget
    ran out), `repetitive` (patience or satisfaction ran out on a slate whose reviewed items were
    mostly near-duplicates of what was seen), `bored` (patience ran out: too many dull items in a
    row), `irrelevant` (satisfaction collapsed). LLM users state it (any kind, `satisfied`
    included); `other` is what an unreasoned LLM exit becomes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ExitKind
    text: str = Field("", max_length=300)


class Interview(BaseModel):
    """The end-of-session interview: satisfaction from 1 (fed up) to 5 (delighted) and one sentence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score: int = Field(ge=1, le=5)
    text: str = Field("", max_length=300)


def interview_score(satisfaction: float) -> int:
    """The 1..5 interview score of a satisfaction in [0, 1]: five equal bands (0.2 wide)."""
    return int(min(max(1 + int(satisfaction * 5.0), 1), 5))


class Reaction(BaseModel):
    """What a user did with one item."""

    model_config = ConfigDict(extra="forbid")

    item: int = Field(description="catalog index of the item")
    reaction: Literal["skip", "click", "like", "share"]
    dwell_min: float = Field(ge=0, description="minutes spent on the item")
    reason: str = Field("", max_length=300)


class Intent(BaseModel):
    """The structured half of a reflective instruction, which recommenders can act on."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["more", "less", "different"]
    topics: list[str] = Field(default_factory=list, description="topics the intent is about")
    related: list[str] = Field(default_factory=list, description="suggested topics to move to")
    attributes: dict[str, str] = Field(default_factory=dict, description="e.g. {'quality': 'high'}")


class Instruction(BaseModel):
    """A reflective instruction from a user who senses they are about to disengage."""

    model_config = ConfigDict(extra="forbid")

    text: str
    intent: Intent


class MemoryEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: int
    topic: str
    reaction: Literal["skip", "click", "like", "share"]
    dwell_min: float = Field(ge=0)
    disliked: bool = Field(False, description="a skip the user marked 'not interested'")


class Mindset(BaseModel):
    """The hidden, dynamic state of a simulated user. Agents never see it."""

    model_config = ConfigDict(extra="forbid")

    interests: list[float] = Field(description="current interests in the item embedding space")
    satisfaction: float = Field(ge=0, le=1)
    satisfaction_trend: float = Field(description="short-term minus long-term satisfaction average")
    fatigue: float = Field(ge=0, le=1, description="boredom from repetitive or low-quality items")
    novelty_propensity: float = Field(ge=0, le=1, description="this session's appetite for novelty")
    time_left_min: float = Field(ge=0, description="minutes left of today's budget")
    patience_left: int = Field(ge=0, description="unengaging items still tolerated this session")
    memory: list[MemoryEntry] = Field(default_factory=list, description="recent items and reactions")
    summary: str = Field("", description="how the user feels, in a sentence")
