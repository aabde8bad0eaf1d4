"""The user-simulator contract the world depends on: one batch protocol for every kind of user.

A simulator owns the hidden mindsets of B users (rows) and turns slates into feedback.
Parametric, LLM and scripted users implement `BatchUserSimulator` with the same
signatures, so the world core, its three views (`RecoWorld-v0`, the vector env, the
population env) and recommenders never know which kind they face. The single-user case is
B = 1, not a second contract.

Call order per row: `reset` once per episode, then per session `start_sessions`, `review`
until the feedback says `left`, and `end_sessions`, which returns the gap in days until
the next session (`inf` when the user never comes back). All randomness of row i comes
from `streams[i]` (see `recoworld.streams`), so a row behaves the same whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from recoworld.mindset import ExitReason, Instruction, Interview, Mindset
from recoworld.population import UserProfile
from recoworld.streams import UserStreams


@dataclass
class BatchFeedback:
    """What the reviewing rows did with their slates, row j for the j-th reviewing user.

    `reactions[j, k]` is a `ReactionType` value, or `UNSEEN` (-1) for positions after the
    user left. `disliked[j, k]` marks reviewed skips the user flagged "not interested" (a
    dislike is a skip plus this flag, never a reaction level, see `recoworld.mindset`);
    `exit_reasons[j]` says why row j left (None where it stayed). Both are optional: None
    means the simulator does not produce them (no dislikes, no reasons).
    """

    reactions: np.ndarray  # (R, K) int8
    dwell_min: np.ndarray  # (R, K) float32
    left: np.ndarray  # (R,) bool
    instructions: list[Instruction | None]  # (R,)
    fallback: np.ndarray | None = None  # (R,) bool, LLM users only: the parametric user decided instead
    reasons: list[list[str]] | None = None  # (R,) per-item reasons, LLM users only
    disliked: np.ndarray | None = None  # (R, K) bool: reviewed skips marked "not interested"
    exit_reasons: list[ExitReason | None] | None = None  # (R,) why each row left; None where it stayed

    @classmethod
    def concat(cls, parts: Sequence[BatchFeedback]) -> BatchFeedback:
        """Rows of several feedbacks, in order (e.g. users of one batch served by different models)."""
        fallback = [p.fallback if p.fallback is not None else np.zeros(len(p.left), bool) for p in parts]
        reasons: list[list[list[str]]] = [p.reasons if p.reasons is not None else [[] for _ in p.left] for p in parts]
        disliked = [p.disliked if p.disliked is not None else np.zeros(p.reactions.shape, bool) for p in parts]
        exits = [p.exit_reasons if p.exit_reasons is not None else [None] * len(p.left) for p in parts]
        return cls(np.concatenate([p.reactions for p in parts]), np.concatenate([p.dwell_min for p in parts]),
                   np.concatenate([p.left for p in parts]), [i for p in parts for i in p.instructions],
                   np.concatenate(fallback), [r for rs in reasons for r in rs],
                   np.concatenate(disliked), [e for es in exits for e in es])


@dataclass
class SlateFeedback:
    """One user's response to one slate (row j of a `BatchFeedback`)."""

    reactions: np.ndarray  # (K,) int8
    dwell_min: np.ndarray  # (K,) float32
    instruction: Instruction | None
    left: bool
    reasons: list[str] = field(default_factory=list)
    fallback: bool = False  # an LLM user fell back to the parametric decision
    disliked: np.ndarray | None = None  # (K,) bool: skips marked "not interested"
    exit_reason: ExitReason | None = None  # why the user left (when `left`)


@runtime_checkable
class BatchUserSimulator(Protocol):
    """B simulated users across sessions; every method takes the rows it concerns."""

    def reset(self, profiles: Sequence[UserProfile], rows: np.ndarray | None = None) -> None:
        """Start episodes: with `rows=None` the batch becomes these profiles (B = len(profiles));
        otherwise re-initialise just `rows` (one profile each). Draws nothing."""
        ...

    def start_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> None: ...

    def review(
        self, slates: np.ndarray, streams: UserStreams, rows: np.ndarray | None = None,
        utility_bonus: np.ndarray | None = None,
    ) -> BatchFeedback:
        """`slates` (R, K): row j is reviewed by user `rows[j]` (all users in order when `rows` is
        None). `utility_bonus` (R, K) is what the world adds to an item's appeal (social proof);
        simulators whose choices are not utilities (an LLM's) ignore it."""
        ...

    def end_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: UserStreams) -> np.ndarray:
        """(len(rows),) days until each user's next session; `inf` = churned."""
        ...

    def mindset(self, row: int) -> Mindset: ...


def session_interviews(users: object, rows: np.ndarray) -> list[Interview | None]:
    """The end-of-session interviews of `rows`, asked right after `end_sessions`.

    Optional for simulators: one that defines `interview(row) -> Interview | None` is asked;
    others give None (no interview), so third-party simulators keep working unchanged."""
    ask = getattr(users, "interview", None)
    return [ask(int(r)) if ask is not None else None for r in np.asarray(rows).tolist()]
