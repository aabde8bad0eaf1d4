from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recoworld.catalog import Catalog
from recoworld.catalog.semantic_ids import ResidualQuantizer, SemanticIndex, format_semantic_id, with_collision_level
from recoworld.data import DataConfig, prepare_world
from recoworld.data.sample import write_movielens_100k


def test_collision_level_numbers_duplicates() -> None:
    codes = np.array([[1, 2], [1, 2], [0, 5], [1, 2], [0, 5], [3, 3]])
    out = with_collision_level(codes)
    assert out.tolist() == [[1, 2, 0], [1, 2, 1], [0, 5, 0], [1, 2, 2], [0, 5, 1], [3, 3, 0]]


@pytest.mark.parametrize("levels,codebook", [(2, 4), (3, 16)])
def test_every_item_round_trips_through_its_id(catalog: Catalog, levels: int, codebook: int) -> None:
    rq = ResidualQuantizer.fit(catalog.embeddings, levels, codebook, seed=0)
    codes = with_collision_level(rq.encode(catalog.embeddings))
    assert codes[:, :levels].max() < codebook
    index = SemanticIndex(codes)
    tokens = [format_semantic_id(c) for c in codes]
    assert len(set(tokens)) == len(catalog)
    assert [index.lookup(t) for t in tokens] == list(range(len(catalog)))
    with pytest.raises(KeyError, match="levels"):
        index.lookup(format_semantic_id(codes[0][:-1]))
    with pytest.raises(KeyError, match="matches 0 items"):
        index.lookup(format_semantic_id([codebook + 1] * (levels + 1)))


def test_prefix_retrieval_returns_similar_items(catalog: Catalog) -> None:
    index = SemanticIndex(catalog.semantic_ids)
    sims = catalog.embeddings @ catalog.embeddings.T
    gains = []
    for query in range(0, len(catalog), 20):
        hits = index.neighbours(query, k=10)
        assert query not in hits and len(hits) == 10
        shared = index.shared_prefix(catalog.semantic_ids[query])[hits]
        assert (np.diff(shared) <= 0).all() and shared[0] >= 1  # longest shared prefix first
        gains.append(sims[query, hits].mean() - np.delete(sims[query], query).mean())
    assert np.mean(gains) > 0.3  # neighbours by prefix are far more similar than the catalog at large
    prefix = format_semantic_id(catalog.semantic_ids[0][:2])
    members = index.with_prefix(prefix)
    assert 0 in members and (catalog.semantic_ids[members, :2] == catalog.semantic_ids[0, :2]).all()
    assert np.array_equal(index.with_prefix(tuple(catalog.semantic_ids[0][:2])), members)
    with pytest.raises(ValueError, match="query must hold"):
        index.shared_prefix(np.zeros(9, dtype=int))


def test_real_catalog_ids_are_llm_tokens_and_find_same_genre_films(tmp_path: Path) -> None:
    data = write_movielens_100k(tmp_path, n_users=40, n_items=150, seed=4)
    world = prepare_world(DataConfig(path=data, representation={
        "embedding": "tfidf", "semantic_id_levels": 2, "semantic_id_codebook": 8}))
    cat = world.catalog
    assert cat.semantic_ids.shape == (150, 3)  # 2 levels + the collision level
    index = SemanticIndex(cat.semantic_ids)
    item = cat.item(7)
    assert item.semantic_id.startswith("<a_") and index.lookup(item.semantic_id) == 7
    same_topic = [np.mean(cat.topic[index.neighbours(q, k=5)] == cat.topic[q]) for q in range(len(cat))]
    base_rate = np.mean([np.mean(np.delete(cat.topic, q) == cat.topic[q]) for q in range(len(cat))])
    assert np.mean(same_topic) > 2 * base_rate
