"""The platform's candidate generator: the retrieval stage in front of every recommender.

It sees only what a platform logs (items shown and the reactions to them), never the
user's mindset. Candidates mix three sources: similarity to recently engaged items,
popularity, and uniform exploration, so a recommender always has something relevant,
something popular and something new to choose from.
"""

from __future__ import annotations

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import RetrievalConfig


class CandidateRetriever:
    def __init__(self, catalog: Catalog, config: RetrievalConfig, n_candidates: int) -> None:
        if n_candidates > len(catalog):
            raise ValueError(f"n_candidates={n_candidates} exceeds the catalog size {len(catalog)}")
        self.catalog = catalog
        self.config = config
        self.n = n_candidates
        self.set_popularity(catalog.popularity)
        n_int = round(config.interest_share * n_candidates)
        n_pop = round(config.popular_share * n_candidates)
        self._n_interest, self._n_popular = n_int, min(n_pop, n_candidates - n_int)

    def set_popularity(self, popularity: np.ndarray) -> None:
        """What the popular block samples from: the catalog prior, or live popularity in a shared world."""
        pop = np.maximum(np.asarray(popularity, dtype=np.float64), 1e-12)
        self._log_pop = np.log(pop)
        self._pop_cdf = np.cumsum(pop / pop.sum())

    def retrieve(
        self,
        history_items: np.ndarray,
        history_reactions: np.ndarray,
        rng: np.random.Generator,
        unavailable: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_candidates,) distinct catalog indices, in retrieval order (interest, popular, random).

        `unavailable` (N,) bool marks items that cannot be offered at all (e.g. not yet published).
        """
        n_items = len(self.catalog)
        blocked = np.zeros(n_items, dtype=bool) if unavailable is None else unavailable.copy()
        shown = history_items[history_items >= 0]
        if self.config.exclude_recent and len(shown):
            recent = shown[-self.config.exclude_recent :]
            n_unavailable = 0 if unavailable is None else int(unavailable.sum())
            if n_items - n_unavailable - len(recent) >= self.n:
                blocked[recent] = True
        picks: list[np.ndarray] = []

        positive = history_items[(history_reactions > 0) & (history_items >= 0)]
        n_interest = self._n_interest if len(positive) else 0
        if n_interest:
            query = self.catalog.embeddings[positive[-10:]].sum(axis=0)
            scores = self.catalog.embeddings @ query
            scores[blocked] = -np.inf
            picks.append(_top(scores, n_interest))
            blocked[picks[-1]] = True

        n_popular = self._n_popular + (self._n_interest - n_interest) // 2
        picks.append(self._sample(self._pop_cdf, n_popular, blocked, rng))
        blocked[picks[-1]] = True
        picks.append(self._sample(None, self.n - sum(len(p) for p in picks), blocked, rng))
        return np.concatenate(picks)

    def _sample(
        self, cdf: np.ndarray | None, k: int, blocked: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """k distinct unblocked items, by popularity (`cdf`) or uniformly (`None`).

        Draws a few times more than needed and keeps the first distinct unblocked ones,
        which costs O(k log N) instead of O(N); falls back to an exact O(N) draw when the
        unblocked pool is too small for that to succeed.
        """
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        n_items = len(blocked)
        u = rng.random(2 * k + 8)
        idx = (u * n_items).astype(np.int64) if cdf is None else np.searchsorted(cdf, u, side="right")
        idx = np.minimum(idx, n_items - 1)
        distinct = list(dict.fromkeys(idx[~blocked[idx]].tolist()))
        if len(distinct) >= k:
            return np.array(distinct[:k], dtype=np.int64)
        free = np.flatnonzero(~blocked)
        if cdf is None:
            return free[rng.choice(len(free), size=k, replace=False)]
        gumbel = self._log_pop[free] - np.log(-np.log(rng.random(len(free))))
        return free[_top(gumbel, k)]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first, ties broken by index for determinism."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    n = len(scores)
    part = np.argpartition(scores, n - k)[n - k :]
    return part[np.lexsort((part, -scores[part]))]
