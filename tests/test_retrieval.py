"""The platform's candidate generator: distinct candidates in block order, per-user reproducible,
and kept rankings that change nothing but the cost."""

from __future__ import annotations

import numpy as np

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig, RetrievalConfig
from recoworld.envs import RecoWorldEnv
from recoworld.envs.retrieval import CandidateRetriever, InstructionTargets
from recoworld.envs.retrieval_kernels import fill_from_draws, first_unblocked, popular_items
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
    n_interest = round(0.5 * 40)
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


# ---------------------------------------------------------------------- the compiled kernels, against their rules


def test_first_unblocked_takes_the_first_free_items_in_ranking_order() -> None:
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(40)[:12] for _ in range(50)])
    ranked[rng.random(ranked.shape) < 0.1] = -1  # a ranking may hold fewer items
    ranked[:5, -1] = -1
    blocked = rng.random((50, 40)) < 0.4
    for k in (0, 1, 4, 12):
        picks, used_up = first_unblocked(ranked, blocked, k)
        for row in range(50):
            free = [i for i in ranked[row].tolist() if i >= 0 and not blocked[row, i]][:k]
            assert picks[row].tolist() == free + [-1] * (k - len(free))
            assert used_up[row] == (len(free) < k and ranked[row, -1] >= 0)


def test_popular_draws_are_exactly_a_search_of_the_cdf() -> None:
    rng = np.random.default_rng(1)
    pop = rng.pareto(1.2, 500) + 1e-9
    pop[::7] = 0.0  # items that can never be drawn, and runs of equal CDF values
    retriever = CandidateRetriever(cached_catalog(CatalogConfig(n_items=500)), RetrievalConfig(), 20)
    retriever.set_popularity(pop)
    uniforms = np.concatenate([rng.random(20_000), [0.0, np.nextafter(1.0, 0.0)]]).reshape(2, -1)
    expected = np.minimum(np.searchsorted(retriever._pop_cdf, uniforms, side="right"), len(pop) - 1)
    assert np.array_equal(popular_items(uniforms, retriever._pop_cdf, retriever._pop_guide), expected)


def test_fill_takes_distinct_free_draws_and_leaves_a_short_row_untouched() -> None:
    rng = np.random.default_rng(2)
    drawn = rng.integers(0, 30, size=(40, 15))
    blocked = rng.random((40, 30)) < 0.5
    before = blocked.copy()
    out = np.full((40, 12), -7, dtype=np.int64)
    start, count = rng.integers(0, 4, 40), rng.integers(0, 9, 40)
    short = fill_from_draws(out, start, count, drawn, blocked)
    for row in range(40):
        free = list(dict.fromkeys(i for i in drawn[row].tolist() if not before[row, i]))[: count[row]]
        s = start[row]
        assert short[row] == (len(free) < count[row])
        if short[row]:  # nothing kept: the caller draws this row exactly instead
            assert (blocked[row] == before[row]).all()
        else:
            assert out[row, s : s + count[row]].tolist() == free
            assert blocked[row].tolist() == [b or i in free for i, b in enumerate(before[row].tolist())]


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
