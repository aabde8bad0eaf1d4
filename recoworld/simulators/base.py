"""The user-simulator contract that the env depends on.

A simulator owns the hidden mindset of one user (or a batch of users) and turns slates
into feedback. Parametric and LLM users both implement `UserSimulator`, so envs and
recommenders never know which one they face.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from recoworld.mindset import Instruction, Mindset
from recoworld.population import UserProfile


@dataclass
class SlateFeedback:
    """One user's response to one slate, as arrays so envs can log it without conversion.

    `reactions[k]` is a `ReactionType` value, or `UNSEEN` (-1) for positions after the user left.
    """

    reactions: np.ndarray  # (K,) int8
    dwell_min: np.ndarray  # (K,) float32
    instruction: Instruction | None
    left: bool
    reasons: list[str] = field(default_factory=list)
    fallback: bool = False  # an LLM user fell back to the parametric decision


@runtime_checkable
class UserSimulator(Protocol):
    """One simulated user across sessions.

    Call order: `reset` once per episode, then for each session `start_session`,
    `review` until feedback says `left`, and `end_session`, which returns the gap in days
    until the next session (or `None` when the user never comes back).
    All randomness comes from the `rng` the caller passes in.
    """

    def reset(self, profile: UserProfile, rng: np.random.Generator) -> None: ...

    def start_session(self, now_days: float, rng: np.random.Generator) -> None: ...

    def review(self, slate: np.ndarray, rng: np.random.Generator) -> SlateFeedback: ...

    def end_session(self, now_days: float, rng: np.random.Generator) -> float | None: ...

    def mindset(self) -> Mindset: ...
