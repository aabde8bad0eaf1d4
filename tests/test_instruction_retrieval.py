"""Instruction-aware retrieval: the platform can satisfy what a user asks, and says whether it could."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from recoworld.catalog import Catalog
from recoworld.config import RetrievalConfig
from recoworld.envs import RecoWorldEnv, RecoWorldVectorEnv
from recoworld.mindset import Instruction, Intent
from recoworld.simulators.scripted import Script, ScriptedUsers
from recoworld.streams import UserStreams

WORLD: dict[str, Any] = {"slate_size": 5, "n_candidates": 30, "horizon_days": 5}


def _asking(catalog: Catalog, intent: Intent, **world: Any) -> RecoWorldEnv:
    """A user who says `intent` on turn 1, skips everything and leaves after three turns."""
    script = Script(instruct_on_turns={1: Instruction(text="show me something else", intent=intent)},
                    leave_after_turns=3, return_gaps=[0.5])
    return RecoWorldEnv({**WORLD, **world}, catalog=catalog, user_simulator=ScriptedUsers(catalog, script))


def _rare_topic(catalog: Catalog) -> str:
    """The topic with the fewest items (but enough for a block): retrieval rarely offers it by chance."""
    counts = np.bincount(catalog.topic, minlength=catalog.n_topics).astype(float)
    counts[counts < 10] = np.inf
    return catalog.topic_names[int(np.argmin(counts))]


def test_more_of_a_topic_is_offered_from_the_whole_catalog(catalog: Catalog) -> None:
    topic = _rare_topic(catalog)
    env = _asking(catalog, Intent(kind="more", topics=[topic]))
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(np.arange(5))
    assert info["instruction"] == "show me something else"
    assert info["instruction_satisfiable"] is None  # nothing was in force when this slate was chosen
    obs, _, _, _, info = env.step(np.arange(5))  # the instruction block leads the candidates
    block = round(0.2 * 30)
    on_topic = catalog.topic[obs["candidate_ids"]] == catalog.topic_index(topic)
    assert on_topic[:block].all()
    assert info["instruction_satisfiable"] is True
    assert info["instruction_followed"] == pytest.approx(on_topic[:5].mean())
    # The block is gone with the session: instructions are about the session they were given in.
    for _ in range(3):
        obs, _, _, _, info = env.step(np.arange(5))
        if info["session"] == 2:
            break
    assert info["instruction_followed"] is None and info["instruction_satisfiable"] is None


def test_without_the_block_a_rare_topic_is_often_unsatisfiable(catalog: Catalog) -> None:
    topic = _rare_topic(catalog)
    satisfiable = {}
    for share in (0.0, 0.2):
        env = _asking(catalog, Intent(kind="more", topics=[topic]), retrieval={"instruction_share": share})
        seen = []
        for seed in range(20):
            env.reset(seed=seed)
            env.step(np.arange(5))
            seen.append(env.step(np.arange(5))[4]["instruction_satisfiable"])
        satisfiable[share] = np.mean(seen)
    assert satisfiable[0.2] == 1.0
    assert satisfiable[0.0] < 0.8


def test_less_of_a_topic_keeps_it_out_of_the_block(catalog: Catalog) -> None:
    topic = catalog.topic_names[int(catalog.topic[0])]
    env = _asking(catalog, Intent(kind="less", topics=[topic], attributes={"quality": "high"}))
    env.reset(seed=3)
    env.step(np.arange(5))
    obs, _, _, _, info = env.step(np.arange(5))
    block = obs["candidate_ids"][: round(0.2 * 30)]
    assert (catalog.topic[block] != catalog.topic_index(topic)).all()
    assert (catalog.quality[block] >= np.median(catalog.quality)).all()
    assert info["instruction_satisfiable"] is True  # a whole slate of other topics is on offer


def test_the_instruction_following_reward_term(catalog: Catalog) -> None:
    topic = _rare_topic(catalog)
    rewards = []
    for weight in (0.0, 4.0):
        env = _asking(catalog, Intent(kind="more", topics=[topic]), reward={"instruction_following": weight})
        env.reset(seed=1)
        env.step(np.arange(5))
        _, reward, _, _, info = env.step(np.arange(5))  # shows the block: all on the asked topic
        rewards.append((reward, info["instruction_followed"]))
    (plain, followed), (paid, _) = rewards
    assert followed == 1.0 and paid == pytest.approx(plain + 4.0)


def test_the_vector_env_reports_the_measures_with_masks(catalog: Catalog) -> None:
    env = RecoWorldVectorEnv(2, WORLD, catalog=catalog)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.tile(np.arange(5), (2, 1)))
    assert info["instruction_followed"].shape == (2,) and info["_instruction_followed"].all()


def test_shares_that_do_not_fit_name_the_fields() -> None:
    with pytest.raises(ValidationError, match="interest_share \\+ popular_share \\+ instruction_share"):
        RetrievalConfig(interest_share=0.5, popular_share=0.25, instruction_share=0.3)
    with pytest.raises(ValidationError, match="instruction_share"):
        RetrievalConfig(instruction_share=-0.1)


def test_the_kept_ranking_gives_the_block_a_full_ranking_would(catalog: Catalog) -> None:
    """The instruction block reads a ranking computed once per instruction; whatever is blocked
    (recent items, unpublished ones), it equals ranking the whole catalog again."""
    env = RecoWorldEnv(WORLD, catalog=catalog)
    world, retriever = env.world, env.world.retriever
    block = round(0.2 * 30)
    no_history = np.full((1, 20), -1, dtype=np.int64)
    rng = np.random.default_rng(0)
    for intent in (Intent(kind="more", topics=[_rare_topic(catalog)]),
                   Intent(kind="different", topics=[catalog.topic_names[0]], related=[catalog.topic_names[1]]),
                   Intent(kind="less", topics=[catalog.topic_names[2]], attributes={"quality": "high"})):
        world.listen(np.zeros(1, dtype=np.int64), [Instruction(text="x", intent=intent)])
        asked = world.asked.subset(np.array([0]))
        kept_items = asked.ranked[0][asked.ranked[0] >= 0]
        for share, use_up in ((0.0, False), (0.05, False), (0.05, True)):
            unpublished = rng.random((1, len(catalog))) < share
            if use_up:  # every kept item is unpublished: the block must come from a new ranking
                unpublished[0, kept_items] = True
            candidates = retriever.retrieve(no_history, no_history, UserStreams([np.random.default_rng(1)]),
                                            np.zeros(1, dtype=np.int64), unpublished, asked)
            expected = retriever.rank(asked, block, unpublished)[0]
            expected = expected[expected >= 0]  # a rare topic may have fewer items left than the block
            assert np.array_equal(candidates[0, : len(expected)], expected)
            if intent.kind != "more":
                assert len(expected) == block


@pytest.mark.parametrize("channel", ["structured", "text"])
def test_listening_rows_take_what_each_ask_means(catalog: Catalog, channel: str) -> None:
    """The world keeps what each ask means in a table, row per ask: through the table's growth and its
    clearing (after 4,096 asks) every listening row holds what its own instruction asks for."""
    from recoworld.envs.observation import instruction_vector
    from recoworld.simulators.instructions import intent_direction, intent_key, intent_topics, wants_quality

    env = RecoWorldVectorEnv(3, {**WORLD, "instruction_channel": channel}, catalog=catalog)
    env.reset(seed=0)
    world, rng, names = env.world, np.random.default_rng(0), catalog.topic_names
    keys: set[object] = set()
    while len(keys) < 4_200:
        rows = rng.permutation(3)[: int(rng.integers(1, 4))]
        said = []
        for _ in rows:
            topics = [str(t) for t in rng.choice(names, int(rng.integers(1, 6)))]
            kind = str(rng.choice(["more", "less", "different"]))
            attributes = {"quality": "high"} if rng.random() < 0.3 else {}
            intent = Intent(kind=kind, topics=topics, related=topics[:1], attributes=attributes)  # type: ignore[arg-type]
            said.append(Instruction(text=" ".join(topics[:2]), intent=intent))
            keys.add(intent_key(intent))
        world.listen(rows, said)
        for row, instruction in zip(rows.tolist(), said):
            intent = instruction.intent
            if channel == "structured":
                assert np.array_equal(world.instruction[row], instruction_vector(instruction, catalog))
            else:
                assert world.instruction[row, :4].tolist() == [1.0, 0.0, 0.0, 0.0]
            assert np.array_equal(world.asked.topics[row], intent_topics(intent, catalog))
            assert world.asked.high_quality[row] == wants_quality(intent)
            assert np.array_equal(world.asked.direction[row], intent_direction(intent, catalog))
            assert world.asked_more[row] == (intent.kind == "more") and world.asked.active[row]
    assert len(world._asks) <= 4_096 < len(keys)  # the table was cleared on the way


def test_asks_that_share_a_ranking_key_rank_alike(catalog: Catalog) -> None:
    """`ranking_key` lets "more X, Y" and "more Y, X" (whatever they relate to) share a kept ranking: their
    rankings are the same to the bit, for every pair of topics, with and without asking for quality."""
    from recoworld.envs.retrieval import InstructionTargets
    from recoworld.envs.world import ranking_key
    from recoworld.simulators.instructions import intent_direction, intent_key, intent_topics, wants_quality

    env = RecoWorldEnv(WORLD, catalog=catalog)
    retriever, names = env.world.retriever, catalog.topic_names
    pairs = [(a, b) for a in names for b in names if a < b]
    for quality in ({}, {"quality": "high"}):
        asks = [Intent(kind="more", topics=[a, b], related=[a][: i % 2], attributes=quality)
                for i, pair in enumerate(pairs) for a, b in (pair, pair[::-1])]
        assert all(ranking_key(intent_key(x)) == ranking_key(intent_key(y)) for x, y in zip(asks[::2], asks[1::2]))
        targets = InstructionTargets(np.ones(len(asks), dtype=bool),
                                     np.stack([intent_topics(x, catalog) for x in asks]),
                                     np.array([wants_quality(x) for x in asks]),
                                     np.stack([intent_direction(x, catalog) for x in asks]).astype(np.float64),
                                     np.zeros((len(asks), 1), dtype=np.int64))
        ranked = retriever.rank(targets)
        assert np.array_equal(ranked[::2], ranked[1::2])
    assert ranking_key(("more", ("a", "b", "c"), (), False)) != ranking_key(("more", ("b", "a", "c"), (), False))
    assert ranking_key(("different", ("a",), ("b",), False)) == ("different", ("a",), ("b",), False)
