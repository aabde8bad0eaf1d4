"""The platform's catalog search: how items an agent finds reach the slate, on the platform's terms.

A slate is a list of positions into the candidates the platform's retrieval offered. An agent
that looks beyond them (ToolRec's `search` tool) does not write catalog items into its action;
it asks this service, so the platform stays in control of what can be shown:

1. **Find.** Items of the whole catalog by `topic`, `subtopic`, `semantic_id` prefix or free-text
   `query` (`recoworld.catalog.search.ItemMatcher`, the matcher ToolRec's candidate tools use),
   leaving out what the user has already consumed and what is not released yet. Ranked by
   match score, then by the platform's own relevance (cosine to the user's latest engaged
   items, the query of the interest block; popularity for a user with none), then catalog
   index. No random draw: the same state and query find the same items.
2. **Admit.** Found items that are not candidates yet enter the user's candidate list, at most
   `retrieval.search_cap` per turn over all searches, each in place of the lowest-priority
   candidate: one the user already consumed, else the last in retrieval order (the exploration
   block comes last). Items admitted earlier in the turn and candidates this search found are
   never replaced. Found items past the cap are reported as left out.
3. **Show.** The result carries every found item's candidate position (-1 when left out) and the
   new observation; the agent acts on positions as before, so the env's action space, its
   checks and the trajectory schema do not change. The env marks slate items that entered
   through search in `info["searched"]` (the trajectory's `searched` column), and the agent's
   trace keeps the queries.

`RecoWorldEnv.search` is this service for its one user (None when `search_cap` is 0); runners
hand it to recommenders that declare the `recoworld.agents.base.CatalogSearcher` capability.
Instruction measures read the candidates at the step, so an instruction counts as satisfiable
when a search brought in what it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recoworld.catalog.search import BadQuery, ItemMatcher, choose, item_matcher
from recoworld.envs.retrieval import QUERY_ITEMS
from recoworld.envs.world import World

#: What a search can condition on.
SEARCH_FIELDS = ("topic", "subtopic", "semantic_id", "query")
#: Most items one search returns.
MAX_RESULTS = 20


@dataclass
class SearchResult:
    """What one search found, and where the found items now sit among the candidates."""

    items: np.ndarray  # (M,) catalog indices found, best first
    positions: np.ndarray  # (M,) each one's candidate position, -1 where the per-turn cap left it out
    admitted: np.ndarray  # catalog indices this search brought into the candidates
    observation: dict[str, np.ndarray]  # the user's observation with the admitted items in place

    @property
    def left_out(self) -> np.ndarray:
        return self.items[self.positions < 0]


class PlatformSearch:
    """Catalog search for user row `row` of a world, with a per-turn admission cap (module docstring)."""

    def __init__(self, world: World, row: int = 0, matcher: ItemMatcher | None = None) -> None:
        self.world, self.row = world, row
        self.cap = min(world.config.retrieval.search_cap, world.config.n_candidates)  # the default may exceed it
        self.matcher = matcher or item_matcher(world.catalog)
        self._admitted: list[int] = []  # candidate positions admitted this turn

    def new_turn(self) -> None:
        """Fresh candidates, fresh cap: the view calls this whenever it retrieves for the user."""
        self._admitted = []

    @property
    def admitted_items(self) -> np.ndarray:
        """Catalog indices admitted this turn (and still among the candidates)."""
        if not self._admitted:  # most turns: skip the gather
            return np.empty(0, dtype=np.int64)
        return self.world.candidates[self.row, self._admitted].copy()

    @property
    def remaining(self) -> int:
        """Items the platform still admits this turn."""
        return self.cap - len(self._admitted)

    def search(self, by: str, value: str, k: int) -> SearchResult:
        """The top `k` items for `by = value`; raises `BadQuery` (a message fit for a model) for bad arguments."""
        if not 1 <= k <= MAX_RESULTS:
            raise BadQuery(f"k={k} is out of range; use 1 <= k <= {MAX_RESULTS}")
        field = choose(by, SEARCH_FIELDS, "search field")
        w, row = self.world, self.row
        open_ = ~w.consumed[row]
        unreleased = w.platform.unreleased(w.now[row : row + 1]) if w.platform is not None else None
        if unreleased is not None:  # None: every item is out
            open_ &= ~unreleased[0]
        items = np.flatnonzero(open_)
        score = self.matcher.score(field, value, items)
        if field == "query" and not score.any():
            raise BadQuery(f"query: none of the words of {value!r} occur in the catalog; try other words")
        keep = score > 0 if field != "query" else np.ones(len(items), dtype=bool)  # a query ranks every item
        items, score = items[keep], score[keep]
        if not len(items):
            raise BadQuery(f"no item in the catalog has {field}={value!r}")
        top = items[np.lexsort((items, -self._relevance(items), -score))][:k]
        candidates = w.candidates[row]
        positions = np.array([_position(candidates, item) for item in top.tolist()], dtype=np.int64)
        admitted: list[int] = []
        for j in np.flatnonzero(positions < 0).tolist():
            if self.remaining <= 0:
                break
            slot = self._free_slot(positions)
            if slot < 0:  # every candidate is protected (a tiny candidate list)
                break
            candidates[slot] = top[j]
            positions[j] = slot
            self._admitted.append(slot)
            admitted.append(int(top[j]))
        at = np.array([row])
        observation = {key: value[0] for key, value in w.observe(at).items()}
        return SearchResult(top, positions, np.asarray(admitted, dtype=np.int64), observation)

    def _relevance(self, items: np.ndarray) -> np.ndarray:
        """The platform's relevance of `items` to the user: cosine to the latest engaged items."""
        w, row = self.world, self.row
        ids, reactions = w.history_ids[row], w.history_reactions[row]
        engaged = ids[(ids >= 0) & (reactions > 0)][-QUERY_ITEMS:]
        if not len(engaged):
            return np.log(np.maximum(w.catalog.popularity[items].astype(np.float64), 1e-12))
        emb = w.catalog.embeddings.astype(np.float64)
        return emb[items] @ emb[engaged].sum(axis=0)

    def _free_slot(self, protected_positions: np.ndarray) -> int:
        """The lowest-priority candidate position not admitted this turn and not found by this search; -1: none."""
        w, row = self.world, self.row
        n = w.candidates.shape[1]
        blocked = np.zeros(n, dtype=bool)
        blocked[self._admitted] = True
        blocked[protected_positions[protected_positions >= 0]] = True
        consumed = w.consumed[row, w.candidates[row]]
        # Reverse retrieval order, consumed candidates first: the first unblocked one is the slot.
        order = np.lexsort((-np.arange(n), ~consumed))
        free = order[~blocked[order]]
        return int(free[0]) if len(free) else -1


def _position(candidates: np.ndarray, item: int) -> int:
    hit = np.flatnonzero(candidates == item)
    return int(hit[0]) if len(hit) else -1
