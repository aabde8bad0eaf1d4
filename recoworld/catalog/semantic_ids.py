"""Semantic IDs by residual quantization (RQ) of item embeddings.

Level 1 clusters the embeddings, level 2 clusters what level 1 left unexplained, and so
on. Items that share a prefix of codes are similar at that granularity, which is what
lets prompts use IDs like `<a_12><b_3>` and lets retrieval tools fetch "more like this"
by prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 20) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns the (k, d) centroids."""
    n = x.shape[0]
    k = min(k, n)
    centroids = np.empty((k, x.shape[1]), dtype=np.float64)
    centroids[0] = x[rng.integers(n)]
    d2 = ((x - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = d2.sum()
        idx = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
        centroids[j] = x[idx]
        d2 = np.minimum(d2, ((x - centroids[j]) ** 2).sum(1))
    x_sq = (x**2).sum(1, keepdims=True)
    for _ in range(iters):
        dist = x_sq - 2 * x @ centroids.T + (centroids**2).sum(1)
        assign = dist.argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)
        nonempty = counts > 0
        new = centroids.copy()
        new[nonempty] = sums[nonempty] / counts[nonempty, None]
        if np.allclose(new, centroids):
            break
        centroids = new
    return centroids


@dataclass(frozen=True)
class ResidualQuantizer:
    """Codebooks of a fitted residual quantizer, one (codebook_size, d) array per level."""

    codebooks: tuple[np.ndarray, ...]

    @classmethod
    def fit(
        cls, embeddings: np.ndarray, levels: int, codebook_size: int, seed: int = 0
    ) -> ResidualQuantizer:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-D (n, d), got shape {embeddings.shape}")
        rng = np.random.default_rng(seed)
        residual = embeddings.astype(np.float64)
        books = []
        for _ in range(levels):
            book = _kmeans(residual, codebook_size, rng)
            codes = _nearest(residual, book)
            residual = residual - book[codes]
            books.append(book)
        return cls(tuple(books))

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, d) embeddings -> (n, levels) integer codes."""
        residual = embeddings.astype(np.float64)
        codes = np.empty((embeddings.shape[0], len(self.codebooks)), dtype=np.int32)
        for level, book in enumerate(self.codebooks):
            codes[:, level] = _nearest(residual, book)
            residual = residual - book[codes[:, level]]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, levels) codes -> (n, d) reconstruction; the sum of the chosen codewords."""
        return sum(book[codes[:, level]] for level, book in enumerate(self.codebooks))


def _nearest(x: np.ndarray, book: np.ndarray) -> np.ndarray:
    dist = (x**2).sum(1, keepdims=True) - 2 * x @ book.T + (book**2).sum(1)
    return dist.argmin(1)


def format_semantic_id(codes: np.ndarray | list[int] | tuple[int, ...]) -> str:
    """`[12, 3, 7]` -> `<a_12><b_3><c_7>`: one token per level, as LLM prompts use them."""
    return "".join(f"<{chr(ord('a') + level)}_{int(c)}>" for level, c in enumerate(codes))


def parse_semantic_id(text: str) -> tuple[int, ...]:
    """Inverse of `format_semantic_id`; raises ValueError naming the bad token."""
    tokens = re.findall(r"<([a-z])_(\d+)>", text)
    if not tokens or "".join(f"<{a}_{b}>" for a, b in tokens) != text.strip():
        raise ValueError(f"not a semantic id: {text!r}; expected tokens like <a_12><b_3>")
    for level, (letter, _) in enumerate(tokens):
        if letter != chr(ord("a") + level):
            raise ValueError(f"semantic id {text!r}: level {level} should use letter {chr(ord('a') + level)!r}")
    return tuple(int(b) for _, b in tokens)


def with_collision_level(codes: np.ndarray) -> np.ndarray:
    """Append one level that numbers items sharing all codes (0, 1, ...), so every ID is unique.

    This is TIGER's fix for collisions (Rajput et al., 2023): the last token tells apart
    items the quantizer could not, and the ID then maps back to exactly one item.
    """
    codes = np.asarray(codes, dtype=np.int32)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]
    rank = np.empty(len(codes), dtype=np.int32)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    return np.hstack([codes, rank[:, None]])


class SemanticIndex:
    """Look items up by semantic ID, and fetch items that share a prefix with a query item.

    Items sharing a longer prefix were quantized into the same cells at more levels, so
    `neighbours` is a "more like this" that needs no embedding search, and works from an
    ID an LLM wrote.
    """

    def __init__(self, codes: np.ndarray) -> None:
        if codes.ndim != 2 or codes.shape[1] == 0:
            raise ValueError(f"codes must be (n_items, levels) with levels >= 1, got shape {codes.shape}")
        self.codes = np.asarray(codes, dtype=np.int32)

    @property
    def levels(self) -> int:
        return int(self.codes.shape[1])

    def shared_prefix(self, query: np.ndarray | tuple[int, ...]) -> np.ndarray:
        """(n_items,) number of leading levels each item shares with the query codes."""
        q = np.asarray(query, dtype=np.int32)
        if q.ndim != 1 or not 1 <= len(q) <= self.levels:
            raise ValueError(f"query must hold 1..{self.levels} codes, got {q.tolist()}")
        return np.cumprod(self.codes[:, : len(q)] == q, axis=1).sum(axis=1)

    def with_prefix(self, prefix: str | tuple[int, ...]) -> np.ndarray:
        """Item indices whose ID starts with `prefix` (`"<a_3><b_1>"` or `(3, 1)`), ascending."""
        codes = parse_semantic_id(prefix) if isinstance(prefix, str) else tuple(prefix)
        return np.flatnonzero(self.shared_prefix(codes) == len(codes))

    def lookup(self, semantic_id: str) -> int:
        """The one item with this full ID; KeyError when none or several match."""
        codes = parse_semantic_id(semantic_id)
        if len(codes) != self.levels:
            raise KeyError(f"{semantic_id!r} has {len(codes)} levels; IDs in this catalog have {self.levels}")
        hits = self.with_prefix(codes)
        if len(hits) != 1:
            raise KeyError(f"semantic id {semantic_id!r} matches {len(hits)} items, expected exactly one")
        return int(hits[0])

    def neighbours(self, item: int, k: int, min_shared: int = 1) -> np.ndarray:
        """Up to k other items sharing at least `min_shared` leading codes with `item`, longest prefix first.

        Ties (same prefix length) keep catalog order, so the answer is deterministic.
        """
        shared = self.shared_prefix(self.codes[item])
        shared[item] = -1
        candidates = np.flatnonzero(shared >= min_shared)
        order = np.argsort(-shared[candidates], kind="stable")
        return candidates[order[:k]]
