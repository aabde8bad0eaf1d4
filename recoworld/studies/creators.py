"""A creator's new items: generated in the catalog's own embedding space and appended to it.

New items are built the way the synthetic generator builds items (a subtopic centre,
plus the creator's style, plus item noise), so they compete with existing items on
equal terms. They are appended after the existing items, so both arms of a creator
study share one index space; the arm without the content just never publishes them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from recoworld.catalog import Catalog, unit_rows
from recoworld.errors import ConfigError
from recoworld.population import UserProfile
from recoworld.studies.spec import CreatorSpec


@dataclass(frozen=True)
class Publication:
    catalog: Catalog  # the original items followed by the creator's
    new_items: np.ndarray  # (M,) indices of the creator's items
    release_day: np.ndarray  # (M,) day each one goes live
    topic: str


def target_topic(creator: CreatorSpec, catalog: Catalog, profiles: list[UserProfile]) -> str:
    """The spec's topic, or the topic the target segment cares about most (summed interest)."""
    if creator.items.topic is not None:
        catalog.topic_index(creator.items.topic)  # raises KeyError naming the known topics
        return creator.items.topic
    weight: Counter[str] = Counter()
    for p in profiles:
        if p.segment == creator.target_segment:
            weight.update(p.topic_interests)
    if not weight:
        raise ConfigError(f"creator.target_segment {creator.target_segment!r} has no users; cannot pick a topic")
    return max(sorted(weight), key=lambda t: weight[t])


def publish(
    creator: CreatorSpec, catalog: Catalog, profiles: list[UserProfile], rng: np.random.Generator
) -> Publication:
    """Append the creator's items to `catalog`; every draw comes from `rng`."""
    spec = creator.items
    try:
        topic = target_topic(creator, catalog, profiles)
        t = catalog.topic_index(topic)
    except KeyError as err:
        raise ConfigError(f"creator.items.topic: {err.args[0]}") from None
    subtopics = np.unique(catalog.subtopic[catalog.topic == t])
    if not len(subtopics):
        raise ConfigError(f"creator.items.topic {topic!r} has no items in the catalog to place new ones near")
    m = spec.count
    sub = subtopics[rng.integers(len(subtopics), size=m)]
    centres = np.stack([catalog.embeddings[catalog.subtopic == s].mean(axis=0) for s in subtopics])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    centre = centres[np.searchsorted(subtopics, sub)]
    style = unit_rows(rng.normal(size=catalog.embedding_dim))
    emb = unit_rows(centre + 0.25 * style + 0.35 * unit_rows(rng.normal(size=(m, catalog.embedding_dim))))
    quality = np.clip(spec.quality.sample(rng, m), 0.0, 1.0)
    duration = np.maximum(spec.duration_min.sample(rng, m), 0.25)
    release = np.maximum(spec.release_day.sample(rng, m), 0.0)
    slug = re.sub(r"[^a-z0-9]+", "_", creator.name.lower()).strip("_") or "creator"
    names = [catalog.subtopic_names[s] for s in sub]
    extended = catalog.append_items(
        item_ids=[f"{slug}_{i:05d}" for i in range(m)],
        titles=[f"{creator.name}: {name.title()} #{i + 1}" for i, name in enumerate(names)],
        descriptions=[
            f"A {d:.0f}-minute piece on {name} ({topic}). By {creator.name}." for d, name in zip(duration, names)
        ],
        topic=np.full(m, t),
        subtopic=sub,
        creator=creator.name,
        quality=quality,
        duration_min=duration,
        popularity=np.full(m, spec.popularity * float(np.median(catalog.popularity))),
        embeddings=emb,
    )
    return Publication(extended, np.arange(len(catalog), len(catalog) + m), release, topic)
