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
