"""The recommender contract: act on what a platform sees, learn from what users do.

A recommender is a `Recommender` subclass. Runs (`recoworld simulate`, `bench`, `study`,
`train`'s evaluation) build it by name, or yours by reference (`module:Class`,
`file.py:Class`, `recoworld.agents.plugins`), as `Class(slate_size, seed=seed)`, adding
`catalog=catalog` (a `recoworld.catalog.Catalog`) when the constructor takes one.
`recoworld check-agent SPEC` (or `recoworld.agents.check.check_recommender`) tries it
before a run does. Recommenders never see the user's hidden mindset.

## Name
`name` (a class attribute, a str) is what runs call a recommender in tables, file names
(`trajectories/<name>.parquet`), plots, leaderboards and reports: 1 to 64 ASCII letters,
digits, `.`, `_` or `-`, starting with a letter or digit. A class that sets none is called
by its class name; two recommenders of one run with the same name (case aside), or yours
named like a built-in one (`greedy`), are an error before the run starts.

## Calls, in order
1. `begin_episode(seed)`: a new user arrives (an episode is one user over the horizon).
   `simulate` plays every user with one instance, so what it learns carries over users;
   a study builds an instance per user. The default reseeds `self.rng`.
2. `act(observation, info) -> slate`, once per turn.
3. `observe(reactions, info)`: the feedback on the slate just shown; the default does nothing.

## `act(observation, info)`
`observation` is a dict of numpy arrays, one user's view of the platform
(C = `n_candidates`, H = `history_len`, F = the catalog's `embedding_dim` + 3,
D = `embedding_dim`):

| key | shape, dtype | meaning |
|---|---|---|
| `candidate_ids` | (C,) int64 | catalog rows of this turn's candidates, in retrieval order |
| `candidate_features` | (C, F) float32 | embedding, quality, log-duration, log-popularity |
| `candidate_mask` | (C,) int8 | 1 = available, 0 = the user already consumed it this episode |
| `history_ids` | (H,) int64 | the last items the user reviewed, oldest first; -1 = padding |
| `history_features` | (H, F) float32 | their features (zeros for padding) |
| `history_reactions` | (H,) int64 | -1 padding, 0 skip, 1 click, 2 like, 3 share |
| `history_dwell` | (H,) float32 | minutes spent on each |
| `instruction` | (4 + D,) float32 | latest instruction: [present, more, less, different] + direction in item space |
| `context` | (4,) float32 | day, session index, turn in the session, days since the last session |

`instruction` is zeros until the user first says what it wants; how much of it shows
depends on the world's `instruction_channel` (`recoworld.envs.recoworld_env`).
`info` is the env's info of the turn before (on a user's first turn: `user_id`, `segment`
and the clock `day`, `session`, `turn`, `step`, `time_days`); from then on a
`recoworld.envs.world.TurnInfo`, whose `instruction` is the text of what the user asked
for (None when nothing) and `instruction_intent` its parsed intent. `logged_instruction`,
`logged_intent` and `mindset` are for logs and the oracle: recommenders must not read them.

It returns the slate: `slate_size` distinct candidate **positions** (indices into the
candidate arrays, 0..C-1; not catalog ids), as integers, shape `(slate_size,)`, best
first; a numpy int64 array is what the env's action space holds. The env replaces a
repeated position by the first unused candidate (`on_duplicate="replace"`, counted in
`info["duplicates_replaced"]`) or refuses it (`"error"`); `check-agent` flags repeats. `top_k(scores,
observation)` turns (C,) scores into such a slate: the best available candidates first,
consumed ones last, ties broken by retrieval order.

## `observe(reactions, info)`
`reactions` is (slate_size,) int8: per slot, -1 unseen (the user left before it), 0 skip,
1 click, 2 like, 3 share; `info` the turn's `TurnInfo` (dwell, `left`, `churned`,
`exit_reason`, the instruction, ...).

## Optional capabilities
Runs look for these and use them only where a recommender has them:
- `CatalogSearcher` (mix it in): `connect_search(search)` is handed the platform's catalog
  search before each episode (`simulate`; None when search is off), to bring items from
  the whole catalog into the candidates.
- `last_trace`: an attribute read after each `act`; when set, a JSON-serialisable record of
  how the slate was chosen, stored in the trajectories' `agent_trace` column (ToolRec's
  reasoning).
- `fallback_turns`: an int attribute, the turns so far decided by a fallback rather than the
  recommender's own policy; its increase per episode is the summary's `fallback_turns`.
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
    """Base class: subclasses implement `act`, set `name`, and override the hooks they need (module docstring)."""

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
    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        """The slate: `slate_size` distinct candidate positions (int, shape `(slate_size,)`), best first."""

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
