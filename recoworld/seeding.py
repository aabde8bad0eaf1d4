"""Named random streams: every seed the project derives from a run's seed, in one place.

A run's seed fans out into independent streams, one per purpose (the users, the episodes, a
benchmark's users, DAgger's rounds). Each purpose is fixed here by name rather than by a
spawn key or salt written where it is used, so two purposes cannot silently share a stream and
a reader sees what a number is for. The values are the ones the call sites used before this
module existed, so every stream (and every published output) is bit-identical to before:

- `POPULATION` and `EPISODES` are `SeedSequence(seed).spawn(2)`'s two children, spawn keys
  (0,) and (1,) (`recoworld simulate`, and `distill` rebuilding the same users);
- `BENCH_USERS` is spawn key (7,): a scenario's users, a function of its seed alone;
- `DAGGER` salts the entropy instead, `SeedSequence([seed, 0x7EAC4E5])`, as the teacher did;
- `TRANSFER_USERS` and `TRANSFER_BOOTSTRAP` are the transfer panel's `default_rng([seed, 7])` and
  `default_rng([seed, 11])`: salts too (a list seed is that `SeedSequence`).

- a study (`recoworld.studies`) draws each shard's users from `POPULATION` with the shard's
  index, and a calibrated folder's users from `POPULATION` itself; `STUDY_ORDER` shuffles them,
  `STUDY_TARGET_SAMPLE` draws the users who tell a creator's topic, `STUDY_CREATOR` and
  `STUDY_RELEASES` place the creator's and the catalog's new items, and `STUDY_SHARD` with the
  shard's index seeds its world and recommenders. `STUDY_CREATOR` is `EPISODES`' spawn key (1,),
  kept so that studies reproduce: the two never meet, since `simulate` has no creator and a study
  seeds its episodes through `STUDY_SHARD`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Purpose:
    """What a stream is for: a spawn-key prefix under the run's seed, or an entropy salt."""

    name: str
    spawn_key: tuple[int, ...] = ()
    salt: int | None = None


POPULATION = Purpose("population", spawn_key=(0,))
EPISODES = Purpose("episodes", spawn_key=(1,))
BENCH_USERS = Purpose("bench users", spawn_key=(7,))
DAGGER = Purpose("dagger rounds", salt=0x7EAC4E5)
TRANSFER_USERS = Purpose("transfer panel users' streams", salt=7)
TRANSFER_BOOTSTRAP = Purpose("transfer rank-agreement bootstrap", salt=11)
STUDY_CREATOR = Purpose("study creator's items", spawn_key=(1,))
STUDY_RELEASES = Purpose("study catalog's held-back releases", spawn_key=(2,))
STUDY_SHARD = Purpose("study shard's world and recommenders", spawn_key=(3,))
STUDY_ORDER = Purpose("study users' order across shards", spawn_key=(100,))
STUDY_TARGET_SAMPLE = Purpose("study creator's target-segment sample", spawn_key=(100, 1))


def stream(seed: int, purpose: Purpose, *index: int) -> np.random.SeedSequence:
    """The independent `SeedSequence` for `purpose` under `seed` (and `index`, e.g. a shard).

    Wrap it in `np.random.default_rng` for draws or call `generate_state` for child seeds."""
    key = (*purpose.spawn_key, *index)
    entropy = int(seed) if purpose.salt is None else [int(seed), purpose.salt]
    return np.random.SeedSequence(entropy, spawn_key=key)


def rng(seed: int, purpose: Purpose, *index: int) -> np.random.Generator:
    """A generator drawing from `stream(seed, purpose, *index)`."""
    return np.random.default_rng(stream(seed, purpose, *index))
