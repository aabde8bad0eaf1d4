"""Reflective instructions written from a parametric user's state.

When satisfaction is sliding, the user says what would help, in words and in a
structured intent. The diagnosis mirrors what real users complain about: too much of
one topic, content that is not for them, low quality, or sameness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numba
import numpy as np

from recoworld.catalog import Catalog
from recoworld.catalog.catalog import CatalogCache
from recoworld.config import constructed
from recoworld.mindset import Instruction, Intent

_TOO_MUCH = (
    "Too much {d} lately; show me something different but related, like {r}.",
    "I've had my fill of {d} for now. Could you mix in some {r}?",
    "Enough {d} for today, maybe something like {r} instead.",
)
_NOT_ME = (
    "None of this is really me. Show me more {f1}, and maybe some {f2}.",
    "I'm not into most of this; I'd rather see {f1} or {f2}.",
)
_LOW_QUALITY = (
    "These feel low-effort. Fewer of those please, I want well-made {f1} videos.",
    "Less filler, more quality: the good {f1} creators, please.",
)
#: How many of the latest reviewed items a user's complaint is about.
_RECENT = 10

_SAMENESS = (
    "All this {d} looks the same. Surprise me with something new, like {r}.",
    "I'm bored of the usual {d}; show me something I haven't seen, maybe {r}.",
)


class InstructionWriter:
    """Writes parametric users' instructions. Runs for every user who speaks up (several percent
    of all turns), so a turn's speakers are diagnosed together in one compiled pass, and the (internally
    consistent) models are built without re-validating them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._names = list(catalog.topic_names)
        self._index = {name: t for t, name in enumerate(self._names)}
        self._topic_ids = catalog.topic.astype(np.int64)
        self._quality = catalog.quality.astype(np.float64)
        self._related_pool = [catalog.related_topics(t) for t in range(catalog.n_topics)]
        self._centroids = catalog.topic_centroids.astype(np.float64)
        names = self._names
        # `_related`'s pools for the two exclusions made most: none (a second favourite) and the topic itself.
        self._pools = [self._pool(t, set()) for t in range(catalog.n_topics)]
        self._pools_but_self = [self._pool(t, {names[t]}) for t in range(catalog.n_topics)]

    def _pool(self, t: int, exclude: set[str]) -> list[int]:
        """What `_related` picks from for topic t: its group's topics not excluded, else every topic not
        excluded but t."""
        names = self._names
        pool = [i for i in self._related_pool[t] if names[i] not in exclude]
        return pool or [i for i in range(self.catalog.n_topics) if names[i] not in exclude and i != t]

    def write(
        self,
        recent_items: np.ndarray,
        favourite_topics: list[str],
        interests: np.ndarray,
        novelty_propensity: float,
        rng: np.random.Generator,
    ) -> Instruction:
        """`recent_items` are catalog indices of the items reviewed lately, oldest first (-1: empty)."""
        return self.write_many(recent_items[None, :], [favourite_topics], interests[None, :],
                               np.array([novelty_propensity]), [rng])[0]

    def write_many(
        self,
        recent_items: np.ndarray,
        favourite_topics: Sequence[list[str]],
        interests: np.ndarray,
        novelty_propensity: np.ndarray,
        rngs: Sequence[np.random.Generator],
    ) -> list[Instruction]:
        """One instruction per row: row j's (M,) `recent_items` (oldest first, -1: empty), favourite
        topics, interests, novelty propensity and own generator. The diagnosis (what the latest ten
        items were about) is counted for all rows at once, and so is every row's affinity to each topic;
        the words are then chosen row by row, each working out only what its branch reads."""
        counts, dominant, n_recent, n_topics, dom_n, quality_sums = _diagnose(
            np.asarray(recent_items, dtype=np.int64), self._topic_ids, self._quality, len(self._names))
        # Row j's affinities are `centroids @ interests[j]`, one matrix-vector product a row (a stacked product
        # makes each slice's as the single one does, bit for bit; one product of the two matrices would not).
        affinities = (self._centroids[None] @ interests[:, :, None])[:, :, 0].tolist()
        names, index, pools, pools_but_self = self._names, self._index, self._pools, self._pools_but_self
        out = []
        for j, (n, favourites, rng, top_at, top_n, distinct, novelty, affinity, quality_sum) in enumerate(zip(
                n_recent.tolist(), favourite_topics, rngs, dominant.tolist(), dom_n.tolist(), n_topics.tolist(),
                novelty_propensity.tolist(), affinities, quality_sums.tolist())):
            f1 = favourites[0]
            if len(favourites) < 2 and f1 not in index:
                self.catalog.topic_index(f1)  # an unknown name: its error, as the related topic's look-up raises
            if n >= 3 and top_n / n >= 0.6:
                top = names[top_at]
                pool = pools_but_self[index[top]]  # `_related` excluding the topic itself
                r = self._closest(pool, affinity, top)
                templates = _SAMENESS if novelty > 0.6 and distinct <= 2 else _TOO_MUCH
                out.append(_said(templates[int(rng.integers(len(templates)))].format(d=top, r=r), "different",
                                 [top], [r]))
                continue
            topics_j: list[int] = counts[j].tolist() if n else []
            fav_share = sum(topics_j[index[t]] for t in favourites if t in index) / n if n else 0.0
            if fav_share < 0.3:
                if len(favourites) > 1:
                    f2 = favourites[1]
                else:  # `_related` excluding nothing
                    pool = pools[index[f1]]
                    f2 = self._closest(pool, affinity, f1)
                out.append(_said(_NOT_ME[int(rng.integers(len(_NOT_ME)))].format(f1=f1, f2=f2), "more", [f1, f2], []))
            elif quality_sum / n < 0.45:
                out.append(_said(_LOW_QUALITY[int(rng.integers(len(_LOW_QUALITY)))].format(f1=f1), "less", [],
                                 [f1], {"quality": "high"}))
            else:
                top = names[top_at]
                r = self._related(top, interests[j], exclude={names[t] for t, c in enumerate(topics_j) if c},
                                  affinity=affinity)
                out.append(_said(_SAMENESS[int(rng.integers(len(_SAMENESS)))].format(d=top, r=r), "different",
                                 [top], [r]))
        return out

    def _related(
        self, topic: str, interests: np.ndarray, exclude: set[str], affinity: list[float] | None = None,
    ) -> str:
        """The topic closest to the user's interests among the same group, else overall (`affinity`: the
        interests' product with every topic centroid, when already made)."""
        # an unknown name: its error
        t = self._index[topic] if topic in self._index else self.catalog.topic_index(topic)
        pool = self._pool(t, exclude)
        if pool and affinity is None:
            affinity = (self._centroids @ interests).tolist()  # every topic at once: cheaper than gathering the pool
        return self._closest(pool, affinity or [], topic)

    def _closest(self, pool: list[int], affinity: list[float], topic: str) -> str:
        """The topic of `pool` with the highest `affinity` (the first of equal ones, as argmax); `topic`
        when the pool is empty."""
        return self._names[max(pool, key=affinity.__getitem__)] if pool else topic


@numba.njit(nogil=True, cache=True)
def _diagnose(
    recent_items: np.ndarray, topic_ids: np.ndarray, quality: np.ndarray, n_topics: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of (S, M) recent items (oldest first, -1: empty), what its latest ten valid items were
    about: (S, T) counts per topic; the most common topic, of equal ones the one met first (oldest
    first, as Counter.most_common; 0 without items); how many items, topics and items of the most
    common topic; and their quality summed oldest first, one at a time (as Python's sum). A speaker's
    numpy diagnosis took a dozen passes with `np.add.at` in them, for a few dozen rows."""
    s, m = recent_items.shape
    counts = np.zeros((s, n_topics), dtype=np.int64)
    first = np.empty(n_topics, dtype=np.int64)
    dominant = np.zeros(s, dtype=np.int64)
    n_recent = np.zeros(s, dtype=np.int64)
    n_distinct = np.zeros(s, dtype=np.int64)
    dom_n = np.zeros(s, dtype=np.int64)
    quality_sum = np.zeros(s)
    for j in range(s):
        start = m  # the latest ten valid items are the valid ones from `start` on
        n = 0
        while start > 0 and n < _RECENT:
            start -= 1
            if recent_items[j, start] >= 0:
                n += 1
        first[:] = m
        total = 0.0
        began = False
        for c in range(start, m):
            item = recent_items[j, c]
            if item < 0:
                continue
            t = topic_ids[item]
            counts[j, t] += 1
            if first[t] == m:
                first[t] = c
            total = total + quality[item] if began else quality[item]
            began = True
        best = 0
        for t in range(n_topics):
            if counts[j, t] > 0:
                n_distinct[j] += 1
            if counts[j, t] * (m + 1) - first[t] > counts[j, best] * (m + 1) - first[best]:
                best = t
        dominant[j] = best
        n_recent[j] = n
        dom_n[j] = counts[j, best]
        quality_sum[j] = total
    return counts, dominant, n_recent, n_distinct, dom_n, quality_sum


def _said(text: str, kind: Literal["more", "less", "different"], topics: list[str], related: list[str],
          attributes: dict[str, str] | None = None) -> Instruction:
    """The instruction's models, built without re-validation: the writer's values are consistent."""
    intent = constructed(Intent, {"kind": kind, "topics": topics, "related": related, "attributes": attributes or {}},
                         {"kind", "topics", "related", "attributes"})
    return constructed(Instruction, {"text": text, "intent": intent}, {"text", "intent"})


def intent_key(intent: Intent) -> tuple[str, tuple[str, ...], tuple[str, ...], bool]:
    """What an intent asks for, hashable: two intents with one key honour and point alike."""
    return intent.kind, tuple(intent.topics), tuple(intent.related), wants_quality(intent)


def intent_direction(intent: Intent, catalog: Catalog) -> np.ndarray:
    """Where the intent points in embedding space: towards wanted topics, away from unwanted ones.

    Read-only and shared: an intent is a handful of topic names, so each distinct one is worked
    out once per catalog (a user's turn, the world and the observation all ask for it)."""
    return _INTENTS.get(catalog, ("direction", *intent_key(intent)), lambda: _frozen(_direction(intent, catalog)))


def _direction(intent: Intent, catalog: Catalog) -> np.ndarray:
    vec = np.zeros(catalog.embedding_dim, dtype=np.float64)
    towards = intent.topics if intent.kind == "more" else intent.related
    away = intent.topics if intent.kind in ("less", "different") else []
    for name in towards:
        vec += catalog.topic_centroids[catalog.topic_index(name)]
    for name in away:
        vec -= 0.5 * catalog.topic_centroids[catalog.topic_index(name)]
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm > 0 else vec).astype(np.float32)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


#: Per catalog, what each distinct intent means in it (`intent_direction`, `intent_topics`).
_INTENTS: CatalogCache[np.ndarray] = CatalogCache()


def intent_topics(intent: Intent, catalog: Catalog) -> np.ndarray:
    """(T,) bool: the topics an item may be on to honour the intent (read-only, shared per catalog).

    `more X`: X. `less`/`different X`: anything but X (a `less` with no topics but related ones:
    those). This is the one definition of honouring an intent: metrics score slates with it,
    and instruction-aware retrieval offers items that pass it.
    """
    return _INTENTS.get(catalog, ("topics", *intent_key(intent)), lambda: _frozen(_topics(intent, catalog)))


def _topics(intent: Intent, catalog: Catalog) -> np.ndarray:
    named = np.zeros(catalog.n_topics, dtype=bool)
    named[[catalog.topic_index(t) for t in intent.topics]] = True
    if intent.kind == "more":
        return named
    if intent.kind == "less" and not intent.topics and intent.related:
        related = np.zeros(catalog.n_topics, dtype=bool)
        related[[catalog.topic_index(t) for t in intent.related]] = True
        return related
    return ~named


def wants_quality(intent: Intent) -> bool:
    """The user asked for high quality: honouring items are also of at least median quality."""
    return intent.attributes.get("quality") == "high"

