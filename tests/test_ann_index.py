"""The platform's ANN index (`retrieval.index: ivf | hnsw`) and the taste's refresh cadence."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig, RetrievalConfig
from recoworld.envs import PopulationParallelEnv, RecoWorldEnv, RecoWorldVectorEnv
from recoworld.envs.ann_index import ItemIndex
from recoworld.envs.retrieval import CandidateRetriever, TasteRankings
from recoworld.errors import ConfigError
from recoworld.streams import UserStreams

SMALL: dict[str, Any] = {"slate_size": 5, "n_candidates": 30, "horizon_days": 4, "catalog": {"n_items": 500, "seed": 3}}

#: `_digest()` of the default world at commit 446bb6e, before `retrieval.index` existed.
BEFORE_THE_INDEX = "46663380e5994da3"


def _digest(**world: Any) -> str:
    """A seeded vector-env trajectory of the default world: every candidate list and reward."""
    env = RecoWorldVectorEnv(6, **world)
    rng = np.random.default_rng(3)
    obs, _ = env.reset(seed=11)
    digest = hashlib.sha256(obs["candidate_ids"].tobytes())
    for _ in range(40):
        obs, reward, *_ = env.step(np.stack([rng.permutation(50)[:10] for _ in range(6)]))
        digest.update(obs["candidate_ids"].tobytes())
        digest.update(np.round(reward, 6).tobytes())
    return digest.hexdigest()[:16]


def test_the_exact_index_plays_as_before_the_index_existed() -> None:
    assert _digest() == BEFORE_THE_INDEX
    assert _digest(retrieval={"index": "exact"}) == BEFORE_THE_INDEX


def _played(index: str, **retrieval: Any) -> list[tuple[Any, ...]]:
    """Candidates and rewards of a seeded vector env (4 users, 30 turns)."""
    env = RecoWorldVectorEnv(4, SMALL, retrieval={"index": index, **retrieval})
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=5)
    log: list[tuple[Any, ...]] = [tuple(obs["candidate_ids"].ravel().tolist())]
    for _ in range(30):
        obs, reward, *_ = env.step(np.stack([rng.permutation(30)[:5] for _ in range(4)]))
        log.append((tuple(obs["candidate_ids"].ravel().tolist()), tuple(reward.tolist())))
        for row in obs["candidate_ids"]:
            assert len(set(row.tolist())) == len(row)  # distinct, as many as before
    return log


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_an_ann_world_replays_under_its_seed_and_differs_from_exact(index: str) -> None:
    coarse = {"nprobe": 1, "hnsw_m": 4, "ef_search": 1}  # far from exact on a small catalog
    played = _played(index, refresh_every=2, **coarse)
    assert played == _played(index, refresh_every=2, **coarse)
    assert played != _played("exact", refresh_every=2)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_with_an_index_user_i_of_the_vector_env_is_still_the_single_env_with_seed_plus_i(index: str) -> None:
    world = {**SMALL, "retrieval": {"index": index, "nprobe": 2}}
    vector = RecoWorldVectorEnv(3, world)
    obs, _ = vector.reset(seed=20)
    singles = [RecoWorldEnv(world) for _ in range(3)]
    firsts = [env.reset(seed=20 + i)[0] for i, env in enumerate(singles)]
    assert all((obs["candidate_ids"][i] == first["candidate_ids"]).all() for i, first in enumerate(firsts))
    for t in range(12):
        actions = np.stack([(np.arange(5) * (1 + (t + i) % 3) + t) % 30 for i in range(3)])
        obs, reward, terminated, truncated, _ = vector.step(actions)
        if (terminated | truncated).any():
            break
        for i, env in enumerate(singles):
            single_obs, single_reward, *_ = env.step(actions[i])
            assert (obs["candidate_ids"][i] == single_obs["candidate_ids"]).all() and reward[i] == single_reward


def test_the_population_env_searches_the_index() -> None:
    def played(index: str) -> list[list[int]]:
        env = PopulationParallelEnv(n_users=4, world={**SMALL, "retrieval": {"index": index, "nprobe": 1}})
        obs, _ = env.reset(seed=1)
        out = []
        for t in range(10):
            if not env.agents:
                break
            obs, *_ = env.step({a: (np.arange(5) + t) % 30 for a in env.agents})
            out += [obs[a]["candidate_ids"].tolist() for a in sorted(obs)]
        return out

    assert played("ivf") == played("ivf")
    assert played("ivf") != played("exact")


def _taste_queries(catalog: Catalog, n: int) -> np.ndarray:
    """Taste queries as retrieval makes them: sums of up to ten engaged items' embeddings."""
    rng = np.random.default_rng(0)
    picks = rng.integers(len(catalog), size=(n, 10))
    return catalog.embeddings[picks].astype(np.float64).sum(axis=1)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f[f >= 0], e)) / len(e) for f, e in zip(found, exact)]))


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_ann_recall_on_the_default_catalog_is_high(index: str) -> None:
    """Measured on the default catalog (3,000 items) with the default parameters: recall of the kept
    taste ranking (83 deep) 0.955 for ivf and 0.962 for hnsw; of its first 15 (an interest block)
    0.982 and 0.980. The floor leaves a margin for another machine's float rounding."""
    floor = 0.92
    catalog = cached_catalog(CatalogConfig())
    queries = _taste_queries(catalog, 300)
    retriever = CandidateRetriever(catalog, RetrievalConfig(), 50)
    depth = retriever.taste_depth
    scores = queries @ catalog.embeddings.astype(np.float64).T
    exact = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    found = ItemIndex(catalog.embeddings, RetrievalConfig(index=index)).search(queries, depth)
    assert _recall(found, exact) >= floor
    assert _recall(found[:, :15], exact[:, :15]) >= floor


@pytest.mark.parametrize("ivf", [{}, {"nprobe": 1}, {"nlist": 7, "nprobe": 3}, {"nprobe": 55}])
def test_an_ivf_search_answers_as_faiss_searches(ivf: dict[str, Any]) -> None:
    """`ItemIndex` answers an 'ivf' search itself (one compiled pass, or faiss's cells and scores and a
    compiled selection): the same items in the same order as faiss's search, at every depth, for taste
    queries, random directions, scores at the float's ends, and a catalog whose repeated items tie
    (those rows are faiss's own answer)."""
    catalog = cached_catalog(CatalogConfig())
    repeated = catalog.embeddings.copy()
    repeated[1::7] = repeated[::7][: len(repeated[1::7])]  # every 7th item has a twin: equal scores
    rng = np.random.default_rng(1)
    queries = [_taste_queries(catalog, 300), rng.normal(size=(300, catalog.embedding_dim)),
               np.zeros((3, catalog.embedding_dim)),  # all scores 0 (and -0.0): every row ties
               rng.normal(size=(20, catalog.embedding_dim)) * 1e37,  # scores overflow to +-inf, which heaps skip
               rng.normal(size=(20, catalog.embedding_dim)) * 1e-30]  # scores a few subnormals apart
    for embeddings in (catalog.embeddings, repeated):
        index = ItemIndex(embeddings, RetrievalConfig(index="ivf", **ivf))
        assert index._cell_items is not None  # the compiled search is on
        assert index._blocks is not None or not _faiss_scores_with_avx512()  # ... and in one pass where it can be
        blocks = index._blocks
        for q in queries:
            q32 = np.ascontiguousarray(q, dtype=np.float32)
            for depth in (1, 2, 15, 83, 300, len(catalog) + 5):
                expected = index._faiss_search(q32, depth)
                assert np.array_equal(index.search(q, depth), expected), depth
                index._blocks = None  # faiss's cells and scores, the same selection
                assert np.array_equal(index.search(q, depth), expected), depth
                index._blocks = blocks


def test_the_one_pass_search_is_refused_where_its_scores_are_not_faiss_s_to_the_last_bit() -> None:
    """The one-pass search repeats one faiss build's order of additions; a score off by one unit in the
    last place (another build's rounding) turns it off, though the answers of its checking queries
    would rarely show it."""
    catalog = cached_catalog(CatalogConfig())
    index = ItemIndex(catalog.embeddings, RetrievalConfig(index="ivf"))
    if index._blocks is None:  # faiss scores otherwise here: nothing to refuse
        assert not _faiss_scores_with_avx512()
        return
    centroids = np.ascontiguousarray(index._index.quantizer.reconstruct_n(0, index._index.nlist), dtype=np.float32)
    assert index._scores_agree(centroids)
    for group in (0, 1):  # an item's vector, then a centroid's
        kept = index._blocks[group][5]
        index._blocks[group][5] = np.nextafter(kept, np.float32(np.inf))
        assert not index._scores_agree(centroids), group
        index._blocks[group][5] = kept
    assert index._scores_agree(centroids)


def _faiss_scores_with_avx512() -> bool:
    """Whether faiss's float32 inner product is its AVX-512 kernel here, the one `ivf_searched` computes."""
    import faiss

    config = getattr(faiss, "SIMDConfig", None)
    return config is not None and str(config.get_level_name()).startswith("AVX512")


def test_faiss_heap_steps_answer_as_faiss_searches() -> None:
    """`heap_scanned`, faiss's heap on the same scan, answers every row as faiss's search does (not only
    the tied rows `ItemIndex` gives it), at every depth."""
    import faiss

    from recoworld.envs.retrieval_kernels import heap_scanned, probed_items

    catalog = cached_catalog(CatalogConfig())
    index = ItemIndex(catalog.embeddings, RetrievalConfig(index="ivf", nlist=7, nprobe=3))
    assert index._cell_items is not None
    queries = np.ascontiguousarray(_taste_queries(catalog, 300), dtype=np.float32)
    _, cells = index._index.quantizer.search(queries, index._index.nprobe)
    items, count = probed_items(cells, index._cell_offsets, index._cell_items)
    scores = np.empty(items.shape, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(scores), faiss.swig_ptr(queries), faiss.swig_ptr(index._items),
                                     faiss.swig_ptr(items), catalog.embedding_dim, len(queries), items.shape[1])
    for depth in (1, 7, 83, 1000, len(catalog)):
        assert np.array_equal(heap_scanned(scores, items, count, np.arange(len(queries)), depth),
                              index._faiss_search(queries, depth))


def test_the_index_seed_decides_the_index() -> None:
    catalog = cached_catalog(CatalogConfig())
    queries = _taste_queries(catalog, 200)
    for index in ("ivf", "hnsw"):
        cfg = {"index": index, "nprobe": 1, "hnsw_m": 4, "ef_search": 1}
        one = ItemIndex(catalog.embeddings, RetrievalConfig(**cfg)).search(queries, 20)
        assert (one == ItemIndex(catalog.embeddings, RetrievalConfig(**cfg)).search(queries, 20)).all()
        other = ItemIndex(catalog.embeddings, RetrievalConfig(**cfg, index_seed=1)).search(queries, 20)
        assert (one != other).any(), index


def test_an_index_that_finds_few_items_still_gives_every_candidate(catalog: Catalog) -> None:
    """ivf with a cell per item and one probe finds one item a query: the interest block takes what
    the index finds, and the popular and random blocks the rest, distinct and as many as ever."""
    config = RetrievalConfig(index="ivf", nlist=len(catalog), nprobe=1, exclude_recent=0)
    retriever = CandidateRetriever(catalog, config, 30)
    rng = np.random.default_rng(0)
    items = rng.integers(len(catalog), size=(8, 20))
    out = retriever.retrieve(items, np.ones_like(items), UserStreams.spawn(rng, 8), np.arange(8))
    assert out.shape == (8, 30)
    assert all(len(set(row.tolist())) == 30 for row in out)


def test_a_changed_taste_is_searched_again_every_refresh_every_retrievals(catalog: Catalog) -> None:
    rng = np.random.default_rng(0)
    first, second = rng.integers(len(catalog), size=(2, 1, 20))
    for refresh_every in (1, 3):
        retriever = CandidateRetriever(catalog, RetrievalConfig(refresh_every=refresh_every), 30)
        streams = UserStreams.spawn(np.random.default_rng(1), 1)
        tastes = TasteRankings(np.zeros((1, retriever.taste_depth), dtype=np.int64), np.zeros(1, dtype=bool))
        retriever.retrieve(first, np.ones_like(first), streams, np.arange(1), tastes=tastes)
        made = tastes.ranked.copy()
        searched_at = None
        for turn in range(1, 6):
            tastes.fresh[:] = False  # the world's mark: the taste changed
            retriever.retrieve(second, np.ones_like(second), streams, np.arange(1), tastes=tastes)
            if searched_at is None and (tastes.ranked != made).any():
                searched_at = turn
        assert searched_at == refresh_every
        tastes.forget(np.arange(1))  # a new episode ranks at once, whatever the cadence
        retriever.retrieve(first, np.ones_like(first), streams, np.arange(1), tastes=tastes)
        assert (tastes.ranked == made).all()


def test_a_bad_index_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"retrieval\.index: .*'exact', 'ivf' or 'hnsw'") as err:
        RecoWorldEnv(SMALL, retrieval={"index": "annoy"})
    assert str(err.value).count("retrieval.index") == 1
    with pytest.raises(ConfigError, match=r"nprobe must be <= nlist, got nprobe=9 with nlist=4"):
        RecoWorldEnv(SMALL, retrieval={"index": "ivf", "nlist": 4, "nprobe": 9})
    with pytest.raises(ConfigError, match=r"retrieval\.nlist=501 exceeds the catalog's 500 items"):
        RecoWorldEnv(SMALL, retrieval={"index": "ivf", "nlist": 501})
    with pytest.raises(ConfigError, match=r"retrieval\.refresh_every"):
        RecoWorldEnv(SMALL, retrieval={"refresh_every": 0})
