"""`train`, `study` and `simulate` run on a calibrated world: its world config, its catalog and the log's own users."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from recoworld.calibration import load_calibration
from recoworld.cli import app
from recoworld.data.reference_log import write_reference_log

runner = CliRunner()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_reference_log(tmp_path_factory.mktemp("ref"), n_users=150, n_items=300, mean_activity=40, seed=3)
    out = tmp_path_factory.mktemp("cal")
    res = runner.invoke(app, ["calibrate", "--data", str(data), "--out", str(out), "--budget", "6"])
    assert res.exit_code == 0, res.output
    return out


def test_a_training_config_takes_the_calibrated_world_under_its_own_keys(calibrated: Path, tmp_path: Path) -> None:
    from recoworld.rl.train_config import TrainConfig
    from recoworld.rl.training_env import make_training_env

    world = load_calibration(calibrated).world
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(
        {"calibrated": str(calibrated.relative_to(calibrated.parent)), "world": {"slate_size": 3}}))
    (tmp_path / calibrated.name).symlink_to(calibrated)  # relative to the config file, not the working directory
    cfg = TrainConfig.load(tmp_path / "train.yaml")
    assert cfg.world.slate_size == 3, "the config's own keys win"
    assert cfg.world.choice == world.choice and cfg.world.returns == world.returns, "the rest is calibrated"
    assert cfg.calibrated is not None and cfg.calibrated.is_absolute()

    env = make_training_env({"world": cfg.world.model_dump(), "population": cfg.population.model_dump(),
                             "action_mask": True, "calibrated": str(cfg.calibrated)})
    catalog = load_calibration(calibrated).catalog
    assert len(env.unwrapped.catalog) == len(catalog)
    assert env.unwrapped.catalog.item_ids.tolist() == catalog.item_ids.tolist()
    env.reset(seed=0)
    assert env.unwrapped.profile.user_id in {p.user_id for p in load_calibration(calibrated).profiles}


def test_a_missing_calibration_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train.yaml").write_text("calibrated: nowhere\n")
    res = runner.invoke(app, ["train", "--config", str(tmp_path / "train.yaml")])
    assert res.exit_code == 2, res.output
    assert "is not a calibrated world" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_rllib_trains_on_a_calibrated_world_with_a_remote_runner(ray_session: ModuleType, calibrated: Path,
                                                                tmp_path: Path) -> None:
    """The remote env runner gets only the path and loads the catalog and users itself."""
    from recoworld.rl.train_config import TrainConfig
    from recoworld.rl.training import train

    cfg = TrainConfig.load(None, calibrated=calibrated, iterations=1, num_env_runners=1,
                           world={"slate_size": 2, "n_candidates": 6, "horizon_days": 2},
                           ppo={"train_batch_size": 200, "minibatch_size": 50, "num_epochs": 1, "hidden": [16]},
                           eval={"every": 1, "n_users": 4, "baselines": ["random"]})
    result = train(cfg, tmp_path, log=lambda msg: None)
    assert result.curve["env_steps"].iloc[-1] >= 200
    assert {"random", "oracle"} < set(result.table["recommender"])  # and the policy
    assert result.table["users"].tolist() == [4] * len(result.table)


@pytest.mark.slow
def test_a_study_runs_the_log_users_on_the_calibrated_catalog(ray_session: ModuleType, calibrated: Path,
                                                             tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump({"name": "cal", "seed": 2, "n_users": 6, "shard_size": 3,
                                    "recommenders": ["popular"],
                                    "world": {"slate_size": 3, "n_candidates": 12, "horizon_days": 3}}))
    res = runner.invoke(app, ["study", str(spec), "--calibrated", str(calibrated), "--out", str(tmp_path / "run"),
                              "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    cal = load_calibration(calibrated)
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "run").rglob("*.parquet") if "traj" in p.name)
    assert rows["user_id"].nunique() == 6
    assert set(rows["user_id"]) <= {p.user_id for p in cal.profiles}
    assert rows["item"].max() < len(cal.catalog)


def test_simulate_merges_its_config_over_the_calibrated_world(calibrated: Path, tmp_path: Path) -> None:
    """`--calibrated DIR --config FILE` keeps what was fitted and changes only what FILE sets, as
    `train` and `study` do with their config's world (the run's manifest records the world it ran)."""
    import json

    fitted = load_calibration(calibrated).world
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({"slate_size": 3, "choice": {"position": 0.0}}))
    res = runner.invoke(app, ["simulate", "--calibrated", str(calibrated), "--config", str(tmp_path / "world.yaml"),
                              "--days", "2", "--users", "2", "--agents", "random", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    world = json.loads((tmp_path / "run" / "manifest.json").read_text())["identity"]["config"]["world"]
    assert (world["slate_size"], world["choice"]["position"], world["horizon_days"]) == (3, 0.0, 2.0)
    assert world["choice"]["bias"] == fitted.choice.bias
    assert world["choice"]["popularity"] == fitted.choice.popularity
    assert world["returns"]["base_rate"] == fitted.returns.base_rate
