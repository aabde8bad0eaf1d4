"""Shared fixtures.

Optional dependencies (Ray/RLlib, llama-cpp) skip their tests locally when missing, but
under CI=true a missing dependency is a failure: CI installs every extra.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import pytest

from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import CatalogConfig

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str) -> ModuleType:
    """Import an optional dependency; skip without it locally, fail without it in CI."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        if IN_CI:
            pytest.fail(f"CI installs every extra, but {module!r} is missing: {err}")
        pytest.skip(f"optional dependency {module!r} is not installed")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """A small catalog shared by tests that do not care about its size."""
    return cached_catalog(CatalogConfig(n_items=600, seed=3))


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Tiny torch models run fastest, and deterministically, on one thread."""
    torch = require("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[ModuleType]:
    """One small local Ray runtime for the whole test session."""
    ray = require("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
