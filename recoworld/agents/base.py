"""The recommender contract: act on what a platform sees, learn from what users do.

`act(observation, info)` returns a slate of candidate positions (shape `(slate_size,)`),
exactly the env's action. `observe(reactions, info)` receives the feedback of the
slate just shown, with the env's step `info`. Recommenders never see the mindset.
"""

from __future__ import annotations

import contextlib
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from recoworld.errors import RecommenderFailed, RecoWorldError

if TYPE_CHECKING:
    from recoworld.envs.search import PlatformSearch

Observation = dict[str, np.ndarray]


@contextlib.contextmanager
def blame(recommender: str, method: str, user_id: str, turn: int) -> Iterator[None]:
    """Run a recommender's own code (`method`). What it raises, unless one of RecoWorld's errors (an LLM
    budget, a bad config), becomes `RecommenderFailed` naming who failed, for which user and on which turn:
    a raw traceback from someone's plug-in names none of them."""
    try:
        yield
    except RecoWorldError:
        raise
    except Exception as err:
        said = next(iter(str(err).splitlines()), "")
        raise RecommenderFailed(
            f"recommender {recommender!r} raised in {method}() for user {user_id!r} on turn {turn}: "
            f"{type(err).__name__}{': ' + said if said else ''} (--debug shows the traceback)",
            traceback.format_exc()) from err


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


class CatalogSearcher:
    """Optional capability: a recommender that searches the whole catalog through the platform.

    Mix it into a `Recommender`. A runner that has the platform's search service
    (`RecoWorldEnv.search`, a `recoworld.envs.search.PlatformSearch`) hands it over with
    `connect_search` before each episode (`simulation.run_episode` does); the service admits
    found items into the candidates, at most `retrieval.search_cap` per turn, and the agent
    still acts on candidate positions. Without one (None: `search_cap` 0, the vector and
    population views) the recommender must work from the candidates alone. Recommenders
    without this capability are never handed a search service.
    """

    search: PlatformSearch | None = None

    def connect_search(self, search: PlatformSearch | None) -> None:
        self.search = search
