"""Smoke test of experiments/train_ppo.py as a subprocess with a tiny budget (CleanRL style)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import require

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_train_ppo_script_runs_end_to_end(tmp_path: Path) -> None:
    require("ray")
    out = tmp_path / "run"
    cmd = [sys.executable, "experiments/train_ppo.py", "--config", "configs/ppo_small.yaml", "--out", str(out),
           "--iterations", "2", "--train-batch-size", "200", "--minibatch-size", "50",
           "--eval-users", "4", "--eval-every", "1", "--seeds", "2", "--teacher-rounds", "2", "--teacher-users", "2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("recommender"))) :]
    assert [row.split()[0] for row in table[1:7]] == ["ppo", "random", "greedy", "diverse", "instruct", "oracle"]
    assert "reference: reads the hidden mindset" in table[6]
    assert "±" in table[2]  # retention with its confidence interval, and the paired difference
    assert "charts/train_seconds" in proc.stdout
    assert proc.stdout.count("evaluating random: 4/4 users") == 1  # the baselines, once for all seeds, with progress
    assert proc.stdout.count("teacher round 1 of 2 done:") == 2  # the oracle teacher's DAgger rounds, before PPO
    assert proc.stdout.count("after the teacher's rounds (iteration 0): retention") == 2
    assert proc.stdout.count("PPO's own stage, final - iteration 0 (paired): ") == 2
    for seed in (0, 1):  # --seeds 2: one output folder per training seed
        run = out / f"seed_{seed}"
        assert (run / "checkpoints" / "iter_000002").is_dir() and (run / "checkpoints" / "iter_000000").is_dir()
        assert (run / "learning_curve.png").stat().st_size > 0
        assert (run / "curve.parquet").exists() and (run / "evaluation.parquet").exists()
        per_user = pd.read_parquet(run / "policy_users.parquet")  # the policy per evaluation user and round
        assert sorted(per_user["iteration"].unique()) == [0, 1, 2] and (per_user.groupby("iteration").size() == 4).all()
        curve = pd.read_parquet(run / "curve.parquet").set_index("iteration")
        assert {"paired/iteration_0", "paired_ci/iteration_0"} <= set(curve.columns)
        assert np.isnan(curve.loc[0, "paired/iteration_0"]) and np.isfinite(curve.loc[2, "paired/iteration_0"])
    summary = lines[lines.index(next(line for line in lines if line.startswith("=== 2 seeds"))) + 1 :]
    assert [row.split()[0] for row in summary[1:7]] == ["ppo", "random", "greedy", "diverse", "instruct", "oracle"]
    assert "of 2" in summary[2]  # how many seeds have their own paired CI above 0
