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
