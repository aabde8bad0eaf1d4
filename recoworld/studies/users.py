"""Who a study's users are, shard by shard, drawn inside each shard's task from the shard's own stream.

Before any shard runs, a population of N users is fixed only by its plan: which segment each
user belongs to (2 bytes a user; the segment sizes are `PopulationSpec.allocate`'s, shuffled
with the study seed so that segments mix across shards) and each shard's first user number
per segment. A shard's profiles (about 2.5 KB and 85 us each) are drawn by the task that plays
them, from the stream `seeding.POPULATION` with the shard's index. So memory is bounded by the
shards in flight, the first shard starts at once even for 10 million users (drawing them up
front took 14 minutes and 25 GB before the first shard: issues 31 and 32), and a shard's users
depend on the study seed and the shard's index alone, like its other seeds.

Users given as profiles (a spec's `profiles`, a calibrated folder's users) are in memory
already; they are shuffled with the same seed and cut into shards as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recoworld import seeding
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError
from recoworld.population import PopulationSpec, UserProfile, sample_users


@dataclass(frozen=True)
class Plan:
    """Users not drawn yet: each one's segment, and where each segment's numbering starts."""

    population: PopulationSpec
    segment_of: np.ndarray  # (users,) indices into population.segments
    first: np.ndarray  # the number of each segment's first user: (S,) in a shard, (n_shards, S) in a study


@dataclass(frozen=True)
class ShardUsers:
    """One shard's users, as its task receives them: the profiles, or the plan to draw them from."""

    shard: int
    seed: int
    given: tuple[UserProfile, ...] = ()
    plan: Plan | None = None

    def __len__(self) -> int:
        return len(self.given) if self.plan is None else len(self.plan.segment_of)

    def user_ids(self) -> list[str]:
        """The users' ids, without drawing them (the checkpoint records them)."""
        if self.plan is None:
            return [p.user_id for p in self.given]
        names = [s.name for s in self.plan.population.segments]
        seen = self.plan.first.copy()
        ids = []
        for s in self.plan.segment_of.tolist():
            ids.append(f"{names[s]}-{int(seen[s]):05d}")
            seen[s] += 1
        return ids

    def profiles(self, catalog: Catalog) -> list[UserProfile]:
        """The profiles: given, or drawn on `catalog` from this shard's stream (the same ones every time)."""
        if self.plan is None:
            return list(self.given)
        return sample_users(
            self.plan.population,
            catalog,
            seeding.rng(self.seed, seeding.POPULATION, self.shard),
            self.plan.segment_of,
            self.plan.first,
        )


@dataclass(frozen=True)
class StudyUsers:
    """All of a study's users as shards (see the module docstring)."""

    shard_size: int
    seed: int
    given: tuple[UserProfile, ...] = ()
    plan: Plan | None = None  # segment_of in shard order, first per shard

    @classmethod
    def of_profiles(cls, profiles: list[UserProfile], shard_size: int, seed: int) -> StudyUsers:
        """Given users, shuffled with the study seed so that segments mix across shards."""
        if not profiles:
            raise ConfigError("the study has no users: give n_users >= 1 or segments with size >= 1")
        order = seeding.rng(seed, seeding.STUDY_ORDER).permutation(len(profiles))
        return cls(shard_size, seed, given=tuple(profiles[i] for i in order))

    @classmethod
    def planned(cls, population: PopulationSpec, n_users: int | None, shard_size: int, seed: int) -> StudyUsers:
        """`n_users` users of `population` (default: its segment sizes), split over segments by
        `allocate`, their order shuffled with the study seed; nobody drawn yet."""
        counts = population.allocate(n_users)
        total = sum(counts)
        if total == 0:
            raise ConfigError("the study has no users: give n_users >= 1 or segments with size >= 1")
        segment_of = np.repeat(np.arange(len(counts), dtype=np.int16), counts)
        seeding.rng(seed, seeding.STUDY_ORDER).shuffle(segment_of)
        n_shards = math.ceil(total / shard_size)
        padded = np.full(n_shards * shard_size, -1, dtype=np.int16)
        padded[:total] = segment_of
        rows = padded.reshape(n_shards, shard_size)
        per_shard = np.stack([(rows == s).sum(axis=1) for s in range(len(counts))], axis=1).astype(np.int64)
        first = np.cumsum(per_shard, axis=0) - per_shard
        return cls(shard_size, seed, plan=Plan(population, segment_of, first))

    def __len__(self) -> int:
        return len(self.given) if self.plan is None else len(self.plan.segment_of)

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self) / self.shard_size)

    def shard(self, i: int) -> ShardUsers:
        if not 0 <= i < self.n_shards:
            raise IndexError(f"shard {i}: the study has {self.n_shards} shards")
        part = slice(i * self.shard_size, (i + 1) * self.shard_size)
        if self.plan is None:
            return ShardUsers(i, self.seed, given=self.given[part])
        return ShardUsers(i, self.seed, plan=Plan(self.plan.population, self.plan.segment_of[part], self.plan.first[i]))

    def segment_sample(self, segment: str, catalog: Catalog, n: int) -> list[UserProfile]:
        """Users of `segment`: the given ones, or `n` drawn for estimates (never a study's own users)."""
        if self.plan is None:
            return [p for p in self.given if p.segment == segment]
        names = [s.name for s in self.plan.population.segments]
        if segment not in names or not (self.plan.segment_of == names.index(segment)).any():
            return []
        return sample_users(
            self.plan.population,
            catalog,
            seeding.rng(self.seed, seeding.STUDY_TARGET_SAMPLE),
            np.full(n, names.index(segment)),
            [0] * len(names),
        )
