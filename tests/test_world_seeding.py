"""A world row that no view seeded is an error at its reset, never a stream shared with other rows."""

from __future__ import annotations

import numpy as np
import pytest

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.world import World, build_users
from recoworld.errors import RecoWorldError
from recoworld.population import PopulationSpec, sample_population


def _world(catalog: Catalog, n: int) -> tuple[World, list]:
    cfg = WorldConfig(slate_size=3, n_candidates=10, catalog={"n_items": len(catalog)})
    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=n)
    return World(catalog, cfg, build_users(catalog, cfg, n), n), profiles


def test_resetting_an_unseeded_row_names_it(catalog: Catalog) -> None:
    world, profiles = _world(catalog, 3)
    world.streams[0] = np.random.default_rng(1)
    with pytest.raises(RecoWorldError, match=r"rows \[1, 2\] have no random stream of their own"):
        world.reset(np.arange(3), profiles, np.zeros(3))
    for row in (1, 2):
        world.streams[row] = np.random.default_rng(1 + row)
    world.reset(np.arange(3), profiles, np.zeros(3))  # each row with its own stream


def test_seeded_rows_run_their_turns(catalog: Catalog) -> None:
    world, profiles = _world(catalog, 2)
    for row in range(2):
        world.streams[row] = np.random.default_rng(10 + row)
    world.reset(np.arange(2), profiles, np.zeros(2))
    batch = world.step(np.tile(np.arange(3), (2, 1)))
    assert batch.reactions.shape == (2, 3)
