"""Compiled per-row steps of an instruction's ranking (`CandidateRetriever.rank`).

An instruction honours a few topics, so its ranking scores just the items it honours, not the whole
catalog. A score is the float64 dot product of the direction and an item's embedding as the BLAS
matrix product of a batch of directions computes it: a chain of fused multiply-adds over the
dimensions in order, from zero. Computed item by item that way, an item's score is the same to the
bit whichever other items and rows are scored with it, so a ranking depends on the ask alone (not on
the batch or the world it was made in), and it equals the entry of the whole catalog's product that
the rare row needing a ranking of the whole row reads.
"""

from __future__ import annotations

import numba
import numpy as np

from recoworld.envs.retrieval_kernels import fma

#: What `instruction_ranked` leaves to the caller for a row: nothing (its ranking is written), a tie across
#: the last place (the whole row's ranking settles which of the tied items make it), or a NaN score.
RANKED, TIED, UNORDERED = 0, 1, 2


@numba.njit(nogil=True, cache=True)
def _score_range(direction: np.ndarray, emb_t: np.ndarray, start: int, stop: int, out: np.ndarray) -> None:
    """out[start:stop] = the scores of the items at emb_t[:, start:stop]: per item, fused multiply-adds over the
    dimensions in order, from zero (dimension-major over contiguous items, so that the items' independent
    chains run side by side in vector registers)."""
    scores = out[start:stop]  # a slice's loops start at zero: no negative-index fix-ups, so they vectorize
    m = stop - start
    for i in range(m):
        scores[i] = 0.0
    for k in range(emb_t.shape[0]):
        dk = direction[k]
        row = emb_t[k, start:stop]
        for i in range(m):
            scores[i] = fma(dk, np.float64(row[i]), scores[i])


@numba.njit(nogil=True, cache=True)
def _select(values: np.ndarray, rank: int) -> float:
    """The rank-th largest of `values` (no NaN; 0 is the largest), which it reorders: Hoare's selection,
    a pivot of the middle of three, in place (numba's np.partition costs several times as much)."""
    low, high = 0, len(values) - 1
    while low < high:
        mid = (low + high) // 2
        a, b, c = values[low], values[mid], values[high]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = low, high
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if rank <= j:
            high = j
        elif rank >= i:
            low = i
        else:
            return values[rank]
    return values[rank]


@numba.njit(nogil=True, cache=True)
def instruction_scores(direction: np.ndarray, emb_t: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """(R, N) each row's scores of the whole catalog (as `instruction_ranked` scores an item), -inf where
    `excluded`: what the whole row's ranking reads."""
    r, n = excluded.shape
    out = np.empty((r, n))
    for j in range(r):
        _score_range(direction[j], emb_t, 0, n, out[j])
        for i in range(n):
            if excluded[j, i]:
                out[j, i] = -np.inf
    return out


@numba.njit(nogil=True, cache=True)
def instruction_ranked(direction: np.ndarray, topics: np.ndarray, high_quality: np.ndarray, by_topic: np.ndarray,
                       topic_start: np.ndarray, good: np.ndarray, emb_t: np.ndarray, blocked: np.ndarray,
                       out: np.ndarray, status: np.ndarray) -> None:
    """Per row j, out[j] = the depth (out's width) items that honour its instruction (on a topic `topics[j]`
    allows and, if `high_quality[j]`, of at least median quality), `blocked[j]` left out (no rows: nothing
    blocked), best score first and ties by index, -1 padded; and status[j] RANKED. A row whose depth-th
    and (depth + 1)-th best tie is left TIED (which of the tied items make the depth is the whole row's
    ranking's choice), and one with a NaN score UNORDERED.

    The catalog comes grouped by topic: `by_topic` its items by topic and then index, topic t's at
    [topic_start[t], topic_start[t + 1]), `good` whether each is of at least median quality and `emb_t`
    their embeddings dimension-major, so that an allowed topic's items are scored in one contiguous pass.
    Only the items ahead of the (depth + 1)-th best score are sorted (by score, then index): a row with
    fewer than depth of them has a tie across the last place."""
    r, n = len(high_quality), len(by_topic)
    depth = out.shape[1]
    keep = depth + 1
    scores = np.empty(n)
    honouring_score = np.empty(n)
    honouring_item = np.empty(n, dtype=np.int64)
    spare = np.empty(n)
    any_blocked = blocked.shape[0] > 0
    for j in range(r):
        quality = high_quality[j]
        m = 0
        unordered = False
        for topic in range(topics.shape[1]):
            if not topics[j, topic]:
                continue
            start, stop = topic_start[topic], topic_start[topic + 1]
            _score_range(direction[j], emb_t, start, stop, scores)
            for at in range(start, stop):
                item = by_topic[at]
                if (quality and not good[at]) or (any_blocked and blocked[j, item]):
                    continue
                s = scores[at]
                unordered |= s != s
                honouring_score[m] = s
                honouring_item[m] = item
                m += 1
        if unordered:
            status[j] = UNORDERED
            continue
        kept = m
        if m > keep:
            # The items ahead of the keep-th best score: fewer than depth where the depth-th best ties with it
            # (a tie across the last place), else exactly the depth best.
            spare[:m] = honouring_score[:m]
            least = _select(spare[:m], keep - 1)
            kept = 0
            for t in range(m):
                if honouring_score[t] > least:
                    honouring_score[kept] = honouring_score[t]
                    honouring_item[kept] = honouring_item[t]
                    kept += 1
            if kept < depth:
                status[j] = TIED
                continue
        for t in range(1, kept):  # by score, then index
            s, item = honouring_score[t], honouring_item[t]
            place = t
            while place > 0 and (honouring_score[place - 1] < s
                                 or (honouring_score[place - 1] == s and honouring_item[place - 1] > item)):
                honouring_score[place] = honouring_score[place - 1]
                honouring_item[place] = honouring_item[place - 1]
                place -= 1
            honouring_score[place] = s
            honouring_item[place] = item
        if m == keep and honouring_score[depth - 1] == honouring_score[depth]:
            status[j] = TIED
        else:
            status[j] = RANKED
            for t in range(depth):
                out[j, t] = honouring_item[t] if t < kept else -1


@numba.njit(nogil=True, cache=True)
def kept_rankings(active: np.ndarray, ranked: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(R, L) the kept ranking of each of `rows` whose instruction is in force (`active`), -1 for the rest:
    what the instruction block reads, in one pass (a gather of both and a select cost four times as much)."""
    out = np.empty((len(rows), ranked.shape[1]), dtype=np.int64)
    for j in range(len(rows)):
        row = rows[j]
        if active[row]:
            out[j] = ranked[row]
        else:
            out[j] = -1
    return out
