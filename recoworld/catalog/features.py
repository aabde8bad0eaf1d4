"""The item feature layout: what a platform knows of an item, one named column per fact.

Observations carry one feature row per candidate and history item. Agents, RL features
and the shared platform (which rewrites the popularity column as live engagement moves)
read columns by name through `FeatureLayout`, so the layout can grow without anyone
decoding it with magic indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The scalar columns after the embedding, in order.
SCALAR_FEATURES = ("quality", "log_duration", "log_popularity")


@dataclass(frozen=True)
class FeatureLayout:
    """Columns of an item feature row: the embedding, then `SCALAR_FEATURES`."""

    embedding_dim: int

    @classmethod
    def from_width(cls, width: int) -> FeatureLayout:
        """The layout of feature rows `width` columns wide (an observation's last axis)."""
        if width < len(SCALAR_FEATURES):
            raise ValueError(f"item feature rows have {width} columns, fewer than the "
                             f"{len(SCALAR_FEATURES)} scalar features {SCALAR_FEATURES}")
        return cls(width - len(SCALAR_FEATURES))

    @property
    def width(self) -> int:
        return self.embedding_dim + len(SCALAR_FEATURES)

    @property
    def embedding(self) -> slice:
        return slice(0, self.embedding_dim)

    @property
    def scalars(self) -> slice:
        return slice(self.embedding_dim, self.width)

    def column(self, name: str) -> int:
        """Index of a scalar feature, e.g. `layout.column("log_popularity")`."""
        return self.embedding_dim + SCALAR_FEATURES.index(name)

    def build(
        self, embeddings: np.ndarray, quality: np.ndarray, duration_min: np.ndarray, popularity: np.ndarray
    ) -> np.ndarray:
        """(N, width) float32 feature rows, every column scaled into [-1, 1]."""
        dur = np.log1p(duration_min) / np.log1p(max(float(duration_min.max()), 1.0))
        return np.hstack(
            [embeddings, quality[:, None], dur[:, None], popularity_feature(popularity)[:, None]]
        ).astype(np.float32)


def embedding_part(features: np.ndarray) -> np.ndarray:
    """The embedding columns of feature rows, e.g. an observation's candidates or history."""
    return features[..., FeatureLayout.from_width(features.shape[-1]).embedding]


def scalar_feature(features: np.ndarray, name: str) -> np.ndarray:
    """One scalar column (see `SCALAR_FEATURES`) of feature rows, e.g. an observation's candidates."""
    return features[..., FeatureLayout.from_width(features.shape[-1]).column(name)]


def popularity_feature(popularity: np.ndarray) -> np.ndarray:
    """(N,) log popularity min-max scaled to [0, 1]: popularity spans orders of magnitude."""
    log_pop = np.log(np.asarray(popularity, dtype=np.float64) * len(popularity) + 1e-9)
    return (log_pop - log_pop.min()) / max(float(np.ptp(log_pop)), 1e-9)
