"""The parametric user's dynamics: the behaviours a retention-aware recommender must learn from."""

from __future__ import annotations

import numpy as np
import pytest

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig, ChoiceConfig, DynamicsConfig, ReturnConfig
from recoworld.mindset import UNSEEN, Mindset
from recoworld.population import UserProfile
from recoworld.simulators import ParametricUsers
from recoworld.simulators.instructions import intent_direction
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
    second_fatigue = None
    for turn in range(max_turns):
        slates = np.stack([slate_fn() for _ in range(n)])
        fb = users.review(slates, rng)
        if turn == 1:  # the repetitive feed has now shown its slate twice
            second_fatigue = users.fatigue.copy()
        turns += active
        instructed |= active & np.array([i is not None for i in fb.instructions])
        if turn == 2:
            instructed_early = instructed.copy()
        active &= ~fb.left
        if not active.any():
            break
    return {"turns": turns, "instructed_early": instructed_early, "second_fatigue": second_fatigue,
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
    # After two turns: near-duplicates are items at a cosine of at least `repetition_similarity`
    # (0.9), so a slate of one item's nearest neighbours tires a little on first sight and a lot
    # when it comes again.
    assert rep["second_fatigue"].mean() > div["second_fatigue"].mean() + 0.1
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


def _review_item_by_item(users: ParametricUsers, u: int, slate: np.ndarray, noise: np.ndarray) -> dict:
    """The review's definition, one item at a time in float64: what the compiled review must equal.

    Returns the reactions, dwell, exit reason and the user's state afterwards."""
    dyn, choice, cat = users.dyn, users.choice, users.catalog
    c = choice.config
    emb = cat.embeddings.astype(np.float64)
    interests = users.interests[u].copy()
    fatigue, sat = users.fatigue[u], users.satisfaction[u]
    short, long = users.sat_short[u], users.sat_long[u]
    seen_before = [int(i) for i in users.memory_items[u] if i >= 0]
    time_left, spent_total, last_click = users.time_left[u], 0.0, -1
    reactions, dwell, disliked, repeated, exit_kind = [], [], [], 0, None
    for pos, item in enumerate(slate.tolist()):
        e = emb[item]
        max_sim = max([0.0] + [float(e @ emb[o]) for o in seen_before])
        seen_before.append(item)
        tau = dyn.repetition_similarity
        increase = dyn.fatigue_repetition * min(max((max_sim - tau) / (1 - tau), 0), 1) + (
            dyn.fatigue_low_quality * min(max((0.4 - cat.quality[item]) / 0.4, 0), 1))
        fatigue = fatigue + dyn.fatigue_recovery * (increase / dyn.fatigue_recovery - fatigue)
        fat = min(fatigue, 1.0)
        appetite = min(users.novelty[u] + 0.3 * fat, 1.0)
        base = float(choice.utility(0.0, np.array(cat.quality[item]), np.array(1 - min(max_sim, 1.0)),
                                    np.array(appetite), np.array(fat), pos, np.array(cat.popularity_z[item]),
                                    users.conformity[u], users.activity[u], np.array(cat.duration_min[item])))
        utility = base + c.relevance * float(e @ interests)
        click = utility + noise[pos, 0] > 0
        level = int(choice.engagement(np.array(click), np.array(utility), noise[pos, 1:3]))
        dislike = not click and utility + noise[pos, 0] < -dyn.dislike_margin
        if click:  # the drift moves what every later item means to the user
            interests = interests + dyn.interest_drift * (e - interests)
            last_click = pos
            spent = cat.duration_min[item] / (1 + np.exp(-(utility + noise[pos, 3])))
            target, rate = min(max(0.35 + 0.4 * (utility - base) / c.relevance + 0.35 * cat.quality[item]
                                   - 0.3 * fat, 0), 1), dyn.satisfaction_rate
        else:
            spent = dyn.browse_minutes
            target = min(max(dyn.skip_satisfaction + dyn.skip_relevance * (utility - base) / c.relevance, 0), 1)
            target, rate = target * (1 - fat), dyn.satisfaction_rate * dyn.skip_weight
        if dislike:
            target, rate = min(target, dyn.dislike_satisfaction), max(rate, dyn.satisfaction_rate * dyn.dislike_weight)
        sat += rate * (target - sat)
        short += 0.5 * (sat - short)
        long += 0.1 * (sat - long)
        spent_total += spent
        patience = (users.patience[u] - (pos - last_click) if last_click >= 0
                    else users.patience_left[u] - (pos + 1))
        reactions.append(level)
        dwell.append(spent)
        disliked.append(dislike)
        repeated += max_sim >= tau
        if time_left - spent_total <= 0 or patience <= 0 or sat < dyn.satisfaction_collapse:
            exit_kind = ("out_of_time" if time_left - spent_total <= 0 else "repetitive" if repeated / (pos + 1) >= 0.5
                         else "bored" if patience <= 0 else "irrelevant")
            break
    push = sum((emb[i] for i, x in zip(slate.tolist(), disliked) if x), np.zeros(len(interests)))
    if any(disliked):
        interests = interests - dyn.dislike_push * push
        interests = interests / max(1.0, float(np.linalg.norm(interests)))
    return {"reactions": reactions, "dwell": dwell, "disliked": disliked, "exit": exit_kind,
            "interests": interests, "satisfaction": sat, "sat_short": short, "sat_long": long, "fatigue": fat,
            "time_left": max(time_left - spent_total, 0.0), "patience_left": max(patience, 0)}


@pytest.mark.parametrize(("dynamics", "dislikes_and_instructions", "exits_seen"), [
    (DynamicsConfig(satisfaction_collapse=0.5), False, {"out_of_time", "bored", "irrelevant"}),
    (DynamicsConfig(interest_drift=0.3, dislike_margin=2.0, dislike_push=0.2, satisfaction_collapse=0.3), True,
     {"out_of_time", "bored"}),
])
def test_the_compiled_review_is_the_item_by_item_definition(catalog: Catalog, dynamics: DynamicsConfig,
                                                            dislikes_and_instructions: bool,
                                                            exits_seen: set[str]) -> None:
    """Reactions, exits and the state afterwards, over several turns of users with a memory,
    random and repetitive slates, clicks, dislikes and every way of leaving."""
    rng = np.random.default_rng(7)
    n, k = 24, 8
    users = ParametricUsers(catalog, ChoiceConfig(bias=0.5), dynamics)
    profiles = [p.model_copy(update={"patience": int(rng.integers(2, 12)),  # short, so every exit occurs
                                     "time_budget_min": float(rng.uniform(1, 40))}) for p in _profiles(catalog, n)]
    users.reset(profiles)
    streams = UserStreams([np.random.default_rng(300 + i) for i in range(n)])
    users.start_sessions(np.arange(n), np.zeros(n), streams)
    exits, clicks, dislikes, instructed = set(), 0, 0, 0
    for turn in range(6):
        slates = (np.tile(_repetitive_slates(catalog, k), (n, 1)) if turn % 3 == 2
                  else rng.integers(len(catalog), size=(n, k)))
        # The definition reads the noise the review will draw: a copy of each stream before it draws.
        copies = [np.random.Generator(np.random.PCG64()) for _ in range(n)]
        for i in range(n):
            copies[i].bit_generator.state = streams[i].bit_generator.state
        expected = []
        for i in range(n):
            p = copies[i].random((k, 4))
            expected.append(_review_item_by_item(users, i, slates[i], np.log(p) - np.log1p(-p)))
        memory_before = users.memory_items.copy()
        fb = users.review(slates, streams)
        for i, want in enumerate(expected):
            reached = len(want["reactions"])
            assert fb.reactions[i, :reached].tolist() == want["reactions"]
            assert (fb.reactions[i, reached:] == UNSEEN).all()
            assert np.allclose(fb.dwell_min[i, :reached], want["dwell"], rtol=1e-5)
            assert fb.disliked[i, :reached].tolist() == want["disliked"]
            assert fb.left[i] == (want["exit"] is not None)
            assert (fb.exit_reasons[i].kind if fb.exit_reasons[i] else None) == want["exit"]
            if fb.instructions[i] is not None:  # saying what one wants moves interests and buys patience
                vec = want["interests"] + dynamics.instruction_strength * intent_direction(fb.instructions[i].intent,
                                                                                           catalog)
                want["interests"] = vec / max(1.0, float(np.linalg.norm(vec)))
                want["patience_left"] += users.patience[i] // 2
                instructed += 1
            for name in ("interests", "satisfaction", "sat_short", "sat_long", "fatigue", "time_left"):
                assert np.allclose(getattr(users, name)[i], want[name], rtol=1e-5, atol=1e-6), name
            assert users.patience_left[i] == want["patience_left"]
            shown = np.where(np.arange(k) < reached, slates[i], -1)
            assert users.memory_items[i].tolist() == np.concatenate([memory_before[i], shown])[-30:].tolist()
            exits.add(want["exit"])
            clicks += sum(r > 0 for r in want["reactions"])
            dislikes += sum(want["disliked"])
        gone = np.flatnonzero(fb.left)
        users.end_sessions(gone, np.full(len(gone), turn + 1.0), streams)
        users.start_sessions(gone, np.full(len(gone), turn + 1.5), streams)
    assert clicks and bool(dislikes) == bool(instructed) == dislikes_and_instructions
    assert exits_seen <= exits


def test_intents_scale_each_row_by_its_own_norm(catalog: Catalog) -> None:
    """`apply_intents` scales all speakers' interests at once: each row as the per-row rule would, bit for bit
    (divided by sqrt(row @ row) when that is above 1)."""
    import math

    users = ParametricUsers(catalog)
    users.reset(_profiles(catalog, 40))
    rng = np.random.default_rng(0)
    users.interests[:] *= rng.uniform(0.0, 3.0, (40, 1))  # rows inside and outside the unit ball
    from recoworld.mindset import Intent

    intents = [Intent(kind="more", topics=[catalog.topic_names[u % catalog.n_topics]]) for u in range(0, 40, 2)]
    rows = np.arange(0, 40, 2)
    expected = users.interests[rows] + users.dyn.instruction_strength * np.stack(
        [intent_direction(intent, catalog) for intent in intents])
    for row in expected:
        row /= max(1.0, math.sqrt(row @ row))
    untouched = users.interests[1::2].copy()
    users.apply_intents(rows, intents)
    assert np.array_equal(users.interests[rows], expected)
    assert np.array_equal(users.interests[1::2], untouched)
