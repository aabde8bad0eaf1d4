"""The reference log: MovieLens-format, loadable, and with the structure of real logs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, sessionize
from recoworld.data import load_dataset
from recoworld.data.reference_log import write_reference_log


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reference_log(tmp_path_factory.mktemp("ref"), n_users=200, n_items=500, mean_activity=50, seed=2)


def test_loads_as_movielens_with_the_requested_shape(ref_dir: Path) -> None:
    data = load_dataset(ref_dir)
    assert data.name == "ml-100k" and data.has_timestamps
    assert data.n_users == 200 and len(data.items) == 500
    per_user = data.interactions.groupby("user_id").size()
    assert per_user.min() >= 20  # MovieLens' own guarantee
    assert data.rating_scale == (1.0, 5.0)
    assert all(data.items["genres"].map(len).between(1, 3))


def test_popularity_is_skewed_and_activity_heavy_tailed(ref_dir: Path) -> None:
    log = load_dataset(ref_dir).interactions
    counts = np.sort(log["item_id"].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.35  # top 10% of items hold over a third
    per_user = log.groupby("user_id").size()
    assert per_user.max() > 4 * per_user.median()


def test_sessions_and_gaps_are_time_ordered_and_heavy_tailed(ref_dir: Path) -> None:
    sessions = sessionize(load_dataset(ref_dir).interactions)
    assert sessions["size"].mean() > 2  # items come in bursts
    gaps = (sessions.groupby("user_id")["start"].shift(-1) - sessions["end"]).dropna() / SECONDS_PER_DAY
    assert (gaps > 0).all()
    assert np.quantile(gaps, 0.99) > 15 * np.median(gaps)


def test_the_seed_fixes_the_log(tmp_path: Path) -> None:
    a = write_reference_log(tmp_path / "a", n_users=30, n_items=100, mean_activity=30, seed=5)
    b = write_reference_log(tmp_path / "b", n_users=30, n_items=100, mean_activity=30, seed=5)
    c = write_reference_log(tmp_path / "c", n_users=30, n_items=100, mean_activity=30, seed=6)
    assert (a / "u.data").read_bytes() == (b / "u.data").read_bytes() != (c / "u.data").read_bytes()
