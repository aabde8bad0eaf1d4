"""recoworld.seeding: named streams are the very streams the call sites derived before."""

from __future__ import annotations

import numpy as np
import pytest

from recoworld import seeding


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 3])
def test_streams_equal_the_legacy_derivations(seed: int) -> None:
    population, episodes = np.random.SeedSequence(seed).spawn(2)
    legacy = {
        seeding.POPULATION: population,
        seeding.EPISODES: episodes,
        seeding.BENCH_USERS: np.random.SeedSequence(seed, spawn_key=(7,)),
        seeding.DAGGER: np.random.SeedSequence([seed, 0x7EAC4E5]),
        seeding.TRANSFER_USERS: np.random.SeedSequence([seed, 7]),
        seeding.TRANSFER_BOOTSTRAP: np.random.SeedSequence([seed, 11]),
        seeding.STUDY_CREATOR: np.random.SeedSequence(seed, spawn_key=(1,)),
        seeding.STUDY_RELEASES: np.random.SeedSequence(seed, spawn_key=(2,)),
        seeding.STUDY_ORDER: np.random.SeedSequence(seed, spawn_key=(100,)),
        seeding.STUDY_TARGET_SAMPLE: np.random.SeedSequence(seed, spawn_key=(100, 1)),
    }
    for purpose, old in legacy.items():
        new = seeding.stream(seed, purpose)
        assert (new.entropy, new.spawn_key) == (old.entropy, old.spawn_key), purpose.name
        assert np.array_equal(new.generate_state(8), old.generate_state(8)), purpose.name
        assert np.array_equal(seeding.rng(seed, purpose).random(5), np.random.default_rng(old).random(5))
    for purpose, salt in ((seeding.TRANSFER_USERS, 7), (seeding.TRANSFER_BOOTSTRAP, 11)):
        assert np.array_equal(seeding.rng(seed, purpose).random(5), np.random.default_rng([seed, salt]).random(5))


def test_purposes_and_indices_give_distinct_streams() -> None:
    states = {tuple(seeding.stream(3, p, *i).generate_state(4))
              for p in (seeding.POPULATION, seeding.EPISODES, seeding.BENCH_USERS, seeding.DAGGER,
                        seeding.TRANSFER_USERS, seeding.TRANSFER_BOOTSTRAP)
              for i in ((), (0,), (1,))}
    assert len(states) == 18
    assert seeding.stream(3, seeding.BENCH_USERS, 2).spawn_key == (7, 2)
    assert seeding.stream(3, seeding.STUDY_SHARD, 4).spawn_key == (3, 4)  # a study shard's world and recommenders
    assert seeding.stream(3, seeding.POPULATION, 4).spawn_key == (0, 4)  # a study shard's users
