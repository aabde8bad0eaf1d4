from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.evaluation.simulation import SimulationConfig, simulate

WORLD = WorldConfig(slate_size=4, n_candidates=16, horizon_days=5)


def test_simulation_writes_trajectories_and_summary(tmp_path, catalog: Catalog) -> None:
    cfg = SimulationConfig(n_users=6, agents=["random", "instruct"], seed=3, world=WORLD)
    result = simulate(cfg, catalog=catalog, out=tmp_path)
    traj = pq.read_table(tmp_path / "trajectories" / "random.parquet").to_pandas()
    assert len(traj) % 4 == 0 and set(traj["position"]) == {0, 1, 2, 3}
    turns = traj.drop_duplicates(["user_id", "step"])
    assert len(traj) == 4 * len(turns)
    assert {"reaction", "dwell_min", "instruction", "turn_reward", "return_gap_days"} <= set(traj.columns)
    assert traj["user_id"].nunique() == 6
    episodes = pq.read_table(tmp_path / "episodes.parquet").to_pandas()
    assert len(episodes) == 12
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["recommender"]) == ["random", "instruct"]
    for col in ("ctr", "session_length", "sessions_per_user", "mean_return_gap", "retention",
                "instruction_rate", "diversity", "novelty"):
        assert summary[col].notna().all(), col
    # sessions per user in the summary agree with the trajectory rows
    per_user = turns[turns["recommender"] == "random"].groupby("user_id")["session"].nunique()
    assert summary.loc[0, "sessions_per_user"] == pytest.approx(per_user.mean())
    assert not list(tmp_path.rglob(".*.tmp"))
    pd.testing.assert_frame_equal(result.summary, summary, check_exact=False)  # the CSV is the returned table


def test_same_seed_same_results(catalog: Catalog) -> None:
    cfg = SimulationConfig(n_users=4, agents=["random", "greedy"], seed=9, world=WORLD)
    a = simulate(cfg, catalog=catalog)
    b = simulate(cfg, catalog=catalog)
    pd.testing.assert_frame_equal(a.trajectories, b.trajectories)
    c = simulate(cfg.model_copy(update={"seed": 10}), catalog=catalog)
    assert not a.trajectories["item"].equals(c.trajectories["item"])


def test_cli_simulate_end_to_end(tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["simulate", "--users", "5", "--agents", "random,greedy", "--days", "4",
                                      "--slate-size", "5", "--candidates", "20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "retention" in result.output and "greedy" in result.output
    assert (out / "retention.png").stat().st_size > 10_000
    assert (out / "trajectories" / "greedy.parquet").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agents", "random,gredy"], "gredy"),
        (["--slate-size", "0"], "slate_size"),
        (["--days", "-2"], "horizon_days"),
    ],
)
def test_cli_reports_bad_input(tmp_path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", "--users", "2", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_catalog_command(tmp_path) -> None:
    path = tmp_path / "c.parquet"
    result = CliRunner().invoke(app, ["catalog", "--out", str(path), "--n-items", "200"])
    assert result.exit_code == 0, result.output
    assert len(Catalog.from_parquet(path)) == 200


def test_cli_reports_a_broken_world_config(tmp_path) -> None:
    bad = tmp_path / "world.yaml"
    bad.write_text("slate_size: [1, 2\n")
    result = CliRunner().invoke(app, ["simulate", "--users", "2", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.output and "Traceback" not in result.output
    bad.write_text("- just\n- a list\n")
    result = CliRunner().invoke(app, ["simulate", "--users", "2", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "must be a mapping" in result.output
