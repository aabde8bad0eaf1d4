"""Progress where work is long, with output that is not a terminal (CliRunner's, like a file's): one line as each
stage starts, one with its time as it ends, in the order the work runs; and the last line of every command says
where its outputs are (`outputs: FOLDER (files)`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recoworld.calibration.calibrated import FILES, STAGES
from recoworld.cli import app
from recoworld.data.reference_log import write_reference_log

#: `[09:12:01] NAME ...` (a stage starts) or `[09:12:31] NAME: done in 30.2 s` (it ends, with its time).
LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (?P<name>.+?)(?: \.\.\.|: done in (?P<took>\d+\.\d s|\d+ min \d\d s))$")


def stage_lines(output: str) -> list[tuple[str, str]]:
    """("start" or "done", stage name) for each stage line, in order."""
    events = []
    for line in output.splitlines():
        m = LINE.match(line)
        if m:
            events.append(("done" if m["took"] else "start", m["name"]))
    return events


def assert_one_after_another(events: list[tuple[str, str]], names: list[str], quiet_first: bool = False) -> None:
    """Each of `names` (prefixes of the stages' names) starts, then ends before the next one starts."""
    expected = []
    for i, name in enumerate(names):
        expected += [("done", name)] if quiet_first and i == 0 else [("start", name), ("done", name)]
    got = [(kind, max((n for n in names if name.startswith(n)), key=len, default=name)) for kind, name in events]
    assert got == expected, "\n".join(f"{k} {n}" for k, n in events)


def last_line(output: str) -> str:
    return [line for line in output.splitlines() if line.strip()][-1]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reference_log(tmp_path_factory.mktemp("log"), n_users=60, n_items=150, mean_activity=25, seed=3)


@pytest.fixture(scope="module")
def calibrated(log: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cal") / "cal"
    res = CliRunner().invoke(app, ["calibrate", "--data", str(log), "--out", str(out), "--budget", "5",
                                   "--embedding", "tfidf"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_calibrate_prints_each_stage_with_its_time_and_ends_with_its_outputs(calibrated: tuple[Path, str]) -> None:
    out, output = calibrated
    # The first stage, which checks the log, says only when it is done: a bad log is one error line (as in every
    # command that loads a log).
    assert_one_after_another(stage_lines(output), [*STAGES, "writing the calibrated world"], quiet_first=True)
    assert "simulated moments: 5/5 evaluations" not in output  # a count line every 10 evaluations, none of 5
    assert last_line(output) == (f"outputs: {out} ({', '.join(FILES)}); use it: recoworld simulate "
                                 f"--calibrated {out}")


def test_validate_prints_each_stage_with_its_time(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "val"
    res = CliRunner().invoke(app, ["validate", "--data", str(log), "--embedding", "tfidf", "--users", "20",
                                   "--fidelity-users", "5", "--days", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert_one_after_another(stage_lines(res.output), [
        f"loading {log}", "the compared users and the real log's facts", "default: simulating 20 users for",
        "default: simulating 20 users from the cutoff", "default: ranking fidelity on held-out interactions",
        "writing the table and plots"], quiet_first=True)
    assert last_line(res.output) == f"outputs: {out} (validity.csv, validity.png, validity_in_sample.png)"


def test_fidelity_scores_one_model_after_another_each_with_its_own_time(log: Path, tmp_path: Path) -> None:
    out = tmp_path / "fid"
    res = CliRunner().invoke(app, ["fidelity", "--data", str(log), "--embedding", "tfidf", "--users", "8",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    events = stage_lines(res.output)
    scorers = ["parametric (choice model)", "parametric (simulated)", "popularity (reference)"]
    n = int(re.search(r"scoring (\d+) users", res.output)[1])  # type: ignore[index]
    assert events[0] == ("done", f"loading {log}")  # loading checks the log: a bad one is one error line
    assert_one_after_another(events[1:], [f"scoring {n} users: {name}" for name in scorers])
    for name in scorers:  # the count line when a model is done, with its own bar's time
        assert re.search(rf"\] {re.escape(name)}: {n}/{n} in \d+\.\d s$", res.output, re.M), res.output
    assert last_line(res.output) == f"outputs: {out} (fidelity.csv, fidelity.json, fidelity_per_user.parquet)"


def test_transfer_prints_each_stage_with_its_time(log: Path, calibrated: tuple[Path, str], tmp_path: Path) -> None:
    out = tmp_path / "tr"
    res = CliRunner().invoke(app, ["transfer", "--data", str(log), "--calibrated", str(calibrated[0]),
                                   "--embedding", "tfidf", "--panel", "popularity,item-knn,random", "--users", "20",
                                   "--days", "3", "--bootstrap", "20", "--no-circularity", "--out", str(out)])
    assert res.exit_code == 0, res.output
    # 14 of the 20 panel users are judged: those with a future after the cutoff.
    assert_one_after_another(stage_lines(res.output), [
        f"loading {log}", "training popularity on the past", "popularity: 14 simulated users in the calibrated world",
        "popularity: 14 simulated users in the default world", "training item-knn on the past",
        "item-knn: 14 simulated users in the calibrated world", "item-knn: 14 simulated users in the default world",
        "training random on the past", "random: 14 simulated users in the calibrated world",
        "random: 14 simulated users in the default world", "rank agreement of each world",
        "writing the table and plot"], quiet_first=True)
    assert last_line(res.output) == f"outputs: {out} (transfer.csv, transfer.json, transfer.png)"


def test_bench_prints_each_agent_of_each_scenario_with_its_time(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = CliRunner().invoke(app, ["bench", "--scenarios", "retention-30d,cold-start", "--agents", "random,greedy",
                                   "--users", "3", "--days", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    order = [i for s in ("retention-30d", "cold-start") for a in ("random", "greedy")
             for i, line in enumerate(lines) if re.search(rf"\] {s} / {a}: 3 users done in \d+\.\d s$", line)]
    assert len(order) == 4 and order == sorted(order), res.output
    events = stage_lines(res.output)
    assert [n for k, n in events if k == "done" and not n.startswith(("retention-30d", "cold-start"))][-4:] == [
        "offline ranking on a reference log (300 users, 600 items)", "writing results.json, leaderboard.md and "
        "quadrant.png", "report of retention-30d", "report of cold-start"]
    assert re.fullmatch(rf"outputs: {re.escape(str(out))} \(results.json, leaderboard.md, quadrant.png, "
                        r"retention-30d/report.html, cold-start/report.html\); 2 scenario\(s\) x 2 agent\(s\) in "
                        r"\d+\.\d s", last_line(res.output)), res.output


def test_simulate_report_and_catalog_end_with_their_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["simulate", "--users", "3", "--days", "1", "--agents", "random,greedy",
                                   "--out", str(run)])
    assert res.exit_code == 0, res.output
    for agent in ("random", "greedy"):
        assert re.search(rf"\]\s+{agent}: 3/3 in \d+\.\d s$", res.output, re.M), res.output
    assert last_line(res.output) == (f"outputs: {run} (trajectories/, episodes.parquet, summary.csv, retention.png); "
                                     f"report: recoworld report {run}")
    res = CliRunner().invoke(app, ["report", str(run), "--journeys", "2"])
    assert res.exit_code == 0, res.output
    assert last_line(res.output) == (f"outputs: {run} (report.html); open {run / 'report.html'} in a browser "
                                     "(self-contained, offline)")
    res = CliRunner().invoke(app, ["catalog", "--out", str(tmp_path / "c.parquet"), "--n-items", "50"])
    assert res.exit_code == 0, res.output
    assert re.fullmatch(rf"outputs: {re.escape(str(tmp_path))} \(c.parquet\); 50 items, \d+ topics",
                        last_line(res.output)), res.output


def test_a_log_that_cannot_be_calibrated_is_one_error_line(tmp_path: Path) -> None:
    few = write_reference_log(tmp_path / "few", n_users=4, n_items=60, mean_activity=25, seed=0)
    res = CliRunner().invoke(app, ["calibrate", "--data", str(few), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [line for line in res.output.strip().splitlines()
                                               if line.startswith("error:")] and "done in" not in res.output
