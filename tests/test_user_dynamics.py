"""The parametric user's dynamics: the behaviours a retention-aware recommender must learn from."""

from __future__ import annotations

import numpy as np
import pytest

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig, ChoiceConfig, DynamicsConfig, ReturnConfig
from recoworld.mindset import UNSEEN, Mindset
from recoworld.population import UserProfile
from recoworld.simulators import ParametricUsers
from recoworld.simulators.parametric import _recurrence
from recoworld.simulators.return_gap import ReturnGapModel
from recoworld.streams import UserStreams

N_USERS = 300


def _profiles(catalog: Catalog, n: int) -> list[UserProfile]:
    """Patient users (40 unengaging items): with clicks on a few percent of impressions an
    impatient user leaves both feeds within three turns, before repetition can show."""
    topics = catalog.topic_names
    return [
        UserProfile(user_id=f"u{i}", segment="test", persona="a test user", attributes={},
                    topic_interests={topics[0]: 0.5, topics[1]: 0.3, topics[2]: 0.2}, novelty_trait=0.5,
                    patience=40, time_budget_min=60.0, return_propensity=0.6)
        for i in range(n)
    ]


def _repetitive_slates(catalog: Catalog, k: int) -> np.ndarray:
    """The k items most similar to one item of the user's favourite topic: over-exploitation."""
    anchor = int(np.flatnonzero(catalog.topic == 0)[0])
    return np.argsort(-(catalog.embeddings @ catalog.embeddings[anchor]))[:k]


def _diverse_slate(catalog: Catalog, k: int, rng: np.random.Generator) -> np.ndarray:
    """Relevant (favourite topics) but spread over subtopics and creators."""
    pool = np.flatnonzero(np.isin(catalog.topic, [0, 1, 2]))
    return rng.choice(pool, size=k, replace=False)


def _streams(seed: int, n: int) -> UserStreams:
    return UserStreams.spawn(np.random.default_rng(seed), n)


def _run_session(users: ParametricUsers, slate_fn, rng: UserStreams, max_turns: int = 30) -> dict:
    n = len(users.profiles)
    users.start_sessions(np.arange(n), np.zeros(n), rng)
    active = np.ones(n, dtype=bool)
    turns = np.zeros(n)
    instructed = np.zeros(n, dtype=bool)
    instructed_early = None
    first_fatigue = None
    for turn in range(max_turns):
        slates = np.stack([slate_fn() for _ in range(n)])
        fb = users.review(slates, rng)
        if first_fatigue is None:
            first_fatigue = users.fatigue.copy()
        turns += active
        instructed |= active & np.array([i is not None for i in fb.instructions])
        if turn == 2:
            instructed_early = instructed.copy()
        active &= ~fb.left
        if not active.any():
            break
    return {"turns": turns, "instructed_early": instructed_early, "first_fatigue": first_fatigue,
            "satisfaction": users.satisfaction.copy()}


@pytest.fixture()
def two_worlds() -> tuple[dict, dict, ParametricUsers, ParametricUsers]:
    catalog = cached_catalog(CatalogConfig())
    rng = np.random.default_rng(11)
    k = 10
    rep_users, div_users = ParametricUsers(catalog), ParametricUsers(catalog)
    rep_users.reset(_profiles(catalog, N_USERS))
    div_users.reset(_profiles(catalog, N_USERS))
    repetitive = _repetitive_slates(catalog, k)
    rep = _run_session(rep_users, lambda: repetitive, _streams(1, N_USERS))
    div = _run_session(div_users, lambda: _diverse_slate(catalog, k, rng), _streams(1, N_USERS))
    return rep, div, rep_users, div_users


def test_repetition_raises_fatigue_triggers_instructions_and_ends_sessions_sooner(two_worlds) -> None:
    rep, div, _, _ = two_worlds
    assert rep["first_fatigue"].mean() > div["first_fatigue"].mean() + 0.1
    assert rep["instructed_early"].mean() > div["instructed_early"].mean() + 0.2
    assert rep["turns"].mean() < div["turns"].mean()


def test_over_exploiting_lowers_the_return_rate(two_worlds) -> None:
    rep, div, rep_users, div_users = two_worlds
    assert rep["satisfaction"].mean() < div["satisfaction"].mean()
    gaps_rep = rep_users.end_sessions(np.arange(N_USERS), np.full(N_USERS, 0.5), _streams(2, N_USERS))
    gaps_div = div_users.end_sessions(np.arange(N_USERS), np.full(N_USERS, 0.5), _streams(2, N_USERS))
    returned_within_a_day = lambda g: np.mean(np.isfinite(g) & (g <= 1.0))  # noqa: E731
    assert returned_within_a_day(gaps_rep) < returned_within_a_day(gaps_div)
    assert np.median(gaps_rep) > np.median(gaps_div)


def test_instructions_name_the_overexposed_topic(catalog: Catalog) -> None:
    rng = _streams(4, 50)
    users = ParametricUsers(catalog)
    users.reset(_profiles(catalog, 50))
    users.start_sessions(np.arange(50), np.zeros(50), rng)
    slate = _repetitive_slates(catalog, 10)
    said = []
    for _ in range(6):
        fb = users.review(np.tile(slate, (50, 1)), rng)
        said += [i for i in fb.instructions if i is not None]
    assert said
    topic = catalog.topic_names[0]
    different = [i for i in said if i.intent.kind == "different"]
    assert different and all(i.intent.topics == [topic] for i in different)
    assert all(topic in i.text for i in different)
    assert all(i.intent.related and i.intent.related[0] != topic for i in different)


def test_leaving_masks_the_rest_of_the_slate(catalog: Catalog) -> None:
    rng = _streams(0, 1)
    user = ParametricUsers(catalog)
    profile = _profiles(catalog, 1)[0].model_copy(update={"time_budget_min": 0.2})
    user.reset([profile])
    user.start_sessions(np.zeros(1, int), np.zeros(1), rng)
    fb = user.review(np.arange(10)[None, :], rng)
    assert fb.left[0]
    seen = fb.reactions[0] != UNSEEN
    assert seen[0] and not seen[-1]
    assert (np.diff(seen.astype(int)) <= 0).all()  # reviewed items form a prefix
    assert (fb.dwell_min[0][~seen] == 0).all()
    gap = float(user.end_sessions(np.zeros(1, int), np.array([0.01]), rng)[0])
    assert gap >= 0.99  # today's budget is spent: not back before tomorrow (inf = churned)


def test_mindset_is_one_schema(catalog: Catalog) -> None:
    rng = _streams(0, 1)
    user = ParametricUsers(catalog)
    user.reset(_profiles(catalog, 1))
    user.start_sessions(np.zeros(1, int), np.zeros(1), rng)
    user.review(np.arange(10)[None, :], rng)
    m = user.mindset(0)
    assert isinstance(m, Mindset)
    again = Mindset.model_validate_json(m.model_dump_json())
    assert again == m and len(m.interests) == catalog.embedding_dim and m.summary
    assert len(m.memory) == 10 and all(e.topic in catalog.topic_names for e in m.memory)


def test_recurrence_matches_the_sequential_definition() -> None:
    rng = np.random.default_rng(0)
    x0, rate, target = rng.random(4), rng.uniform(0, 0.9, (4, 7)), rng.random((4, 7))
    expected = np.empty((4, 7))
    x = x0.copy()
    for k in range(7):
        x = x + rate[:, k] * (target[:, k] - x)
        expected[:, k] = x
    assert np.allclose(_recurrence(x0, rate, target), expected)


def test_batched_review_equals_one_by_one(catalog: Catalog) -> None:
    """B users reviewed together behave exactly like each user reviewed alone on its own stream,
    including users reviewing a subset of rows (the others draw nothing)."""
    profiles = _profiles(catalog, 5)
    slates = np.random.default_rng(3).integers(len(catalog), size=(5, 8))
    batch = ParametricUsers(catalog)
    batch.reset(profiles)
    streams = UserStreams([np.random.default_rng(100 + i) for i in range(5)])
    batch.start_sessions(np.arange(5), np.zeros(5), streams)
    fb = batch.review(slates, streams)
    part = batch.review(slates[[1, 3]], streams, rows=np.array([1, 3]))
    for u in range(5):
        one = ParametricUsers(catalog)
        one.reset(profiles[u : u + 1])
        alone = UserStreams([np.random.default_rng(100 + u)])
        one.start_sessions(np.zeros(1, int), np.zeros(1), alone)
        fb_one = one.review(slates[u : u + 1], alone)
        assert np.array_equal(fb_one.reactions[0], fb.reactions[u])
        assert np.array_equal(fb_one.dwell_min[0], fb.dwell_min[u])
        if u not in (1, 3):
            assert one.satisfaction[0] == batch.satisfaction[u]
        else:  # the second review of rows 1 and 3 alone
            again = one.review(slates[u : u + 1], alone)
            assert np.array_equal(again.reactions[0], part.reactions[[1, 3].index(u)])
            assert one.satisfaction[0] == batch.satisfaction[u]


def test_return_gap_depends_on_satisfaction() -> None:
    model = ReturnGapModel(ReturnConfig())
    rows = np.arange(20_000)
    low = model.sample(np.full(20_000, 0.2), np.full(20_000, 0.5), _streams(0, 20_000), rows)
    high = model.sample(np.full(20_000, 0.8), np.full(20_000, 0.5), _streams(1, 20_000), rows)
    assert np.isinf(low).mean() > np.isinf(high).mean()
    assert np.median(low[np.isfinite(low)]) > 2 * np.median(high[np.isfinite(high)])
    assert (high[np.isfinite(high)] >= 0).all()


def test_configs_are_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="satisfaction_rate"):
        DynamicsConfig(satisfaction_rate=1.0)
    with pytest.raises(ValidationError, match="extra"):
        ChoiceConfig(relevence=1.0)


def test_one_user_choice_path_matches_the_batched_one() -> None:
    from recoworld.simulators.parametric import _relevance_in_order, _relevance_in_order_one

    rng = np.random.default_rng(5)
    for _ in range(50):
        emb = rng.normal(size=(3, 8, 6))
        gram = emb @ emb.transpose(0, 2, 1)
        rel, threshold = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
        batched = _relevance_in_order(rel, gram, threshold, 4.0, 0.3)
        for u in range(3):
            assert np.array_equal(_relevance_in_order_one(rel[u], gram[u], threshold[u], 4.0, 0.3), batched[u])


def test_interest_drift_follows_each_consumed_item_in_order(catalog: Catalog) -> None:
    users = ParametricUsers(catalog, dynamics=DynamicsConfig(interest_drift=0.2))
    users.reset(_profiles(catalog, 3))
    start = users.interests.copy()
    emb = np.random.default_rng(1).normal(size=(3, 6, catalog.embedding_dim))
    consumed = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    drifted = users._consume(start, emb, consumed)
    for u in range(3):
        expected = start[u].copy()
        for k in np.flatnonzero(consumed[u]):
            expected = expected + 0.2 * (emb[u, k] - expected)
        assert np.allclose(drifted[u], expected)
