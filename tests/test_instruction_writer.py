"""The batched instruction writer against the diagnosis written out row by row with a Counter:
the same words, intents and draws, with ties among topics and empty memory slots anywhere."""

from __future__ import annotations

from collections import Counter

import numpy as np

from recoworld.catalog import Catalog
from recoworld.mindset import Instruction, Intent
from recoworld.simulators import InstructionWriter
from recoworld.simulators.instructions import _LOW_QUALITY, _NOT_ME, _SAMENESS, _TOO_MUCH


def _reference(writer: InstructionWriter, catalog: Catalog, memory: np.ndarray, favourites: list[str],
               interests: np.ndarray, novelty: float, rng: np.random.Generator) -> Instruction:
    recent = [i for i in memory.tolist() if i >= 0][-10:]
    topics = [catalog.topic_names[int(catalog.topic[i])] for i in recent]
    counts = Counter(topics)
    dominant, dom_n = counts.most_common(1)[0] if counts else (favourites[0], 0)
    share, fav_share = dom_n / max(len(topics), 1), sum(counts[t] for t in favourites) / max(len(topics), 1)
    quality = sum(float(catalog.quality[i]) for i in recent) / len(recent) if recent else 1.0
    f1 = favourites[0]
    f2 = favourites[1] if len(favourites) > 1 else writer._related(f1, interests, set())

    def said(templates: tuple[str, ...], kind: str, about: list[str], related: list[str],
             attributes: dict[str, str] | None = None, **words: str) -> Instruction:
        text = templates[int(rng.integers(len(templates)))].format(**words)
        return Instruction(text=text, intent=Intent(kind=kind, topics=about, related=related,
                                                    attributes=attributes or {}))

    if share >= 0.6 and len(topics) >= 3:
        r = writer._related(dominant, interests, exclude={dominant})
        templates = _SAMENESS if novelty > 0.6 and len(counts) <= 2 else _TOO_MUCH
        return said(templates, "different", [dominant], [r], d=dominant, r=r)
    if fav_share < 0.3:
        return said(_NOT_ME, "more", [f1, f2], [], f1=f1, f2=f2)
    if quality < 0.45:
        return said(_LOW_QUALITY, "less", [], [f1], {"quality": "high"}, f1=f1)
    r = writer._related(dominant, interests, exclude=set(counts))
    return said(_SAMENESS, "different", [dominant], [r], d=dominant, r=r)


def test_the_batched_writer_is_the_row_by_row_diagnosis(catalog: Catalog) -> None:
    rng = np.random.default_rng(0)
    writer = InstructionWriter(catalog)
    by_topic = [np.flatnonzero(catalog.topic == t) for t in range(catalog.n_topics)]
    s, m = 600, 30
    memory = np.full((s, m), -1, dtype=np.int64)
    for j in range(s):  # a few topics per user, so counts tie often; empty slots anywhere
        mix = rng.choice(catalog.n_topics, size=int(rng.integers(1, 4)), replace=False)
        for c in range(m - int(rng.integers(0, m + 1)), m):
            if rng.random() < 0.85:
                memory[j, c] = rng.choice(by_topic[int(rng.choice(mix))])
    favourites = [list(rng.choice(catalog.topic_names, size=int(rng.integers(1, 4)), replace=False))
                  for _ in range(s)]
    interests = rng.standard_normal((s, catalog.embedding_dim))
    novelty = rng.random(s)
    seeds = rng.integers(2**31, size=s).tolist()
    got = writer.write_many(memory, favourites, interests, novelty, [np.random.default_rng(x) for x in seeds])
    expected = [_reference(writer, catalog, memory[j], favourites[j], interests[j], float(novelty[j]),
                           np.random.default_rng(seeds[j])) for j in range(s)]
    assert [x.model_dump() for x in got] == [x.model_dump() for x in expected]
    assert {x.intent.kind for x in got} == {"more", "less", "different"}  # every branch is met
    one = writer.write(memory[5], favourites[5], interests[5], float(novelty[5]), np.random.default_rng(seeds[5]))
    assert one.model_dump() == expected[5].model_dump()


def test_the_writers_models_are_what_model_construct_builds() -> None:
    from recoworld.simulators.instructions import _said

    for args in (("t", "different", ["a"], ["b"]), ("u", "more", ["a", "b"], []),
                 ("v", "less", [], ["a"], {"quality": "high"})):
        fast = _said(*args)  # type: ignore[arg-type]
        text, kind, topics, related, *rest = args
        slow = Instruction.model_construct(text=text, intent=Intent.model_construct(
            kind=kind, topics=topics, related=related, attributes=rest[0] if rest else {}))
        for built, reference in ((fast, slow), (fast.intent, slow.intent)):
            assert type(built) is type(reference)
            assert built.__dict__ == reference.__dict__ and list(built.__dict__) == list(reference.__dict__)
            assert built.model_fields_set == reference.model_fields_set
            assert built.__pydantic_extra__ == reference.__pydantic_extra__
            assert built.__pydantic_private__ == reference.__pydantic_private__
        assert fast == slow and fast.model_dump() == slow.model_dump()
        assert fast.model_dump_json() == slow.model_dump_json()
        assert Instruction.model_validate(fast.model_dump()) == fast


def test_a_lone_unknown_favourite_is_refused_whatever_the_branch(catalog: Catalog) -> None:
    """A user whose only favourite is no topic of the catalog is refused as the related-topic look-up
    refuses it, even where the instruction would not name a related topic."""
    import pytest

    from recoworld.errors import UnknownTopicError

    writer = InstructionWriter(catalog)
    same = np.flatnonzero(catalog.topic == 0)[:10]  # ten items of one topic: "too much" of it
    with pytest.raises(UnknownTopicError):
        writer.write(same, ["no such topic"], np.ones(catalog.embedding_dim), 0.0, np.random.default_rng(0))
    said = writer.write(same, ["no such topic", catalog.topic_names[1]], np.ones(catalog.embedding_dim), 0.0,
                        np.random.default_rng(0))
    assert said.intent.kind == "different" and said.intent.topics == [catalog.topic_names[0]]
