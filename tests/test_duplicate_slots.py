"""The compiled duplicate-slot replacement against its definition written out in Python.

Sampling policies repeat candidates within a slate on most turns (RLlib's `MultiDiscrete`
samples each slot on its own), so `replace_duplicates` runs per turn in a compiled kernel;
this holds it to the rule a slate-by-slate loop states plainly, repeats of every shape included.
"""

from __future__ import annotations

import numpy as np
import pytest

from recoworld.config import WorldConfig
from recoworld.envs.observation import slate_positions
from recoworld.envs.world_kernels import replace_duplicates
from recoworld.errors import InvalidActionError


def replaced_by_definition(slate: list[int], n_candidates: int) -> tuple[list[int], int]:
    """Each slot, in order, that repeats an earlier one takes the first candidate (in retrieval order)
    that is neither shown before it nor listed after it in the slate as given."""
    out = list(slate)
    replaced = 0
    for i, pos in enumerate(slate):
        if pos in out[:i]:
            out[i] = next(p for p in range(n_candidates) if p not in out[:i] and p not in slate[i + 1:])
            replaced += 1
    return out, replaced


@pytest.mark.parametrize(("k", "c"), [(2, 2), (3, 3), (3, 10), (5, 6), (10, 50), (10, 10)])
def test_kernel_equals_the_definition(k: int, c: int) -> None:
    rng = np.random.default_rng(k * 100 + c)
    slates = np.concatenate([
        rng.integers(0, c, size=(400, k)),  # independent slots: repeats of every shape
        rng.integers(0, min(c, 2), size=(50, k)),  # nearly all one candidate
        np.stack([rng.permutation(c)[:k] for _ in range(50)]),  # distinct
    ])
    got = slates.copy()
    replaced = replace_duplicates(got, c)
    for row, slate in enumerate(slates.tolist()):
        want, n = replaced_by_definition(slate, c)
        assert got[row].tolist() == want, slate
        assert replaced[row] == n
        assert len(set(want)) == k


def test_slate_positions_replaces_or_refuses_repeats() -> None:
    actions = np.array([[1, 1, 0], [0, 1, 2], [4, 4, 4]])
    positions, replaced = slate_positions(actions, WorldConfig(slate_size=3, n_candidates=5), lambda j: f"a[{j}]")
    assert positions.tolist() == [[1, 2, 0], [0, 1, 2], [4, 0, 1]]
    assert replaced.tolist() == [1, 0, 2]
    assert actions.tolist() == [[1, 1, 0], [0, 1, 2], [4, 4, 4]]  # the caller's actions are not changed
    strict = WorldConfig(slate_size=3, n_candidates=5, on_duplicate="error")
    with pytest.raises(InvalidActionError, match=r"a\[2\]\[1\]=4 repeats an earlier slot"):
        slate_positions(actions[1:], strict, lambda j: f"a[{j + 1}]")
