from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from recoworld.catalog import Catalog, generate_catalog
from recoworld.catalog.semantic_ids import format_semantic_id, parse_semantic_id
from recoworld.config import CatalogConfig
from recoworld.errors import CatalogFormatError, ConfigError


def test_generator_is_seeded_and_reads_like_content() -> None:
    a = generate_catalog(CatalogConfig(n_items=400, seed=7))
    b = generate_catalog(CatalogConfig(n_items=400, seed=7))
    c = generate_catalog(CatalogConfig(n_items=400, seed=8))
    assert np.array_equal(a.embeddings, b.embeddings) and list(a.titles) == list(b.titles)
    assert not np.array_equal(a.embeddings, c.embeddings)
    assert a.n_topics >= 20  # tens of named topics
    assert len(set(a.subtopic_names)) > 2 * a.n_topics
    item = a.item(5)
    assert item.topic in item.description and item.subtopic in item.description
    assert item.creator in item.description
    assert len(item.title.split()) >= 2
    assert np.allclose(np.linalg.norm(a.embeddings, axis=1), 1.0, atol=1e-5)
    assert abs(float(a.popularity.sum()) - 1.0) < 1e-4
    assert ((a.quality >= 0) & (a.quality <= 1)).all() and (a.duration_min > 0).all()


def test_columnar_scoring_is_one_vector_operation() -> None:
    cat = generate_catalog(CatalogConfig(n_items=100_000, semantic_id_codebook=8, semantic_id_levels=2))
    query = cat.topic_centroids[0]
    scores = cat.embeddings @ query
    assert scores.shape == (100_000,)
    top = np.argsort(-scores)[:50]
    assert (cat.topic[top] == 0).mean() > 0.8  # the nearest items are about the query topic


def test_embeddings_follow_the_taxonomy(catalog: Catalog) -> None:
    sims = catalog.embeddings @ catalog.embeddings.T
    same_sub = catalog.subtopic[:, None] == catalog.subtopic[None, :]
    same_topic = catalog.topic[:, None] == catalog.topic[None, :]
    off = ~np.eye(len(catalog), dtype=bool)
    assert sims[same_sub & off].mean() > sims[same_topic & ~same_sub].mean() > sims[~same_topic].mean()


def test_semantic_ids_share_prefixes_with_similar_items(catalog: Catalog) -> None:
    codes = catalog.semantic_ids
    assert codes.shape == (len(catalog), 3)
    same_first = codes[:, None, 0] == codes[None, :, 0]
    sims = catalog.embeddings @ catalog.embeddings.T
    off = ~np.eye(len(catalog), dtype=bool)
    assert sims[same_first & off].mean() > sims[~same_first].mean() + 0.2
    token = format_semantic_id(codes[3])
    assert parse_semantic_id(token) == tuple(int(c) for c in codes[3])
    with pytest.raises(ValueError, match="semantic id"):
        parse_semantic_id("<b_1><a_2>")


def test_parquet_round_trip(tmp_path, catalog: Catalog) -> None:
    path = catalog.to_parquet(tmp_path / "cat.parquet")
    back = Catalog.from_parquet(path)
    assert len(back) == len(catalog)
    for name in ("embeddings", "semantic_ids", "topic", "subtopic", "creator", "quality", "popularity"):
        assert np.array_equal(getattr(back, name), getattr(catalog, name)), name
    assert list(back.titles) == list(catalog.titles)
    assert back.topic_names == catalog.topic_names and back.topic_group == catalog.topic_group
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_multimodal_features_round_trip(tmp_path) -> None:
    cat = generate_catalog(CatalogConfig(n_items=50, multimodal_dim=6))
    assert cat.multimodal is not None and cat.multimodal.shape == (50, 6)
    back = Catalog.from_parquet(cat.to_parquet(tmp_path / "mm.parquet"))
    assert np.array_equal(back.multimodal, cat.multimodal)


def test_bad_catalog_files_name_the_problem(tmp_path, catalog: Catalog) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.parquet"):
        Catalog.from_parquet(tmp_path / "missing.parquet")
    path = catalog.to_parquet(tmp_path / "cat.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop(["quality"]), tmp_path / "noquality.parquet")
    with pytest.raises(CatalogFormatError, match="quality"):
        Catalog.from_parquet(tmp_path / "noquality.parquet")
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "nometa.parquet")
    with pytest.raises(CatalogFormatError, match="metadata"):
        Catalog.from_parquet(tmp_path / "nometa.parquet")


def test_invalid_catalog_config_names_the_field() -> None:
    from recoworld.config import build

    with pytest.raises(ConfigError, match="n_items"):
        build(CatalogConfig, "catalog config", n_items=3)
    with pytest.raises(ConfigError, match="n_itemz"):
        build(CatalogConfig, "catalog config", n_itemz=300)
