from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from recoworld.catalog import Catalog
from recoworld.envs import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.population import PopulationSpec, UserProfile, sample_population, sample_profile


def test_sampler_is_seeded_and_follows_segments(catalog: Catalog) -> None:
    spec = PopulationSpec.default()
    a = sample_population(spec, catalog, np.random.default_rng(1), n=100)
    b = sample_population(spec, catalog, np.random.default_rng(1), n=100)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in b]
    counts = {s.name: sum(p.segment == s.name for p in a) for s in spec.segments}
    assert counts == {"casual": 40, "enthusiast": 25, "explorer": 20, "impatient": 15}
    explorers = np.mean([p.novelty_trait for p in a if p.segment == "explorer"])
    enthusiasts = np.mean([p.novelty_trait for p in a if p.segment == "enthusiast"])
    assert explorers > enthusiasts + 0.3
    impatient = np.mean([p.patience for p in a if p.segment == "impatient"])
    assert impatient < np.mean([p.patience for p in a if p.segment == "enthusiast"])
    p = a[0]
    assert abs(sum(p.topic_interests.values()) - 1) < 1e-6
    assert all(t in catalog.topic_names for t in p.topic_interests)
    assert next(iter(p.topic_interests)) in p.persona
    assert np.isclose(np.linalg.norm(p.interest_vector(catalog)), 1.0, atol=1e-5)


def test_spec_from_yaml_with_fixed_topics(tmp_path, catalog: Catalog) -> None:
    path = tmp_path / "pop.yaml"
    path.write_text(
        "name: cooks\n"
        "segments:\n"
        "  - name: bakers\n"
        "    size: 3\n"
        "    topics: [baking, cooking]\n"
        "    n_favorite_topics: 2\n"
        "    novelty: {dist: constant, value: 0.9}\n"
    )
    spec = PopulationSpec.from_yaml(path)
    users = sample_population(spec, catalog, np.random.default_rng(0))
    assert len(users) == 3
    assert all(set(u.topic_interests) == {"baking", "cooking"} and u.novelty_trait == 0.9 for u in users)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"segments": []}, "segments"),
        ({"segments": [{"name": "a", "size": 0}]}, "segments.0.size"),
        ({"segments": [{"name": "a", "size": 1, "novelty": {"dist": "beta", "a": -1, "b": 1}}]}, "novelty"),
        ({"segments": [{"name": "a", "size": 1, "patiense": 3}]}, "patiense"),
        ({"segments": [{"name": "a", "size": 1}, {"name": "a", "size": 2}]}, "unique"),
    ],
)
def test_invalid_specs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PopulationSpec.parse(data)


def test_unknown_topic_is_reported(catalog: Catalog) -> None:
    spec = PopulationSpec.parse({"segments": [{"name": "a", "size": 1, "topics": ["underwater basket weaving"]}]})
    with pytest.raises(KeyError, match="underwater basket weaving"):
        sample_population(spec, catalog, np.random.default_rng(0))


def test_profile_validates_its_traits() -> None:
    with pytest.raises(ValueError, match="novelty_trait"):
        UserProfile(user_id="u", segment="s", persona="p", attributes={}, topic_interests={"cooking": 1.0},
                    novelty_trait=1.5, patience=3, time_budget_min=10, return_propensity=0.5)


def test_one_user_at_a_time_follows_the_segment_shares(catalog: Catalog) -> None:
    """A single env draws one user per episode: its segment must follow the population's shares
    (a largest-remainder split of one user would always give the largest segment)."""
    spec = PopulationSpec.default()
    rng = np.random.default_rng(0)
    drawn = Counter(sample_profile(spec, catalog, rng).segment for _ in range(3000))
    total = sum(s.size for s in spec.segments)
    for segment in spec.segments:
        assert abs(drawn[segment.name] / 3000 - segment.size / total) < 0.03, (segment.name, drawn)
    env = RecoWorldEnv(catalog=catalog)
    assert {env.reset(seed=seed)[1]["segment"] for seed in range(60)} == {s.name for s in spec.segments}


@pytest.mark.parametrize(("field", "dist", "shown"), [
    ("patience", {"dist": "constant", "value": 0}, "constant value 0"),
    ("time_budget_min", {"dist": "constant", "value": -5}, "constant value -5"),
    ("return_propensity", {"dist": "constant", "value": 1.0}, "constant value 1"),
    ("novelty", {"dist": "uniform", "low": 0.5, "high": 2}, "uniform high 2"),
    ("patience", {"dist": "normal", "mean": 1e30, "std": 1}, "normal mean 1e+30"),
    ("return_propensity", {"dist": "beta", "a": 1e308, "b": 1e-308}, "beta mean 1"),
])
def test_trait_values_outside_the_range_are_refused(catalog: Catalog, field: str, dist: dict, shown: str) -> None:
    """Issue 31: such values were clamped in silence (every user alike), though the world config refuses its own
    out-of-range values; values at the range's ends are kept as given."""
    with pytest.raises(ConfigError, match=re.escape(f"segments.0.{field}: {shown} is outside the trait's range")):
        PopulationSpec.parse({"segments": [{"name": "a", "size": 1, field: dist}]})
    ends = {"novelty": (0.0, 1.0), "patience": (1, 10_000), "time_budget_min": (1.0, 1440.0),
            "return_propensity": (0.01, 0.99)}[field]
    for end in ends:
        spec = PopulationSpec.parse({"segments": [{"name": "a", "size": 1, field: {"dist": "constant", "value": end}}]})
        profile = sample_population(spec, catalog, np.random.default_rng(0))[0]
        key = {"novelty": "novelty_trait"}.get(field, field)
        assert getattr(profile, key) == end


@pytest.mark.parametrize("mainstream", [0.5, 1.0, 2.5])
def test_favourite_topics_are_numpys_weighted_draw_without_replacement(catalog: Catalog, mainstream: float) -> None:
    """`_choose_topics` replays `rng.choice(T, k, replace=False, p=odds)` with the first CDF made once:
    the same topics in the same order, and the stream left where numpy leaves it, also when a round
    draws a topic twice and another round follows (k near the number of topics)."""
    from recoworld.population import _choose_topics, _topic_odds

    topics = _topic_odds(catalog, mainstream)
    assert topics.odds is not None
    for k in (1, 3, 5, catalog.n_topics - 1, catalog.n_topics):
        for seed in range(40):
            ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            assert _choose_topics(ours, topics, k) == theirs.choice(catalog.n_topics, k, replace=False,
                                                                    p=topics.odds).tolist()
            assert ours.random() == theirs.random()


def test_a_traits_single_draw_is_its_sample_of_one() -> None:
    """Profiles draw each trait with `draw`, which must be `sample(rng, 1)[0]` bit for bit (clipping
    included) and leave the stream where it leaves it."""
    from recoworld.population import Beta, Constant, Normal, Uniform

    dists = [Beta(a=2, b=5), Uniform(low=-1.0, high=3.0), Normal(mean=25, std=8, low=5, high=80),
             Normal(mean=0.0, std=1.0, low=0.0), Normal(mean=-0.0, std=0.0), Normal(mean=1.0, std=1e308, high=2.0),
             Constant(value=4.5)]
    for dist in dists:
        for seed in range(200):
            ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
            one, sample = dist.draw(ours), float(dist.sample(theirs, 1)[0])
            assert np.copysign(1.0, one) == np.copysign(1.0, sample) and (one == sample), dist
            assert ours.random() == theirs.random()


def test_drawn_profiles_are_the_validated_models(catalog: Catalog) -> None:
    """A drawn profile skips validation (`population._drawn_profile`): it must be the model validation builds
    from the same fields, field by field (types and order), fields set and dumps; every segment kind (compiled
    draws or the generator's own calls, Dirichlet from Gammas or sticks, Beta from Gammas or Johnk's, a generator
    not on PCG64) draws the same users as validation would get from the same draws."""
    from recoworld import population

    built: list[tuple[UserProfile, dict[str, object]]] = []
    drawn_profile = population._drawn_profile

    def keep(fields: dict[str, object]) -> UserProfile:
        profile = drawn_profile(fields)
        built.append((profile, dict(fields)))
        return profile

    spec = PopulationSpec.parse({"segments": [
        {"name": "a", "size": 3, "novelty": {"dist": "uniform", "low": 0.1, "high": 0.9},
         "patience": {"dist": "constant", "value": 7}, "return_propensity": {"dist": "beta", "a": 0.5, "b": 3},
         "time_budget_min": {"dist": "normal", "mean": 30, "std": 400, "low": 2, "high": 3000}},
        {"name": "b", "size": 2, "interest_concentration": 0.05, "n_favorite_topics": 4},
        {"name": "c", "size": 2, "novelty": {"dist": "beta", "a": 0.5, "b": 0.7},
         "attributes": {"x": ["only"], "y": list("abcdefghijklmnopq")}},
        {"name": "d", "size": 2, "topics": catalog.topic_names[:3], "n_favorite_topics": 2},
        {"name": "e", "size": 2, "mainstream": 0, "attributes": {}},
    ]})
    population._drawn_profile = keep
    try:
        for seed in range(60):
            rng = np.random.default_rng(seed) if seed % 3 else np.random.Generator(np.random.MT19937(seed))
            sample_population(spec, catalog, rng, n=7)
            sample_profile(PopulationSpec.default(), catalog, rng)
    finally:
        population._drawn_profile = drawn_profile
    assert {p.segment for p, _ in built} == {"a", "b", "c", "d", "e", "casual", "enthusiast", "explorer", "impatient"}
    for profile, fields in built:
        validated = UserProfile(**fields)  # type: ignore[arg-type]
        assert profile == validated
        assert list(profile.__dict__) == list(validated.__dict__)
        assert [type(v) for v in profile.__dict__.values()] == [type(v) for v in validated.__dict__.values()]
        assert profile.model_fields_set == validated.model_fields_set
        assert profile.model_dump_json() == validated.model_dump_json() and repr(profile) == repr(validated)
    # what the shortcut cannot vouch for is validated: an error names it
    with pytest.raises(ValueError, match="weights must not all be zero"):
        drawn_profile(dict(built[0][1], topic_interests={catalog.topic_names[0]: 0.0}))


def test_batched_interest_vectors_are_each_profiles_own(catalog: Catalog) -> None:
    """`interest_vectors` mixes many profiles' topics in one pass: the same float32 numbers as each profile's
    `interest_vector`, bit for bit, for topic mixes of any length and profiles given an embedding directly."""
    from recoworld.population import interest_vectors

    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=500)
    base = profiles[0].model_dump()
    profiles += [
        UserProfile(**base | {"interest_embedding": np.random.default_rng(1).normal(size=catalog.embedding_dim)
                              .tolist()}),
        UserProfile(**base | {"topic_interests": dict.fromkeys(catalog.topic_names, 1.0)}),
        UserProfile(**base | {"topic_interests": {catalog.topic_names[3]: 1.0}}),
    ]
    for chosen in (profiles, profiles[-3:], profiles[:1], []):
        expected = np.stack([p.interest_vector(catalog) for p in chosen]) if chosen else \
            np.empty((0, catalog.embedding_dim), dtype=np.float32)
        got = interest_vectors(chosen, catalog)
        assert got.dtype == np.float32 and np.array_equal(got, expected)
