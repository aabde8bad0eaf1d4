"""The HTML report reads a run one part at a time (issue 32): an agent's file of a `simulate` folder, or one shard
of a study's `trajectories.parquet`, with only the columns its figures need, then the explorer's users' rows
alone. The page is the one the whole frame gives: the same figures as `summarize`, `daily_activity` and the exit
tables on every row, and the same page whether the rows come in one part or in many."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.evaluation import html_report
from recoworld.evaluation.digest import Digest
from recoworld.evaluation.exits import exit_table
from recoworld.evaluation.html_report import (
    Part,
    _parts,
    build_report,
    line_chart,
    load_run,
    segments_html,
    summary_html,
    why_left_html,
)
from recoworld.evaluation.metrics import daily_activity, summarize
from recoworld.evaluation.simulation import SimulationConfig, SimulationResult, simulate

WORLD = {"slate_size": 3, "n_candidates": 12, "horizon_days": 3, "expose_mindset": True,
         "catalog": {"n_items": 600, "seed": 3}}
USERS, SHARD = 6, 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> tuple[Path, SimulationResult]:
    out = tmp_path_factory.mktemp("run")
    cfg = SimulationConfig(n_users=USERS, agents=["greedy", "diverse"], seed=4, world=WorldConfig(**WORLD))
    return out, simulate(cfg, catalog=catalog, out=out)


def _study(result: SimulationResult, catalog: Catalog, out: Path, *, sharded: bool) -> pd.DataFrame:
    """A study folder of the run's rows, played in two arms by shards of `SHARD` users: each shard its own row
    group (as `recoworld study` writes them) when `sharded`, else every row in one row group."""
    users = list(dict.fromkeys(result.episodes["user_id"]))
    shard = {u: i // SHARD for i, u in enumerate(users)}
    traj = pd.concat([result.trajectories.assign(arm=a) for a in ("without", "with")], ignore_index=True)
    traj = traj.assign(shard=traj["user_id"].map(shard)).sort_values("shard", kind="stable", ignore_index=True)
    eps = pd.concat([result.episodes.assign(arm=a) for a in ("without", "with")], ignore_index=True)
    out.mkdir(parents=True)
    table = pa.Table.from_pandas(traj, preserve_index=False)
    with pq.ParquetWriter(out / "trajectories.parquet", table.schema) as writer:
        for s in sorted(set(shard.values())) if sharded else [None]:
            writer.write_table(table if s is None else table.filter(pc.equal(table["shard"], s)))
    eps.to_parquet(out / "episodes.parquet")
    catalog.to_parquet(out / "catalog.parquet")
    (out / "manifest.json").write_text(json.dumps({"study": "s", "fingerprint": "f", "n_shards": 3, "shards": {}}))
    return traj


def test_a_study_is_read_one_shard_at_a_time_and_its_page_is_the_whole_frames(
        run: tuple[Path, SimulationResult], catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, result = run
    sharded_dir, whole_dir = tmp_path / "sharded" / "study", tmp_path / "whole" / "study"  # the name is the title
    traj = _study(result, catalog, sharded_dir, sharded=True)
    _study(result, catalog, whole_dir, sharded=False)
    parts = _parts(sharded_dir / "trajectories.parquet")
    assert [p.row_groups for p in parts] == [(0,), (1,), (2,)]
    assert [p.rows for p in parts] == traj.groupby("shard").size().tolist()
    assert len(_parts(whole_dir / "trajectories.parquet")) == 1

    read: list[tuple[int, int]] = []  # (rows, columns) of each frame read whole
    original = Part.read

    def spy(self: Part, columns: list[str]) -> pd.DataFrame:
        frame = original(self, columns)
        read.append(frame.shape)
        return frame

    monkeypatch.setattr(Part, "read", spy)
    sharded = load_run(sharded_dir, max_users=2)
    monkeypatch.undo()
    # one shard in memory at a time, with the columns of the digest and the scan only (no trace, no slate order)
    assert max(rows for rows, _ in read) == max(p.rows for p in parts) < len(traj)
    assert max(cols for _, cols in read) < traj.shape[1]
    # the explorer holds the first two users of each recommender and arm: their rows, nobody else's
    labelled = traj.assign(recommender=traj["recommender"] + " / " + traj["arm"])
    first = {rec: list(dict.fromkeys(f["user_id"]))[:2] for rec, f in labelled.groupby("recommender", sort=False)}
    want = labelled[[u in first[r] for r, u in zip(labelled["recommender"], labelled["user_id"])]]
    got = sharded.journeys
    pd.testing.assert_frame_equal(got, want[list(got.columns)].reset_index(drop=True), check_dtype=False)

    # the page's figures are those of the whole frame
    page = build_report(sharded)
    eps = sharded.episodes
    names = ["greedy / without", "diverse / without", "greedy / with", "diverse / with"]
    assert sharded.recommenders == names
    assert summary_html(summarize(labelled, eps), eps) in page
    daily = daily_activity(labelled, 3)
    assert line_chart({k: v.tolist() for k, v in daily.items()}, "Daily active users", "day",
                      "share of users active") in page
    assert line_chart(_not_churned(labelled, 3), "Users not churned", "day", "share of users") in page
    exits = html_report.journey_data(sharded)
    embedded = {r: {u["id"] for u in exits["users"][r]} for r in names}
    assert why_left_html(exit_table(labelled), names, embedded) in page
    assert segments_html(Digest.of(labelled, ("recommender", "segment")), eps, names) in page
    reviewed = labelled[labelled["reaction"] >= 0]
    ctr = (reviewed["reaction"] >= 1).groupby([reviewed["recommender"], reviewed["segment"]]).mean()
    assert all(f"CTR {v:.3f}" in page for v in ctr)
    # and the same page when every row is read at once
    assert build_report(load_run(whole_dir, max_users=2)) == page


def _not_churned(traj: pd.DataFrame, horizon_days: int) -> dict[str, list[float]]:
    """Share of each recommender's users not churned by the end of each day, from the whole frame (how the
    report computed it before it streamed)."""
    out = {}
    for name, frame in traj.groupby("recommender", sort=False):
        users = frame["user_id"].nunique()
        churn = frame.loc[frame["churned"].astype(bool)].drop_duplicates("user_id")["time_days"].to_numpy()
        out[str(name)] = [1.0 - float((churn < d + 1).sum()) / max(users, 1) for d in range(horizon_days)]
    return out


def test_a_simulate_folder_read_per_agent_file_gives_the_page_of_all_its_rows_at_once(
        run: tuple[Path, SimulationResult], tmp_path: Path) -> None:
    """Each agent's file is a part; the same rows in one file (one part) give the same page, and so does the
    folder without its episodes (rebuilt part by part) against one file without them."""
    path, _ = run
    assert len([p for f in sorted((path / "trajectories").glob("*.parquet")) for p in _parts(f)]) == 2
    whole, split = tmp_path / "whole" / "run", tmp_path / "split" / "run"  # the folder's name is the page's title
    whole.mkdir(parents=True)
    shutil.copy(path / "manifest.json", whole / "manifest.json")
    frames = [pd.read_parquet(p) for p in sorted((path / "trajectories").glob("*.parquet"))]
    pd.concat(frames, ignore_index=True).to_parquet(whole / "trajectories.parquet")
    shutil.copytree(path / "trajectories", split / "trajectories")
    shutil.copy(path / "manifest.json", split / "manifest.json")
    page = build_report(load_run(split, max_users=3))
    assert build_report(load_run(whole, max_users=3)) == page
    assert '<svg class="chart"' in page and "diverse" in page
    shutil.copy(path / "episodes.parquet", split / "episodes.parquet")
    shutil.copy(path / "episodes.parquet", whole / "episodes.parquet")
    assert build_report(load_run(split)) == build_report(load_run(whole))


def test_a_file_not_in_shard_order_is_one_part(tmp_path: Path) -> None:
    """Row groups that do not hold whole shards in order cannot be read apart: the file is read whole."""
    table = pa.table({"shard": pa.array([1, 1, 0, 2], pa.int64()), "user_id": ["a", "a", "b", "c"]})
    with pq.ParquetWriter(tmp_path / "t.parquet", table.schema) as writer:
        for lo, n in ((0, 1), (1, 2), (3, 1)):  # shards 1 | 1, 0 | 2: shard 1 spans two groups, then goes back
            writer.write_table(table.slice(lo, n))
    assert [p.row_groups for p in _parts(tmp_path / "t.parquet")] == [(0, 1, 2)]
    with pq.ParquetWriter(tmp_path / "s.parquet", table.schema) as writer:
        for shard in (0, 1, 1, 2):  # shard 1 in two row groups: one part
            writer.write_table(table.filter(pc.equal(table["shard"], shard)).slice(0, 1))
    assert [p.row_groups for p in _parts(tmp_path / "s.parquet")] == [(0,), (1, 2), (3,)]
