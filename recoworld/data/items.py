"""A real item table becomes a `Catalog`, with the content representation a study asks for.

How the catalog's columns are filled (the catalog knows nothing of users, so only
per-item aggregates of the *train* log are used, never held-out interactions):

| column        | source                                                                                 |
|---------------|----------------------------------------------------------------------------------------|
| title         | the item's title (MovieLens titles carry the year)                                     |
| description   | "{title}. Genres: a, b. Released {year}." plus the item's own description, if any     |
| topic         | the item's rarest genre in this catalog (its most specific one); "other" without genres |
| subtopic      | the item's full genre combination, e.g. "Animation|Children's|Comedy"                 |
| creator       | the `creator` column (director, artist, ...) when present, else "unknown"              |
| quality       | mean rating shrunk toward the global mean by `quality_prior_weight` pseudo-ratings,    |
|               | rescaled from the rating scale to [0, 1]; 0.5 for everyone when the log is implicit    |
| duration_min  | the `duration_min` column when present, else `default_duration_min`: the minutes a    |
|               | feed user spends on an item (a trailer, a preview), not a film's running time          |
| popularity    | (train interactions + 1) / total: Laplace-smoothed, so unseen items stay reachable;    |
|               | with `popularity_half_life_days`, the counts decay with age (attention at the log's end) |
| embeddings    | the representation: behaviour-learned factors (implicit ALS on the train log, the      |
|               | default), text (sentence model or hashed TF-IDF, mean-centred), both concatenated      |
|               | ("mf+tfidf", "mf+sentence"), or multimodal features (standardised, PCA-reduced)        |
| semantic_ids  | residual quantization of the embeddings, plus a collision level when `unique_semantic_ids` |

Topics are genres and each genre is its own topic group, so "related" topics (used by
instructions) fall back to the genres nearest in embedding space.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator

from recoworld.catalog import Catalog
from recoworld.catalog.embeddings import EmbeddingMethod, embed_texts, reduce_features
from recoworld.catalog.semantic_ids import ResidualQuantizer, with_collision_level
from recoworld.config import StrictModel
from recoworld.data.attention import fit_half_life, item_attention
from recoworld.data.dataset import Dataset
from recoworld.data.factors import implicit_als
from recoworld.data.generic import read_table
from recoworld.errors import CatalogFormatError, ConfigError

NO_GENRE = "other"

#: How items can be embedded (`RepresentationConfig.embedding`).
ItemEmbedding = Literal["auto", "mf", "sentence", "tfidf", "features", "mf+tfidf", "mf+sentence"]
#: The parts each embedding but "features" concatenates, in order: "mf" (ALS factors learned from the log's
#: behaviour) or a text encoder of `embed_texts`.
_EMBEDDING_PARTS: dict[ItemEmbedding, tuple[Literal["mf"] | EmbeddingMethod, ...]] = {
    "auto": ("mf",), "mf": ("mf",), "sentence": ("sentence",), "tfidf": ("tfidf",),
    "mf+tfidf": ("mf", "tfidf"), "mf+sentence": ("mf", "sentence"),
}


class RepresentationConfig(StrictModel):
    """How items are represented: which embedding, which features, which semantic IDs."""

    embedding: ItemEmbedding = Field(
        "auto", description="auto = mf (factors learned from the log's behaviour); sentence/tfidf = item text; "
        "features = multimodal vectors; mf+tfidf, mf+sentence = both, concatenated with equal weight"
    )
    embedding_dim: int = Field(64, ge=2, le=4096, description="tfidf dimensions; PCA width for features")
    features: Path | None = Field(
        None, description="multimodal vectors: .npy in item-table order, or a table with item_id + vector columns"
    )
    mf_factors: int = Field(32, ge=2, le=1024, description="ALS factors (the mf embedding width)")
    mf_confidence: float = Field(10.0, gt=0, description="ALS alpha: confidence 1 + alpha * count per observed pair")
    mf_regularization: float = Field(2.0, gt=0, description="ALS ridge penalty per observed entry of a row")
    mf_iterations: int = Field(15, ge=1, le=200)
    semantic_id_levels: int = Field(3, ge=1, le=8)
    semantic_id_codebook: int = Field(32, ge=2, le=4096)
    unique_semantic_ids: bool = Field(True, description="append a collision level so each ID names one item")
    default_duration_min: float = Field(4.0, gt=0)
    quality_prior_weight: float = Field(10.0, ge=0, description="pseudo-ratings at the global mean")
    popularity_half_life_days: float | Literal["fit"] | None = Field(
        None, description="popularity as the attention at the end of the log, counts decayed with this half-life "
        "(`recoworld.data.attention`); 'fit' picks it from the log's own late choices; None: all-time counts",
    )
    mf_user_half: Literal[0, 1] | None = Field(
        None, description="learn the mf item factors from one half of the users only (`user_halves`: a seeded "
        "split by user id), so a simulator's representation can be kept apart from the users it is judged on "
        "(`recoworld transfer`'s circularity check); None: every user",
    )
    interest_half_life_days: float | Literal["fit"] | None = Field(
        None, description="mf profiles: each interaction's weight in a user's interests halves every this many "
        "days before the log's end (interest drift, `recoworld.data.users.fit_interest_half_life`); 'fit' picks "
        "it from the log's own late choices; None: every interaction weighs alike",
    )
    popularity_horizon_days: float = Field(
        60.0, gt=0, description="'fit' (popularity and interests): the half-life that best predicts this many "
        "days ahead, the horizon the world will simulate (validate's and transfer's default cap)",
    )
    seed: int = Field(0, ge=0, description="seed of the TF-IDF projection and the quantizer")

    @field_validator("popularity_half_life_days", "interest_half_life_days")
    @classmethod
    def _positive_half_life(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and not value > 0:
            raise ValueError(f"must be > 0 days (or 'fit', or None for no decay), got {value}")
        return value


def item_texts(items: pd.DataFrame) -> list[str]:
    """What LLM users and ToolRec read about each item, and what text embeddings encode."""
    out = []
    for title, genres, year, extra in zip(items["title"], items["genres"], items["year"], items["description"]):
        parts = [str(title).rstrip(".") + "."]
        if genres:
            parts.append(f"Genres: {', '.join(genres)}.")
        if year == year and f"({int(year)})" not in str(title):
            parts.append(f"Released {int(year)}.")
        if extra:
            parts.append(str(extra))
        out.append(" ".join(parts))
    return out


def load_features(path: Path, item_ids: pd.Series) -> np.ndarray:
    """(N, M) multimodal vectors aligned to `item_ids`, from .npy (same order) or a table keyed by item_id."""
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    if path.suffix.lower() == ".npy":
        x = np.load(path)
        if x.ndim != 2 or len(x) != len(item_ids):
            raise CatalogFormatError(
                f"{path}: a .npy feature file must be (n_items, dim) = ({len(item_ids)}, ...) in item-table order, "
                f"got shape {x.shape}"
            )
        return x.astype(np.float32)
    table = read_table(path)
    if "item_id" not in table.columns:
        raise CatalogFormatError(f"{path}: a feature table needs an 'item_id' column, has {list(table.columns)}")
    table = table.set_index(table["item_id"].astype(str))
    missing = item_ids[~item_ids.isin(table.index)]
    if len(missing):
        raise CatalogFormatError(f"{path}: no features for {len(missing)} items, e.g. item_id {missing.iloc[0]!r}")
    rows = table.loc[item_ids.to_numpy()].drop(columns="item_id")
    return _matrix(rows, str(path))


def _matrix(rows: pd.DataFrame | pd.Series, where: str) -> np.ndarray:
    """One list-valued column, or several numeric columns, as a float32 matrix."""
    if isinstance(rows, pd.Series) or rows.shape[1] == 1:
        col = rows if isinstance(rows, pd.Series) else rows.iloc[:, 0]
        if col.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).all():
            lengths = col.map(len)
            if lengths.nunique() != 1:
                raise CatalogFormatError(f"{where}: feature vectors differ in length ({sorted(lengths.unique())[:5]})")
            return np.stack(col.map(lambda v: np.asarray(v, np.float32)).to_list())
        if isinstance(col.iloc[0], str):
            return _matrix(col.map(lambda s: [float(x) for x in s.replace("|", " ").split()]), where)
    numeric = rows.apply(pd.to_numeric, errors="coerce") if isinstance(rows, pd.DataFrame) else None
    if numeric is None or numeric.isna().any().any():
        raise CatalogFormatError(f"{where}: features must be one list column or numeric columns")
    return numeric.to_numpy(np.float32)


def build_catalog(dataset: Dataset, interactions: pd.DataFrame, config: RepresentationConfig | None = None) -> Catalog:
    """The catalog of every item in `dataset`; aggregates come from `interactions` (the train log)."""
    cfg = config or RepresentationConfig()
    items = dataset.items
    ids = items["item_id"]
    n = len(items)
    row = pd.Series(np.arange(n), index=ids.to_numpy())

    genre_lists = [list(g) or [NO_GENRE] for g in items["genres"]]
    counts = pd.Series([g for gs in genre_lists for g in gs]).value_counts()
    topic_names = tuple(sorted(counts.index))
    topic_of = {t: i for i, t in enumerate(topic_names)}
    topic = np.array([topic_of[min(gs, key=lambda g: (counts[g], g))] for gs in genre_lists], dtype=np.int16)
    combos = ["|".join(gs) for gs in genre_lists]
    subtopic_names = tuple(sorted(set(combos)))
    sub_of = {s: i for i, s in enumerate(subtopic_names)}
    if "creator" in items.columns:
        creators = items["creator"].fillna("unknown").astype(str).replace("", "unknown")
    else:
        creators = pd.Series(["unknown"] * n)
    creator_names = tuple(sorted(set(creators)))
    creator_of = {c: i for i, c in enumerate(creator_names)}

    idx = row.reindex(interactions["item_id"].to_numpy()).to_numpy()
    if np.isnan(idx).any():
        raise CatalogFormatError("interactions name items that are not in the dataset's item table")
    idx = idx.astype(np.int64)
    popularity, half_life = _popularity(idx, interactions["timestamp"].to_numpy(np.float64), n,
                                        cfg.popularity_half_life_days, cfg.popularity_horizon_days)
    quality = _quality(idx, interactions["rating"].to_numpy(np.float64), n, dataset.rating_scale,
                       cfg.quality_prior_weight)
    duration = (items["duration_min"].to_numpy(np.float64) if "duration_min" in items.columns
                else np.full(n, cfg.default_duration_min))

    texts = item_texts(items)
    multimodal = None
    if cfg.features is not None:
        multimodal = load_features(cfg.features, ids)
    elif "features" in items.columns:
        multimodal = _matrix(items["features"], f"{dataset.name} items 'features'")
    if cfg.embedding == "features":
        if multimodal is None:
            raise ConfigError("embedding='features' needs multimodal vectors: set features=PATH or a 'features' column")
        embeddings, method = reduce_features(multimodal, cfg.embedding_dim), "features"
    else:
        parts, names = [], []
        for part in _EMBEDDING_PARTS[cfg.embedding]:
            if part == "mf":
                parts.append(mf_embeddings(interactions, idx, topic, n, cfg))
                names.append("mf")
            else:
                text_emb, used = embed_texts(texts, part, cfg.embedding_dim, cfg.seed)
                parts.append(_centred(text_emb))
                names.append(used)
        embeddings, method = _unit_rows(np.hstack(parts)), "+".join(names)

    rq = ResidualQuantizer.fit(embeddings, cfg.semantic_id_levels, cfg.semantic_id_codebook, seed=cfg.seed)
    codes = rq.encode(embeddings)
    if cfg.unique_semantic_ids:
        codes = with_collision_level(codes)

    return Catalog(
        item_ids=ids.to_numpy(dtype=object),
        titles=items["title"].to_numpy(dtype=object),
        descriptions=np.asarray(texts, dtype=object),
        topic=topic,
        subtopic=np.array([sub_of[c] for c in combos], dtype=np.int16),
        creator=np.array([creator_of[c] for c in creators], dtype=np.int32),
        quality=quality.astype(np.float32),
        duration_min=duration.astype(np.float32),
        popularity=popularity.astype(np.float32),
        embeddings=embeddings,
        semantic_ids=codes.astype(np.int32),
        multimodal=multimodal,
        topic_names=topic_names,
        subtopic_names=subtopic_names,
        creator_names=creator_names,
        topic_group=tuple(range(len(topic_names))),
        metadata={"source": dataset.name, "embedding": method, "config": cfg.model_dump_json(),
                  "train_interactions": str(len(interactions)), "popularity_half_life_days": half_life},
    )


def _popularity(idx: np.ndarray, times: np.ndarray, n: int, half_life: float | Literal["fit"] | None,
                horizon_days: float) -> tuple[np.ndarray, str]:
    """Add-one smoothed popularity (so unseen items stay reachable): all-time counts, or the attention at the
    log's last time with a given or fitted half-life; and the half-life used, as text ("inf": all-time)."""
    if half_life is None or not len(idx):
        counts, used = np.bincount(idx, minlength=n).astype(np.float64), "inf"
    else:
        days = fit_half_life(idx, times, n, horizon_days).half_life_days if half_life == "fit" else float(half_life)
        counts = item_attention(idx, times, n, float(times.max()), days)
        # Decayed counts are in units of "recent interactions"; add-one stays one interaction's mean weight.
        counts = counts * len(idx) / max(counts.sum(), 1e-12)
        used = "inf" if not np.isfinite(days) else f"{days:g}"
    return (counts + 1) / (counts + 1).sum(), used


def mf_embeddings(interactions: pd.DataFrame, idx: np.ndarray, topic: np.ndarray, n: int,
                  cfg: RepresentationConfig) -> np.ndarray:
    """(n, mf_factors) unit-norm item factors from implicit ALS on the train log.

    Items the log never names have no behaviour to learn from; they take the mean direction
    of their topic's items (of all items when the whole topic is unseen), so they stay reachable.
    """
    if cfg.mf_user_half is not None:
        codes, ids = pd.factorize(interactions["user_id"])
        half = user_halves(ids, cfg.seed)[codes] == cfg.mf_user_half
        interactions, idx = interactions[half], idx[half]
        if not len(idx):
            raise ConfigError(f"mf_user_half={cfg.mf_user_half}: that half of the users has no interactions")
    user_codes = pd.factorize(interactions["user_id"])[0]
    fit = implicit_als(user_codes, idx, int(user_codes.max()) + 1, n, cfg.mf_factors, cfg.mf_confidence,
                       cfg.mf_regularization, cfg.mf_iterations, cfg.seed)
    emb = _unit_rows(fit.items)
    seen = np.bincount(idx, minlength=n) > 0
    sums = np.zeros((int(topic.max()) + 1, emb.shape[1]))
    np.add.at(sums, topic[seen], emb[seen])
    sums[~sums.any(axis=1)] = emb[seen].sum(axis=0)
    emb[~seen] = _unit_rows(sums)[topic[~seen]]
    return emb


def user_halves(user_ids: np.ndarray | pd.Series | list[str], seed: int = 0) -> np.ndarray:
    """0 or 1 per user id: a split of users into halves that depends only on the id and the seed (a hash, not
    Python's salted one), so the same user falls in the same half in every run and every table."""
    return np.array([hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=1).digest()[0] & 1
                     for u in map(str, user_ids)], dtype=np.int8)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _centred(embeddings: np.ndarray) -> np.ndarray:
    """Subtract the mean and re-normalise. Texts written to one template (title, genres, year) share
    a large common direction, so raw cosines all sit well above 0 and every item would look
    relevant to every user; centred, similarities spread around 0 as in the synthetic catalog
    the choice model is calibrated on."""
    return _unit_rows(embeddings - embeddings.mean(axis=0))


def _quality(idx: np.ndarray, rating: np.ndarray, n: int, scale: tuple[float, float] | None,
             prior: float) -> np.ndarray:
    rated = ~np.isnan(rating)
    if scale is None or not rated.any() or scale[1] <= scale[0]:
        return np.full(n, 0.5)
    count = np.bincount(idx[rated], minlength=n)
    total = np.bincount(idx[rated], weights=rating[rated], minlength=n)
    mean = (total + prior * rating[rated].mean()) / np.maximum(count + prior, 1e-9)
    mean = np.where(count + prior > 0, mean, rating[rated].mean())
    return np.clip((mean - scale[0]) / (scale[1] - scale[0]), 0.0, 1.0)
