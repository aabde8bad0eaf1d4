from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from recoworld.catalog import embeddings
from recoworld.catalog.embeddings import SENTENCE_PACKAGE, embed_texts, hashed_tfidf, reduce_features
from recoworld.data import DataConfig, prepare_world
from recoworld.data.sample import write_movielens_100k
from recoworld.errors import CatalogFormatError, ConfigError
from tests.conftest import require

TEXTS = [
    "Star Wars (1977). Genres: Action, Adventure, Sci-Fi.",
    "Return of the Jedi (1983). Genres: Action, Adventure, Sci-Fi, Star Wars sequel.",
    "Sense and Sensibility (1995). Genres: Drama, Romance.",
    "Pride and Prejudice (1995). Genres: Drama, Romance.",
]


@pytest.fixture
def no_sentence_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model package is not installed: importing it fails, as on a machine without the extra."""
    monkeypatch.setitem(sys.modules, SENTENCE_PACKAGE, None)  # makes `import` raise ImportError
    monkeypatch.setattr(embeddings, "_models", {})


def test_hashed_tfidf_is_deterministic_and_puts_similar_texts_close() -> None:
    a = hashed_tfidf(TEXTS, dim=64, seed=1)
    assert a.shape == (4, 64) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, hashed_tfidf(TEXTS, dim=64, seed=1))
    assert not np.allclose(a, hashed_tfidf(TEXTS, dim=64, seed=2))
    sims = a @ a.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])
    assert np.isfinite(hashed_tfidf(["", "!!"], dim=8)).all()  # no tokens: still a unit vector
    with pytest.raises(ConfigError, match="dim"):
        hashed_tfidf(TEXTS, dim=1)


def test_missing_model_falls_back_to_tfidf(no_sentence_model: None) -> None:
    vectors, method = embed_texts(TEXTS, "auto", dim=32, seed=0)
    assert method == "tfidf" and np.array_equal(vectors, hashed_tfidf(TEXTS, 32, 0))
    with pytest.raises(ConfigError, match=f"{SENTENCE_PACKAGE}.*recoworld\\[embeddings\\]"):
        embed_texts(TEXTS, "sentence")
    with pytest.raises(ConfigError, match="embedding method"):
        embed_texts(TEXTS, "word2vec")  # type: ignore[arg-type]


def test_catalog_records_the_fallback(no_sentence_model: None, tmp_path: Path) -> None:
    data = write_movielens_100k(tmp_path, n_users=20, n_items=40, seed=1)
    world = prepare_world(DataConfig(path=data))  # embedding="auto"
    assert world.catalog.metadata["embedding"] == "mf" and world.catalog.embedding_dim == 32
    with pytest.raises(ConfigError, match="pip install"):
        prepare_world(DataConfig(path=data, representation={"embedding": "sentence"}))


def test_sentence_model_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    require(SENTENCE_PACKAGE)
    require("sentence_transformers")
    vectors, method = embed_texts(TEXTS, "auto")
    assert method == "sentence" and vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[2, 3] > max(sims[2, 0], sims[2, 1])  # the two period romances are neighbours
    again, _ = embed_texts(TEXTS, "sentence")
    assert np.allclose(vectors, again, atol=1e-5)


def test_reduce_features_is_deterministic_pca() -> None:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(50, 3))
    x = latent @ rng.normal(size=(3, 20)) + 0.01 * rng.normal(size=(50, 20))
    z = reduce_features(x, dim=3)
    assert z.shape == (50, 3) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(z, reduce_features(x.copy(), dim=3))
    full = reduce_features(x)  # narrower than dim or no dim: standardised and normalised only
    assert full.shape == (50, 20)
    with pytest.raises(ConfigError, match="finite 2-D"):
        reduce_features(np.array([1.0, np.nan]))


def test_multimodal_features_from_a_file(tmp_path: Path) -> None:
    data = write_movielens_100k(tmp_path / "ml", n_users=20, n_items=40, seed=1)
    feats = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    world = prepare_world(DataConfig(path=data, representation={"embedding": "features", "embedding_dim": 6,
                                                                "features": tmp_path / "f.npy"}))
    assert np.array_equal(world.catalog.multimodal, feats) and world.catalog.embedding_dim == 6
    table = tmp_path / "f.csv"
    ids = world.catalog.item_ids
    lines = ["item_id," + ",".join(f"f{j}" for j in range(12))]
    lines += [f"{ids[i]}," + ",".join(f"{v:.6f}" for v in feats[i]) for i in range(40)][::-1]  # any order
    table.write_text("\n".join(lines))
    other = prepare_world(DataConfig(path=data, representation={"embedding": "tfidf", "features": table}))
    assert np.allclose(other.catalog.multimodal, feats, atol=1e-5)  # aligned by item_id
    np.save(tmp_path / "short.npy", feats[:10])
    with pytest.raises(CatalogFormatError, match="item-table order"):
        prepare_world(DataConfig(path=data, representation={"embedding": "features",
                                                            "features": tmp_path / "short.npy"}))
    with pytest.raises(ConfigError, match="needs multimodal vectors"):
        prepare_world(DataConfig(path=data, representation={"embedding": "features"}))
