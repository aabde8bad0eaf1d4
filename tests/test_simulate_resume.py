"""`recoworld simulate --out DIR`: one run per folder, resumed after a crash, never mixed with another."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.evaluation.run_folder import MANIFEST, RunFolderError
from recoworld.evaluation.simulation import SimulationConfig, simulate

ARGS = ["simulate", "--users", "6", "--days", "5", "--slate-size", "4", "--candidates", "16"]
WORLD = WorldConfig(slate_size=4, n_candidates=16, horizon_days=4)


def cli(out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*ARGS, *args, "--out", str(out)])
    return result.exit_code, result.output


def results(out: Path) -> dict[str, pd.DataFrame]:
    """Every result file of a run folder, by relative path."""
    files = {str(p.relative_to(out)): pq.read_table(p).to_pandas() for p in sorted(out.rglob("*.parquet"))}
    files["summary.csv"] = pd.read_csv(out / "summary.csv")
    return files


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = results(a), results(b)
    assert list(ra) == list(rb)
    for name in ra:
        pd.testing.assert_frame_equal(ra[name], rb[name], obj=name)


def completed(out: Path, agent: str) -> bool:
    try:
        parts = json.loads((out / MANIFEST).read_text())["parts"]
    except (OSError, ValueError):
        return False
    return parts.get(agent, {}).get("status") == "complete"


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_results(tmp_path) -> None:
    agents = ["--agents", "random,greedy,popular", "--users", "8"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "recoworld.cli", *ARGS, *agents, "--out", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not completed(killed, "random"):  # the first recommender is done and recorded
            assert proc.poll() is None, f"simulate ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "the first recommender never finished"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.csv").exists(), "killed after the end, not mid-run"
    first = (killed / "trajectories" / "random.parquet").stat()

    code, output = cli(killed, *agents)
    assert code == 0, output
    assert "resumed" in output and "random finished earlier" in output
    again = (killed / "trajectories" / "random.parquet").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "random was recomputed"
    assert not list(killed.rglob("*.tmp")), "the killed run's temporaries are left"

    code, output = cli(tmp_path / "whole", *agents)
    assert code == 0, output
    assert_same_results(killed, tmp_path / "whole")
    manifest = json.loads((killed / MANIFEST).read_text())
    assert manifest["finished"] and all(p["status"] == "complete" for p in manifest["parts"].values())


def test_another_run_is_refused_and_overwrite_replaces_only_its_files(tmp_path) -> None:
    out = tmp_path / "run"
    assert cli(out, "--agents", "random,greedy", "--seed", "0")[0] == 0
    (out / "notes.txt").write_text("mine")
    (out / "trajectories" / "my-analysis.txt").write_text("mine too")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    code, output = cli(out, "--agents", "random,greedy", "--seed", "1")
    assert code == 2 and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output  # one line, no progress bars
    assert str(out) in output and "seed 0 -> 1" in output and "--overwrite" in output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "a refused run changed files"

    code, output = cli(out, "--agents", "random,greedy", "--seed", "1", "--overwrite")
    assert code == 0, output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "trajectories" / "my-analysis.txt").read_text() == "mine too"
    assert cli(tmp_path / "fresh", "--agents", "random,greedy", "--seed", "1")[0] == 0
    assert_same_results(out, tmp_path / "fresh")


def test_fewer_agents_or_users_leave_nothing_stale(tmp_path) -> None:
    out = tmp_path / "run"
    assert cli(out, "--agents", "random,greedy,popular")[0] == 0
    code, output = cli(out, "--agents", "random,greedy")
    assert code == 2 and "agents random,greedy,popular -> random,greedy" in output

    assert cli(out, "--agents", "random,greedy", "--overwrite")[0] == 0
    assert sorted(p.name for p in (out / "trajectories").iterdir()) == ["greedy.parquet", "random.parquet"]
    assert sorted(p.name for p in (out / "episodes").iterdir()) == ["greedy.parquet", "random.parquet"]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["recommender"]) == ["random", "greedy"] and list(summary["users"]) == [6, 6]
    assert set(pq.read_table(out / "episodes.parquet").column("recommender").to_pylist()) == {"random", "greedy"}

    code, output = cli(out, "--agents", "random,greedy", "--users", "3")
    assert code == 2 and "n_users 6 -> 3" in output
    assert cli(out, "--agents", "random,greedy", "--users", "3", "--overwrite")[0] == 0
    assert list(pd.read_csv(out / "summary.csv")["users"]) == [3, 3]
    assert len(pq.read_table(out / "episodes.parquet")) == 6
    assert pq.read_table(out / "trajectories" / "random.parquet").column("user_id").unique().to_pylist() \
        == pq.read_table(out / "episodes" / "random.parquet").column("user_id").to_pylist()


@pytest.mark.parametrize("damage", ["empty", "truncated", "deleted", "episodes emptied"])
def test_a_damaged_part_is_redone_not_trusted(tmp_path, catalog: Catalog, damage: str) -> None:
    out = tmp_path / "run"
    cfg = SimulationConfig(n_users=4, agents=["random", "greedy"], seed=2, world=WORLD)
    first = simulate(cfg, catalog=catalog, out=out)
    assert first.resumed == []
    expected = {p: p.read_bytes() for p in out.rglob("*.parquet")}
    traj = out / "trajectories" / "greedy.parquet"
    if damage == "empty":
        traj.write_bytes(b"")
    elif damage == "truncated":
        traj.write_bytes(expected[traj][: len(expected[traj]) // 2])
    elif damage == "deleted":
        traj.unlink()
    else:
        (out / "episodes" / "greedy.parquet").write_bytes(b"")

    again = simulate(cfg, catalog=catalog, out=out)
    assert again.resumed == ["random"]
    assert {p: p.read_bytes() for p in out.rglob("*.parquet")} == expected
    pd.testing.assert_frame_equal(again.summary, first.summary)
    pd.testing.assert_frame_equal(again.episodes, first.episodes)
    assert simulate(cfg, catalog=catalog, out=out).resumed == ["random", "greedy"]


def test_summary_and_episodes_are_rebuilt_from_the_part_files(tmp_path, catalog: Catalog) -> None:
    out = tmp_path / "run"
    cfg = SimulationConfig(n_users=3, agents=["random", "diverse"], seed=5, world=WORLD)
    simulate(cfg, catalog=catalog, out=out)
    (out / "summary.csv").write_text("stale\n")
    (out / "episodes.parquet").unlink()
    result = simulate(cfg, catalog=catalog, out=out)
    assert result.resumed == ["random", "diverse"]
    parts = pd.concat([pq.read_table(out / "episodes" / f"{a}.parquet").to_pandas() for a in cfg.agents],
                      ignore_index=True)
    pd.testing.assert_frame_equal(pq.read_table(out / "episodes.parquet").to_pandas(), parts)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), result.summary, check_exact=False)
    assert list(result.trajectories["recommender"].unique()) == ["random", "diverse"]


def test_folders_that_cannot_be_told_apart_are_refused(tmp_path, catalog: Catalog) -> None:
    cfg = SimulationConfig(n_users=2, agents=["random"], world=WORLD)
    legacy = tmp_path / "legacy"  # results from before manifests: which files are whose is unknown
    (legacy / "trajectories").mkdir(parents=True)
    (legacy / "trajectories" / "random.parquet").write_bytes(b"old")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match=f"{legacy} holds results without a manifest.json"):
            simulate(cfg, catalog=catalog, out=legacy, overwrite=overwrite)
    study = tmp_path / "study"
    study.mkdir()
    (study / MANIFEST).write_text(json.dumps({"study": "s", "fingerprint": "x", "shards": {}}))
    with pytest.raises(RunFolderError, match="not a simulate run's"):
        simulate(cfg, catalog=catalog, out=study, overwrite=True)
    assert (legacy / "trajectories" / "random.parquet").read_bytes() == b"old"


def test_a_custom_agent_builder_is_never_reused(tmp_path, catalog: Catalog) -> None:
    from recoworld.agents import Recommender, make_recommender

    built: list[str] = []

    def build(name: str, cat: Catalog, k: int, seed: int | None) -> Recommender:
        built.append(name)
        return make_recommender(name, cat, k, seed)

    cfg = SimulationConfig(n_users=2, agents=["random"], world=WORLD)
    simulate(cfg, catalog=catalog, out=tmp_path, build_agent=build)
    assert simulate(cfg, catalog=catalog, out=tmp_path, build_agent=build).resumed == []
    assert built == ["random", "random"]
