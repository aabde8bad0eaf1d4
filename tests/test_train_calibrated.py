"""`recoworld train --calibrated DIR --config configs/ppo_retention.yaml` (issue 28, part 7): the retention config
trains on a world calibrated to a log, its training-only reward reads the log users' satisfaction, and the run
reports the same table as on the synthetic world (the policy, every heuristic and the oracle, paired per user)."""

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

ROOT = Path(__file__).parents[1]
runner = CliRunner()


@pytest.mark.slow
def test_the_retention_config_trains_on_a_calibrated_world(ray_session: ModuleType, tmp_path: Path) -> None:
    data = write_reference_log(tmp_path / "ref", n_users=150, n_items=300, mean_activity=40, seed=3)
    calibrated = tmp_path / "cal"
    res = runner.invoke(app, ["calibrate", "--data", str(data), "--out", str(calibrated), "--budget", "6"])
    assert res.exit_code == 0, res.output
    # configs/ppo_retention.yaml as shipped (reward, features, network, world, baselines), with a smaller budget
    config = yaml.safe_load((ROOT / "configs" / "ppo_retention.yaml").read_text())
    config["ppo"].update(train_batch_size=200, minibatch_size=50, num_epochs=1, hidden=[16])
    config.update(num_envs_per_env_runner=8, eval={**config["eval"], "n_users": 4})
    (tmp_path / "retention.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    trained = runner.invoke(app, ["train", "--config", str(tmp_path / "retention.yaml"), "--calibrated",
                                  str(calibrated), "--iterations", "1", "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    evaluation = pd.read_parquet(out / "evaluation.parquet")
    assert set(evaluation["recommender"]) == {"ppo", "random", "popular", "greedy", "diverse", "instruct", "oracle"}
    assert evaluation["retention"].notna().all()
    table = trained.output[trained.output.index("recommender"):].splitlines()
    assert [row.split()[0] for row in table[1:8]] == ["ppo", "random", "popular", "greedy", "diverse", "instruct",
                                                      "oracle"]
    users = pd.read_parquet(out / "policy_users.parquet")["user_id"]
    log_users = {p.user_id for p in load_calibration(calibrated).profiles}
    assert set(users) <= log_users, "the evaluation users are the log's own"
