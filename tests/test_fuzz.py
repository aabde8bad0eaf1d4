"""Fuzzing (issue 17): hostile actions, world configs and population specs.

Whatever comes in, the outcome is valid behaviour (finite rewards and observations) or one
of RecoWorld's own errors (`RecoWorldError`: `ConfigError`, `InvalidActionError`, ...)
with a message that names what was wrong; never another exception type, never a NaN.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from tests.conftest import require

hypothesis = require("hypothesis")  # a dev extra: CI installs it, so there a missing one fails
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import recoworld  # noqa: E402, F401  (registers RecoWorld-v0)
from recoworld.catalog import Catalog, cached_catalog  # noqa: E402
from recoworld.config import CatalogConfig, WorldConfig, build  # noqa: E402
from recoworld.envs import PopulationParallelEnv, RecoWorldEnv, RecoWorldVectorEnv  # noqa: E402
from recoworld.errors import ConfigError, InvalidActionError, RecoWorldError  # noqa: E402
from recoworld.population import TRAIT_RANGES, PopulationSpec, sample_population  # noqa: E402

SMALL = {"slate_size": 3, "n_candidates": 12, "horizon_days": 2.0, "catalog": {"n_items": 120, "seed": 1}}
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def small_catalog() -> Catalog:
    return cached_catalog(CatalogConfig(n_items=120, seed=1))


def _finite(obs: Any) -> bool:
    if isinstance(obs, dict):
        return all(_finite(v) for v in obs.values())
    arr = np.asarray(obs)
    return arr.dtype.kind not in "fc" or bool(np.isfinite(arr).all())


# ---------------------------------------------------------------------- actions

DTYPES = st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16, np.float32,
                          np.float64, np.bool_, np.complex64])
ELEMENT_VALUES = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 119),
    st.sampled_from([0, 1, 2, 119, 120, -1, 1e30, math.nan, math.inf, -math.inf]),
)


@st.composite
def arrays(draw: st.DrawFn, shapes: st.SearchStrategy[tuple[int, ...]]) -> Any:
    """A numpy array of some dtype and shape, a nested list of odd values, a string, None or a scalar."""
    kind = draw(st.integers(0, 5))
    shape = draw(shapes)
    if kind <= 2:
        dtype = draw(DTYPES)
        with np.errstate(all="ignore"):
            values = np.asarray(draw(st.lists(ELEMENT_VALUES, min_size=int(np.prod(shape)),
                                              max_size=int(np.prod(shape)))), dtype=object)
            try:
                return values.astype(dtype).reshape(shape)
            except (OverflowError, ValueError, TypeError):
                return values.reshape(shape)
    if kind == 3:
        return np.asarray(draw(st.lists(st.integers(0, 119), min_size=int(np.prod(shape)),
                                        max_size=int(np.prod(shape))))).reshape(shape)
    if kind == 4:
        return draw(st.one_of(st.none(), st.text(max_size=4), st.integers(), st.floats(),
                              st.lists(st.one_of(st.integers(0, 119), st.text(max_size=2), st.none()), max_size=4)))
    return draw(hnp.arrays(np.int64, shape, elements=st.integers(0, 119), unique=True))


SLATE_SHAPES = st.sampled_from([(3,), (2,), (4,), (1, 3), (3, 1), (0,), ()])


def _outcome_is_clean(step: Any) -> None:
    """`step()` either works (finite outputs) or raises one of our errors with a message."""
    try:
        obs, reward, *_ = step()
    except RecoWorldError as err:
        assert str(err), "an error without a message"
        return
    assert _finite(obs) and _finite(reward), "NaN or inf in a step's output"


@FUZZ
@given(action=arrays(SLATE_SHAPES))
def test_single_env_actions(action: Any) -> None:
    env = gym.make("RecoWorld-v0", **SMALL)
    env.reset(seed=0)
    _outcome_is_clean(lambda: env.step(action))


@FUZZ
@given(actions=arrays(st.sampled_from([(2, 3), (3, 3), (2,), (2, 3, 1), (6,), ()])))
def test_vector_env_actions(actions: Any) -> None:
    env = RecoWorldVectorEnv(2, SMALL)
    env.reset(seed=0)
    _outcome_is_clean(lambda: env.step(actions))


@st.composite
def population_actions(draw: st.DrawFn) -> Any:
    """A dict of actions with missing, unknown or odd keys and odd values, or not a dict at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.none(), st.lists(st.integers(0, 119), max_size=3), st.text(max_size=3)))
    keys = draw(st.lists(st.sampled_from(["user_0", "user_1", "user_2", "user_99", "bob", "", 0, None]),
                         unique=True, max_size=4))
    return {k: draw(arrays(SLATE_SHAPES)) for k in keys}


@FUZZ
@given(actions=population_actions())
def test_population_env_actions(actions: Any) -> None:
    env = PopulationParallelEnv({"world": SMALL, "n_users": 2})
    env.reset(seed=0)
    _outcome_is_clean(lambda: env.step(actions))


def test_population_env_rejects_unknown_agent_keys_and_non_dicts() -> None:
    env = PopulationParallelEnv({"world": SMALL, "n_users": 2})
    env.reset(seed=0)
    good = {a: np.arange(3) + 3 * i for i, a in enumerate(env.agents)}
    with pytest.raises(InvalidActionError, match="user_7"):
        env.step({**good, "user_7": np.arange(3)})
    for bad in (None, [np.arange(3), np.arange(3, 6)]):
        with pytest.raises(InvalidActionError, match="dict"):
            env.step(bad)
    env.step(good)  # still usable


# ---------------------------------------------------------------------- world configs

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10, 10), st.text(max_size=6), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
WORLD_FIELDS = {
    "": ["slate_size", "n_candidates", "history_len", "horizon_days", "max_steps", "on_duplicate",
         "expose_mindset", "user_backend", "nonsense_key"],
    "choice": ["bias", "relevance", "quality", "popularity", "novelty_mismatch", "fatigue", "position",
               "like_threshold", "share_threshold", "typo"],
    "dynamics": ["interest_drift", "satisfaction_rate", "skip_satisfaction", "fatigue_recovery",
                 "satisfaction_collapse", "instruction_cooldown", "memory_size"],
    "returns": ["base_rate", "gap_shape", "satisfaction_effect", "churn_bias", "churn_after"],
    "retrieval": ["interest_share", "popular_share", "instruction_share", "exclude_recent"],
    "reward": ["dwell", "click", "like", "share", "return_bonus", "return_tau_days", "churn_penalty"],
}


@st.composite
def world_dicts(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SMALL.items()}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(WORLD_FIELDS)))
        key = draw(st.sampled_from(WORLD_FIELDS[section]))
        value = draw(ANY_VALUE)
        if section:
            data.setdefault(section, {})[key] = value
        else:
            data[key] = value
    return data


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=world_dicts())
def test_world_config_is_valid_or_one_error_naming_the_field(data: dict[str, Any]) -> None:
    try:
        cfg = build(WorldConfig, "world config", data)
    except ConfigError as err:
        message = str(err)
        assert message.startswith("Invalid world config")
        fields = [k for keys in WORLD_FIELDS.values() for k in keys] + [s for s in WORLD_FIELDS if s]
        assert any(k in message for k in fields) or "<root>" in message, message
        return
    for value in (v for section in ("choice", "reward") for v in getattr(cfg, section).model_dump().values()
                  if isinstance(v, float)):  # `choice.taste` is a table or None, not a weight
        assert math.isfinite(value), "a non-finite weight was accepted"
    if cfg.catalog.n_items != 120 or cfg.n_candidates > 120:
        return  # valid, but not the small world the episode below runs on
    env = gym.make("RecoWorld-v0", config=cfg)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        try:  # a slate is candidate positions, not catalog items
            obs, reward, terminated, truncated, _ = env.step(rng.choice(cfg.n_candidates, cfg.slate_size,
                                                                        replace=False))
        except RecoWorldError:
            break  # e.g. a duplicate item with on_duplicate='error'
        assert _finite(obs) and math.isfinite(reward), f"non-finite output for {data}"
        if terminated or truncated:
            break


# ---------------------------------------------------------------------- population specs

TOPICS = st.sampled_from(["music", "history", "cooking", "science", "gaming", "underwater basketry", "", "MUSIC"])
DISTS = st.one_of(
    st.fixed_dictionaries({"dist": st.just("beta"), "a": ANY_VALUE, "b": st.floats(0.1, 10)}),
    st.fixed_dictionaries({"dist": st.just("normal"), "mean": st.floats(-100, 100), "std": ANY_VALUE,
                           "low": ANY_VALUE, "high": st.floats(-100, 200)}),
    st.fixed_dictionaries({"dist": st.just("uniform"), "low": st.floats(-10, 10), "high": ANY_VALUE}),
    st.fixed_dictionaries({"dist": st.sampled_from(["constant", "poisson"]), "value": ANY_VALUE}),
    ANY_VALUE,
)


@st.composite
def population_dicts(draw: st.DrawFn) -> dict[str, Any]:
    segments = []
    for i in range(draw(st.integers(0, 3))):
        seg: dict[str, Any] = {"name": draw(st.sampled_from([f"s{i}", "dup", ""])),
                               "size": draw(st.one_of(st.integers(-2, 5), ANY_VALUE))}
        if draw(st.booleans()):
            seg["topics"] = draw(st.one_of(st.lists(TOPICS, max_size=3), ANY_VALUE))
        for field in draw(st.lists(st.sampled_from(["novelty", "patience", "time_budget_min", "return_propensity",
                                                    "n_favorite_topics", "interest_concentration", "colour"]),
                                   max_size=2, unique=True)):
            seg[field] = draw(DISTS)
        segments.append(seg)
    return {"name": "fuzz", "segments": segments}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=population_dicts(), n=st.integers(1, 12))
@example(data={"name": "fuzz", "segments": [{"name": "dup", "size": 1}, {"name": "dup", "size": 1}]}, n=1)
def test_population_spec_is_valid_or_one_clear_error(data: dict[str, Any], n: int) -> None:
    catalog = small_catalog()
    try:
        spec = PopulationSpec.parse(data)
    except ConfigError as err:
        assert str(err).startswith("Invalid population spec") and "segments" in str(err), str(err)
        return
    try:
        profiles = sample_population(spec, catalog, np.random.default_rng(0), n=n)
    except ConfigError as err:  # an unknown topic: named, with the segment
        assert "topic" in str(err) and "segment" in str(err), str(err)
        return
    assert len(profiles) == n
    for p in profiles:
        assert set(p.topic_interests) <= set(catalog.topic_names)
        assert all(math.isfinite(x) for x in (p.novelty_trait, p.time_budget_min, p.return_propensity))
        assert np.isfinite(p.interest_vector(catalog)).all()


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(
    st.text(max_size=60),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["segments: [", "segments:\n  - name: x\n    size: 1\n  topics: [a", "- 1\n- 2", "",
                     "segments: []", "segments:\n  - {name: a, size: .nan}", "a: !!python/object:os.system 1",
                     "segments:\n  - name: x\n    size: 1\n    novelty: {dist: normal, mean: 1, std: 1, low: 80, "
                     "high: 5}"]),
), raw=st.binary(max_size=12))
def test_population_yaml_is_valid_or_one_error_naming_the_file(tmp_path: Path, text: str, raw: bytes) -> None:
    path = tmp_path / "population.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") + raw)
    try:
        PopulationSpec.from_yaml(path)
    except ConfigError as err:
        assert str(path) in str(err), str(err)


# ---------------------------------------------------------------------- finite but extreme (issue 31)

#: Finite numbers at the edges of float64, and ordinary ones: weights of 1e308 once gave inf rewards, and
#: traits of +-1e308 an OverflowError.
EXTREME = st.one_of(
    st.sampled_from([1.7976931348623157e308, -1.7976931348623157e308, 1e308, -1e308, 1e30, -1e30, 1e-308, -1e-308,
                     5e-324, 0.0, 1.0, -1.0]),
    st.floats(allow_nan=False, allow_infinity=False),
)
EXTREME_INT = st.one_of(st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63)]), st.integers(-(2**70), 2**70))


def _edges(field: Any) -> list[float]:
    """The smallest and largest values a numeric field accepts: its bounds, else the ends of float64/int64."""
    lo, hi = (-(2**63), 2**63 - 1) if field.annotation is int else (-sys.float_info.max, sys.float_info.max)
    for rule in field.metadata:
        lo = getattr(rule, "ge", lo)
        hi = getattr(rule, "le", hi)
        if getattr(rule, "gt", None) is not None:
            lo = rule.gt + 1 if field.annotation is int else math.nextafter(rule.gt, math.inf)
        if getattr(rule, "lt", None) is not None:
            hi = rule.lt - 1 if field.annotation is int else math.nextafter(rule.lt, -math.inf)
    return [lo, hi]


#: Every number a world file can set, by section, with the ends of its accepted range.
NUMBERS = {section: {name: (f.annotation, _edges(f))
                     for name, f in type(getattr(WorldConfig(), section)).model_fields.items()
                     if f.annotation in (int, float)}
           for section in ("choice", "dynamics", "returns", "retrieval", "reward")}


@st.composite
def extreme_worlds(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """The small world with 1 to 4 numbers set to an end of their accepted range or to an extreme; the
    dotted fields set."""
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SMALL.items()}
    fields = []
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(NUMBERS)))
        key = draw(st.sampled_from(sorted(NUMBERS[section])))
        kind, edges = NUMBERS[section][key]
        data.setdefault(section, {})[key] = draw(st.one_of(st.sampled_from(edges),
                                                          EXTREME_INT if kind is int else EXTREME))
        fields.append(f"{section}.{key}")
    return data, fields


@st.composite
def traits_at_bounds(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """One segment with every trait at an end of its range or spanning it; or, half the time, some drawn
    from extreme numbers (most of those are refused, so the bounds alone get played often)."""
    wild = draw(st.booleans())
    segment: dict[str, Any] = {"name": "edge", "size": 1}
    for trait, (lo, hi) in TRAIT_RANGES.items():
        bounds = st.sampled_from([{"dist": "constant", "value": lo}, {"dist": "constant", "value": hi},
                                  {"dist": "uniform", "low": lo, "high": hi}])
        segment[trait] = draw(bounds if not wild else st.one_of(
            bounds,
            st.builds(lambda v: {"dist": "constant", "value": v}, EXTREME),
            st.builds(lambda a, b: {"dist": "uniform", "low": min(a, b), "high": max(a, b)}, EXTREME, EXTREME),
            st.builds(lambda m, sd: {"dist": "normal", "mean": m, "std": abs(sd)}, EXTREME, EXTREME),
            st.builds(lambda a, b: {"dist": "beta", "a": abs(a), "b": abs(b)}, EXTREME, EXTREME),
        ))
    ends = {"interest_concentration": ([1e-3, 1e3], EXTREME), "mainstream": ([0.0, 10.0], EXTREME),
            "n_favorite_topics": ([1, 10**6], EXTREME_INT)}
    for key, (at_bounds, anything) in ends.items():
        segment[key] = draw(st.one_of(st.sampled_from(at_bounds), anything) if wild else st.sampled_from(at_bounds))
    return {"name": "edges", "segments": [segment]}, [f"segments.0.{k}" for k in segment if k not in ("name", "size")]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(world=extreme_worlds(), population=traits_at_bounds())
@example(world=({**SMALL, "reward": {"dwell": 1e308}}, ["reward.dwell"]),
         population=({"name": "p", "segments": [{"name": "s", "size": 1}]}, []))
@example(world=(SMALL, []), population=({"name": "p", "segments": [{"name": "s", "size": 1, "patience": {
    "dist": "constant", "value": 1e30}, "novelty": {"dist": "uniform", "low": -1e308, "high": 1e308}}]},
    ["segments.0.patience", "segments.0.novelty"]))
def test_extreme_numbers_are_refused_naming_the_field_or_run_finite(
        world: tuple[dict[str, Any], list[str]], population: tuple[dict[str, Any], list[str]]) -> None:
    """Issue 31: finite but extreme numbers anywhere in a world or a population, and every trait at its
    bounds, either are refused with one error naming a field that was set, or play episodes whose rewards,
    observations, totals and statistics are all finite."""
    (world_data, world_fields), (population_data, population_fields) = world, population
    try:
        cfg = build(WorldConfig, "world config", world_data)
        spec = PopulationSpec.parse(population_data)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(("Invalid world config:", "Invalid population spec:")), message
        for line in message.splitlines()[1:]:  # each line names a field that was set (a section's rule: in it)
            assert any(field in line or (line.lstrip().startswith(field.rpartition(".")[0] + ":")
                                         and field.rpartition(".")[2] in line)
                       for field in world_fields + population_fields), message
        return
    env = RecoWorldEnv(cfg, population=spec)
    rng = np.random.default_rng(0)
    with np.errstate(all="ignore"):  # an overflow on the way is fine; a non-finite result is not
        for seed in range(2):
            obs, _ = env.reset(seed=seed)
            total = 0.0
            for _ in range(40):
                obs, reward, terminated, truncated, _ = env.step(
                    rng.choice(cfg.n_candidates, cfg.slate_size, replace=False))
                total += reward
                assert _finite(obs) and math.isfinite(reward), (world_data, population_data)
                if terminated or truncated:
                    break
            stats = env.episode_stats()
            assert math.isfinite(total) and _finite(list(stats.values())), (world_data, population_data)
