"""Reflective instructions written from a parametric user's state.

When satisfaction is sliding, the user says what would help, in words and in a
structured intent. The diagnosis mirrors what real users complain about: too much of
one topic, content that is not for them, low quality, or sameness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from recoworld.catalog import Catalog
from recoworld.catalog.catalog import CatalogCache
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
    of all turns), so a turn's speakers are diagnosed together in numpy, and the (internally
    consistent) models are built without re-validating them."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._names = list(catalog.topic_names)
        self._index = {name: t for t, name in enumerate(self._names)}
        self._topic_ids = catalog.topic.astype(np.int64)
        self._quality = catalog.quality.astype(np.float64)
        self._related_pool = [catalog.related_topics(t) for t in range(catalog.n_topics)]
        self._centroids = catalog.topic_centroids.astype(np.float64)

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
        items were about) is counted for all rows at once; the words are then chosen row by row."""
        s, m = recent_items.shape
        valid = recent_items >= 0
        # The latest ten valid items: those with at most ten valid items at or after them.
        recent = valid & (np.cumsum(valid[:, ::-1], axis=1)[:, ::-1] <= _RECENT)
        topic = np.where(recent, self._topic_ids[np.maximum(recent_items, 0)], -1)
        at, col = np.nonzero(recent)
        counts = np.zeros((s, len(self._names)), dtype=np.int64)
        np.add.at(counts, (at, topic[at, col]), 1)
        first = np.full((s, len(self._names)), m, dtype=np.int64)
        np.minimum.at(first, (at, topic[at, col]), col)
        # The most common topic, and of equal ones the one met first (oldest first), as Counter.most_common.
        dominant = np.argmax(counts * (m + 1) - first, axis=1).tolist()
        n_recent = recent.sum(axis=1).tolist()
        n_topics = np.count_nonzero(counts, axis=1).tolist()
        dom_n = counts.max(axis=1).tolist()
        # The recent items' quality summed oldest first, one at a time (a cumulative sum adds in order,
        # as Python's sum of floats does here; the 0.0 of other slots leaves a float sum as it is).
        quality_sum = np.cumsum(np.where(recent, self._quality[np.maximum(recent_items, 0)], 0.0), axis=1)[:, -1]
        quality_sum = quality_sum.tolist()
        out = []
        for j, (n, favourites) in enumerate(zip(n_recent, favourite_topics)):
            topics_j = counts[j]
            top = self._names[dominant[j]] if n else favourites[0]
            share = dom_n[j] / max(n, 1)
            fav_share = sum(int(topics_j[self._index[t]]) if t in self._index else 0 for t in favourites) / max(n, 1)
            quality = quality_sum[j] / n if n else 1.0
            f1 = favourites[0]
            f2 = favourites[1] if len(favourites) > 1 else self._related(f1, interests[j], set())
            rng = rngs[j]

            def pick(templates: tuple[str, ...], rng: np.random.Generator = rng, **kw: str) -> str:
                return templates[int(rng.integers(len(templates)))].format(**kw)

            if share >= 0.6 and n >= 3:
                r = self._related(top, interests[j], exclude={top})
                templates = _SAMENESS if novelty_propensity[j] > 0.6 and n_topics[j] <= 2 else _TOO_MUCH
                out.append(_said(pick(templates, d=top, r=r), "different", [top], [r]))
            elif fav_share < 0.3:
                out.append(_said(pick(_NOT_ME, f1=f1, f2=f2), "more", [f1, f2], []))
            elif quality < 0.45:
                out.append(_said(pick(_LOW_QUALITY, f1=f1), "less", [], [f1], {"quality": "high"}))
            else:
                seen = {self._names[t] for t in np.flatnonzero(topics_j).tolist()}
                r = self._related(top, interests[j], exclude=seen)
                out.append(_said(pick(_SAMENESS, d=top, r=r), "different", [top], [r]))
        return out

    def _related(self, topic: str, interests: np.ndarray, exclude: set[str]) -> str:
        """The topic closest to the user's interests among the same group, else overall."""
        cat, names = self.catalog, self._names
        t = self._index[topic] if topic in self._index else cat.topic_index(topic)  # an unknown name: its error
        pool = [i for i in self._related_pool[t] if names[i] not in exclude]
        if not pool:
            pool = [i for i in range(cat.n_topics) if names[i] not in exclude and i != t]
        if not pool:
            return topic
        affinity = (self._centroids @ interests).tolist()  # every topic at once: cheaper than gathering the pool
        return names[max(pool, key=affinity.__getitem__)]  # the first of equal ones, as argmax


def _said(text: str, kind: Literal["more", "less", "different"], topics: list[str], related: list[str],
          attributes: dict[str, str] | None = None) -> Instruction:
    """The instruction's models, built without re-validation: the writer's values are consistent."""
    return _constructed(Instruction, {"text": text, "intent": _constructed(Intent, {
        "kind": kind, "topics": topics, "related": related, "attributes": attributes or {}})})


_set = object.__setattr__
_M = TypeVar("_M", Intent, Instruction)


def _constructed(model: type[_M], fields: dict[str, Any]) -> _M:
    """What `model.model_construct(**fields)` builds when every field is given, at a third of its cost
    (it looks up each field's aliases and defaults; these two models have neither, nor extra fields,
    private attributes or a post-init, and `fields` come in their declared order)."""
    built = model.__new__(model)
    _set(built, "__dict__", fields)
    _set(built, "__pydantic_fields_set__", set(fields))
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


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

