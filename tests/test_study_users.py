"""A study's users are planned up front and drawn by each shard from its own stream (issues 31 and 32)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig
from recoworld.population import PopulationSpec, sample_population
from recoworld.studies.runner import prepare
from recoworld.studies.spec import StudySpec
from recoworld.studies.users import StudyUsers

POPULATION = PopulationSpec.default()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return cached_catalog(CatalogConfig(n_items=300, seed=4))


def test_shards_draw_every_planned_user_once_with_the_population_mix(catalog: Catalog) -> None:
    users = StudyUsers.planned(POPULATION, 103, shard_size=10, seed=7)
    assert users.n_shards == 11 and len(users) == 103
    drawn = [users.shard(i).profiles(catalog) for i in range(users.n_shards)]
    assert [len(d) for d in drawn] == [10] * 10 + [3]
    ids = [p.user_id for d in drawn for p in d]
    assert len(set(ids)) == 103
    assert [users.shard(i).user_ids() for i in range(users.n_shards)] == [[p.user_id for p in d] for d in drawn]
    counts = Counter(p.segment for d in drawn for p in d)
    assert [counts[s.name] for s in POPULATION.segments] == POPULATION.allocate(103)
    for s in POPULATION.segments:  # each segment's users are numbered 0..count-1 across the shards
        numbers = sorted(int(i.rsplit("-", 1)[1]) for i in ids if i.startswith(s.name + "-"))
        assert numbers == list(range(counts[s.name]))
    assert len({p.segment for p in drawn[0]}) > 1, "segments mix across shards"


def test_a_shard_draws_the_same_users_wherever_and_whenever_it_runs(catalog: Catalog) -> None:
    a = StudyUsers.planned(POPULATION, 50, shard_size=8, seed=3)
    b = StudyUsers.planned(POPULATION, 50, shard_size=8, seed=3)
    assert b.shard(4).profiles(catalog) == a.shard(4).profiles(catalog)  # drawn alone, without shards 0-3
    other = StudyUsers.planned(POPULATION, 50, shard_size=8, seed=4)
    assert other.shard(4).profiles(catalog) != a.shard(4).profiles(catalog)
    # Every shard its own stream: the same segments in two shards do not give the same people.
    interests = [p.topic_interests for i in range(a.n_shards) for p in a.shard(i).profiles(catalog)]
    assert len({tuple(sorted(t.items())) for t in interests}) == len(interests)


def test_ten_million_users_are_planned_without_drawing_anyone() -> None:
    """The hang of issue 31: 10 million users meant 25 GB of profiles before the first shard. The plan
    holds 2 bytes a user, and the last shard can be drawn first."""
    users = StudyUsers.planned(POPULATION, 10_000_000, shard_size=16, seed=0)
    assert len(users) == 10_000_000 and users.given == ()
    assert users.plan is not None and users.plan.segment_of.nbytes == 20_000_000
    last = users.shard(users.n_shards - 1)
    assert len(last) == 16
    totals = dict(zip([s.name for s in POPULATION.segments], POPULATION.allocate(10_000_000)))
    for uid in last.user_ids():  # numbered among all 10 million, within their segment's count
        name, number = uid.rsplit("-", 1)
        assert 0 <= int(number) < totals[name]
    with pytest.raises(IndexError, match="625000 shards"):
        users.shard(625_000)


def test_a_study_spec_plans_its_users_and_shards_draw_them(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    import recoworld.studies.runner as runner

    monkeypatch.setattr(runner, "available_memory", lambda: None)  # the results' estimate is tested elsewhere
    spec = StudySpec.parse({"n_users": 10_000_000, "shard_size": 16, "world": {"horizon_days": 1}})
    setup = prepare(spec, catalog)
    assert setup.n_shards == 625_000 and setup.users.given == ()
    assert len(setup.users.shard(123_456).profiles(setup.base)) == 16


def test_given_profiles_are_shuffled_into_shards_as_they_are(catalog: Catalog) -> None:
    given = sample_population(POPULATION, catalog, np.random.default_rng(5), n=9)
    users = StudyUsers.of_profiles(given, shard_size=4, seed=1)
    shards = [users.shard(i).profiles(catalog) for i in range(users.n_shards)]
    assert [len(s) for s in shards] == [4, 4, 1]
    assert sorted(p.user_id for s in shards for p in s) == sorted(p.user_id for p in given)
    assert {p.user_id: p for s in shards for p in s} == {p.user_id: p for p in given}


def test_the_creators_topic_comes_from_the_target_segments_tastes(catalog: Catalog) -> None:
    """Without a topic, the creator publishes on what the target segment likes most: estimated on users of
    that segment drawn for the purpose, not on the study's own users, who are drawn later."""
    spec = StudySpec.parse({"n_users": 40, "shard_size": 8, "creator": {"name": "c", "target_segment": "explorer"}})
    setup = prepare(spec, catalog)
    sample = setup.users.segment_sample("explorer", catalog, 2_000)
    assert len(sample) == 2_000 and {p.segment for p in sample} == {"explorer"}
    weight: Counter[str] = Counter()
    for p in sample:
        weight.update(p.topic_interests)
    assert setup.target_topic == max(sorted(weight), key=lambda t: weight[t])
    assert prepare(spec, catalog).target_topic == setup.target_topic
