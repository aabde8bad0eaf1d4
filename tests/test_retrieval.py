"""The platform's candidate generator: distinct candidates in block order, per-user reproducible,
and kept rankings that change nothing but the cost."""

from __future__ import annotations

import numpy as np

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig, RetrievalConfig
from recoworld.envs import RecoWorldEnv
from recoworld.envs.retrieval import (
    QUERY_ITEMS,
    CandidateRetriever,
    InstructionTargets,
    TasteRankings,
    _top_rows,
    _top_rows_exact,
)
from recoworld.envs.retrieval_kernels import taste_queries
from recoworld.streams import UserStreams


def _history(catalog: Catalog, rng: np.random.Generator, b: int, h: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned histories of random length with some engagement; row 0 has none."""
    items = np.full((b, h), -1, dtype=np.int64)
    reactions = np.full((b, h), -1, dtype=np.int64)
    for j in range(1, b):
        n = int(rng.integers(1, h + 1))
        items[j, h - n :] = rng.choice(len(catalog), n, replace=False)
        reactions[j, h - n :] = rng.integers(0, 4, n)
    return items, reactions


def test_candidates_are_distinct_fresh_and_lead_with_the_users_taste(catalog: Catalog) -> None:
    retriever = CandidateRetriever(catalog, RetrievalConfig(), 40)
    rng = np.random.default_rng(0)
    items, reactions = _history(catalog, rng, 16)
    out = retriever.retrieve(items, reactions, UserStreams.spawn(rng, 16), np.arange(16))
    n_interest = round(RetrievalConfig().interest_share * 40)
    for j, row in enumerate(out):
        assert len(set(row.tolist())) == 40
        assert not set(row.tolist()) & set(items[j][items[j] >= 0].tolist())  # recent items are not re-offered
        engaged = items[j][(reactions[j] > 0) & (items[j] >= 0)][-10:]
        if len(engaged):
            sims = catalog.embeddings.astype(np.float64) @ catalog.embeddings[engaged].astype(np.float64).sum(0)
            sims[items[j][items[j] >= 0]] = -np.inf
            assert set(row[:n_interest].tolist()) == set(np.argsort(-sims)[:n_interest].tolist())


def test_a_user_gets_the_same_candidates_alone_or_in_a_batch(catalog: Catalog) -> None:
    retriever = CandidateRetriever(catalog, RetrievalConfig(), 30)
    items, reactions = _history(catalog, np.random.default_rng(1), 12)
    batch = retriever.retrieve(items, reactions, UserStreams([np.random.default_rng(50 + j) for j in range(12)]),
                               np.arange(12))
    for j in range(12):
        alone = retriever.retrieve(items[j : j + 1], reactions[j : j + 1],
                                   UserStreams([np.random.default_rng(50 + j)]), np.zeros(1, dtype=np.int64))
        assert np.array_equal(alone[0], batch[j])


def _play(env: RecoWorldEnv, steps: int, forget: bool) -> list[tuple[object, ...]]:
    obs, _ = env.reset(seed=7)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(steps):
        if forget:  # every kept ranking is stale: the retriever scores the whole catalog again
            env.world.tastes.fresh[:] = False
        obs, reward, terminated, truncated, info = env.step(rng.permutation(env.config.n_candidates)[:5])
        out.append((reward, info["reactions"].tolist(), obs["candidate_ids"].tolist()))
        if terminated or truncated:
            obs, _ = env.reset()
    return out


def test_kept_taste_rankings_change_nothing_but_the_cost(catalog: Catalog) -> None:
    """The interest block reads a ranking kept until the taste query changes; scoring the whole
    catalog every turn instead gives the same candidates, turn after turn."""
    world = {"slate_size": 5, "n_candidates": 30, "horizon_days": 5}
    kept, scored = RecoWorldEnv(world, catalog=catalog), RecoWorldEnv(world, catalog=catalog)
    assert _play(kept, 400, forget=False) == _play(scored, 400, forget=True)


def test_a_nearly_exhausted_catalog_still_gives_distinct_candidates_alone_or_batched() -> None:
    """Few free items: the oversampled draws fall short and rows take an exact draw instead."""
    from recoworld.catalog import cached_catalog
    from recoworld.config import CatalogConfig

    small = cached_catalog(CatalogConfig(n_items=40, seed=1))
    retriever = CandidateRetriever(small, RetrievalConfig(exclude_recent=0), 30)
    unavailable = np.zeros((6, 40), dtype=bool)
    unavailable[:, :8] = True  # 32 items left for 30 candidates
    none = np.full((6, 20), -1, dtype=np.int64)
    batch = retriever.retrieve(none, none, UserStreams([np.random.default_rng(j) for j in range(6)]),
                               np.arange(6), unavailable)
    for j in range(6):
        alone = retriever.retrieve(none[:1], none[:1], UserStreams([np.random.default_rng(j)]),
                                   np.zeros(1, dtype=np.int64), unavailable[:1])
        assert np.array_equal(alone[0], batch[j])
        assert len(set(batch[j].tolist())) == 30 and batch[j].min() >= 8


# ---------------------------------------------------------------------- the compiled composition, against its rules


def _candidates_by_definition(retriever: CandidateRetriever, items: np.ndarray, reactions: np.ndarray,
                              draws: np.ndarray, unavailable: np.ndarray, asked: InstructionTargets,
                              rng: np.random.Generator) -> list[int]:
    """One row's candidates, block by block, with a set of blocked items: the rules `retrieve` composes
    (exact rankings wherever a kept one runs out, exact draws wherever the oversampled ones fall short)."""
    cfg, n, n_items = retriever.config, retriever.n, len(retriever.catalog)
    blocked = set(np.flatnonzero(unavailable).tolist())
    recent = [i for i in items[-cfg.exclude_recent:].tolist() if i >= 0] if cfg.exclude_recent else []
    if n_items - len(blocked) - len(recent) >= n:
        blocked |= set(recent)
    out: list[int] = []

    def take(picks: list[int]) -> None:
        out.extend(picks)
        blocked.update(picks)

    k = retriever._n_instruction
    if k and asked.active[0]:
        picks = [i for i in asked.ranked[0].tolist() if i >= 0 and i not in blocked][:k]
        if len(picks) < k and asked.ranked[0, -1] >= 0:
            mask = np.isin(np.arange(n_items), list(blocked))[None, :]
            picks = [i for i in retriever.rank(asked, k, mask)[0].tolist() if i >= 0]
        take(picks)
    positive = (items >= 0) & (reactions > 0)
    n_interest = retriever._n_interest if positive.any() else 0
    if n_interest:
        scores = retriever._taste_scores(items[None, :], positive[None, :])[0]
        ranking = sorted(range(n_items), key=lambda i: (-scores[i], i))
        take([i for i in ranking if i not in blocked][:n_interest])
    split = 2 * retriever._max_popular + 8
    for popular, count, uniforms in ((True, retriever._n_popular + (retriever._n_interest - n_interest) // 2,
                                      draws[:split]), (False, None, draws[split:])):
        count = n - len(out) if count is None else count
        drawn = (np.searchsorted(retriever._pop_cdf, uniforms, side="right") if popular
                 else (uniforms * n_items).astype(int)).clip(max=n_items - 1)
        picks = [i for i in dict.fromkeys(drawn.tolist()) if i not in blocked][:count]
        if len(picks) < count:  # the row's own stream settles it exactly
            free = np.array(sorted(set(range(n_items)) - blocked))
            if popular:
                gumbel = retriever._log_pop[free] - np.log(-np.log(rng.random(len(free))))
                picks = free[sorted(range(len(free)), key=lambda i: (-gumbel[i], i))[:count]].tolist()
            else:
                picks = free[rng.choice(len(free), size=count, replace=False)].tolist()
        take(picks)
    return out


def test_retrieval_composes_every_block_by_its_rules_in_every_rare_case() -> None:
    """Rows whose kept instruction or taste ranking is used up by blocked items, and rows whose
    draws fall short of free items, alone and in a batch, against the rules written out."""
    small = cached_catalog(CatalogConfig(n_items=120, seed=2))
    retriever = CandidateRetriever(small, RetrievalConfig(exclude_recent=12), 30)
    rng = np.random.default_rng(4)
    b, h = 40, 20
    items = np.stack([rng.permutation(120)[:h] for _ in range(b)])
    reactions = rng.integers(0, 3, size=(b, h))
    items[:4, :] = -1  # no history: no taste, nothing recent
    unavailable = rng.random((b, 120)) < rng.uniform(0.0, 0.75, size=(b, 1))  # up to most of the catalog,
    unavailable &= np.cumsum(unavailable, axis=1) <= 88  # leaving at least 32 items for 30 candidates
    t, d, depth = small.n_topics, small.embedding_dim, retriever.instruction_depth
    asked = InstructionTargets(rng.random(b) < 0.6, rng.random((b, t)) < 0.5, rng.random(b) < 0.3,
                               rng.normal(size=(b, d)), np.full((b, depth), -1, dtype=np.int64))
    asked.ranked[:] = retriever.rank(asked)
    asked.ranked[::3, 4:] = -1  # short kept rankings: used up by the recently shown items below
    items[::3, -4:] = asked.ranked[::3, :4]
    # The taste rankings kept for these rows lead with items that are unavailable now.
    tastes = TasteRankings(np.zeros((b, retriever.taste_depth), dtype=np.int64), np.ones(b, dtype=bool))
    for j in range(b):
        positive = (items[j] >= 0) & (reactions[j] > 0)
        scores = retriever._taste_scores(items[j][None, :], positive[None, :])[0]
        tastes.ranked[j] = np.argsort(-scores, kind="stable")[: retriever.taste_depth]
    seeds = [100 + j for j in range(b)]
    batch = retriever.retrieve(items, reactions, UserStreams([np.random.default_rng(s) for s in seeds]),
                               np.arange(b), unavailable, asked, tastes)
    for j in range(b):
        stream = np.random.default_rng(seeds[j])
        draws = stream.random(retriever._n_draws)
        expected = _candidates_by_definition(retriever, items[j], reactions[j], draws, unavailable[j],
                                             asked.subset(np.array([j])), stream)
        assert batch[j].tolist() == expected, j
        one = np.array([j])
        alone = retriever.retrieve(items[one], reactions[one], UserStreams([np.random.default_rng(seeds[j])]),
                                   np.zeros(1, dtype=np.int64), unavailable[one], asked.subset(one),
                                   TasteRankings(tastes.ranked[one], np.ones(1, dtype=bool)))
        assert np.array_equal(alone[0], batch[j])
    # A world passes its own kept rankings, read at the retrieving rows: the same candidates as those rows' own.
    rows = rng.permutation(b)[:15]
    streams = UserStreams([np.random.default_rng(s) for s in seeds])
    kept = TasteRankings(tastes.ranked.copy(), np.ones(b, dtype=bool))
    some = retriever.retrieve(items[rows], reactions[rows], streams, rows, unavailable[rows], asked, kept)
    assert np.array_equal(some, batch[rows])


def test_kept_instruction_rankings_are_the_rankings(catalog: Catalog) -> None:
    retriever = CandidateRetriever(catalog, RetrievalConfig(), 50)
    rng = np.random.default_rng(3)
    r, t, d = 8, catalog.n_topics, catalog.embedding_dim
    targets = InstructionTargets(np.ones(r, dtype=bool), rng.random((r, t)) < 0.3, rng.random(r) < 0.5,
                                 rng.normal(size=(r, d)), np.full((r, retriever.instruction_depth), -1))
    keys = [j % 5 for j in range(r)]  # rows with one key ask the same: make them so
    for j in range(5, r):
        for field in (targets.topics, targets.high_quality, targets.direction):
            field[j] = field[j - 5]
    assert np.array_equal(retriever.rank_kept(keys, targets), retriever.rank(targets))
    assert np.array_equal(retriever.rank_kept(keys[::-1], targets.subset(np.arange(r)[::-1])),
                          retriever.rank(targets)[::-1])


def test_the_sampled_top_k_is_the_ranking_of_the_whole_row(catalog: Catalog) -> None:
    """`_top_rows` ranks most rows among the items a sample's threshold keeps; it must answer what ranking
    the whole row does (score descending, ties by index), in every kind of row a world meets: taste
    scores, ties inside the k and across the k-th place, rows mostly -inf, and narrow rows."""
    rng = np.random.default_rng(0)
    emb = catalog.embeddings.astype(np.float64)
    taste = emb[rng.integers(len(catalog), size=(300, 10))].sum(axis=1) @ emb.T  # what the taste ranking sees
    tied = np.round(taste, 1)  # many ties, inside the k and across its edge
    honoured = np.where(rng.random(taste.shape) < 0.97, -np.inf, taste)  # an instruction's few honouring items
    for scores in (taste, tied, honoured, taste[:, :100]):
        for k in (1, 15, 83, 100):
            got = _top_rows(scores, k)
            values = np.take_along_axis(scores, got, axis=1)
            assert np.array_equal(values, -np.sort(-scores, axis=1)[:, :k])  # the k best, best first
            assert all(len(set(row)) == k for row in got.tolist())
            # Ties in index order: among equal scores, a later place never holds a lower index ...
            same = values[:, 1:] == values[:, :-1]
            assert (got[:, 1:][same] > got[:, :-1][same]).all()
            # ... and where the k-th score is not tied past the k, the answer is the full stable ranking.
            full = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            clean = ~(np.sort(scores, axis=1)[:, ::-1][:, k - 1 : k + 1] == values[:, -1:]).all(axis=1)
            assert np.array_equal(got[clean], full[clean])
    assert np.array_equal(_top_rows(tied, 83), _top_rows_exact(tied, 83))  # ties across the k: as before


def test_taste_queries_sum_the_latest_engaged_items(catalog: Catalog) -> None:
    rng = np.random.default_rng(1)
    items, reactions = _history(catalog, rng, 64)
    positive = (items >= 0) & (reactions > 0)
    emb = catalog.embeddings.astype(np.float64)
    expected = np.zeros((64, catalog.embedding_dim))
    for j in range(64):
        latest = [int(i) for i, p in zip(items[j], positive[j]) if p][-QUERY_ITEMS:]
        for i in latest:
            expected[j] += emb[i]
    assert np.array_equal(taste_queries(items, positive, emb, QUERY_ITEMS), expected)


def test_an_instructions_ranking_is_the_whole_rows_ranking() -> None:
    """`CandidateRetriever.rank` ranks only the items an instruction honours (by score, ties by index);
    it must answer as `_top_rows` over the whole row with the rest at -inf, ties across the last
    place (all-zero directions) and rows with fewer honouring items than the depth included."""
    from recoworld.catalog import cached_catalog
    from recoworld.config import CatalogConfig, RetrievalConfig
    from recoworld.envs.retrieval import CandidateRetriever, InstructionTargets, _top_rows

    catalog = cached_catalog(CatalogConfig())
    retriever = CandidateRetriever(catalog, RetrievalConfig(), 50)
    rng = np.random.default_rng(0)
    for trial in range(40):
        r = 7
        targets = InstructionTargets(
            np.ones(r, dtype=bool), rng.random((r, catalog.n_topics)) < rng.choice([0.03, 0.1, 0.5, 0.95]),
            rng.random(r) < 0.5, rng.normal(size=(r, catalog.embedding_dim)) * (trial % 5 != 0),
            np.zeros((r, 5), dtype=np.int64))
        blocked = rng.random((r, len(catalog))) < 0.05 if trial % 2 else None
        for depth in (None, 5, 200, len(catalog)):
            scores = targets.direction @ catalog.embeddings.astype(np.float64).T
            excluded = ~targets.honoured(catalog) | (blocked if blocked is not None else False)
            scores[excluded] = -np.inf
            picks = _top_rows(scores, depth or retriever.instruction_depth)
            whole = np.where(np.take_along_axis(scores, picks, axis=1) > -np.inf, picks, -1)
            assert np.array_equal(retriever.rank(targets, depth, blocked), whole)


def test_an_instructions_ranking_is_its_own_whatever_its_batch(catalog: Catalog) -> None:
    """`rank` scores an item as the batched matrix product does (fused multiply-adds over the dimensions in
    order), item by item: a row ranks the same alone as in any batch, and as the whole row's ranking does, in
    a catalog full of ties too (embeddings on a grid of eighths, small integer directions: every score exact,
    whatever the order of its sums, so that many tie inside the depth and across its last place)."""
    import dataclasses

    gridded = np.round(catalog.embeddings * 8) / 8
    for items, integer in ((catalog, False), (dataclasses.replace(catalog, embeddings=gridded), True)):
        retriever = CandidateRetriever(items, RetrievalConfig(), 50)
        rng = np.random.default_rng(4)
        emb = items.embeddings.astype(np.float64)
        for trial in range(12):
            r = 9
            direction = (rng.integers(-2, 3, (r, items.embedding_dim)).astype(np.float64) if integer
                         else rng.normal(size=(r, items.embedding_dim)))
            targets = InstructionTargets(np.ones(r, dtype=bool), rng.random((r, items.n_topics)) < 0.2 + 0.1 * trial,
                                         rng.random(r) < 0.5, direction, np.zeros((r, 1), dtype=np.int64))
            for depth in (None, 5, 68, 200):
                ranked = retriever.rank(targets, depth)
                for j in range(r):
                    assert np.array_equal(retriever.rank(targets.subset(np.array([j])), depth)[0], ranked[j])
                if integer:
                    scores = direction @ emb.T
                    scores[~targets.honoured(items)] = -np.inf
                    picks = _top_rows(scores, depth or retriever.instruction_depth)
                    assert np.array_equal(ranked, np.where(np.take_along_axis(scores, picks, axis=1) > -np.inf,
                                                           picks, -1))


def test_the_kept_rankings_read_are_those_in_force() -> None:
    """`kept_rankings`: the rows' kept instruction rankings where their instruction is in force, -1 elsewhere."""
    from recoworld.envs.instruction_kernels import kept_rankings

    rng = np.random.default_rng(6)
    active, ranked = rng.random(50) < 0.4, rng.integers(-1, 3000, (50, 68))
    rows = rng.choice(50, 30, replace=False)
    expected = np.where(active[rows][:, None], ranked[rows], -1)
    assert np.array_equal(kept_rankings(active, ranked, rows), expected)
    assert kept_rankings(active, ranked, rows[:0]).shape == (0, 68)


def test_retrievers_on_one_catalog_share_kept_rankings(catalog: Catalog) -> None:
    """`rank_kept(shared=True)` keeps one ranking per ask and depth for every retriever on the catalog (a study's
    worlds rank each ask once), the ranking each would make itself; unshared keys, and a retriever with its own
    `rank`, keep their own."""
    rng = np.random.default_rng(7)
    r, t, d = 6, catalog.n_topics, catalog.embedding_dim

    def asks() -> InstructionTargets:
        return InstructionTargets(np.ones(r, dtype=bool), rng.random((r, t)) < 0.3, rng.random(r) < 0.5,
                                  rng.normal(size=(r, d)), np.zeros((r, 1), dtype=np.int64))

    targets, other = asks(), asks()
    keys = [("shared-kept test", j) for j in range(r)]
    first = CandidateRetriever(catalog, RetrievalConfig(), 50)
    second = CandidateRetriever(catalog, RetrievalConfig(), 50)
    kept = first.rank_kept(keys, targets, shared=True)
    assert np.array_equal(kept, second.rank(targets))
    assert np.array_equal(second.rank_kept(keys, other, shared=True), kept)  # the first's, not ranked again
    assert np.array_equal(second.rank_kept(keys[::-1], other, np.arange(r)[::-1], shared=True), kept[::-1])
    assert np.array_equal(second.rank_kept(keys, other), second.rank(other))  # unshared: its own

    class Reversed(CandidateRetriever):
        def rank(self, targets: InstructionTargets, depth: int | None = None, blocked: np.ndarray | None = None,
                 ) -> np.ndarray:
            return super().rank(targets, depth, blocked)[:, ::-1]

    own = Reversed(catalog, RetrievalConfig(), 50)
    assert np.array_equal(own.rank_kept(keys, other, shared=True), own.rank(other))
