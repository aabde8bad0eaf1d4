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
every ranking. The rankings that need the whole catalog (a user's taste, an instruction's
answer) are kept until they go stale; the blocks are then composed row by row in one
compiled pass (`recoworld.envs.retrieval_kernels.compose`), and the rare block that a kept
ranking or the drawn uniforms cannot fill is settled exactly here.

The taste ranking is the catalog's exact ranking by default; with `retrieval.index: ivf | hnsw`
it is what an approximate nearest-neighbour index finds (`recoworld.envs.ann_index`), as on a
production platform, and `retrieval.refresh_every` keeps it for a few turns after the taste
changed, as platforms that refresh user vectors in batches do. The instruction block stays an
exact ranking: it filters the catalog by what was asked, and a population repeats the same asks,
so its rankings are kept per ask (`rank_kept`).
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import RetrievalConfig
from recoworld.envs.ann_index import ItemIndex
from recoworld.envs.instruction_kernels import RANKED, instruction_ranked, instruction_scores, kept_rankings
from recoworld.envs.retrieval_kernels import (
    DONE,
    INSTRUCTION,
    INTEREST,
    POPULAR,
    at_least,
    blocked_items,
    compose,
    taste_queries,
)
from recoworld.streams import UserStreams

#: How many of the latest engaged items make up the interest query.
QUERY_ITEMS = 10

#: The age of a taste ranking that must be made before it is read: none was made since the row's episode began.
UNRANKED = np.iinfo(np.int64).max // 2


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

    def honoured(self, catalog: Catalog) -> np.ndarray:
        """(R, N) bool: which items of the catalog honour each row's instruction: those on a topic it
        allows and, if it asked for quality, of at least median quality (the rule the world's
        measures of a slate apply item by item, `world_kernels.instruction_measures`)."""
        good = (catalog.quality >= catalog.median_quality)[None, :]
        return self.topics[:, catalog.topic] & (good | ~self.high_quality[:, None])


@dataclass
class TasteRankings:
    """Per user row, the catalog ranked by similarity to the user's taste query, best first.

    The query (the latest engaged items in the platform's history) changes only when the user
    engages with something or an engaged item leaves the history window, so a ranking is kept
    until the world marks its row stale, and the interest block reads it instead of scoring the
    whole catalog every turn. A stale ranking is made again once it is `retrieval.refresh_every`
    retrievals old.
    """

    ranked: np.ndarray  # (B, L) item indices, -1 where an approximate index found fewer
    fresh: np.ndarray  # (B,) bool: `ranked` is the ranking of the current query
    age: np.ndarray | None = None  # (B,) retrievals since `ranked` was made; None = UNRANKED for every row

    def __post_init__(self) -> None:
        if self.age is None:
            self.age = np.full(len(self.fresh), UNRANKED, dtype=np.int64)

    def forget(self, rows: np.ndarray) -> None:
        """A new episode for `rows`: their next taste ranking is made, whatever the cadence."""
        assert self.age is not None
        self.fresh[rows] = False
        self.age[rows] = UNRANKED


class _Composition:
    """Where each row's candidates stand while `retrieve` composes them (see `retrieval_kernels.compose`)."""

    stage: np.ndarray  # (R,) the block the row is at
    filled: np.ndarray  # (R,) candidates written so far
    need: np.ndarray  # (R,) size of the popular or random block the row is at
    n_instruction: np.ndarray  # (R,) size of the instruction block
    n_interest: np.ndarray  # (R,) size of the interest block
    recent_blocked: np.ndarray  # (R,) bool: the recently shown items are left out

    def __init__(self, r: int) -> None:
        self.stage, self.filled, self.need, self.n_instruction, self.n_interest = (
            np.zeros(r, dtype=np.int64) for _ in range(5))
        self.recent_blocked = np.zeros(r, dtype=bool)


class CandidateRetriever:
    def __init__(self, catalog: Catalog, config: RetrievalConfig, n_candidates: int) -> None:
        if n_candidates > len(catalog):
            raise ValueError(f"n_candidates={n_candidates} exceeds the catalog size {len(catalog)}")
        self.catalog = catalog
        self.config = config
        self.n = n_candidates
        self._emb = catalog.embeddings.astype(np.float64)
        # What an instruction's ranking reads (`rank`): the catalog grouped by topic (items by topic, then index),
        # where each topic's items start, whether they are of at least median quality (`InstructionTargets.
        # honoured`), and their embeddings dimension-major (as the catalog stores them: float32 widens to float64
        # exactly, in half the memory a ranking reads).
        self._by_topic = np.argsort(catalog.topic, kind="stable").astype(np.int64)
        self._topic_start = np.searchsorted(catalog.topic[self._by_topic], np.arange(catalog.n_topics + 1))
        self._good_by_topic = (catalog.quality >= catalog.median_quality)[self._by_topic]
        self._emb_t = np.ascontiguousarray(catalog.embeddings[self._by_topic].T)
        self._nothing_blocked = np.zeros((0, len(catalog)), dtype=bool)
        self._index = ItemIndex(catalog.embeddings, config) if config.index != "exact" else None
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
        self._sizes = np.array([n_candidates, self._n_instruction, self._n_interest, self._n_popular,
                                config.exclude_recent, 2 * self._max_popular + 8], dtype=np.int64)

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
        and `tastes` (one row per world user, read at `rows`; `tastes` updated in place) carry the
        kept rankings of the instruction and interest blocks: a world passes its own, and only the
        rows' kept instruction rankings and whether they are in force are gathered, not the rest of
        what was asked, which only a block the kept ranking cannot fill reads.
        """
        r, n_items = len(rows), len(self.catalog)
        out = np.empty((r, self.n), dtype=np.int64)
        if r == 0:
            return out
        draws = streams.random(rows, self._n_draws)
        positive = (history_items >= 0) & (history_reactions > 0)
        has_taste = np.asarray(positive.any(axis=1))  # (R,) bool; numpy's stubs allow a scalar for any()
        if tastes is None:  # no kept rankings: rank every row afresh
            tastes, taste_rows = TasteRankings(np.zeros((r, self.taste_depth), dtype=np.int64),
                                               np.zeros(r, dtype=bool)), np.arange(r)
        else:
            taste_rows = np.asarray(rows, dtype=np.int64)
        if self._n_interest:
            assert tastes.age is not None
            tastes.age[taste_rows] += 1
            stale = np.flatnonzero(has_taste & ~tastes.fresh[taste_rows]
                                   & (tastes.age[taste_rows] >= self.config.refresh_every))
            if len(stale):
                tastes.ranked[taste_rows[stale]] = self._taste_ranked(history_items[stale], positive[stale],
                                                                      self.taste_depth)
                tastes.fresh[taste_rows[stale]] = True
                tastes.age[taste_rows[stale]] = 0
        asked = instructions if self._n_instruction and instructions is not None else None
        ranked = (kept_rankings(asked.active, asked.ranked, np.asarray(rows, dtype=np.int64)) if asked is not None
                  else np.full((r, 1), -1, dtype=np.int64))
        state = _Composition(r)
        unavailable_items = unavailable if unavailable is not None else np.zeros((0, n_items), dtype=bool)
        todo = np.arange(r)
        while True:
            compose(todo, out, state.stage, state.filled, state.need, state.n_instruction, state.n_interest,
                    state.recent_blocked, history_items, unavailable_items, ranked, has_taste, tastes.ranked,
                    taste_rows, draws, self._pop_cdf, self._pop_guide, self._sizes)
            todo = todo[state.stage[todo] < DONE]
            if not len(todo):
                return out
            for j in todo.tolist():  # rare: a block the kept rankings or the draws could not fill
                blocked = blocked_items(j, out, state.filled, state.recent_blocked, history_items, unavailable_items,
                                        self.config.exclude_recent, n_items)
                self._settle(j, int(rows[j]), out[j], state, blocked, asked, history_items[j], positive[j],
                             streams[int(rows[j])])

    def _settle(self, j: int, row: int, out: np.ndarray, state: _Composition, blocked: np.ndarray,
                asked: InstructionTargets | None, history_items: np.ndarray, positive: np.ndarray,
                rng: np.random.Generator) -> None:
        """Fill row j's block at `state.stage[j]` exactly, given its `blocked` items, and move it on
        (`row`: its row of `asked`).

        An instruction or interest block whose kept ranking was used up by blocked items takes
        the top items of a ranking over the whole catalog; a popular or random block whose
        oversampled draws fell short takes an exact draw from the row's own stream."""
        stage, at = int(state.stage[j]), int(state.filled[j])
        if stage == INSTRUCTION:
            assert asked is not None
            picks = self.rank(asked.subset(np.array([row])), self._n_instruction, blocked[None, :])[0]
            picks = picks[picks >= 0]
            state.n_instruction[j] = len(picks)
        elif stage == INTEREST:
            picks = self._taste_free(history_items, positive, blocked)
            state.n_interest[j] = len(picks)
        else:
            free, k = np.flatnonzero(~blocked), int(state.need[j])
            if stage == POPULAR:
                gumbel = self._log_pop[free] - np.log(-np.log(rng.random(len(free))))
                picks = free[_top_rows(gumbel[None, :], k)[0]]
            else:
                picks = free[rng.choice(len(free), size=k, replace=False)]
        out[at : at + len(picks)] = picks
        state.filled[j] = at + len(picks)
        state.stage[j] = stage + 1

    def _taste_query(self, history_items: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """(R, D) each row's taste query: the sum of its latest engaged items' embeddings."""
        return taste_queries(history_items, positive, self._emb, QUERY_ITEMS)

    def _taste_scores(self, history_items: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """(R, N) similarity of every item to each row's taste query: what the exact index ranks by."""
        return self._taste_query(history_items, positive) @ self._emb.T

    def _taste_ranked(self, history_items: np.ndarray, positive: np.ndarray, depth: int) -> np.ndarray:
        """(R, depth) the items nearest each row's taste query, best first: the exact ranking of the
        catalog, or what the ANN index finds (-1 where it finds fewer)."""
        if self._index is None:
            return _top_rows(self._taste_scores(history_items, positive), depth)
        return self._index.search(self._taste_query(history_items, positive), depth)

    def _taste_free(self, history_items: np.ndarray, positive: np.ndarray, blocked: np.ndarray) -> np.ndarray:
        """The interest block of one row whose kept ranking blocked items used up: the nearest of the
        items it may still take, the whole catalog searched (the ANN index as deep as the blocked items
        reach; what it does not find is left to the popular and random blocks)."""
        if self._index is None:
            scores = self._taste_scores(history_items[None, :], positive[None, :])
            scores[0, blocked] = -np.inf
            return _top_rows(scores, self._n_interest)[0]
        found = self._taste_ranked(history_items[None, :], positive[None, :],
                                   self._n_interest + int(blocked.sum()))[0]
        found = found[found >= 0]
        return found[~blocked[found]][: self._n_interest]

    def rank(self, targets: InstructionTargets, depth: int | None = None, blocked: np.ndarray | None = None,
             ) -> np.ndarray:
        """(R, depth) the items that honour each row's instruction, nearest its direction first
        (ties by index), -1 where fewer exist; `blocked` (R, N) items are left out.

        An instruction honours a few topics: just those items are scored and ranked, by score and then by
        index, as the whole row's ranking orders them (`instruction_kernels.instruction_ranked`). A tie
        across the last place goes to that ranking, whose partition picks among the tied items, and so does
        a row with a NaN score, as before."""
        depth = depth or self.instruction_depth
        r = len(targets.active)
        out = np.full((r, depth), -1, dtype=np.int64)
        if r == 0:
            return out
        direction = np.ascontiguousarray(targets.direction, dtype=np.float64)
        status = np.empty(r, dtype=np.int8)
        instruction_ranked(direction, targets.topics, targets.high_quality, self._by_topic, self._topic_start,
                           self._good_by_topic, self._emb_t, blocked if blocked is not None else self._nothing_blocked,
                           out, status)
        left = np.flatnonzero(status != RANKED)
        if len(left):
            excluded = ~targets.subset(left).honoured(self.catalog)
            if blocked is not None:
                excluded |= blocked[left]
            scores = np.empty(excluded.shape)
            scores[:, self._by_topic] = instruction_scores(direction[left], self._emb_t, excluded[:, self._by_topic])
            out[left] = _rank_whole(scores, excluded, depth)
        return out

    def rank_kept(self, keys: Sequence[Hashable], targets: InstructionTargets, rows: np.ndarray | None = None,
                  shared: bool = False) -> np.ndarray:
        """`rank(targets.subset(rows))` (all of `targets` by default) at the kept depth with nothing blocked,
        remembered per key: such a ranking depends only on what the instruction asks for, which `keys`
        (one per row) name, and a population repeats the same few asks (so only the rows of new keys
        are gathered).

        `shared`: the keys name what is asked alike for every retriever on this catalog (a world's
        `ranking_key`s: what an ask means is worked out per catalog), so the rankings are kept for all
        of them at this depth (`_SHARED_KEPT`): a study's many worlds on one catalog rank each ask once.
        A retriever that ranks otherwise (a subclass's own `rank`) keeps its own."""
        kept = self._kept
        if shared and type(self).rank is CandidateRetriever.rank:
            kept = _SHARED_KEPT.setdefault(self.catalog, {}).setdefault(self.instruction_depth, {})
        found: list[np.ndarray | None] = [kept.get(key) for key in keys]
        new = [j for j, ranked in enumerate(found) if ranked is None]
        if new:
            at = np.asarray(new) if rows is None else np.take(rows, new)
            if len(kept) + len(new) > _SHARED_LIMIT:
                kept.clear()
            for j, ranked in zip(new, self.rank(targets.subset(at))):
                found[j] = kept.setdefault(keys[j], ranked)
        return (np.stack(cast("list[np.ndarray]", found)) if len(keys)
                else np.empty((0, self.instruction_depth), dtype=np.int64))


#: Per catalog and depth, the kept instruction rankings of every retriever on it that ranks as `CandidateRetriever.rank`
#: does (`rank_kept(shared=True)`). A ranking is the same to the bit whichever world makes it: `rank` scores each
#: item and orders each row alone, whatever else is in its batch. Weak on the catalog; at most `_SHARED_LIMIT` per
#: depth (then started again, as a world's table of asks is).
_SHARED_KEPT: weakref.WeakKeyDictionary[Catalog, dict[int, dict[Hashable, np.ndarray]]] = weakref.WeakKeyDictionary()
_SHARED_LIMIT = 1 << 14


def _rank_whole(scores: np.ndarray, excluded: np.ndarray, depth: int) -> np.ndarray:
    """`CandidateRetriever.rank` of rows scored over the whole catalog (-inf where `excluded`), as it ranked
    every row before its compiled pass: the honouring items by score and then by index, a tie across the
    last place (or a NaN score that makes one) sent to the whole row's ranking `_top_rows`."""
    out = np.full((len(scores), depth), -1, dtype=np.int64)
    whole = []
    for j in range(len(scores)):
        free = np.flatnonzero(~excluded[j])
        neg = -scores[j, free]
        if len(free) > depth + 1:
            # Only the depth + 1 best need an order: those items with a better score than the (depth + 1)-th
            # best are the same whichever tied items a partition keeps, and the check below sends a tie at
            # the depth-th place to the whole row's ranking, so this orders them as the full stable sort.
            kept = np.argpartition(neg, depth)[: depth + 1]
            kept.sort()
            order = kept[np.argsort(neg[kept], kind="stable")]
        else:
            order = np.argsort(neg, kind="stable")
        if len(free) > depth and scores[j, free[order[depth - 1]]] == scores[j, free[order[depth]]]:
            whole.append(j)
        else:
            out[j, : min(depth, len(free))] = free[order[:depth]]
    if whole:
        rows = scores[whole]
        picks = _top_rows(rows, depth)
        out[whole] = np.where(np.take_along_axis(rows, picks, axis=1) > -np.inf, picks, -1)
    return out


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """(R, k) indices of each row's k best scores, best first, ties broken by index for determinism
    (a tie across the k-th place by numpy's partition, deterministic too).

    A wide row is ranked among the items that reach a threshold: the (2k / 8 + 2)-th best of every 8th
    item, which about 2k items reach (`retrieval_kernels.at_least`). Whenever at least k reach it,
    the k best all do, ties at the k-th included, so the answer is that of ranking the whole row,
    for a sort of a few times k items instead of numpy's partition of all N and two sorts (the taste
    rankings cost a third of a vector env's user-step that way). Those are sorted by numpy's quicksort,
    and only rows with a tie inside their k take the stable sort the ties need. Rows that too few or
    too many items reach (rare; all where most scores are -inf, as in an instruction's ranking of the
    few items that honour it), rows with a tie across the k-th place (whose answer is numpy's
    partition's choice among the tied items, as it always was) and narrow rows are ranked over the
    whole row, as before."""
    r, n = scores.shape
    if k <= 0:
        return np.empty((r, 0), dtype=np.int64)
    stride = _SAMPLE_STRIDE
    rank = 2 * k // stride + 2
    if n < 4 * rank * stride:
        return _top_rows_exact(scores, k)
    picked, values, found = at_least(scores, stride, rank, 2 * rank * stride)
    out = np.empty((r, k), dtype=np.int64)
    sampled = np.flatnonzero(found >= k)
    if len(sampled) < r:
        picked, values = picked[sampled], values[sampled]
    whole = np.ones(r, dtype=bool)
    if len(sampled):
        order = np.argsort(values, axis=1)[:, : -k - 2 : -1]  # the k + 1 best, best first (ties in no order)
        best = values[np.arange(len(sampled))[:, None], order]
        # A tie across the k-th place: which of the tied items make the k is partition's choice, so the row is
        # ranked as before over the whole row; ties inside the k: the kept items are in index order, so a
        # stable sort puts them in index order.
        across = best[:, k - 1] == best[:, k] if best.shape[1] > k else np.zeros(len(sampled), dtype=bool)
        inside = np.flatnonzero((best[:, 1:k] == best[:, : k - 1]).any(axis=1) & ~across)
        if len(inside):
            order[inside] = np.argsort(-values[inside], axis=1, kind="stable")[:, : k + 1]
        fine = np.flatnonzero(~across)
        out[sampled[fine]] = picked[fine[:, None], order[fine, :k]]
        whole[sampled[fine]] = False
    if whole.any():
        out[whole] = _top_rows_exact(scores[whole], k)
    return out


#: `_top_rows` samples every `_SAMPLE_STRIDE`-th item of a wide row for its threshold.
_SAMPLE_STRIDE = 8


def _top_rows_exact(scores: np.ndarray, k: int) -> np.ndarray:
    """`_top_rows` over each whole row: numpy's partition, then a stable sort of the k it keeps."""
    r, n = scores.shape
    part = np.sort(np.argpartition(scores, n - k, axis=1)[:, n - k :], axis=1)
    at = np.arange(r)[:, None]
    # A stable sort of the index-ordered part: equal scores stay in index order (cheaper than lexsort).
    order = np.argsort(-scores[at, part], axis=1, kind="stable")
    return part[at, order]
