"""Static user profiles and the seeded sampler that draws them from a population spec.

A population is a list of named segments, each with a size and distributions over the
traits that drive the simulated user: interests, novelty seeking, patience, time
budget and return propensity. The profile is the *static* part of a user; the hidden,
moving part is the `Mindset`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import weakref
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from recoworld.catalog import Catalog
from recoworld.config import build, constructed, load_config
from recoworld.errors import ConfigError, UnknownTopicError
from recoworld.streams import DRAW_BETA, DRAW_CONSTANT, DRAW_NORMAL, DRAW_UNIFORM, profile_draws


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise NotImplementedError

    def draw(self, rng: np.random.Generator) -> float:
        """`sample(rng, 1)[0]`, the same draw, without the array: a profile draws its traits one by one."""
        raise NotImplementedError

    def anchors(self) -> dict[str, float]:
        """The values that must lie in a trait's range (`TRAIT_RANGES`): where the draws are meant to fall."""
        raise NotImplementedError


class Beta(_Dist):
    dist: Literal["beta"] = "beta"
    a: float = Field(gt=0)
    b: float = Field(gt=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.beta(self.a, self.b, size=n)

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.beta(self.a, self.b))

    def anchors(self) -> dict[str, float]:
        return {"mean": 1.0 / (1.0 + self.b / self.a)}  # a / (a + b), without overflowing a + b


class Uniform(_Dist):
    dist: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"uniform needs low <= high, got low={self.low}, high={self.high}")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=n)

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def anchors(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}


class Normal(_Dist):
    """A normal distribution clipped to [low, high]."""

    dist: Literal["normal"] = "normal"
    mean: float
    std: float = Field(ge=0)
    low: float = Field(-np.inf, allow_inf_nan=True, description="clip below; -inf: no bound")
    high: float = Field(np.inf, allow_inf_nan=True, description="clip above; inf: no bound")

    @model_validator(mode="after")
    def _ordered(self) -> Normal:
        if math.isnan(self.low) or math.isnan(self.high) or self.high < self.low:
            raise ValueError(f"normal needs low <= high, got low={self.low}, high={self.high}")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        with np.errstate(over="ignore"):  # a huge std overflows to inf, clipped here or to the trait's range
            return np.clip(rng.normal(self.mean, self.std, size=n), self.low, self.high)

    def draw(self, rng: np.random.Generator) -> float:
        value = float(rng.normal(self.mean, self.std))
        value = value if value > self.low else self.low  # np.clip's comparisons, -0.0 included
        return value if value < self.high else self.high

    def anchors(self) -> dict[str, float]:
        return {"mean": self.mean}  # its tails may leave the range: they are clipped to it


class Constant(_Dist):
    dist: Literal["constant"] = "constant"
    value: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.float64)

    def draw(self, rng: np.random.Generator) -> float:
        return float(self.value)

    def anchors(self) -> dict[str, float]:
        return {"value": self.value}


#: One trait distribution, whichever kind; `Dist` is the same, told apart by its `dist` field when parsed.
AnyDist = Beta | Uniform | Normal | Constant
Dist = Annotated[AnyDist, Field(discriminator="dist")]

#: Each trait's range. A spec whose constant, uniform bounds, or normal or beta mean lies outside is refused
#: (it was clamped in silence, every user alike); single draws outside, a normal's tails, are clipped to it.
#: patience: consecutive dull items tolerated; time_budget_min: minutes a day, at most the day's 1440.
TRAIT_RANGES: dict[str, tuple[float, float]] = {
    "novelty": (0.0, 1.0), "patience": (1.0, 10_000.0), "time_budget_min": (1.0, 1440.0),
    "return_propensity": (0.01, 0.99),
}

DEFAULT_ATTRIBUTES: dict[str, list[str]] = {
    "age_band": ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"],
    "region": ["Lisbon", "Toronto", "Lagos", "Seoul", "Berlin", "Mexico City", "Mumbai", "Austin", "Melbourne"],
    "device": ["phone", "phone", "tablet", "laptop", "tv"],
    "occupation": ["student", "nurse", "software engineer", "teacher", "retiree", "designer",
                   "shop owner", "driver", "researcher", "parent at home"],
}


class Segment(BaseModel):
    """One named group of users with trait distributions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    size: int = Field(ge=1, description="relative size; exact count when sampling the spec as is")
    topics: list[str] | None = Field(None, min_length=1, description="favoured topics; random ones when unset")
    n_favorite_topics: int = Field(3, ge=1)
    interest_concentration: float = Field(1.0, ge=1e-3, le=1e3, description="Dirichlet alpha over favourite "
                                          "topics; beyond these bounds its draws are all zero or NaN")
    mainstream: float = Field(
        1.0, ge=0, le=10,
        description="favourite topics (when `topics` is unset) are drawn with probability proportional to each "
        "topic's share of the catalog's popularity to this power: 1 = in proportion to the attention a topic gets, "
        "0 = uniformly over topics (the former default), at most 10 (higher powers of small shares underflow); "
        "see `_favourite_topic_odds`",
    )
    novelty: Dist = Beta(a=2, b=2)
    patience: Dist = Normal(mean=25, std=8, low=5, high=80)
    time_budget_min: Dist = Normal(mean=35, std=12, low=5, high=240)
    return_propensity: Dist = Beta(a=5, b=3)
    attributes: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))

    @field_validator(*TRAIT_RANGES)
    @classmethod
    def _in_range(cls, dist: AnyDist, info: ValidationInfo) -> AnyDist:
        lo, hi = TRAIT_RANGES[str(info.field_name)]
        for name, value in dist.anchors().items():
            if not lo <= value <= hi:
                raise ValueError(f"{dist.dist} {name} {value:g} is outside the trait's range [{lo:g}, {hi:g}]")
        return dist

    @field_validator("attributes")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, options in value.items():
            if not options:
                raise ValueError(f"attribute {key!r} has no options")
        return value


class PopulationSpec(BaseModel):
    """Named segments; validated from Python, dicts or YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "population"
    segments: list[Segment] = Field(min_length=1)

    @field_validator("segments")
    @classmethod
    def _unique(cls, segments: list[Segment]) -> list[Segment]:  # a field validator: the error names `segments`
        names = [s.name for s in segments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"segment names must be unique, repeated: {dupes}")
        return segments

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PopulationSpec:
        return build(cls, "population spec", data)

    def check_topics(self, catalog: Catalog, what: str = "population spec") -> None:
        """`UnknownTopicError` naming `what` and the segment when a segment's `topics` are not the catalog's."""
        for segment in self.segments:
            unknown = [t for t in segment.topics or [] if t not in catalog.topic_names]
            if unknown:
                raise UnknownTopicError(f"{what}: segment {segment.name!r} names topic {unknown[0]!r}, which the "
                                        f"catalog does not have; its topics: {', '.join(catalog.topic_names)}")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> PopulationSpec:
        return load_config(cls, path, "population spec")

    @classmethod
    def default(cls) -> PopulationSpec:
        """Four segments with clearly different novelty, patience and loyalty."""
        return cls(
            name="default",
            segments=[
                Segment(name="casual", size=40, novelty=Beta(a=2, b=3),
                        time_budget_min=Normal(mean=25, std=8, low=5, high=120)),
                Segment(name="enthusiast", size=25, n_favorite_topics=2, interest_concentration=3.0,
                        novelty=Beta(a=1.5, b=5), patience=Normal(mean=35, std=8, low=10, high=80),
                        time_budget_min=Normal(mean=50, std=15, low=10, high=240),
                        return_propensity=Beta(a=8, b=2)),
                Segment(name="explorer", size=20, n_favorite_topics=5, interest_concentration=0.7,
                        novelty=Beta(a=5, b=1.5)),
                Segment(name="impatient", size=15, novelty=Beta(a=2, b=2),
                        patience=Normal(mean=12, std=4, low=4, high=40),
                        return_propensity=Beta(a=3, b=4)),
            ],
        )

    def allocate(self, n: int | None) -> list[int]:
        """Users per segment: the sizes themselves, or `n` split by largest remainder."""
        sizes = np.array([s.size for s in self.segments], dtype=np.float64)
        if n is None:
            return [int(s) for s in sizes]
        if n < 0:
            raise ConfigError(f"number of users must be >= 0, got {n}")
        quota = sizes / sizes.sum() * n
        counts = np.floor(quota).astype(int)
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[: n - counts.sum()]] += 1
        return [int(c) for c in counts]


class UserProfile(BaseModel):
    """The static part of a simulated user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str
    segment: str
    persona: str
    attributes: dict[str, str]
    topic_interests: dict[str, float] = Field(description="topic name -> weight; weights sum to 1")
    novelty_trait: float = Field(ge=0, le=1)
    patience: int = Field(ge=1, description="consecutive unengaging items tolerated")
    time_budget_min: float = Field(gt=0, description="daily minutes available")
    return_propensity: float = Field(gt=0, lt=1)
    interest_embedding: list[float] | None = Field(
        None, description="long-term interests given directly in the catalog's embedding space (e.g. user factors "
        "learned from a log); when set, the simulator uses it instead of the topic mix"
    )
    popularity_affinity: float = Field(
        1.0, ge=0, description="conformity: multiplies the choice model's popularity weight for this user"
    )
    activity: float = Field(0.0, description="click-logit offset: how much more (or less) this user engages")
    interest_shift_day: float | None = Field(
        None, ge=0, description="interest shift: from the first session that opens on or after this day, the "
        "parametric user's long-term interests are `shifted_interests` (what interests regress to between "
        "sessions); None: they never change. LLM users' personas do not shift"
    )
    shifted_interests: dict[str, float] | None = Field(
        None, description="topic name -> weight: the long-term interests from `interest_shift_day` on"
    )

    @field_validator("topic_interests", "shifted_interests")
    @classmethod
    def _weights(cls, value: dict[str, float] | None, info: ValidationInfo) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(f"{info.field_name} must name at least one topic")
        if any(w < 0 for w in value.values()):
            raise ValueError(f"{info.field_name} weights must be >= 0, got {value}")
        total = sum(value.values())
        if total <= 0:
            raise ValueError(f"{info.field_name} weights must not all be zero")
        return {k: v / total for k, v in value.items()}

    @model_validator(mode="after")
    def _shift_complete(self) -> UserProfile:
        if (self.interest_shift_day is None) != (self.shifted_interests is None):
            raise ValueError("interest_shift_day and shifted_interests go together: give both or neither")
        return self

    def interest_vector(self, catalog: Catalog) -> np.ndarray:
        """Long-term interests in the catalog's embedding space (unit norm)."""
        if self.interest_embedding is not None:
            vec = np.asarray(self.interest_embedding, dtype=np.float64)
            if len(vec) != catalog.embedding_dim:
                raise ConfigError(f"user {self.user_id!r}: interest_embedding has {len(vec)} dims, the catalog's "
                                  f"embeddings have {catalog.embedding_dim}; use the catalog it was built with")
            return (vec / max(float(np.linalg.norm(vec)), 1e-9)).astype(np.float32)
        return _topic_mix(self.topic_interests, catalog)

    def shifted_vector(self, catalog: Catalog) -> np.ndarray | None:
        """The long-term interests after `interest_shift_day` (unit norm), or None without a shift."""
        return None if self.shifted_interests is None else _topic_mix(self.shifted_interests, catalog)


def _topic_mix(interests: dict[str, float], catalog: Catalog) -> np.ndarray:
    vec = np.zeros(catalog.embedding_dim, dtype=np.float64)
    for name, weight in interests.items():
        vec += weight * catalog.topic_centroids[catalog.topic_index(name)]
    return (vec / max(float(np.linalg.norm(vec)), 1e-9)).astype(np.float32)


def interest_vectors(profiles: Sequence[UserProfile], catalog: Catalog) -> np.ndarray:
    """(len(profiles), D) float32: `np.stack([p.interest_vector(catalog) for p in profiles])`, the same numbers,
    with the topic mixes of all profiles in one compiled pass (a batch of new episodes starts with many).

    `_topic_mix`'s arithmetic step for step: each weighted centroid in the centroids' precision (numpy multiplies
    a Python float and a float32 row in float32) added in float64 in the topics' order, the norm sqrt(v @ v) by
    the same BLAS dot per row (a stacked (1, D) @ (D, 1) product), then the division and the cast."""
    out = np.empty((len(profiles), catalog.embedding_dim), dtype=np.float32)
    mixed: list[int] = []
    topics: list[int] = []
    weights: list[float] = []
    ends: list[int] = []
    for j, profile in enumerate(profiles):
        if profile.interest_embedding is not None:
            out[j] = profile.interest_vector(catalog)
            continue
        mixed.append(j)
        for name, weight in profile.topic_interests.items():
            topics.append(catalog.topic_index(name))
            weights.append(weight)
        ends.append(len(topics))
    if mixed:
        centroids = catalog.topic_centroids
        vec = _mix_topics(np.array(topics, dtype=np.int64), np.array(weights, dtype=centroids.dtype),
                          np.array(ends, dtype=np.int64), centroids)
        norms = np.sqrt(np.matmul(vec[:, None, :], vec[:, :, None])[:, 0, 0])
        out[mixed] = vec / np.where(norms < 1e-9, 1e-9, norms)[:, None]  # max(norm, 1e-9), NaN kept
    return out


@numba.njit(nogil=True, cache=True)
def _mix_topics(topics: np.ndarray, weights: np.ndarray, ends: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Row j: the sum, in order, of weights[i] * centroids[topics[i]] over i in [ends[j - 1], ends[j])."""
    vec = np.zeros((ends.shape[0], centroids.shape[1]))
    start = 0
    for j in range(ends.shape[0]):
        for i in range(start, ends[j]):
            for x in range(centroids.shape[1]):
                vec[j, x] += weights[i] * centroids[topics[i], x]
        start = ends[j]
    return vec


def _describe(attrs: dict[str, str], topics: list[str], novelty: float, patience: int, budget: float) -> str:
    taste = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + f" and {topics[-1]}"
    curiosity = (
        "loves discovering unfamiliar things" if novelty > 0.66
        else "likes a mix of familiar and new" if novelty > 0.33
        else "sticks to what they know"
    )
    temper = "gives up quickly on a dull feed" if patience < 15 else "is fairly patient with a feed"
    who = " ".join(v for k, v in attrs.items() if k in ("age_band", "occupation"))
    where = f" from {attrs['region']}" if "region" in attrs else ""
    return (
        f"A {who}{where} who mostly watches {taste}; {curiosity}, {temper}, "
        f"and has about {budget:.0f} minutes a day"
        + (f", usually on a {attrs['device']}." if "device" in attrs else ".")
    )


def draw_profiles(profiles: list[UserProfile], n: int | None, rng: np.random.Generator) -> list[UserProfile]:
    """`n` of `profiles` without replacement, in their original order (all of them when `n` is None or larger)."""
    if n is None or n >= len(profiles):
        return list(profiles)
    return [profiles[i] for i in np.sort(rng.choice(len(profiles), n, replace=False))]


def sample_population(
    spec: PopulationSpec, catalog: Catalog, rng: np.random.Generator, n: int | None = None
) -> list[UserProfile]:
    """Draw profiles segment by segment; the same rng state gives the same users.

    `n` users are split over the segments in proportion to their sizes (largest remainder),
    so a population of n reproduces the segment mix as closely as n allows. One user at a
    time (a single env's episodes) is `sample_profile` instead."""
    spec.check_topics(catalog)
    profiles: list[UserProfile] = []
    for segment, count in zip(spec.segments, spec.allocate(n)):
        profiles.extend(_sample_segment(segment, count, catalog, rng))
    return profiles


def sample_users(spec: PopulationSpec, catalog: Catalog, rng: np.random.Generator, segment_of: np.ndarray,
                 first: Sequence[int] | np.ndarray) -> list[UserProfile]:
    """Profiles of users whose segments are given (`segment_of`: indices into `spec.segments`), in that
    order; segment s's users are numbered from `first[s]` on. A study shard draws its users this way,
    from its own stream, so no process ever holds a whole large population (`recoworld.studies.users`)."""
    spec.check_topics(catalog)
    segment_of = np.asarray(segment_of)
    out: list[UserProfile | None] = [None] * len(segment_of)
    for s, segment in enumerate(spec.segments):
        places = np.flatnonzero(segment_of == s)
        for place, profile in zip(places, _sample_segment(segment, len(places), catalog, rng, int(first[s]))):
            out[int(place)] = profile
    if any(p is None for p in out):
        raise ConfigError(f"segment indices must lie in [0, {len(spec.segments)}): "
                          f"got {sorted(set(segment_of.tolist()))}")
    return [p for p in out if p is not None]


def sample_profile(spec: PopulationSpec, catalog: Catalog, rng: np.random.Generator) -> UserProfile:
    """One user: a segment drawn with probability proportional to its size, then a profile of it.

    Not `sample_population(n=1)`, whose largest-remainder split always gives the largest segment."""
    checked = _CHECKED.setdefault(catalog, {})
    kept = checked.get(id(spec))
    if kept is None or kept[0] is not spec:  # a spec checked against this catalog once (both are frozen)
        spec.check_topics(catalog)
        if len(checked) >= 64:
            checked.clear()
        kept = checked[id(spec)] = (spec, list(itertools.accumulate(segment.size for segment in spec.segments)))
    cumulative = kept[1]
    segment = spec.segments[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
    return _sample_segment(segment, 1, catalog, rng)[0]


#: Per catalog, the specs already checked against it (`sample_profile`, once per episode, checks each once),
#: each with its segments' cumulative sizes.
_CHECKED: weakref.WeakKeyDictionary[Catalog, dict[int, tuple[PopulationSpec, list[int]]]] = \
    weakref.WeakKeyDictionary()


def _favourite_topic_odds(catalog: Catalog, mainstream: float) -> np.ndarray | None:
    """Probabilities of each topic being drawn as a favourite: its share of the catalog's popularity
    to the power `mainstream`; None (uniform, and the former draws exactly) when `mainstream` is 0.

    Why: tastes concentrate where attention does. Drawn uniformly, a niche topic had as many fans
    as the largest one, so feeds ranked by each user's taste spread consumption over the catalog
    far more evenly than real logs (item Gini 0.38-0.46 against the 0.6-0.9 of public logs, issue
    27). Drawing favourites in proportion to a topic's attention is an assumption (the exponent 1
    is the neutral choice: a topic's fans in proportion to its audience); topics with no
    popularity at all keep a tiny chance so that any k of them can still be drawn."""
    if mainstream == 0:
        return None
    mass = np.bincount(catalog.topic, weights=catalog.popularity.astype(np.float64), minlength=catalog.n_topics)
    odds = np.maximum(mass / max(float(mass.sum()), 1e-300), 1e-12) ** mainstream
    return odds / odds.sum()


class _TopicOdds:
    """A catalog's `_favourite_topic_odds` for one `mainstream`, made once (a single env draws a profile
    per episode), with what `_choose_topics` reads: the odds and their first CDF as Python floats."""

    def __init__(self, catalog: Catalog, mainstream: float) -> None:
        self.odds = _favourite_topic_odds(catalog, mainstream)
        if self.odds is not None:
            self.odds_list: list[float] = self.odds.tolist()
            cdf = np.cumsum(self.odds)
            cdf /= cdf[-1]
            self.cdf: list[float] = cdf.tolist()
            self.compiled = (self.odds, cdf)  # what `streams.profile_draws` takes
            self.nonzero = int(np.count_nonzero(self.odds > 0))


#: Per catalog and `mainstream`, its `_TopicOdds` (catalogs are not changed once made; see their cached properties).
_TOPIC_ODDS: weakref.WeakKeyDictionary[Catalog, dict[float, _TopicOdds]] = weakref.WeakKeyDictionary()


def _topic_odds(catalog: Catalog, mainstream: float) -> _TopicOdds:
    kept = _TOPIC_ODDS.setdefault(catalog, {})
    if mainstream not in kept:
        kept[mainstream] = _TopicOdds(catalog, mainstream)
    return kept[mainstream]


def _choose_topics(rng: np.random.Generator, topics: _TopicOdds, k: int) -> list[int]:
    """`rng.choice(len(odds), size=k, replace=False, p=odds)`, the same draws and the same answer, with
    the first round's CDF made once: numpy's own rounds, in Python floats (its cumulative sum runs in
    order, its division and `searchsorted(side='right')` are `/` and `bisect_right`). A round draws a
    uniform per topic still missing, keeps the new topics in the order first drawn, and the next round
    draws again with the found topics' odds set to zero."""
    if topics.nonzero < k:  # numpy's own error
        raise ValueError("Fewer non-zero entries in p than size")
    found: list[int] = []
    cdf = topics.cdf
    while len(found) < k:
        x = rng.random(k - len(found)).tolist()
        if found:
            p = list(topics.odds_list)
            for f in found:
                p[f] = 0.0
            sums = list(itertools.accumulate(p))
            total = sums[-1]
            cdf = [v / total for v in sums]
        for new in (bisect.bisect_right(cdf, u) for u in x):
            if new not in found:
                found.append(new)
    return found


class _SegmentDraws:
    """What drawing one of a segment's users reads, looked up once per segment (a single env draws a profile
    per episode): each trait's `draw` and range, in the order a user draws them, the attributes' options, the
    Dirichlet's alpha per number of topics; and, where `streams.profile_draws` can draw a user's numbers in one
    compiled call, the options and traits as it takes them (`compiled`)."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        dists: list[AnyDist] = [getattr(segment, trait) for trait in _TRAITS]
        self.draws = [dist.draw for dist in dists]
        self.ranges = [TRAIT_RANGES[trait] for trait in _TRAITS]
        self.attributes = [(key, options, len(options)) for key, options in segment.attributes.items()]
        self.alphas: dict[int, np.ndarray] = {}
        self.options = np.array([n for _, _, n in self.attributes], dtype=np.uint64)
        self.kinds = np.zeros(len(dists), dtype=np.int64)
        self.params = np.zeros((len(dists), 4))
        # numpy's dirichlet draws Gammas from alpha 0.1 up, and its beta two Gammas unless a, b <= 1
        self.compiled = segment.interest_concentration >= 0.1 and all(n < 2**32 for _, _, n in self.attributes)
        for t, dist in enumerate(dists):
            if type(dist) is Beta and (dist.a > 1.0 or dist.b > 1.0):
                self.kinds[t], self.params[t, :2] = DRAW_BETA, (dist.a, dist.b)
            elif type(dist) is Uniform:  # `Generator.uniform` draws low + (high - low) * u
                self.kinds[t], self.params[t, :2] = DRAW_UNIFORM, (dist.low, dist.high - dist.low)
            elif type(dist) is Normal:
                self.kinds[t], self.params[t] = DRAW_NORMAL, (dist.mean, dist.std, dist.low, dist.high)
            elif type(dist) is Constant:
                self.kinds[t], self.params[t, 0] = DRAW_CONSTANT, dist.value
            else:
                self.compiled = False

    def alpha(self, k: int) -> np.ndarray:
        if k not in self.alphas:
            self.alphas[k] = np.full(k, self.segment.interest_concentration)
        return self.alphas[k]

    def numbers(self, rng: np.random.Generator, k: int, topics: _TopicOdds | None
                ) -> tuple[list[int], list[float], list[int], list[float]]:
        """One user's favourite topics (k of `topics`' odds; [] without odds: the caller chose them), topic
        weights (k), attribute option indices and traits (unclipped), drawn in this order."""
        weighted = topics if topics is not None and topics.odds is not None else None
        if self.compiled and (weighted is None or weighted.nonzero >= k):  # (else numpy's error, below)
            drawn = profile_draws(rng, self.alpha(k), self.options, self.kinds, self.params,
                                  None if weighted is None else weighted.compiled)
            if drawn is not None:  # the same numbers as the calls below, in one compiled call
                return drawn
        chosen = [] if weighted is None else _choose_topics(rng, weighted, k)
        weights = rng.dirichlet(self.alpha(k)).tolist()
        picks = [int(rng.integers(n)) for _, _, n in self.attributes]
        return chosen, weights, picks, [draw(rng) for draw in self.draws]


_TRAITS = ("novelty", "patience", "time_budget_min", "return_propensity")  # in the order a user draws them

#: Per segment (by id, kept with it: segments are frozen), its `_SegmentDraws`.
_SEGMENT_DRAWS: dict[int, _SegmentDraws] = {}


def _segment_draws(segment: Segment) -> _SegmentDraws:
    kept = _SEGMENT_DRAWS.get(id(segment))
    if kept is None or kept.segment is not segment:
        if len(_SEGMENT_DRAWS) >= 256:
            _SEGMENT_DRAWS.clear()
        kept = _SEGMENT_DRAWS[id(segment)] = _SegmentDraws(segment)
    return kept


#: `UserProfile`'s fields in declared order, those a drawn profile sets (`_sample_segment`'s, in its order), and
#: the defaults of the others; `_DRAWN_FIRST`: the drawn ones come first, so a drawn profile's fields followed by
#: the defaults are already in declared order.
_PROFILE_FIELDS = tuple(UserProfile.model_fields)
_DRAWN_FIELDS = ("user_id", "segment", "persona", "attributes", "topic_interests", "novelty_trait", "patience",
                 "time_budget_min", "return_propensity")
_PROFILE_DEFAULTS = {name: field.get_default(call_default_factory=True)
                     for name, field in UserProfile.model_fields.items() if not field.is_required()}
_DRAWN_FIRST = _DRAWN_FIELDS + tuple(_PROFILE_DEFAULTS) == _PROFILE_FIELDS


def _drawn_profile(fields: dict[str, Any]) -> UserProfile:
    """The `UserProfile(**fields)` of a drawn user, without re-validating what the draws guarantee.

    Validation would check each trait's bounds, which `TRAIT_RANGES` (within the model's) already clip the draws
    to, and normalise the topic weights, done here the same way (their sum, in order, then each divided by it).
    The model is built as validation builds it: every field in declared order (the defaults of those not drawn),
    the drawn ones the fields set. Anything the shortcut cannot vouch for (a NaN trait, weights not summing above
    zero, fields other than a drawn profile's) goes through validation, which says what is wrong (or builds it)."""
    weights = fields["topic_interests"]
    total = sum(weights.values())
    if not (total > 0 and fields["novelty_trait"] == fields["novelty_trait"]
            and fields["time_budget_min"] == fields["time_budget_min"]
            and fields["return_propensity"] == fields["return_propensity"]
            and _DRAWN_FIRST and tuple(fields) == _DRAWN_FIELDS):
        return UserProfile(**fields)
    values = fields | _PROFILE_DEFAULTS  # in declared order (`_DRAWN_FIRST`)
    values["topic_interests"] = {k: v / total for k, v in weights.items()}
    return constructed(UserProfile, values, set(fields))


def _sample_segment(segment: Segment, count: int, catalog: Catalog, rng: np.random.Generator,
                    first: int = 0) -> list[UserProfile]:
    profiles: list[UserProfile] = []
    plan = _segment_draws(segment)
    if segment.topics is not None:
        fav_idx = [catalog.topic_index(t) for t in segment.topics]
    topic_odds = _topic_odds(catalog, segment.mainstream) if segment.topics is None else None
    topic_names = catalog.topic_names
    (novelty_lo, novelty_hi), (patience_lo, patience_hi), (budget_lo, budget_hi), (ret_lo, ret_hi) = plan.ranges
    for i in range(count):
        chosen: list[int] | np.ndarray | None = None
        if topic_odds is not None:
            k = min(segment.n_favorite_topics, catalog.n_topics)
            if topic_odds.odds is None:
                chosen = rng.choice(catalog.n_topics, size=k, replace=False)
        else:
            k = min(segment.n_favorite_topics, len(fav_idx))
            chosen = rng.choice(fav_idx, size=k, replace=False)
        favourites, weights, picks, traits = plan.numbers(rng, k, topic_odds)  # drawn by the odds, when chosen isn't
        chosen = favourites if chosen is None else chosen
        order = sorted(range(len(weights)), key=lambda j: -weights[j])  # stable, as numpy's stable argsort
        interests = {topic_names[int(chosen[j])]: round(weights[j], 4) for j in order}
        attrs = {key: str(opts[pick]) for (key, opts, _), pick in zip(plan.attributes, picks)}
        novelty = min(max(traits[0], novelty_lo), novelty_hi)  # each trait clipped to its range
        patience = round(min(max(traits[1], patience_lo), patience_hi))
        budget = min(max(traits[2], budget_lo), budget_hi)
        ret = min(max(traits[3], ret_lo), ret_hi)
        profiles.append(_drawn_profile({
            "user_id": f"{segment.name}-{first + i:05d}",
            "segment": segment.name,
            "persona": _describe(attrs, list(interests), novelty, patience, budget),
            "attributes": attrs,
            "topic_interests": interests,
            "novelty_trait": novelty,
            "patience": patience,
            "time_budget_min": budget,
            "return_propensity": ret,
        }))
    return profiles
