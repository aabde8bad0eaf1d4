"""The platform's candidate generator: the retrieval stage in front of every recommender.

It sees only what a platform logs (items shown, the reactions to them, and what the user
said), never the user's mindset. Candidates mix four sources, in this order: items that
answer the user's latest instruction (drawn from the whole catalog, so "more baking" can
be satisfied), similarity to recently engaged items, popularity, and uniform exploration,
so a recommender always has something asked for, something relevant, something popular
and something new to choose from.

Retrieval runs for a batch of users at once. Each user draws a fixed block of uniforms
from its own stream per retrieval, so a user's candidates never depend on the batch it
is in; scores are float64, so a batched matrix product and a single-row one agree on
every ranking.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import RetrievalConfig
from recoworld.envs.retrieval_kernels import fill_from_draws, first_unblocked, popular_items
from recoworld.streams import UserStreams

#: How many of the latest engaged items make up the interest query.
QUERY_ITEMS = 10


@dataclass
class InstructionTargets:
    """What the users' latest instructions ask for, one row per retrieving user."""

    active: np.ndarray  # (R,) bool: an instruction is in force
    topics: np.ndarray  # (R, T) bool: topics an item may be on to honour it
    high_quality: np.ndarray  # (R,) bool: it asked for high quality
    direction: np.ndarray  # (R, D) where it points in item space
    ranked: np.ndarray  # (R, L) honouring items nearest the direction, best first, -1 padded (see `rank`)

    def subset(self, rows: np.ndarray) -> InstructionTargets:
        return InstructionTargets(self.active[rows], self.topics[rows], self.high_quality[rows], self.direction[rows],
                                  self.ranked[rows])

    def honoured(self, catalog: Catalog, items: np.ndarray | None = None) -> np.ndarray:
        """(R, M) bool: which of each row's `items` (R, M) honour its instruction; (R, N) for the
        whole catalog when `items` is None."""
        if items is None:
            ok = self.topics[:, catalog.topic]
            good = (catalog.quality >= catalog.median_quality)[None, :]
        else:
            ok = np.take_along_axis(self.topics, catalog.topic[items].astype(np.int64), axis=1)
            good = catalog.quality[items] >= catalog.median_quality
        return ok & (good | ~self.high_quality[:, None])


@dataclass
class TasteRankings:
    """Per user row, the catalog ranked by similarity to the user's taste query, best first.

    The query (the latest engaged items in the platform's history) changes only when the user
    engages with something or an engaged item leaves the history window, so a ranking is kept
    until the world marks its row stale, and the interest block reads it instead of scoring the
    whole catalog every turn.
    """

    ranked: np.ndarray  # (B, L) item indices
    fresh: np.ndarray  # (B,) bool: `ranked` is the ranking of the current query


class CandidateRetriever:
    def __init__(self, catalog: Catalog, config: RetrievalConfig, n_candidates: int) -> None:
        if n_candidates > len(catalog):
            raise ValueError(f"n_candidates={n_candidates} exceeds the catalog size {len(catalog)}")
        self.catalog = catalog
        self.config = config
        self.n = n_candidates
        self._emb = catalog.embeddings.astype(np.float64)
        self.set_popularity(catalog.popularity)
        n_int = round(config.interest_share * n_candidates)
        n_pop = round(config.popular_share * n_candidates)
        self._n_interest, self._n_popular = n_int, min(n_pop, n_candidates - n_int)
        self._n_instruction = min(round(config.instruction_share * n_candidates),
                                  n_candidates - self._n_interest - self._n_popular)
        # Kept rankings are this deep, so that what recency and the earlier blocks take rarely uses them up.
        self.instruction_depth = min(self._n_instruction + config.exclude_recent + 8, len(catalog))
        self.taste_depth = min(self._n_instruction + self._n_interest + config.exclude_recent + 8, len(catalog))
        # Uniforms per retrieval: oversampled draws for the largest possible popular and random blocks.
        self._max_popular = self._n_popular + self._n_interest // 2
        self._max_random = n_candidates - self._n_popular
        self._n_draws = (2 * self._max_popular + 8) + (2 * self._max_random + 8)
        self._kept: dict[Hashable, np.ndarray] = {}  # `rank_kept`

    def set_popularity(self, popularity: np.ndarray) -> None:
        """What the popular block samples from: the catalog prior, or live popularity in a shared world."""
        pop = np.maximum(np.asarray(popularity, dtype=np.float64), 1e-12)
        self._log_pop = np.log(pop)
        self._pop_cdf = np.cumsum(pop / pop.sum())
        # Guide table: the answer for the left edge of each of N equal slices of [0, 1), so a draw
        # starts next to its item instead of bisecting the whole CDF.
        n = len(pop)
        self._pop_guide = np.minimum(np.searchsorted(self._pop_cdf, np.arange(n) / n, side="right"), n - 1)

    def retrieve(
        self,
        history_items: np.ndarray,
        history_reactions: np.ndarray,
        streams: UserStreams,
        rows: np.ndarray,
        unavailable: np.ndarray | None = None,
        instructions: InstructionTargets | None = None,
        tastes: TasteRankings | None = None,
    ) -> np.ndarray:
        """(R, n_candidates) distinct catalog indices per user, in retrieval order (instruction,
        interest, popular, random).

        `history_items`/`history_reactions` are (R, H), oldest first with -1 padding on the left;
        row j belongs to user `rows[j]` and draws from `streams[rows[j]]`. `unavailable` (R, N)
        bool marks items that cannot be offered at all (e.g. not yet published). `instructions`
        (one row per retrieving user) and `tastes` (one row per world user, updated in place)
        carry the kept rankings of the instruction and interest blocks.
        """
        r, n_items = len(rows), len(self.catalog)
        out = np.empty((r, self.n), dtype=np.int64)
        if r == 0:
            return out
        draws = streams.random(rows, self._n_draws)
        if unavailable is None:
            blocked, n_free = np.zeros((r, n_items), dtype=bool), np.full(r, n_items)
        else:
            blocked, n_free = unavailable.copy(), n_items - unavailable.sum(axis=1)
        shown = history_items >= 0
        if self.config.exclude_recent:
            recent = np.zeros_like(shown)
            recent[:, -self.config.exclude_recent:] = shown[:, -self.config.exclude_recent:]
            fits = n_free - recent.sum(axis=1) >= self.n  # never block so much that too few items remain
            ri, ci = np.nonzero(recent & fits[:, None])
            blocked[ri, history_items[ri, ci]] = True

        n_instruction = np.zeros(r, dtype=np.int64)
        if self._n_instruction and instructions is not None and instructions.active.any():
            a = np.flatnonzero(instructions.active)
            picks = self._answer(instructions.subset(a), blocked[a])
            found = picks >= 0
            n_instruction[a] = found.sum(axis=1)
            ai, ci = np.nonzero(found)
            out[a[ai], ci] = picks[ai, ci]
            blocked[a[ai], picks[ai, ci]] = True

        positive = shown & (history_reactions > 0)
        has_taste = positive.any(axis=1)
        n_interest = np.where(has_taste, self._n_interest, 0)
        if self._n_interest and has_taste.any():
            latest = positive & (np.cumsum(positive[:, ::-1], axis=1)[:, ::-1] <= QUERY_ITEMS)
            t = np.flatnonzero(has_taste)

            def taste_scores(local: np.ndarray) -> np.ndarray:
                """(len(local), N) similarity of every item to each row's taste query."""
                query = np.einsum("rh,rhd->rd", latest[local].astype(np.float64),
                                  self._emb[np.maximum(history_items[local], 0)])
                return query @ self._emb.T

            if tastes is None:
                ranked = _top_rows(taste_scores(t), self.taste_depth)
            else:
                stale = t[~tastes.fresh[rows[t]]]
                if len(stale):
                    tastes.ranked[rows[stale]] = _top_rows(taste_scores(stale), self.taste_depth)
                    tastes.fresh[rows[stale]] = True
                ranked = tastes.ranked[rows[t]]
            picks, used_up = first_unblocked(ranked, blocked[t], self._n_interest)
            if used_up.any():
                scores = taste_scores(t[used_up])
                scores[blocked[t[used_up]]] = -np.inf
                picks[used_up] = _top_rows(scores, self._n_interest)
            out[t[:, None], n_instruction[t][:, None] + np.arange(self._n_interest)] = picks
            blocked[t[:, None], picks] = True

        n_popular = self._n_popular + (self._n_interest - n_interest) // 2
        split = 2 * self._max_popular + 8
        pop_idx = popular_items(draws[:, :split], self._pop_cdf, self._pop_guide)
        self._fill(out, n_instruction + n_interest, n_popular, pop_idx, blocked, streams, rows, popular=True)
        rand_idx = np.minimum((draws[:, split:] * n_items).astype(np.int64), n_items - 1)
        start = n_instruction + n_interest + n_popular
        self._fill(out, start, self.n - start, rand_idx, blocked, streams, rows, popular=False)
        return out

    def rank(self, targets: InstructionTargets, depth: int | None = None, blocked: np.ndarray | None = None,
             ) -> np.ndarray:
        """(R, depth) the items that honour each row's instruction, nearest its direction first
        (ties by index), -1 where fewer exist; `blocked` (R, N) items are left out."""
        scores = targets.direction.astype(np.float64) @ self._emb.T
        excluded = ~targets.honoured(self.catalog)
        if blocked is not None:
            excluded |= blocked
        scores[excluded] = -np.inf
        picks = _top_rows(scores, depth or self.instruction_depth)
        return np.where(np.take_along_axis(scores, picks, axis=1) > -np.inf, picks, -1)

    def rank_kept(self, keys: Sequence[Hashable], targets: InstructionTargets) -> np.ndarray:
        """`rank(targets)` at the kept depth with nothing blocked, remembered per key: such a ranking
        depends only on what the instruction asks for, which `keys` (one per row) name, and a
        population repeats the same few asks."""
        new = [j for j, key in enumerate(keys) if key not in self._kept]
        if new:
            for j, ranked in zip(new, self.rank(targets.subset(np.asarray(new)))):
                self._kept.setdefault(keys[j], ranked)
        return np.stack([self._kept[key] for key in keys]) if len(keys) else np.empty((0, self.instruction_depth),
                                                                                      dtype=np.int64)

    def _answer(self, asked: InstructionTargets, blocked: np.ndarray) -> np.ndarray:
        """(R, n_instruction) the instruction block: the first unblocked items of each row's ranking
        (`asked.ranked`, computed once per instruction), -1 where too few honour it. A row whose
        ranking is used up by blocked items is ranked again over the whole catalog, so the block is
        always the top honouring unblocked items."""
        picks, used_up = first_unblocked(asked.ranked, blocked, self._n_instruction)
        if used_up.any():
            picks[used_up] = self.rank(asked.subset(used_up), self._n_instruction, blocked[used_up])
        return picks

    def _fill(self, out: np.ndarray, start: np.ndarray, count: np.ndarray, drawn: np.ndarray, blocked: np.ndarray,
              streams: UserStreams, rows: np.ndarray, *, popular: bool) -> None:
        """Write `count[j]` distinct unblocked items into `out[j, start[j]:]` and block them.

        The first distinct unblocked items among the oversampled draws, which costs O(k log N)
        instead of O(N); a row whose draws fall short (a small or mostly blocked catalog)
        takes an exact draw from its own stream instead.
        """
        short = fill_from_draws(out, start.astype(np.int64), count.astype(np.int64), drawn, blocked)
        for j in np.flatnonzero(short).tolist():
            k, s = int(count[j]), int(start[j])
            free = np.flatnonzero(~blocked[j])
            rng = streams[int(rows[j])]
            if popular:
                gumbel = self._log_pop[free] - np.log(-np.log(rng.random(len(free))))
                picked = free[_top_rows(gumbel[None, :], k)[0]]
            else:
                picked = free[rng.choice(len(free), size=k, replace=False)]
            out[j, s : s + k] = picked
            blocked[j, picked] = True


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """(R, k) indices of each row's k best scores, best first, ties broken by index for determinism."""
    r, n = scores.shape
    if k <= 0:
        return np.empty((r, 0), dtype=np.int64)
    part = np.sort(np.argpartition(scores, n - k, axis=1)[:, n - k :], axis=1)
    at = np.arange(r)[:, None]
    # A stable sort of the index-ordered part: equal scores stay in index order (cheaper than lexsort).
    order = np.argsort(-scores[at, part], axis=1, kind="stable")
    return part[at, order]
