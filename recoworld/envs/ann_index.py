"""The platform's approximate nearest-neighbour index over item embeddings (`retrieval.index`).

Production candidate generators find the items nearest a user vector in an ANN index rather
than scoring the whole catalog; `retrieval.index: ivf | hnsw` plays that with faiss, so a
world can show users the candidates such an index misses or adds. The index is built once per
world from the catalog's embeddings and searched by inner product, the similarity the exact
scan ranks by.

Two rules keep it inside the world core's contract (docs/architecture.md):

- Its random draws (k-means' start for 'ivf', the graph levels for 'hnsw') come from
  `retrieval.index_seed`, a part of the world like `catalog.seed`, not from a user's stream:
  every user of a world searches the same index, so user i of the vector env still reproduces
  `RecoWorld-v0` with seed + i.
- It runs on one thread and never switches to BLAS for a batch of queries: a query's answer
  is then the same alone or in a batch (faiss scores batches of 20 or more queries with a
  matrix product, whose rounding differs), and a graph built by one thread is the same graph
  every time. Parallelism belongs to the shards of a study, one world per core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from recoworld.config import RetrievalConfig
from recoworld.errors import ConfigError

#: faiss scores a batch of at least this many queries by a matrix product; never, here (see the module docstring).
_NO_BLAS = 2**31 - 1


class ItemIndex:
    """A faiss index of the catalog's item embeddings, searched for each row's nearest items."""

    def __init__(self, embeddings: np.ndarray, config: RetrievalConfig) -> None:
        import faiss  # a core dependency, imported only by worlds that ask for an index

        self._faiss: Any = faiss  # its stubs lack much of the SWIG API used here
        items = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = items.shape
        self.n_items = n
        index: Any
        with self._one_thread():
            if config.index == "ivf":
                nlist = config.nlist if config.nlist is not None else max(1, round(np.sqrt(n)))
                if nlist > n:
                    raise ConfigError(f"retrieval.nlist={nlist} exceeds the catalog's {n} items: k-means cannot "
                                      "make more cells than there are items")
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
                index.cp.seed = config.index_seed
                index.cp.min_points_per_centroid = 1  # the whole catalog trains it, however few items a cell gets
                index.train(items)
                index.nprobe = min(config.nprobe, nlist)
            elif config.index == "hnsw":
                index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.rng = self._faiss.RandomGenerator(config.index_seed)
                index.hnsw.efSearch = config.ef_search
            else:
                raise ConfigError(f"retrieval.index={config.index!r} has no ANN index; use 'ivf' or 'hnsw'")
            index.add(items)
        self._index = index

    def search(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """(R, depth) item indices nearest each query by inner product, best first, -1 where the
        index found fewer (an 'ivf' search sees only the items of the cells it probes)."""
        if not len(queries) or depth <= 0:
            return np.full((len(queries), max(depth, 0)), -1, dtype=np.int64)
        with self._one_thread():
            _, found = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), min(depth, self.n_items))
        out = np.full((len(queries), depth), -1, dtype=np.int64)
        out[:, : found.shape[1]] = found
        return out

    @contextmanager
    def _one_thread(self) -> Iterator[None]:
        """faiss on one thread and without BLAS batches for the duration (see the module docstring),
        then as the process had it."""
        faiss = self._faiss
        threads, blas = faiss.omp_get_max_threads(), faiss.cvar.distance_compute_blas_threshold
        faiss.omp_set_num_threads(1)
        faiss.cvar.distance_compute_blas_threshold = _NO_BLAS
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = blas
            faiss.omp_set_num_threads(threads)
