"""The compiled steps of a world turn against their plain definitions, written out here with
lists and sets: the history a turn leaves, what it marks consumed and stale, the
instruction measures of a slate, and the observation gathered from the world's state."""

from __future__ import annotations

import numpy as np

from recoworld.catalog import Catalog
from recoworld.envs.observation import _LEVELS, build_observations, engagement_reward
from recoworld.envs.world_kernels import advance_clock, instruction_measures, pack_consumed, put_rows, record
from recoworld.mindset import UNSEEN


def _reviews(rng: np.random.Generator, r: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slates with reactions on a prefix (the user left somewhere, or stayed), UNSEEN after it."""
    slates = np.stack([rng.choice(n, k, replace=False) for _ in range(r)])
    reactions = np.full((r, k), UNSEEN, dtype=np.int8)
    for j in range(r):
        seen = int(rng.integers(0, k + 1))
        reactions[j, :seen] = rng.choice([0, 0, 0, 0, 1, 2, 3], seen)  # skips often: turns without engagement
    dwell = np.where(reactions != UNSEEN, rng.random((r, k)), 0.0).astype(np.float32)
    return slates, reactions, dwell


def test_record_appends_the_reviewed_prefix_and_marks_consumption_and_staleness() -> None:
    rng = np.random.default_rng(0)
    b, h, k, n = 12, 6, 8, 40  # a slate longer than the history: the window can move past all of it
    ids = np.full((b, h), -1, dtype=np.int64)
    reactions_h = np.full((b, h), UNSEEN, dtype=np.int64)
    dwell_h = np.zeros((b, h), dtype=np.float32)
    consumed = np.zeros((b, n), dtype=bool)
    bits = pack_consumed(consumed)
    fresh = np.ones(b, dtype=bool)
    for turn in range(30):
        rows = rng.permutation(b)[: int(rng.integers(1, b + 1))]  # any subset, in any order
        slates, reactions, dwell = _reviews(rng, len(rows), k, n)
        expected = {}
        for j, u in enumerate(rows.tolist()):
            seen = [i for i in range(k) if reactions[j, i] != UNSEEN]
            assert seen == list(range(len(seen)))
            items = ids[u].tolist() + slates[j, : len(seen)].tolist()
            said = reactions_h[u].tolist() + reactions[j, : len(seen)].tolist()
            minutes = dwell_h[u].tolist() + dwell[j, : len(seen)].tolist()
            engaged = {int(slates[j, i]) for i in seen if reactions[j, i] > 0}
            leaving = [said[c] for c in range(min(len(seen), h))]  # entries pushed out of the window
            expected[u] = (items[-h:], said[-h:], minutes[-h:], set(np.flatnonzero(consumed[u])) | engaged,
                           fresh[u] and not engaged and not any(x > 0 for x in leaving))
        record(rows, slates, reactions, dwell, ids, reactions_h, dwell_h, consumed, bits, fresh)
        assert np.array_equal(bits, pack_consumed(consumed))  # the packed copy kept in step
        for u, (items, said, minutes, eaten, still_fresh) in expected.items():
            assert ids[u].tolist() == items, (turn, u)
            assert reactions_h[u].tolist() == said
            assert dwell_h[u].tolist() == minutes
            assert set(np.flatnonzero(consumed[u]).tolist()) == eaten
            assert bool(fresh[u]) == still_fresh
        fresh[rng.random(b) < 0.5] = True  # retrieval re-ranks some users between turns


def test_instruction_measures_count_the_honouring_items_of_slate_and_candidates(catalog: Catalog) -> None:
    rng = np.random.default_rng(1)
    b, k, c, t = 10, 5, 20, catalog.n_topics
    active = rng.random(b) < 0.8
    topics = rng.random((b, t)) < 0.4
    high_quality = rng.random(b) < 0.5
    more = rng.random(b) < 0.5
    candidates = np.stack([rng.choice(len(catalog), c, replace=False) for _ in range(b)])
    rows = np.array([7, 2, 9, 0, 4])
    slates = np.stack([rng.choice(candidates[u], k, replace=False) for u in rows.tolist()])
    good = catalog.quality >= catalog.median_quality
    followed, satisfiable = instruction_measures(rows, slates, candidates, active, topics, high_quality, more,
                                                 catalog.topic.astype(np.int64), good)
    for j, u in enumerate(rows.tolist()):
        if not active[u]:
            assert np.isnan(followed[j]) and np.isnan(satisfiable[j])
            continue
        allowed = {x for x in range(t) if topics[u, x]}
        honours = {i for i in candidates[u].tolist()
                   if int(catalog.topic[i]) in allowed and (good[i] or not high_quality[u])}
        assert followed[j] == sum(i in honours for i in slates[j].tolist()) / k
        assert satisfiable[j] == float(len(honours) >= (1 if more[u] else k))


def test_observations_are_the_rows_of_the_worlds_state(catalog: Catalog) -> None:
    rng = np.random.default_rng(2)
    b, c, h, n = 6, 12, 8, len(catalog)
    features = catalog.item_features
    candidates = np.stack([rng.choice(n, c, replace=False) for _ in range(b)])
    consumed = rng.random((b, n)) < 0.3
    ids = np.where(rng.random((b, h)) < 0.3, -1, rng.integers(0, n, (b, h)))
    reactions = np.where(ids < 0, UNSEEN, rng.integers(0, 4, (b, h)))
    dwell = rng.random((b, h)).astype(np.float32)
    instruction = rng.random((b, 4 + catalog.embedding_dim)).astype(np.float32)
    clock = (rng.random(b) * 30, rng.integers(1, 9, b), rng.integers(0, 40, b), rng.random(b) * 3)
    rows = np.array([5, 1, 1, 3])
    obs = build_observations(features, rows, candidates, consumed, ids, reactions, dwell, instruction, clock)
    packed = build_observations(features, rows, candidates, pack_consumed(consumed), ids, reactions, dwell,
                                instruction, clock)
    assert all(np.array_equal(packed[key], obs[key]) for key in obs)  # the world's bit-packed copy reads alike
    for j, u in enumerate(rows.tolist()):
        assert obs["candidate_ids"][j].tolist() == candidates[u].tolist()
        assert np.array_equal(obs["candidate_features"][j], features[candidates[u]])
        assert obs["candidate_mask"][j].tolist() == [int(not consumed[u, i]) for i in candidates[u].tolist()]
        assert obs["history_ids"][j].tolist() == ids[u].tolist()
        for i, item in enumerate(ids[u].tolist()):  # padding (-1) shows zero features
            assert np.array_equal(obs["history_features"][j, i], features[item] if item >= 0 else np.zeros(
                features.shape[1], dtype=np.float32))
        assert obs["history_reactions"][j].tolist() == reactions[u].tolist()
        assert np.array_equal(obs["history_dwell"][j], dwell[u])
        assert np.array_equal(obs["instruction"][j], instruction[u])
        assert obs["context"][j].tolist() == [float(np.float32(x[u])) for x in clock]
    expected = {"candidate_ids": np.int64, "candidate_features": np.float32, "candidate_mask": np.int8,
                "history_ids": np.int64, "history_features": np.float32, "history_reactions": np.int64,
                "history_dwell": np.float32, "instruction": np.float32, "context": np.float32}
    assert {key: value.dtype.type for key, value in obs.items()} == expected
    obs["candidate_ids"][0, 0] = -5  # fresh arrays: editing an observation leaves the world alone
    assert candidates[5, 0] != -5


def test_a_batchs_engagement_is_each_rows_own() -> None:
    """A batch counts its reactions per level its own way (cheaper on many rows): the same rewards, bit for
    bit, as the (R, K, 3) count that a short batch and one slate take."""
    from recoworld.config import RewardConfig

    rng = np.random.default_rng(3)
    reward = RewardConfig(dwell=0.13, click=0.7, like=1.1, share=2.3)
    for dtype in (np.int8, np.int64):
        reactions = rng.integers(UNSEEN, 4, (300, 10)).astype(dtype)
        dwell = (rng.random((300, 10)) * 9).astype(np.float32)
        batched = engagement_reward(reward, reactions, dwell)
        assert batched.dtype == np.float64
        at_least = (reactions[..., None] >= _LEVELS).sum(axis=-2)
        weights = np.array([reward.click, reward.like, reward.share])
        assert batched.tolist() == (reward.dwell * dwell.sum(axis=-1).astype(np.float64) + at_least @ weights).tolist()


def test_the_clock_advances_the_acting_rows_as_numpy_did() -> None:
    """A turn's clock, against the numpy passes it replaces: the same times to the bit, counters, and
    returned columns that are copies (the world moves on after the turn)."""
    rng = np.random.default_rng(3)
    b = 9
    now, steps = rng.random(b) * 20, rng.integers(0, 50, b)
    turn, session = rng.integers(0, 9, b), rng.integers(1, 5, b)
    for _ in range(20):
        rows = rng.permutation(b)[: int(rng.integers(1, b + 1))]
        days = rng.random(len(rows)).astype(np.float32) * np.float32(3.7) / np.float32(1440.0)
        want_now, want_steps, want_turn = now.copy(), steps.copy(), turn.copy()
        want_steps[rows] += 1
        want_turn[rows] += 1
        want_now[rows] += days
        got = advance_clock(rows, days, now, steps, turn, session)
        want = (np.floor(want_now[rows]).astype(np.int64), session[rows], want_turn[rows], want_steps[rows],
                want_now[rows])
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and np.array_equal(g, w)
        assert np.array_equal(now, want_now) and np.array_equal(steps, want_steps) and np.array_equal(turn, want_turn)
        before = now.copy()
        got[4][:] = -1.0
        assert np.array_equal(now, before)


def test_put_rows_is_fancy_assignment_of_whole_rows() -> None:
    rng = np.random.default_rng(5)
    into = rng.integers(0, 100, (12, 7))
    for _ in range(10):
        rows = rng.permutation(12)[: int(rng.integers(0, 13))]
        values = rng.integers(0, 100, (len(rows), 7))
        want = into.copy()
        want[rows] = values
        put_rows(into, rows, values)
        assert np.array_equal(into, want)
