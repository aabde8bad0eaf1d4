"""The item catalog: columnar arrays plus metadata, a seeded synthetic generator, Parquet I/O.

Items are stored column-wise so that scoring every item against a user is one matrix
product, and so that the same object serves 10^3 synthetic items or 10^5 real ones.
An item's *index* (its row) is what envs and agents pass around; `item_ids` keeps the
external, human-facing id.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from recoworld.catalog.features import FeatureLayout
from recoworld.catalog.semantic_ids import ResidualQuantizer, format_semantic_id
from recoworld.catalog.taxonomy import (
    ADJECTIVES,
    CREATOR_PARTS,
    FORMATS,
    TITLE_TEMPLATES,
    Taxonomy,
)
from recoworld.config import CatalogConfig
from recoworld.errors import CatalogFormatError, UnknownTopicError
from recoworld.storage import write_parquet_atomic


class Item(BaseModel):
    """One item, as shown to LLMs and written to reports. Never used in hot loops."""

    index: int
    item_id: str
    title: str
    description: str
    topic: str
    subtopic: str
    creator: str
    quality: float
    duration_min: float
    popularity: float
    semantic_id: str


@dataclass(eq=False)
class Catalog:
    """All items, column-wise. Row `i` of every array describes item index `i`."""

    item_ids: np.ndarray  # (N,) str
    titles: np.ndarray  # (N,) str
    descriptions: np.ndarray  # (N,) str
    topic: np.ndarray  # (N,) int16 into topic_names
    subtopic: np.ndarray  # (N,) int16 into subtopic_names
    creator: np.ndarray  # (N,) int32 into creator_names
    quality: np.ndarray  # (N,) float32 in [0, 1]
    duration_min: np.ndarray  # (N,) float32 > 0
    popularity: np.ndarray  # (N,) float32 prior probability, sums to 1
    embeddings: np.ndarray  # (N, D) float32, unit norm
    semantic_ids: np.ndarray  # (N, L) int32 residual-quantization codes
    topic_names: tuple[str, ...]
    subtopic_names: tuple[str, ...]
    creator_names: tuple[str, ...]
    topic_group: tuple[int, ...]  # group index per topic; related topics share a group
    multimodal: np.ndarray | None = None  # (N, M) float32
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("titles", "descriptions", "topic", "subtopic", "creator", "quality",
                     "duration_min", "popularity", "embeddings", "semantic_ids"):
            got = len(getattr(self, name))
            if got != n:
                raise CatalogFormatError(f"catalog column {name!r} has {got} rows, expected {n}")
        if self.multimodal is not None and len(self.multimodal) != n:
            raise CatalogFormatError(f"catalog column 'multimodal' has {len(self.multimodal)} rows, expected {n}")
        if len(self.topic_group) != len(self.topic_names):
            raise CatalogFormatError("topic_group must give one group per topic name")
        if n and (self.topic.max() >= len(self.topic_names) or self.topic.min() < 0):
            raise CatalogFormatError("catalog column 'topic' indexes past topic_names")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def n_topics(self) -> int:
        return len(self.topic_names)

    @functools.cached_property
    def feature_layout(self) -> FeatureLayout:
        return FeatureLayout(self.embedding_dim)

    @functools.cached_property
    def item_features(self) -> np.ndarray:
        """(N, D + 3) float32 rows in `feature_layout`: what observations carry per item."""
        return self.feature_layout.build(self.embeddings, self.quality, self.duration_min, self.popularity)

    @functools.cached_property
    def topic_centroids(self) -> np.ndarray:
        """(T, D) unit-norm mean embedding of each topic; (0, ...) rows for empty topics."""
        sums = np.zeros((self.n_topics, self.embedding_dim), dtype=np.float64)
        np.add.at(sums, self.topic, self.embeddings)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-9)).astype(np.float32)

    @functools.cached_property
    def popularity_z(self) -> np.ndarray:
        """(N,) float64 standardized log popularity: the choice model's popularity feature.

        Logs are heavy-tailed, so the log is what a logit can use linearly; standardizing makes
        the fitted weight comparable across catalogs of different sizes and skews.
        """
        log_pop = np.log(np.maximum(self.popularity.astype(np.float64), 1e-12))
        return (log_pop - log_pop.mean()) / max(float(log_pop.std()), 1e-9)

    @functools.cached_property
    def median_quality(self) -> float:
        """What "high quality" means in a request: at least the catalog's median."""
        return float(np.median(self.quality))

    @functools.cached_property
    def self_information(self) -> np.ndarray:
        """(N,) -log2 popularity: the standard item novelty of recommender metrics."""
        return -np.log2(np.maximum(self.popularity, 1e-12)).astype(np.float32)

    def related_topics(self, topic: int) -> list[int]:
        group = self.topic_group[topic]
        return [t for t, g in enumerate(self.topic_group) if g == group and t != topic]

    def topic_index(self, name: str) -> int:
        try:
            return self.topic_names.index(name)
        except ValueError:
            raise UnknownTopicError(f"unknown topic {name!r}; known topics: {', '.join(self.topic_names)}") from None

    def item(self, index: int) -> Item:
        if not 0 <= index < len(self):
            raise IndexError(f"item index {index} out of range [0, {len(self)})")
        return Item(
            index=int(index),
            item_id=str(self.item_ids[index]),
            title=str(self.titles[index]),
            description=str(self.descriptions[index]),
            topic=self.topic_names[self.topic[index]],
            subtopic=self.subtopic_names[self.subtopic[index]],
            creator=self.creator_names[self.creator[index]],
            quality=round(float(self.quality[index]), 3),
            duration_min=round(float(self.duration_min[index]), 2),
            popularity=float(self.popularity[index]),
            semantic_id=format_semantic_id(self.semantic_ids[index]),
        )

    def append_items(
        self,
        *,
        item_ids: list[str],
        titles: list[str],
        descriptions: list[str],
        topic: np.ndarray,
        subtopic: np.ndarray,
        creator: str,
        quality: np.ndarray,
        duration_min: np.ndarray,
        popularity: np.ndarray,
        embeddings: np.ndarray,
    ) -> Catalog:
        """A new catalog with one creator's new items after the existing ones.

        Existing indices stay valid, so a study can compare worlds with and without the
        new items on the same index space. `popularity` is on the scale of the existing
        prior (probabilities); the joint prior is renormalised to sum to 1. New items take
        the semantic ID (and multimodal features) of their nearest existing item, since
        the quantizer that made the codes is not kept with the catalog.
        """
        m = len(item_ids)
        clash = sorted(set(item_ids) & set(self.item_ids.tolist()))
        if clash:
            raise CatalogFormatError(f"new item ids already in the catalog: {clash[:5]}")
        emb = unit_rows(np.asarray(embeddings, dtype=np.float32).reshape(m, self.embedding_dim)).astype(np.float32)
        nearest = np.argmax(emb @ self.embeddings.T, axis=1) if m else np.empty(0, dtype=np.int64)
        names = self.creator_names if creator in self.creator_names else (*self.creator_names, creator)
        pop = np.concatenate([self.popularity, np.asarray(popularity, dtype=np.float32)]).astype(np.float64)
        return Catalog(
            item_ids=np.concatenate([self.item_ids, np.asarray(item_ids, dtype=object)]),
            titles=np.concatenate([self.titles, np.asarray(titles, dtype=object)]),
            descriptions=np.concatenate([self.descriptions, np.asarray(descriptions, dtype=object)]),
            topic=np.concatenate([self.topic, np.asarray(topic, dtype=np.int16)]),
            subtopic=np.concatenate([self.subtopic, np.asarray(subtopic, dtype=np.int16)]),
            creator=np.concatenate([self.creator, np.full(m, names.index(creator), dtype=np.int32)]),
            quality=np.concatenate([self.quality, np.asarray(quality, dtype=np.float32)]),
            duration_min=np.concatenate([self.duration_min, np.asarray(duration_min, dtype=np.float32)]),
            popularity=(pop / pop.sum()).astype(np.float32),
            embeddings=np.vstack([self.embeddings, emb]),
            semantic_ids=np.vstack([self.semantic_ids, self.semantic_ids[nearest]]),
            multimodal=None if self.multimodal is None else np.vstack([self.multimodal, self.multimodal[nearest]]),
            topic_names=self.topic_names,
            subtopic_names=self.subtopic_names,
            creator_names=names,
            topic_group=self.topic_group,
            metadata={**self.metadata, "appended": str(int(self.metadata.get("appended", "0")) + m)},
        )

    # ------------------------------------------------------------------ Parquet I/O

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a reader never sees a half-written catalog."""
        d = self.embedding_dim
        cols: dict[str, pa.Array] = {
            "item_id": pa.array(self.item_ids.astype(str)),
            "title": pa.array(self.titles.astype(str)),
            "description": pa.array(self.descriptions.astype(str)),
            "topic": pa.array(self.topic.astype(np.int16)),
            "subtopic": pa.array(self.subtopic.astype(np.int16)),
            "creator": pa.array(self.creator.astype(np.int32)),
            "quality": pa.array(self.quality.astype(np.float32)),
            "duration_min": pa.array(self.duration_min.astype(np.float32)),
            "popularity": pa.array(self.popularity.astype(np.float32)),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(self.embeddings.astype(np.float32).ravel()), d
            ),
            "semantic_id": pa.FixedSizeListArray.from_arrays(
                pa.array(self.semantic_ids.astype(np.int32).ravel()), self.semantic_ids.shape[1]
            ),
        }
        if self.multimodal is not None:
            cols["multimodal"] = pa.FixedSizeListArray.from_arrays(
                pa.array(self.multimodal.astype(np.float32).ravel()), self.multimodal.shape[1]
            )
        meta = {
            "recoworld.catalog": json.dumps(
                {
                    "topic_names": list(self.topic_names),
                    "subtopic_names": list(self.subtopic_names),
                    "creator_names": list(self.creator_names),
                    "topic_group": list(self.topic_group),
                    "metadata": self.metadata,
                }
            )
        }
        return write_parquet_atomic(pa.table(cols).replace_schema_metadata(meta), path)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike[str]) -> Catalog:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"catalog file not found: {path}")
        table = pq.read_table(path)
        raw_meta = (table.schema.metadata or {}).get(b"recoworld.catalog")
        if raw_meta is None:
            raise CatalogFormatError(
                f"{path} has no 'recoworld.catalog' metadata; write it with Catalog.to_parquet "
                "or load other formats through recoworld.data"
            )
        meta = json.loads(raw_meta)
        required = ("item_id", "title", "description", "topic", "subtopic", "creator", "quality",
                    "duration_min", "popularity", "embedding", "semantic_id")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise CatalogFormatError(f"{path} lacks catalog columns: {', '.join(missing)}")

        def matrix(name: str, dtype: type) -> np.ndarray:
            col = table.column(name).combine_chunks()
            if not pa.types.is_fixed_size_list(col.type):
                raise CatalogFormatError(f"catalog column {name!r} must be a fixed-size list, got {col.type}")
            return col.flatten().to_numpy().astype(dtype).reshape(len(col), col.type.list_size)

        return cls(
            item_ids=np.asarray(table.column("item_id").to_pylist(), dtype=object),
            titles=np.asarray(table.column("title").to_pylist(), dtype=object),
            descriptions=np.asarray(table.column("description").to_pylist(), dtype=object),
            topic=table.column("topic").to_numpy().astype(np.int16),
            subtopic=table.column("subtopic").to_numpy().astype(np.int16),
            creator=table.column("creator").to_numpy().astype(np.int32),
            quality=table.column("quality").to_numpy().astype(np.float32),
            duration_min=table.column("duration_min").to_numpy().astype(np.float32),
            popularity=table.column("popularity").to_numpy().astype(np.float32),
            embeddings=matrix("embedding", np.float32),
            semantic_ids=matrix("semantic_id", np.int32),
            multimodal=matrix("multimodal", np.float32) if "multimodal" in table.column_names else None,
            topic_names=tuple(meta["topic_names"]),
            subtopic_names=tuple(meta["subtopic_names"]),
            creator_names=tuple(meta["creator_names"]),
            topic_group=tuple(meta["topic_group"]),
            metadata=dict(meta.get("metadata", {})),
        )


# ---------------------------------------------------------------------- generator


#: Pareto shape of the synthetic catalog's exposure term (the heavy tail of item popularity).
#: 1.3 gives the popularity prior itself a Gini of 0.59 (quality adds a little), about the
#: concentration of public logs (MovieLens-100K's item-consumption Gini is about 0.63; the
#: band of docs/results.md, "Realism", is 0.6-0.9). The former 1.6 gave 0.47, a prior flatter than the logs it
#: stands for, so that retrieval's popular block (which samples it) and the popular
#: recommender exposed users to a thinner head than real platforms do (issue 27). The
#: choice model reads the standardized log popularity, whose spread this shape barely moves.
EXPOSURE_SHAPE = 1.3


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def slate_diversity(catalog: Catalog, slate: np.ndarray) -> float:
    """Mean pairwise cosine distance within a slate (embeddings are unit norm). A property of the items alone,
    so recommenders (the HRL novelty reward) and the trajectory's metrics share this one definition."""
    k = len(slate)
    if k < 2:
        return 0.0
    emb = catalog.embeddings[slate].astype(np.float64)
    gram = emb @ emb.T
    return float((k * k - gram.sum()) / (k * (k - 1)))


def generate_catalog(config: CatalogConfig | None = None) -> Catalog:
    """A seeded synthetic catalog whose items read like real content.

    Embeddings are hierarchical: group -> topic -> subtopic -> creator -> item, each a
    noisy offset of its parent, so similarity follows the taxonomy and creators have a
    recognisable style. Quality comes from the creator plus noise, popularity from
    quality plus a heavy-tailed exposure term (Pareto, shape `EXPOSURE_SHAPE`).
    """
    cfg = config or CatalogConfig()
    rng = np.random.default_rng(cfg.seed)
    tax = Taxonomy.default(cfg.n_topics)
    n, d = cfg.n_items, cfg.embedding_dim
    n_topics, n_subs = len(tax.topics), len(tax.subtopics)

    group_c = unit_rows(rng.normal(size=(len(tax.groups), d)))
    topic_c = unit_rows(group_c[list(tax.topic_group)] + 0.75 * unit_rows(rng.normal(size=(n_topics, d))))
    sub_c = unit_rows(topic_c[list(tax.subtopic_topic)] + 0.55 * unit_rows(rng.normal(size=(n_subs, d))))

    n_creators = n_topics * cfg.creators_per_topic
    creator_style = unit_rows(rng.normal(size=(n_creators, d)))
    creator_skill = rng.normal(0.0, 1.0, size=n_creators)
    creator_names = tuple(
        f"{CREATOR_PARTS[0][rng.integers(len(CREATOR_PARTS[0]))]} "
        f"{CREATOR_PARTS[1][rng.integers(len(CREATOR_PARTS[1]))]} {i}"
        for i in range(n_creators)
    )

    subtopic_of_topic = [np.flatnonzero(np.asarray(tax.subtopic_topic) == t) for t in range(n_topics)]
    topic_weight = rng.dirichlet(np.full(n_topics, 4.0))
    topic = rng.choice(n_topics, size=n, p=topic_weight)
    subtopic = np.array([subtopic_of_topic[t][rng.integers(len(subtopic_of_topic[t]))] for t in topic])
    creator = topic * cfg.creators_per_topic + rng.integers(cfg.creators_per_topic, size=n)

    embeddings = unit_rows(
        sub_c[subtopic] + 0.25 * creator_style[creator] + 0.35 * unit_rows(rng.normal(size=(n, d)))
    ).astype(np.float32)
    quality = (1 / (1 + np.exp(-(0.8 * creator_skill[creator] + rng.normal(0, 0.8, n))))).astype(np.float32)
    duration = np.exp(rng.normal(np.log(4.0), 0.7, n)).clip(0.25, 60).astype(np.float32)
    exposure = rng.pareto(EXPOSURE_SHAPE, n) + 1.0
    pop_raw = exposure * np.exp(1.5 * quality)
    popularity = (pop_raw / pop_raw.sum()).astype(np.float32)

    multimodal = None
    if cfg.multimodal_dim:
        proj = rng.normal(size=(d, cfg.multimodal_dim)) / np.sqrt(d)
        multimodal = np.tanh(embeddings @ proj + 0.3 * rng.normal(size=(n, cfg.multimodal_dim))).astype(np.float32)

    rq = ResidualQuantizer.fit(embeddings, cfg.semantic_id_levels, cfg.semantic_id_codebook, seed=cfg.seed)
    semantic_ids = rq.encode(embeddings).astype(np.int32)

    titles, descriptions = _write_texts(rng, tax, topic, subtopic, creator, creator_names, duration)
    return Catalog(
        item_ids=np.array([f"item_{i:06d}" for i in range(n)], dtype=object),
        titles=titles,
        descriptions=descriptions,
        topic=topic.astype(np.int16),
        subtopic=subtopic.astype(np.int16),
        creator=creator.astype(np.int32),
        quality=quality,
        duration_min=duration,
        popularity=popularity,
        embeddings=embeddings,
        semantic_ids=semantic_ids,
        multimodal=multimodal,
        topic_names=tax.topics,
        subtopic_names=tax.subtopics,
        creator_names=creator_names,
        topic_group=tax.topic_group,
        metadata={"source": "synthetic", "config": cfg.model_dump_json()},
    )


def _write_texts(
    rng: np.random.Generator,
    tax: Taxonomy,
    topic: np.ndarray,
    subtopic: np.ndarray,
    creator: np.ndarray,
    creator_names: tuple[str, ...],
    duration: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(topic)
    tpl = rng.integers(len(TITLE_TEMPLATES), size=n)
    adj = rng.integers(len(ADJECTIVES), size=n)
    fmt = rng.integers(len(FORMATS), size=n)
    kw_start = rng.integers(0, 1 << 30, size=n)
    titles = np.empty(n, dtype=object)
    descriptions = np.empty(n, dtype=object)
    for i in range(n):
        kws = tax.keywords[subtopic[i]]
        k1, k2, k3 = (kws[(kw_start[i] + j) % len(kws)] for j in range(3))
        sub = tax.subtopics[subtopic[i]]
        titles[i] = TITLE_TEMPLATES[tpl[i]].format(
            Kw=k1.title(), Kw2=k2.title(), Adj=ADJECTIVES[adj[i]], Format=FORMATS[fmt[i]].title(),
            Sub=sub.title(),
        )
        descriptions[i] = (
            f"A {duration[i]:.0f}-minute {FORMATS[fmt[i]]} on {sub} ({tax.topics[topic[i]]}) "
            f"covering {k1}, {k2} and {k3}. By {creator_names[creator[i]]}."
        )
    return titles, descriptions


@functools.lru_cache(maxsize=8)
def cached_catalog(config: CatalogConfig) -> Catalog:
    """Generate once per process per config; envs built by `gym.make` share it read-only."""
    return generate_catalog(config)


T = TypeVar("T")


class CatalogCache(Generic[T]):
    """Objects fitted once per (catalog, key) and shared by the whole process, such as text
    indexes that take seconds to build. Weak on the catalog (a dropped catalog frees its
    entries) and thread-safe (LLM users and studies build them from worker threads)."""

    def __init__(self) -> None:
        self._entries: weakref.WeakKeyDictionary[Catalog, dict[Hashable, T]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, catalog: Catalog, key: Hashable, build: Callable[[], T]) -> T:
        """The entry of `catalog` for `key`, built by `build()` on first use."""
        per_catalog = self._entries.get(catalog)  # the common case, a hit, reads without the lock
        if per_catalog is not None and key in per_catalog:
            return per_catalog[key]
        with self._lock:
            per_catalog = self._entries.setdefault(catalog, {})
            if key not in per_catalog:
                per_catalog[key] = build()
            return per_catalog[key]
