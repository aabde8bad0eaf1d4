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

An 'ivf' search is answered here rather than by faiss's search, with the same answer in a fraction
of its time (issue 32). Where faiss scores with its AVX-512 kernel and the embeddings have 32
dimensions, one compiled pass a row does it all (`retrieval_kernels.ivf_searched`): the flat
quantizer's scores and heap pick the probed cells, their items are scored in scan order with faiss's
float32 inner product computed bit for bit as its kernel computes it (the same fused multiply-adds
and the same order of additions, 16 items at a time from a copy of each cell's vectors), and the
best are kept by a selection (`retrieval_kernels.top_scored`'s) instead of faiss's heap, which was
most of a search as deep as a taste ranking. Elsewhere faiss picks the probed cells
(`quantizer.search`) and scores their items with the very kernel its search scans with
(`fvec_inner_products_by_idx`), and the same selection keeps the best. The selection keeps exactly
the best, ordered by score and then by item, unless the last kept and the first left out score the
same (a sixth of the taste rankings hold equal scores, sums of a few items' embeddings tie often,
but rarely there): then which of the equal items are kept depends on the scan order, and the row
takes faiss's heap steps on the same scan (`retrieval_kernels.heap_scanned`). The index checks on
queries of its own that its answers are faiss's (`_scan_agrees`), the compiled pass first, whose
scores must also be faiss's kernel's to the last bit (`_scores_agree`), and asks faiss otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from recoworld.config import RetrievalConfig
from recoworld.envs.retrieval_kernels import (
    IVF_DIM,
    heap_scanned,
    ivf_blocks,
    ivf_scored,
    ivf_searched,
    probed_items,
    top_scored,
)
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
        self._items = items
        # An 'ivf' index's cells, for `_scan`: cell c holds `_cell_items[_cell_offsets[c]:_cell_offsets[c + 1]]`.
        self._cell_items: np.ndarray | None = None
        self._cell_offsets = np.zeros(1, dtype=np.int64)
        # ... and for `ivf_searched`, its centroids and cells' vectors as `ivf_blocks`.
        self._blocks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if config.index == "ivf":
            lists = index.invlists
            sizes = [lists.list_size(c) for c in range(index.nlist)]
            self._cell_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            self._cell_items = np.concatenate(
                [faiss.rev_swig_ptr(lists.get_ids(c), size).copy() if size else np.zeros(0, dtype=np.int64)
                 for c, size in enumerate(sizes)]).astype(np.int64)
            if d == IVF_DIM:
                centroids = np.ascontiguousarray(index.quantizer.reconstruct_n(0, index.nlist), dtype=np.float32)
                blocks, block_at = ivf_blocks(items[self._cell_items], self._cell_offsets)
                self._blocks = (ivf_blocks(centroids, np.array([0, index.nlist]))[0], blocks, block_at)
                if not (self._scores_agree(centroids) and self._scan_agrees()):
                    self._blocks = None
            if self._blocks is None and not self._scan_agrees():
                self._cell_items = None

    def search(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """(R, depth) item indices nearest each query by inner product, best first, -1 where the
        index found fewer (an 'ivf' search sees only the items of the cells it probes)."""
        if not len(queries) or depth <= 0:
            return np.full((len(queries), max(depth, 0)), -1, dtype=np.int64)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        return self._faiss_search(q, depth) if self._cell_items is None else self._scan(q, depth)

    def _faiss_search(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """`search` by faiss's own search of float32 `queries`."""
        with self._one_thread():
            _, found = self._index.search(queries, min(depth, self.n_items))
        out = np.full((len(queries), depth), -1, dtype=np.int64)
        out[:, : found.shape[1]] = found
        return out

    def _scan(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """`search` of an 'ivf' index as its search scans, the best kept without a heap (see the module
        docstring); rows with equal scores across the last place kept by faiss's heap steps."""
        assert self._cell_items is not None
        if self._blocks is not None:
            centroids, blocks, block_at = self._blocks
            return ivf_searched(queries, centroids, self._index.nprobe, blocks, block_at, self._cell_offsets,
                                self._cell_items, depth)
        faiss = self._faiss
        with self._one_thread():
            _, cells = self._index.quantizer.search(queries, self._index.nprobe)
            items, count = probed_items(cells, self._cell_offsets, self._cell_items)
            scores = np.empty(items.shape, dtype=np.float32)
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(scores), faiss.swig_ptr(queries),
                                             faiss.swig_ptr(self._items), faiss.swig_ptr(items),
                                             queries.shape[1], len(queries), items.shape[1])
        out, tied = top_scored(scores.view(np.int32), items, count, depth)
        if tied.any():  # equal scores across the last place kept: faiss's heap steps, on the same scan
            rows = np.flatnonzero(tied)
            out[rows, : min(depth, self.n_items)] = heap_scanned(scores, items, count, rows, min(depth, self.n_items))
        return out

    def _scores_agree(self, centroids: np.ndarray) -> bool:
        """Whether `ivf_searched`'s float32 scores are faiss's own, bit for bit, for every item and every
        centroid on queries like a taste's: its kernel repeats one faiss build's order of additions
        (AVX-512), and another build's rounding differs in the last bit, which changes a ranking too
        rarely for `_scan_agrees`'s answers to be sure to show it."""
        assert self._blocks is not None and self._cell_items is not None
        faiss = self._faiss
        queries = self._check_queries()
        nlist = len(centroids)
        scored = (ivf_scored(queries, self._blocks[1], self._blocks[2], self._cell_offsets),
                  ivf_scored(queries, self._blocks[0], np.array([0, len(self._blocks[0])]), np.array([0, nlist])))
        for vectors, ids, mine in ((self._items, self._cell_items, scored[0]),
                                   (centroids, np.arange(nlist, dtype=np.int64), scored[1])):
            ids = np.ascontiguousarray(np.broadcast_to(ids, (len(queries), len(ids))))
            theirs = np.empty(ids.shape, dtype=np.float32)
            with self._one_thread():
                faiss.fvec_inner_products_by_idx(faiss.swig_ptr(theirs), faiss.swig_ptr(queries),
                                                 faiss.swig_ptr(vectors), faiss.swig_ptr(ids), queries.shape[1],
                                                 len(queries), ids.shape[1])
            if not np.array_equal(mine.view(np.int32), theirs.view(np.int32)):
                return False
        return True

    def _check_queries(self) -> np.ndarray:
        """(256, D) float32 queries like a taste's (sums of 1 to 10 items), the same every time."""
        rng = np.random.default_rng(0)
        n, d = self._items.shape
        queries = np.zeros((256, d), dtype=np.float64)
        for j, size in enumerate(rng.integers(1, 11, len(queries)).tolist()):
            queries[j] = self._items[rng.integers(n, size=size)].astype(np.float64).sum(axis=0)
        return np.ascontiguousarray(queries, dtype=np.float32)

    def _scan_agrees(self) -> bool:
        """Whether `_scan` answers as faiss's search on queries like a taste's (sums of 1 to 10 items),
        at a few depths: both score with one kernel, so they agree unless a faiss build scans otherwise."""
        q = self._check_queries()
        return all(np.array_equal(self._scan(q, depth), self._faiss_search(q, depth)) for depth in (1, 20, 100))

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
