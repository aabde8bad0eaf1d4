"""The compiled common path of candidate retrieval (`recoworld.envs.retrieval`), one row at a time.

`compose` fills a row's candidates block by block (instruction, interest, popular, random)
with one scan per block, marking what is taken in a per-row stamp array instead of an
(R, N) mask. A block that meets a rare case stops its row there and says which block:
a kept ranking used up by blocked items, or draws that fall short of distinct free items.
The caller settles that block exactly (a ranking over the whole catalog, or an exact draw
from the row's own stream) and calls `compose` again from the next block. Rows never read
each other, so a row's candidates do not depend on the batch around it.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.extending import intrinsic

#: The blocks of a row's candidates, in order; a row's `stage` is the block it is at.
INSTRUCTION, INTEREST, POPULAR, RANDOM, DONE = 0, 1, 2, 3, 4


@numba.njit(nogil=True, cache=True)
def compose(
    todo: np.ndarray, out: np.ndarray, stage: np.ndarray, filled: np.ndarray, need: np.ndarray,
    n_instruction: np.ndarray, n_interest: np.ndarray, recent_blocked: np.ndarray, history_items: np.ndarray,
    unavailable: np.ndarray, instruction_ranked: np.ndarray, has_taste: np.ndarray, taste_ranked: np.ndarray,
    taste_rows: np.ndarray, draws: np.ndarray, pop_cdf: np.ndarray, pop_guide: np.ndarray, sizes: np.ndarray,
) -> None:
    """Continue the rows `todo` from their `stage`, writing `out[j, filled[j]:]`, until each is
    DONE or stops at a block the caller must settle (its stage stays at that block; a popular
    or random block leaves its size in `need[j]`).

    `unavailable` is (R, N), or (0, N) when every item can be offered. `instruction_ranked`
    rows of an inactive instruction hold -1 only. `sizes` packs the blocks' sizes: candidates,
    the largest instruction, interest and popular blocks, how many recent items to exclude,
    and where the popular draws end in `draws`."""
    n, n_instr_max, n_int_max, n_pop_base, exclude_recent, split = (
        sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], sizes[5])
    n_items = pop_cdf.shape[0]
    h = history_items.shape[1]
    stamp = np.zeros(n_items, dtype=np.int64)
    for tick in range(1, todo.shape[0] + 1):
        j = todo[tick - 1]
        n_unavailable = _mark_blocked(stamp, tick, j, out, filled, recent_blocked, history_items, unavailable,
                                      exclude_recent)
        if stage[j] == INSTRUCTION and exclude_recent:  # decided once, on the row's first pass
            shown = 0
            for c in range(max(h - exclude_recent, 0), h):
                shown += history_items[j, c] >= 0
            # Never block so much that too few items remain.
            recent_blocked[j] = n_items - n_unavailable - shown >= n
            if recent_blocked[j]:
                _mark_recent(stamp, tick, history_items[j], exclude_recent)
        if stage[j] == INSTRUCTION:
            ranked = instruction_ranked[j]
            found = _take_ranked(ranked, stamp, tick, out[j], filled[j], n_instr_max)
            if found < n_instr_max and ranked.shape[0] and ranked[-1] >= 0:
                continue  # used up by blocked items: the caller ranks the whole catalog
            n_instruction[j] = found
            filled[j] += found
            stage[j] = INTEREST
        if stage[j] == INTEREST:
            if has_taste[j] and n_int_max:
                ranked = taste_ranked[taste_rows[j]]
                found = _take_ranked(ranked, stamp, tick, out[j], filled[j], n_int_max)
                if found < n_int_max:
                    continue  # used up by blocked items: the caller scores the whole catalog
                n_interest[j] = n_int_max
                filled[j] += n_int_max
            else:
                n_interest[j] = 0
            stage[j] = POPULAR
        if stage[j] == POPULAR:
            need[j] = n_pop_base + (n_int_max - n_interest[j]) // 2
            at = filled[j]
            for d in range(split):
                if at == filled[j] + need[j]:
                    break
                u = draws[j, d]
                item = pop_guide[min(np.int64(u * n_items), n_items - 1)]
                while item < n_items - 1 and pop_cdf[item] <= u:  # searchsorted(cdf, u, "right")
                    item += 1
                if stamp[item] != tick:
                    stamp[item] = tick
                    out[j, at] = item
                    at += 1
            if at < filled[j] + need[j]:
                continue  # short: the caller draws this block exactly
            filled[j] = at
            stage[j] = RANDOM
        if stage[j] == RANDOM:
            need[j] = n - filled[j]
            at = filled[j]
            for d in range(split, draws.shape[1]):
                if at == n:
                    break
                item = min(np.int64(draws[j, d] * n_items), n_items - 1)
                if stamp[item] != tick:
                    stamp[item] = tick
                    out[j, at] = item
                    at += 1
            if at < n:
                continue
            filled[j] = at
            stage[j] = DONE


@numba.njit(nogil=True, cache=True)
def blocked_items(j: int, out: np.ndarray, filled: np.ndarray, recent_blocked: np.ndarray, history_items: np.ndarray,
                  unavailable: np.ndarray, exclude_recent: int, n_items: int) -> np.ndarray:
    """(N,) bool: what row j may not take any more, the same set `compose` works with."""
    stamp = np.zeros(n_items, dtype=np.int64)
    _mark_blocked(stamp, 1, j, out, filled, recent_blocked, history_items, unavailable, exclude_recent)
    return stamp == 1


@numba.njit(inline="always")
def _mark_blocked(stamp: np.ndarray, tick: int, j: int, out: np.ndarray, filled: np.ndarray,
                  recent_blocked: np.ndarray, history_items: np.ndarray, unavailable: np.ndarray,
                  exclude_recent: int) -> int:
    """Mark row j's blocked items with `tick`: unavailable ones, the recently shown (once the row
    decided to leave them out) and those taken so far; return how many are unavailable."""
    n_unavailable = 0
    if unavailable.shape[0]:
        for i in range(unavailable.shape[1]):
            if unavailable[j, i]:
                stamp[i] = tick
                n_unavailable += 1
    if recent_blocked[j]:
        _mark_recent(stamp, tick, history_items[j], exclude_recent)
    for c in range(filled[j]):
        stamp[out[j, c]] = tick
    return n_unavailable


@numba.njit(inline="always")
def _mark_recent(stamp: np.ndarray, tick: int, history: np.ndarray, exclude_recent: int) -> None:
    h = history.shape[0]
    for c in range(max(h - exclude_recent, 0), h):
        if history[c] >= 0:
            stamp[history[c]] = tick


@numba.njit(inline="always")
def _take_ranked(ranked: np.ndarray, stamp: np.ndarray, tick: int, row: np.ndarray, start: int, k: int) -> int:
    """Write the first `k` unblocked items of `ranked` (-1 = none) into `row[start:]`, block them,
    and return how many there were."""
    found = 0
    for item in ranked:
        if found == k:
            break
        if item >= 0 and stamp[item] != tick:
            stamp[item] = tick
            row[start + found] = item
            found += 1
    return found




@numba.njit(nogil=True, cache=True)
def at_least(scores: np.ndarray, stride: int, rank: int, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row j, the items scoring at least its threshold, the `rank`-th best of every `stride`-th
    item (-inf when the sample holds fewer finite scores), in index order, and their scores: (R, C)
    items and (R, C) scores, where C is the most any row holds (at most `cap`), and (R,) how many,
    or 0 for a row with more than `cap` or a threshold of -inf (a row's places past its own hold item
    0 at -inf).

    The sample's best are kept in a short sorted list; then one branch-free scan of the row writes
    every item to the row's next open place, which only an item that passes keeps.
    `retrieval._top_rows` sorts what it keeps."""
    r, n = scores.shape
    picked = np.empty((r, cap + 1), dtype=np.int64)  # the last column takes what overflows
    values = np.empty((r, cap + 1), dtype=scores.dtype)
    found = np.zeros(r, dtype=np.int64)
    best = np.empty(rank, dtype=scores.dtype)  # the sample's best so far, descending
    width = 0
    for j in range(r):
        row = scores[j]
        for c in range(rank):
            best[c] = -np.inf
        for c in range(0, n, stride):
            _keep_best(best, rank, row[c])
        threshold = best[rank - 1]
        if threshold == -np.inf:
            continue
        count = 0
        for i in range(n):
            at = min(count, cap)
            picked[j, at] = i
            values[j, at] = row[i]
            count += row[i] >= threshold
        found[j] = count if count <= cap else 0
        width = max(width, found[j])
    for j in range(r):
        for c in range(found[j], width):
            picked[j, c] = 0
            values[j, c] = -np.inf
    return picked[:, :width], values[:, :width], found


@numba.njit(nogil=True, cache=True)
def taste_queries(history_items: np.ndarray, positive: np.ndarray, embeddings: np.ndarray, latest: int) -> np.ndarray:
    """(R, D) each row's taste query: the sum of the embeddings of its `latest` most recent engaged
    items (`positive` marks them in the (R, H) history, oldest first), added oldest first.

    One pass per row instead of numpy's mask, cumulative sum and gather of all H items' float64
    embeddings; the sum is the same as summing over every position with weights 0 and 1."""
    r, h = history_items.shape
    d = embeddings.shape[1]
    out = np.zeros((r, d), dtype=np.float64)
    for j in range(r):
        start, count = h, 0
        for c in range(h - 1, -1, -1):
            if positive[j, c]:
                if count == latest:
                    break
                count += 1
                start = c
        for c in range(start, h):
            if positive[j, c]:
                item = history_items[j, c]
                for e in range(d):
                    out[j, e] += embeddings[item, e]
    return out


@numba.njit(nogil=True, cache=True)
def probed_items(cells: np.ndarray, offsets: np.ndarray, list_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, W) the items of each row's probed cells, cell by cell in probe order and in each cell's
    stored order (the order an 'ivf' search scans them), -1 padded, W the most any row holds, and
    (R,) how many. `cells` (R, P) are the probed cells (-1 = none); cell c holds
    `list_items[offsets[c]:offsets[c + 1]]`."""
    r, p = cells.shape
    count = np.zeros(r, dtype=np.int64)
    for j in range(r):
        for t in range(p):
            c = cells[j, t]
            if c >= 0:
                count[j] += offsets[c + 1] - offsets[c]
    width = 0
    for j in range(r):
        width = max(width, count[j])
    items = np.full((r, width), -1, dtype=np.int64)
    for j in range(r):
        at = 0
        for t in range(p):
            c = cells[j, t]
            if c >= 0:
                for s in range(offsets[c], offsets[c + 1]):
                    items[j, at] = list_items[s]
                    at += 1
    return items, count


#: How many equal parts `_top_row` cuts a row's range of scores into.
_BUCKETS = 128

#: The lowest float32, what faiss's heaps start filled with (`CMin::neutral`).
_LOWEST = np.float32(-3.4028234663852886e38)


@numba.njit(nogil=True, cache=True)
def top_scored(bits: np.ndarray, items: np.ndarray, count: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row j, what an 'ivf' search keeps of the items `items[j, :count[j]]` scanned in that order:
    the `k` best by float32 score, best first, -1 padded where it holds fewer; and (R,) bool: the
    row's k-th and (k + 1)-th best scores are equal, so which of the equal items the search keeps
    depends on its scan, or its scores are ones `_top_row` leaves to the heap (`heap_scanned` answers
    those rows). `bits` is the (R, W) float32 scores viewed as int32."""
    r, w = bits.shape
    out = np.full((r, k), -1, dtype=np.int64)
    tied = np.zeros(r, dtype=np.bool_)
    keys, kept, bucket = np.empty(w + 1, dtype=np.int64), np.empty(w + 1, dtype=np.int64), np.empty(w + 1, np.int64)
    hist = np.empty(2 * _BUCKETS, dtype=np.int64)
    for j in range(r):
        tied[j] = _top_row(bits[j], items[j], count[j], k, out[j], keys, kept, bucket, hist)
    return out, tied


@numba.njit(inline="always")
def _top_row(bits: np.ndarray, items: np.ndarray, n: int, k: int, out: np.ndarray, keys: np.ndarray,
             kept: np.ndarray, bucket: np.ndarray, hist: np.ndarray) -> bool:
    """`top_scored` of one row (`bits[:n]`, `items[:n]`) into `out` (-1 filled), with scratch `keys`,
    `kept`, `bucket` of n + 1 and `hist` of 2 * _BUCKETS; whether the row needs faiss's heap steps
    (`_heap_row`) instead: its k-th and (k + 1)-th best scores are equal, or its scores make no buckets.

    The search's heap keeps exactly the k best (an item is evicted only by a better one while k others
    at least as good are kept), and its final pops order them by score and then by item, both
    descending (`CMin::cmp2`), which is the order of the keys here: each score becomes an int64 key
    that sorts as the float does (-0.0 as 0.0), the item in the low bits. The scores' range is cut into
    _BUCKETS equal buckets (a bucket only grows with the score, and equal scores share one) and counted;
    the keys of the top buckets that hold the k + 1 best (about k + 4 keys) are placed bucket by bucket,
    best bucket first, in one branch-free scan, then put in order by insertion, which only moves a key
    within its bucket (a handful each): a twentieth of the compares of ordering a hundred keys by
    counting. A row whose range makes no buckets (one score, infinities, NaN) or that scores the lowest
    float, which a heap filled with it never takes, is left to the heap."""
    low = np.int64(0xFFFFFFFF)
    m = min(k + 1, n)
    if m == 0:
        return False
    floor = np.int64(2**31)
    ceiling = np.int64(-(2**31))
    for i in range(n):
        b = np.int64(bits[i])
        sign = b >> 31
        score_key = (b ^ (sign & 0x7FFFFFFF)) - sign  # negative floats order the other way round as ints; -0.0 is 0
        keys[i] = (score_key << 32) | items[i]
        floor = min(floor, score_key)
        ceiling = max(ceiling, score_key)
    lo, hi = _key_score(floor), _key_score(ceiling)
    scale = np.float32(_BUCKETS) / (hi - lo) if hi > lo else np.float32(0)
    if not (scale > 0 and scale < np.inf and lo > _LOWEST):
        return True  # one score, NaN, infinities, a range too narrow or too wide, or scores a heap never takes
    scores = bits.view(np.float32)
    for i in range(n):
        bucket[i] = min(np.int64((scores[i] - lo) * scale), _BUCKETS - 1)
    hist[:_BUCKETS] = 0
    for i in range(n):
        hist[bucket[i]] += 1
    place = hist[_BUCKETS:]  # where the next kept key of each bucket goes, the top bucket first
    cut, c = _BUCKETS - 1, hist[_BUCKETS - 1]
    place[cut] = 0
    while c < m:
        cut -= 1
        place[cut] = c
        c += hist[cut]
    for b in range(cut):
        place[b] = n  # the slot past every kept key, which the keys below the cut overwrite
    for i in range(n):
        b = bucket[i]
        to = place[b]
        kept[to] = keys[i]
        place[b] = to + (b >= cut)
    for i in range(1, c):  # insertion: the keys are in order but within a bucket, a few each
        key, at = kept[i], i
        while at > 0 and kept[at - 1] < key:
            kept[at] = kept[at - 1]
            at -= 1
        kept[at] = key
    for t in range(min(k, m)):
        out[t] = kept[t] & low
    return m == k + 1 and (kept[k - 1] >> 32) == (kept[k] >> 32)


@numba.njit(inline="always")
def _key_score(score_key: int) -> Any:
    """The float32 score whose `_top_row` key is `score_key` (0 as +0.0)."""
    b = score_key if score_key >= 0 else (score_key - 1) ^ 0x7FFFFFFF
    return np.int32(b).view(np.float32)


@numba.njit(nogil=True, cache=True)
def heap_scanned(scores: np.ndarray, items: np.ndarray, count: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) what faiss's 'ivf' search answers for rows `rows` of `top_scored`'s input, by its
    own steps (`_heap_row`). `ann_index` answers the rows with equal scores among their best this way,
    where the scan order decides which of the equal items are kept. `scores` are float32."""
    out = np.full((rows.shape[0], k), -1, dtype=np.int64)
    heap_val = np.empty(k + 1, dtype=np.float32)  # 1-based, as faiss's code
    heap_ids = np.empty(k + 1, dtype=np.int64)
    for t in range(rows.shape[0]):
        j = rows[t]
        _heap_row(scores[j], items[j], count[j], k, out[t], heap_val, heap_ids)
    return out


@numba.njit(inline="always")
def _heap_row(scores: np.ndarray, items: np.ndarray, n: int, k: int, out: np.ndarray, heap_val: np.ndarray,
              heap_ids: np.ndarray) -> None:
    """faiss's heap of the k best of `scores[:n]` (ids `items[:n]`) in scan order, into `out` (-1 filled;
    `heap_val`, `heap_ids`: k + 1 scratch): a min-heap of k (score, item) pairs ordered by score then
    item (`CMin::cmp2`), filled with (lowest float, -1); each scanned item whose score beats the heap's
    top strictly replaces it (`heap_replace_top`); then the heap is popped into best-first order
    (`heap_reorder`), -1 where it kept no item. The steps of faiss's 'ivf' scan and of its flat
    quantizer's search alike."""
    for i in range(1, k + 1):
        heap_val[i] = _LOWEST
        heap_ids[i] = -1
    for c in range(n):
        dis = scores[c]
        if heap_val[1] < dis:
            _heap_replace_top(heap_val, heap_ids, k, dis, items[c])
    # heap_reorder: pop the top (the worst) to the end, again and again
    ii = 0
    for i in range(k):
        val, ident = heap_val[1], heap_ids[1]
        _heap_pop(heap_val, heap_ids, k - i)
        heap_val[k - ii] = val
        heap_ids[k - ii] = ident
        if ident != -1:
            ii += 1
    for i in range(ii):
        out[i] = heap_ids[k - ii + 1 + i]


#: The embedding size `ivf_searched` scores: faiss's AVX-512 kernel at 32 dimensions (see its docstring).
IVF_DIM = 32


def _fma_typed(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """a * b + c rounded once, for three floats of one type: the fused multiply-add of the compiled kernels
    the scores repeat (faiss's float32 inner product here, the BLAS product's float64 one in
    `instruction_kernels`), which LLVM emits only when asked."""
    if not (isinstance(a, numba.types.Float) and a == b == c):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fma(*args)

    return a(a, b, c), codegen


fma: Any = intrinsic(_fma_typed)


@numba.njit(inline="always")
def _lane(q: np.ndarray, block: np.ndarray, at: int, width: int, lane: int, u: int) -> Any:
    """Lane `lane` of faiss's 16-float accumulator after 32 dimensions, for item u of a transposed block
    of `width` items at `block[at:]` (unsigned indices: no negative-index fix-up, which would keep
    LLVM from vectorizing over the items)."""
    first = q[lane] * block[np.uint64(at + lane * width + u)] + np.float32(0.0)
    return fma(q[lane + 16], block[np.uint64(at + (lane + 16) * width + u)], first)


@numba.njit(inline="always")
def _block_scores(q: np.ndarray, block: np.ndarray, at: int, width: int, out: np.ndarray, start: int) -> None:
    """`out[start:start + width]`: the float32 inner products of 32-dim `q` with the `width` items of the
    transposed block `block[at:at + 32 * width]` (dimension-major), bit for bit as faiss's AVX-512
    `fvec_inner_product` (one 16-float accumulator: the first 16 dimensions' products, then a fused
    multiply-add of the next 16; then halves added pairwise, 8, 4, 2, 1). Item-major over the items,
    so LLVM scores 16 items per vector instruction."""
    for u in range(width):
        out[np.uint64(start + u)] = (
            ((_lane(q, block, at, width, 0, u) + _lane(q, block, at, width, 8, u))
             + (_lane(q, block, at, width, 4, u) + _lane(q, block, at, width, 12, u)))
            + ((_lane(q, block, at, width, 2, u) + _lane(q, block, at, width, 10, u))
               + (_lane(q, block, at, width, 6, u) + _lane(q, block, at, width, 14, u)))
        ) + (
            ((_lane(q, block, at, width, 1, u) + _lane(q, block, at, width, 9, u))
             + (_lane(q, block, at, width, 5, u) + _lane(q, block, at, width, 13, u)))
            + ((_lane(q, block, at, width, 3, u) + _lane(q, block, at, width, 11, u))
               + (_lane(q, block, at, width, 7, u) + _lane(q, block, at, width, 15, u)))
        )


@numba.njit(nogil=True, cache=True)
def ivf_blocks(vectors: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`ivf_searched`'s layout of the (N, 32) float32 `vectors` in groups `offsets` (group c is
    `vectors[offsets[c]:offsets[c + 1]]`): each group transposed (dimension-major) and padded with zeros
    to a multiple of 16 items, one after the other; and (C + 1,) where each starts (then the end).
    A group's 32 rows lie within a few kilobytes: the rows of one catalog-wide transpose lie a
    multiple of 4 KiB apart for some catalog sizes, and then evict each other from the L1 cache."""
    groups = offsets.shape[0] - 1
    at = np.zeros(groups + 1, dtype=np.int64)
    for c in range(groups):
        at[c + 1] = at[c] + IVF_DIM * ((offsets[c + 1] - offsets[c] + 15) // 16 * 16)
    blocks = np.zeros(at[groups], dtype=np.float32)
    for c in range(groups):
        width = (at[c + 1] - at[c]) // IVF_DIM
        for u in range(offsets[c + 1] - offsets[c]):
            for e in range(IVF_DIM):
                blocks[at[c] + e * width + u] = vectors[offsets[c] + u, e]
    return blocks, at


@numba.njit(nogil=True, cache=True)
def ivf_scored(queries: np.ndarray, blocks: np.ndarray, block_at: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(R, N) every (R, 32) float32 query's scores of all the groups' vectors of `ivf_blocks` (group c's
    in columns `offsets[c]:offsets[c + 1]`), as `ivf_searched` scores a probed cell: what `ann_index`
    compares bit for bit with faiss's own kernel before it searches this way."""
    r, groups = queries.shape[0], offsets.shape[0] - 1
    out = np.empty((r, offsets[groups] + 16), dtype=np.float32)  # a group's scores end up to 15 past its items
    for j in range(r):
        for c in range(groups):
            _block_scores(queries[j], blocks, block_at[c], (block_at[c + 1] - block_at[c]) // IVF_DIM, out[j],
                          offsets[c])
    return out[:, : offsets[groups]]


@numba.njit(nogil=True, cache=True)
def ivf_searched(queries: np.ndarray, centroids: np.ndarray, nprobe: int, blocks: np.ndarray, block_at: np.ndarray,
                 offsets: np.ndarray, list_items: np.ndarray, k: int) -> np.ndarray:
    """(R, k) faiss's 'ivf' search of the (R, 32) float32 `queries` over an IndexIVFFlat by inner product,
    its whole answer in one pass a row (nothing (R, W) between steps): its flat quantizer's search
    (the scores of the `centroids`, `ivf_blocks` of one group, and the `nprobe` best), the probed
    cells' items scored in scan order (cell c's vectors are `blocks`'s group c, its items
    `list_items[offsets[c]:offsets[c + 1]]`), and the k best; both selections are faiss's heaps' (the
    quantizer's and the scan's, one kind), made by `_top_row`, or by the heap's steps (`_heap_row`)
    where `_top_row` leaves a row to them. Every score is computed
    as faiss's AVX-512 kernel computes it (`_block_scores`); `ann_index` checks that on this machine."""
    r = queries.shape[0]
    nlist = offsets.shape[0] - 1
    n_items = list_items.shape[0]
    out = np.full((r, k), -1, dtype=np.int64)
    centroid_scores = np.empty(centroids.shape[0] // IVF_DIM, dtype=np.float32)
    centroid_bits = centroid_scores.view(np.int32)
    cell_ids = np.arange(nlist)
    cells = np.empty(nprobe, dtype=np.int64)
    cell_val = np.empty(nprobe + 1, dtype=np.float32)
    cell_heap = np.empty(nprobe + 1, dtype=np.int64)
    scores = np.empty(n_items + 16, dtype=np.float32)  # a cell's scores, padded to 16, end up to 15 past the row
    bits = scores.view(np.int32)
    items = np.empty(n_items, dtype=np.int64)
    keys, kept, bucket = (np.empty(n_items + 1, dtype=np.int64), np.empty(n_items + 1, dtype=np.int64),
                          np.empty(n_items + 1, dtype=np.int64))
    hist = np.empty(2 * _BUCKETS, dtype=np.int64)
    heap_val = np.empty(k + 1, dtype=np.float32)
    heap_ids = np.empty(k + 1, dtype=np.int64)
    for j in range(r):
        q = queries[j]
        _block_scores(q, centroids, 0, centroid_scores.shape[0], centroid_scores, 0)
        cells[:] = -1
        if _top_row(centroid_bits, cell_ids, nlist, nprobe, cells, keys, kept, bucket, hist):
            cells[:] = -1
            _heap_row(centroid_scores, cell_ids, nlist, nprobe, cells, cell_val, cell_heap)
        n = 0
        for t in range(nprobe):
            c = cells[t]
            if c < 0:
                continue
            size = offsets[c + 1] - offsets[c]
            for u in range(size):
                items[n + u] = list_items[offsets[c] + u]
            _block_scores(q, blocks, block_at[c], (block_at[c + 1] - block_at[c]) // IVF_DIM, scores, n)
            n += size
        if _top_row(bits, items, n, k, out[j], keys, kept, bucket, hist):
            out[j, :] = -1
            _heap_row(scores, items, n, k, out[j], heap_val, heap_ids)
    return out


@numba.njit(inline="always")
def _keep_best(best: np.ndarray, rank: int, value: Any) -> None:
    """`value` into `best[:rank]`, kept in descending order, when it beats the last kept (insertion, for the
    few dozen a sample keeps)."""
    if value > best[rank - 1]:
        at = rank - 1
        while at > 0 and best[at - 1] < value:
            best[at] = best[at - 1]
            at -= 1
        best[at] = value


@numba.njit(inline="always")
def _cmp2(a1: float, b1: float, a2: int, b2: int) -> bool:
    return (a1 < b1) or ((a1 == b1) and (a2 < b2))


@numba.njit(inline="always")
def _heap_replace_top(val: np.ndarray, ids: np.ndarray, k: int, v: float, ident: int) -> None:
    i = 1
    while True:
        i1 = i << 1
        i2 = i1 + 1
        if i1 > k:
            break
        if i2 == k + 1 or _cmp2(val[i1], val[i2], ids[i1], ids[i2]):
            if _cmp2(v, val[i1], ident, ids[i1]):
                break
            val[i] = val[i1]
            ids[i] = ids[i1]
            i = i1
        else:
            if _cmp2(v, val[i2], ident, ids[i2]):
                break
            val[i] = val[i2]
            ids[i] = ids[i2]
            i = i2
    val[i] = v
    ids[i] = ident


@numba.njit(inline="always")
def _heap_pop(val: np.ndarray, ids: np.ndarray, k: int) -> None:
    """faiss's `heap_pop` of a heap of k: its loop is `heap_replace_top`'s with the last entry as the new one (the
    sift only writes parents, below k, so that entry stays where it is until the end)."""
    _heap_replace_top(val, ids, k, val[k], ids[k])
