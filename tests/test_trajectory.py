"""One trajectory schema: `simulate` and studies write exactly its columns and types, and the docs list them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.evaluation.trajectory import COLUMNS, SCHEMA
from recoworld.studies.spec import StudySpec

WORLD = {"slate_size": 3, "n_candidates": 12, "horizon_days": 3, "catalog": {"n_items": 600, "seed": 3}}


def test_simulate_writes_exactly_the_schema(tmp_path: Path, catalog: Catalog) -> None:
    cfg = SimulationConfig(n_users=3, agents=["random", "instruct"], seed=1, world=WorldConfig(**WORLD))
    result = simulate(cfg, catalog=catalog, out=tmp_path)
    for name in cfg.agents:
        table = pq.read_table(tmp_path / "trajectories" / f"{name}.parquet")
        assert table.schema.equals(SCHEMA), table.schema
        assert set(table.column("arm").to_pylist()) == {"baseline"}
        assert table.column("shard").null_count == len(table) and not any(table.column("new_item").to_pylist())
        # the returned frame is what reading the file back gives
        mine = result.trajectories[result.trajectories["recommender"] == name].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, table.to_pandas())
    assert list(result.trajectories.columns) == SCHEMA.names


def test_a_study_shard_writes_exactly_the_schema(catalog: Catalog) -> None:
    from recoworld.studies.runner import prepare, run_shard

    spec = StudySpec.parse({"seed": 2, "n_users": 4, "shard_size": 4, "world": WORLD, "recommenders": ["greedy"],
                            "creator": {"name": "c", "target_segment": "explorer", "items": {"count": 30}}})
    setup = prepare(spec, catalog)
    traj, _ = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0), setup.base)
    assert traj.schema.equals(SCHEMA), traj.schema
    assert set(traj.column("arm").to_pylist()) == {"without", "with"}
    assert set(traj.column("shard").to_pylist()) == {0}
    frame = traj.to_pandas()
    np.testing.assert_array_equal(frame["new_item"], np.isin(frame["item"], setup.new_items))
    assert not frame.loc[frame["arm"] == "without", "new_item"].any(), "unreleased items are never shown"
    assert frame["return_gap_days"].notna().any()
    assert all(g["time_days"].is_monotonic_increasing for _, g in frame.groupby(["arm", "user_id"]))


def test_the_reference_documents_every_column_in_order() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "trajectory.md").read_text()
    table = page[page.index("| column | type | per | meaning |"):]
    documented = re.findall(r"^\| `(\w+)` \| (\w+) \| (turn|slot) \|", table.split("\n\n")[0], flags=re.M)
    assert documented == [(c.name, str(c.type), "slot" if c.per_slot else "turn") for c in COLUMNS]
