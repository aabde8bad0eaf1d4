"""The recommender contract: act on what a platform sees, learn from what users do.

`act(observation, info)` returns a slate of candidate positions (shape `(slate_size,)`),
exactly the env's action. `observe(reactions, info)` receives the feedback of the
slate just shown, with the env's step `info`. Recommenders never see the mindset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

Observation = dict[str, np.ndarray]


class Recommender(ABC):
    """Base class: subclasses implement `act`, and override the hooks they need."""

    name: str = "recommender"

    def __init__(self, slate_size: int, seed: int | None = None) -> None:
        if slate_size < 1:
            raise ValueError(f"slate_size must be >= 1, got {slate_size}")
        self.slate_size = slate_size
        self.rng = np.random.default_rng(seed)

    def begin_episode(self, seed: int | None = None) -> None:
        """A new user arrives. Reseeds the agent's own randomness when `seed` is given."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    @abstractmethod
    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray: ...

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:  # noqa: B027
        """Feedback on the last slate; a no-op for agents that do not learn online."""

    def top_k(self, scores: np.ndarray, observation: Observation) -> np.ndarray:
        """The best `slate_size` candidates, available ones first, ties broken by retrieval order."""
        mask = observation["candidate_mask"].astype(bool)
        order = np.lexsort((np.arange(len(scores)), -scores, ~mask))
        return order[: self.slate_size].astype(np.int64)
