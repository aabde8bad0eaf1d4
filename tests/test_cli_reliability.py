"""Reliability of the command line, round two (issue 31): runs that must not collide, and
failures that must be one clear `error:` line (exit code 2), never a traceback.

Most cases run in-process through typer's CliRunner; a run that must be alive while another
starts runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli_bad_inputs import TINY_SIM, TINY_STUDY, _check
from typer.testing import CliRunner

from recoworld.cli import app
from recoworld.data.sample import write_movielens_100k
from recoworld.errors import ConfigError
from recoworld.evaluation.run_folder import FolderLock


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def _wait_for_lock(out: Path, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Until `proc` holds `out` (its PID in the lock file); fails if it exits first."""
    deadline = time.monotonic() + timeout_s
    lock = out / FolderLock.FILE
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else proc.returncode
        if lock.exists() and lock.read_text().startswith(f"PID {proc.pid}:"):
            return
        time.sleep(0.2)
    pytest.fail(f"{out} was not locked by PID {proc.pid} within {timeout_s} s")


@pytest.mark.timeout(300)
def test_a_run_folder_in_use_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """Two runs into one --out at once mixed their results (issue 31); now the second is refused,
    for every command that writes a run folder, --overwrite or not, and a killed holder frees it."""
    out = tmp_path / "run"
    (tmp_path / "tiny.yaml").write_text(TINY_STUDY)
    data = write_movielens_100k(tmp_path / "ml", n_users=30, n_items=120, seed=5)
    first = subprocess.Popen([sys.executable, "-m", "recoworld.cli", "simulate", "--users", "100000", "--days", "60",
                              "--agents", "random", "--seed", "1", "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_lock(out, first)
        second = [
            ["simulate", *TINY_SIM, "--seed", "2", "--overwrite"],
            ["study", str(tmp_path / "tiny.yaml")],
            ["bench", "--agents", "random", "--users", "2"],
            ["calibrate", "--data", str(data)],
            ["distill", "--from", str(tmp_path / "elsewhere")],
            ["train"],
        ]
        for argv in second:
            code, output = _invoke([*argv, "--out", str(out)])
            _check(code, output, [f"--out {out}", f"PID {first.pid}", "in use"])
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.wait()
    FolderLock.take(out, "test").release()  # kill -9 left no lock behind


def test_reward_weights_that_overflow_are_refused_naming_the_field(tmp_path: Path) -> None:
    """Finite weights near 1e308 gave inf rewards and totals (issue 31); the largest accepted one gives finite ones."""
    config = tmp_path / "world.yaml"
    config.write_text("reward: {dwell: 1.0e+308}\n")
    code, output = _invoke(["simulate", *TINY_SIM, "--config", str(config), "--out", str(tmp_path / "a")])
    _check(code, output, ["world.yaml", "reward.dwell", "1e+308"])
    weights = {k: 1e6 for k in ("dwell", "click", "like", "share", "return_bonus", "instruction_following")}
    config.write_text(f"reward: {{{', '.join(f'{k}: {v:e}' for k, v in weights.items())}, churn_penalty: -1.0e+6, "
                      "dislike: -1.0e+6}\n")
    code, output = _invoke(["simulate", "--users", "4", "--days", "5", "--agents", "greedy", "--config", str(config),
                            "--out", str(tmp_path / "b")])
    assert code == 0, output
    assert np.isfinite(pd.read_csv(tmp_path / "b" / "summary.csv")["return_per_user"]).all()
    rewards = pd.read_parquet(tmp_path / "b" / "trajectories")["turn_reward"]
    assert np.isfinite(rewards).all() and rewards.abs().max() > 1e6


def test_a_doubled_log_counts_each_event_once_and_says_so(tmp_path: Path) -> None:
    """A u.data appended to itself counted every click twice, silently (issue 31): exact duplicate rows
    (user, item, rating, timestamp) are dropped, and the count is printed with the data description."""
    from recoworld.data import load_dataset

    once = write_movielens_100k(tmp_path / "once", n_users=30, n_items=120, seed=5)
    twice = write_movielens_100k(tmp_path / "twice", n_users=30, n_items=120, seed=5)
    lines = (twice / "u.data").read_text()
    (twice / "u.data").write_text(lines + lines)
    original, doubled = load_dataset(once), load_dataset(twice)
    pd.testing.assert_frame_equal(original.interactions, doubled.interactions)
    assert doubled.duplicates == len(lines.splitlines()) and original.duplicates == 0
    code, output = _invoke(["simulate", *TINY_SIM, "--data", str(twice), "--out", str(tmp_path / "out")])
    assert code == 0, output
    assert f"{len(lines.splitlines())} exact duplicate rows dropped" in output


@pytest.mark.parametrize("stamp", ["-99999999999", "1700000000000"])
def test_impossible_timestamps_are_refused_naming_file_row_and_value(tmp_path: Path, stamp: str) -> None:
    """A timestamp of -99999999999 stretched the mean return gap from 4 to 51 days (issue 31); milliseconds
    read as seconds are as impossible."""
    data = write_movielens_100k(tmp_path / "ml", n_users=30, n_items=120, seed=5)
    lines = (data / "u.data").read_text().splitlines()
    lines[3] = "\t".join([*lines[3].split("\t")[:3], stamp])
    (data / "u.data").write_text("\n".join(lines) + "\n")
    code, output = _invoke(["simulate", *TINY_SIM, "--data", str(data), "--out", str(tmp_path / "out")])
    _check(code, output, ["u.data", "row 4", stamp])


@pytest.mark.parametrize(("trait", "expected"), [
    ("novelty: {dist: uniform, low: -1.0e+308, high: 1.0e+308}", ["segments.0.novelty", "-1e+308"]),
    ("patience: {dist: constant, value: 1.0e+30}", ["segments.0.patience", "1e+30"]),
])
def test_extreme_population_traits_are_one_error_not_an_overflow(tmp_path: Path, trait: str,
                                                                  expected: list[str]) -> None:
    """These gave a 50-line OverflowError (issue 31)."""
    spec = tmp_path / "population.yaml"
    spec.write_text(f"segments:\n  - name: x\n    size: 3\n    {trait}\n")
    code, output = _invoke(["simulate", *TINY_SIM, "--population", str(spec), "--out", str(tmp_path / "out")])
    _check(code, output, ["population.yaml", "line 4", *expected])


def test_train_out_that_is_a_file_is_one_error(tmp_path: Path) -> None:
    """`train --out FILE` gave a 41-line FileExistsError (issue 31), where simulate, catalog and report say one line."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, output = _invoke(["train", "--out", str(afile)])
    _check(code, output, ["--out", "afile"])


FAILING_AGENTS = '''
import numpy as np
from recoworld.agents import Recommender


class LateFail(Recommender):
    calls = 0

    def act(self, observation, info):
        self.calls += 1
        if self.calls == 3:
            raise ZeroDivisionError("no slate today")
        return np.arange(self.slate_size)


class ObserveFail(Recommender):
    def act(self, observation, info):
        return np.arange(self.slate_size)

    def observe(self, reactions, info):
        raise KeyError("clicks")
'''


@pytest.mark.parametrize(("cls", "expected"), [
    ("LateFail", ["act()", "on turn 3", "ZeroDivisionError: no slate today"]),
    ("ObserveFail", ["observe()", "on turn 1", "KeyError: 'clicks'"]),
])
@pytest.mark.parametrize("command", ["simulate", "bench"])
def test_a_recommender_that_raises_is_one_error_naming_agent_user_and_turn(
        tmp_path: Path, cls: str, expected: list[str], command: str) -> None:
    """A recommender raising in act or observe gave a 44-64 line traceback naming no agent, user or step
    (issue 31); --debug shows the traceback above the one line."""
    (tmp_path / "mine.py").write_text(FAILING_AGENTS)
    agent = f"{tmp_path / 'mine.py'}:{cls}"
    argv = ([command, *TINY_SIM[:4]] if command == "simulate" else [command, "--users", "2"])
    argv += ["--agents", agent, "--out", str(tmp_path / "out")]
    code, output = _invoke(argv)
    _check(code, output, [f"recommender {agent!r}", "for user", *expected])
    code, output = _invoke(["--debug", *argv[:-1], str(tmp_path / "again")])
    assert code == 2 and "Traceback (most recent call last)" in output and output.index("Traceback") < output.index(
        "error:"), output


def test_a_study_shard_names_the_failing_recommender_and_keeps_the_traceback(tmp_path: Path) -> None:
    """The study's shards run in Ray workers: the error reaches the driver pickled, its traceback with it."""
    import pickle

    from recoworld.errors import RecommenderFailed
    from recoworld.studies.runner import prepare, run_shard
    from recoworld.studies.spec import StudySpec

    (tmp_path / "mine.py").write_text(FAILING_AGENTS)
    agent = f"{tmp_path / 'mine.py'}:ObserveFail"
    spec = StudySpec(name="s", n_users=2, shard_size=2, recommenders=[agent],
                     world={"slate_size": 3, "n_candidates": 12, "horizon_days": 1, "catalog": {"n_items": 100}})
    setup = prepare(spec)
    with pytest.raises(RecommenderFailed, match=r"raised in observe\(\) for user '.+' on turn 1: KeyError") as err:
        run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0))
    carried = pickle.loads(pickle.dumps(err.value))
    assert str(carried) == str(err.value) and "Traceback" in carried.details and "raise KeyError" in carried.details


def test_a_nan_in_a_slate_is_named_with_its_value(tmp_path: Path) -> None:
    """The error line said "got array()": rich took "[nan, 1.0, 2.0]" for a style tag and dropped it (issue 31).
    Every error line is now printed as it is, brackets included."""
    (tmp_path / "nan.py").write_text("import numpy as np\nfrom recoworld.agents import Recommender\n\n\n"
                                     "class NanFirst(Recommender):\n    def act(self, observation, info):\n"
                                     "        return np.array([float('nan'), 1.0, 2.0])\n")
    code, output = _invoke(["simulate", *TINY_SIM[:4], "--agents", f"{tmp_path / 'nan.py'}:NanFirst", "--slate-size",
                            "3", "--out", str(tmp_path / "out")])
    _check(code, output, ["action[0]=nan", "[nan, 1.0, 2.0]"])


def test_report_with_a_catalog_it_cannot_use_is_an_error(tmp_path: Path) -> None:
    """`report RUN --catalog missing.parquet` exited 0, the failure a sentence inside the HTML (issue 31)."""
    run = tmp_path / "run"
    code, output = _invoke(["simulate", *TINY_SIM, "--out", str(run)])
    assert code == 0, output
    missing = tmp_path / "missing.parquet"
    code, output = _invoke(["report", str(run), "--catalog", str(missing)])
    _check(code, output, [f"--catalog {missing}", "not found"])
    small = tmp_path / "small.parquet"
    assert _invoke(["catalog", "--out", str(small), "--n-items", "50"])[0] == 0
    code, output = _invoke(["report", str(run), "--catalog", str(small)])
    _check(code, output, [f"--catalog {small}", "50 items"])
    assert not (run / "report.html").exists()
    assert _invoke(["report", str(run)])[0] == 0  # without --catalog, it is rebuilt from the run's config


def test_a_study_too_large_to_hold_is_refused_with_an_estimate(tmp_path: Path) -> None:
    """`n_users: 10000000` passed validation, then showed `shards 0/?` for 14 minutes on its way to running
    out of memory (issue 31). Users are now drawn per shard; what still grows with them, the results, is
    estimated before anything runs, and a study whose state cannot fit is refused with the estimate. Its
    trajectories stream to disk (issue 32): what is held is every user's plan and episodes, and the shards in
    flight."""
    from recoworld.studies.runner import available_memory, check_fits, memory_need
    from recoworld.studies.spec import StudySpec

    five = ["greedy", "random", "popular", "diverse", "instruct"]
    one_day = StudySpec.parse({"n_users": 4, "world": {"horizon_days": 1}})
    many = StudySpec.parse({"n_users": 4, "recommenders": five, "world": {"horizon_days": 3},
                            "creator": {"name": "c", "target_segment": "explorer"}})
    with pytest.raises(ConfigError, match=r"n_users 10000000: the study holds about \d+\.\d GB .*10 recommender "
                                          r"runs.*23.0 GB available.*give n_users \d+ or fewer"):  # each arm a run
        check_fits(many, 10_000_000, 23_000_000_000, workers=2)
    check_fits(one_day, 10_000_000, 23_000_000_000, workers=2)  # 10M user-days of results, but on disk
    check_fits(many, 10_000_000, None)  # where the memory cannot be told, nothing is refused
    available = available_memory()
    huge = StudySpec.parse({"n_users": 4, "recommenders": five, "world": {"horizon_days": 1}})
    fixed, per_user = memory_need(huge, 10_000_000, os.cpu_count() or 1)
    if available is not None and available / 2 >= fixed + 10_000_000 * per_user:
        pytest.skip("this machine could hold the episodes of 10 million users x 5 recommenders")
    spec = tmp_path / "huge.yaml"
    spec.write_text(TINY_STUDY.replace("n_users: 4", "n_users: 10000000").replace("[greedy]", f"[{', '.join(five)}]"))
    code, output = _invoke(["study", str(spec), "--out", str(tmp_path / "out")])
    _check(code, output, ["n_users 10000000", "GB", "give n_users"])
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture
def calibrated_folder(tmp_path: Path) -> Path:
    """A calibrated-world folder as `recoworld calibrate` writes it (a synthetic world's, no fit needed)."""
    from recoworld.calibration import CalibratedWorld, save_calibration
    from recoworld.catalog import cached_catalog
    from recoworld.config import WorldConfig
    from recoworld.population import PopulationSpec, sample_population

    world = WorldConfig(slate_size=3, n_candidates=12, horizon_days=1, catalog={"n_items": 100})
    catalog = cached_catalog(world.catalog)
    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=5)
    return save_calibration(CalibratedWorld(world, catalog, profiles, {"source": "test"}), tmp_path / "cal")


def _damage(folder: Path, how: str) -> list[str]:
    """Damage one file of a calibrated folder; what the error must say."""
    profiles = folder / "profiles.jsonl"
    if how == "truncated-profiles":
        text = profiles.read_text()
        profiles.write_text(text[: len(text) - 40])
        return [str(profiles), "line 5"]
    if how == "corrupt-calibration":
        (folder / "calibration.json").write_text('{"source": "test", oops}')
        return [str(folder / "calibration.json"), "not valid JSON", "line 1"]
    lines = profiles.read_text().splitlines()  # users of another catalog: a topic this one lacks
    first = json.loads(lines[2])
    first["topic_interests"] = {"Thriller": 1.0}
    lines[2] = json.dumps(first)
    profiles.write_text("\n".join(lines) + "\n")
    return [str(profiles), "line 3", "'Thriller'", str(folder / "catalog.parquet")]


@pytest.mark.parametrize("how", ["truncated-profiles", "corrupt-calibration", "swapped-catalog"])
def test_a_damaged_calibrated_folder_names_the_file(calibrated_folder: Path, tmp_path: Path, how: str) -> None:
    """A truncated profiles.jsonl ("1 validation error for UserProfile"), a corrupt calibration.json
    ("Expecting property name") and a swapped catalog ("unknown topic 'Thriller'") named no file (issue 31)."""
    expected = _damage(calibrated_folder, how)
    code, output = _invoke(["simulate", *TINY_SIM, "--calibrated", str(calibrated_folder),
                            "--out", str(tmp_path / "out")])
    _check(code, output, expected)
