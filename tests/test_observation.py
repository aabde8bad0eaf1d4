"""`build_observations` copies feature rows in 64-byte blocks (the last overlapping the one before it); the
rows must come out whole at every table width, narrower than a block, at it and between blocks, and from
tables the world never holds (float64, a column slice)."""

from __future__ import annotations

import numpy as np
import pytest

from recoworld.envs.observation import build_observations
from recoworld.envs.world_kernels import pack_consumed


@pytest.mark.parametrize("width", [1, 5, 15, 16, 17, 31, 32, 35, 48, 100])
def test_feature_rows_are_copied_whole_at_every_width(width: int) -> None:
    rng = np.random.default_rng(width)
    n, b, c, h = 200, 9, 13, 6
    table = rng.standard_normal((n, width + 2))
    candidates = rng.integers(0, n, (b, c))
    ids = np.where(rng.random((b, h)) < 0.3, -1, rng.integers(0, n, (b, h)))
    consumed = pack_consumed(rng.random((b, n)) < 0.2)
    rest = (ids, np.zeros((b, h), np.int64), np.zeros((b, h), np.float32), np.zeros((b, 3), np.float32),
            (np.zeros(b), np.zeros(b, np.int64), np.zeros(b, np.int64), np.zeros(b)))
    rows = np.array([4, 0, 8, 4])
    for features in (table[:, :width].astype(np.float32), table[:, :width], table[:, 1:width + 1].astype(np.float32)):
        obs = build_observations(features, rows, candidates, consumed, *rest)
        shown = features.astype(np.float32)  # what the platform shows: float32, as the kernel's cast rounds
        assert np.array_equal(obs["candidate_features"], shown[candidates[rows]])
        padded = np.where((ids[rows] >= 0)[..., None], shown[ids[rows]], np.float32(0.0))  # padding: zeros
        assert np.array_equal(obs["history_features"], padded)
        assert obs["candidate_features"].dtype == obs["history_features"].dtype == np.float32
