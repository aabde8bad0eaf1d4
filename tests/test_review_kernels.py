"""The compiled user (`review_kernels`: the review's kernels and the satisfaction and fatigue rule) takes the
parametric user's dynamics as one array packed by position (numba compiles the reads). Packing and reading share
one list of names, `SETTLE_PARAMS`; these tests keep both sides on it."""

from __future__ import annotations

import inspect
import re

import pytest

from recoworld.catalog import Catalog
from recoworld.config import DynamicsConfig
from recoworld.simulators import review_kernels
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.review_kernels import SETTLE_PARAMS, settle_params


def test_every_parameter_has_its_own_index() -> None:
    assert len(set(SETTLE_PARAMS)) == len(SETTLE_PARAMS)
    assert [getattr(review_kernels, name.upper()) for name in SETTLE_PARAMS] == list(range(len(SETTLE_PARAMS)))


def test_the_kernels_read_every_parameter_by_its_name() -> None:
    """No bare index: each read names its parameter, and every parameter is read (by the review or the rule)."""
    source = inspect.getsource(review_kernels)
    reads = re.findall(r"params\[([^\]]+)\]", source)
    assert reads and all(re.fullmatch(r"[A-Z_]+", read) for read in reads), reads
    assert set(reads) == {name.upper() for name in SETTLE_PARAMS}


def test_packing_takes_values_by_name() -> None:
    values = {name: float(i) for i, name in enumerate(reversed(SETTLE_PARAMS))}
    packed = settle_params(values | {"unread": -1.0})
    for name in SETTLE_PARAMS:
        assert packed[getattr(review_kernels, name.upper())] == values[name], name
    with pytest.raises(KeyError, match="satisfaction_short_ema"):
        settle_params({name: 0.0 for name in SETTLE_PARAMS if name != "satisfaction_short_ema"})


def test_the_parametric_user_packs_what_the_kernel_reads(catalog: Catalog) -> None:
    """Every dynamic the kernels read is a `DynamicsConfig` field, and a distinct value for each lands where the
    kernels read that dynamic."""
    assert set(SETTLE_PARAMS) <= set(DynamicsConfig.model_fields)
    values = {name: 0.04 * (i + 1) for i, name in enumerate(SETTLE_PARAMS)}
    packed = ParametricUsers(catalog, dynamics=DynamicsConfig(**values))._settle_params
    for name, value in values.items():
        assert packed[getattr(review_kernels, name.upper())] == value, name


def test_the_reviews_inputs_are_numpys_gathers(catalog: Catalog) -> None:
    """`review_inputs` copies what the review gathered with numpy: the context of slate then memory embeddings
    (an empty slot, -1, the appended zero row), quality, duration and the interests cast to float32, the same
    values and layout; an item outside the catalog, or a row outside the batch, raises as numpy's gather did."""
    import numpy as np

    users = ParametricUsers(catalog)
    rng = np.random.default_rng(0)
    b, k, m = 12, 7, users.dyn.memory_size
    users.memory_items = np.where(rng.random((b, m)) < 0.3, -1, rng.integers(0, len(catalog), (b, m)))
    users.interests = rng.normal(size=(b, catalog.embedding_dim))
    rows = np.array([3, 0, 11, 3, 5])
    slates = rng.integers(0, len(catalog), (len(rows), k))
    context, quality, duration, interests = review_kernels.review_inputs(
        users._emb_padded, users._quality, users._duration, slates, users.memory_items, users.interests, rows)
    expected = np.take(users._emb_padded, np.concatenate([slates, users.memory_items[rows]], axis=1), axis=0)
    assert context.dtype == expected.dtype and context.flags.c_contiguous and np.array_equal(context, expected)
    assert np.array_equal(quality, users._quality[slates]) and np.array_equal(duration, users._duration[slates])
    assert interests.dtype == np.float32 and np.array_equal(interests, users.interests[rows].astype(np.float32))
    for item in (-1, len(catalog)):
        with pytest.raises(IndexError):
            review_kernels.review_inputs(users._emb_padded, users._quality, users._duration, np.full((1, k), item),
                                         users.memory_items, users.interests, rows[:1])
    with pytest.raises(IndexError):
        review_kernels.review_inputs(users._emb_padded, users._quality, users._duration, slates[:1],
                                     users.memory_items, users.interests, np.array([b]))
