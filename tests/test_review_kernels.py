"""`review_kernels.settle` takes the parametric user's dynamics as one array packed by position (numba compiles
the reads). Packing and reading share one list of names, `SETTLE_PARAMS`; these tests keep both sides on it."""

from __future__ import annotations

import inspect
import re

import pytest

from recoworld.catalog import Catalog
from recoworld.config import DynamicsConfig
from recoworld.simulators import parametric, review_kernels
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.review_kernels import SETTLE_PARAMS, settle, settle_params


def test_every_parameter_has_its_own_index() -> None:
    assert len(set(SETTLE_PARAMS)) == len(SETTLE_PARAMS)
    assert [getattr(review_kernels, name.upper()) for name in SETTLE_PARAMS] == list(range(len(SETTLE_PARAMS)))


def test_the_kernel_reads_every_parameter_by_its_name() -> None:
    """No bare index: each read names its parameter, and every parameter is read once."""
    source = inspect.getsource(settle.py_func)
    assert sorted(re.findall(r"params\[(\w+)\]", source)) == sorted(name.upper() for name in SETTLE_PARAMS)


def test_packing_takes_values_by_name() -> None:
    values = {name: float(i) for i, name in enumerate(reversed(SETTLE_PARAMS))}
    packed = settle_params(values | {"unread": -1.0})
    for name in SETTLE_PARAMS:
        assert packed[getattr(review_kernels, name.upper())] == values[name], name
    with pytest.raises(KeyError, match="short_ema"):
        settle_params({name: 0.0 for name in SETTLE_PARAMS if name != "short_ema"})


def test_the_parametric_user_packs_what_the_kernel_reads(catalog: Catalog) -> None:
    """A distinct value for every dynamic the kernel reads lands where the kernel reads that dynamic."""
    dynamics = [name for name in SETTLE_PARAMS if name in DynamicsConfig.model_fields]
    assert set(SETTLE_PARAMS) - set(dynamics) == {"short_ema", "long_ema"}
    values = {name: 0.05 * (i + 1) for i, name in enumerate(dynamics)}
    packed = ParametricUsers(catalog, dynamics=DynamicsConfig(**values))._settle_params
    for name, value in values.items():
        assert packed[getattr(review_kernels, name.upper())] == value, name
    assert packed[review_kernels.SHORT_EMA] == parametric._SHORT_EMA
    assert packed[review_kernels.LONG_EMA] == parametric._LONG_EMA
