"""Clean exits of `recoworld study` (issue 17, point 6): no Ray process outlives it.

Real subprocesses and real signals: SIGTERM or SIGINT while shards run ends every process
of the study's Ray session; after a SIGKILL of the driver, the next study ends the killed
session's orphans (and only those: a live Ray session next to it keeps running) and then
finishes with exactly the uninterrupted result. Each test gives Ray its own temporary root
(`RAY_TMPDIR`), so its sessions are told apart from any other Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import require

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")]

SPEC = {
    "name": "exits", "seed": 5, "n_users": 24, "shard_size": 3,  # 8 shards, about a second each
    "recommenders": ["greedy"],
    "world": {"slate_size": 3, "n_candidates": 12, "horizon_days": 6, "catalog": {"n_items": 200, "seed": 2}},
}


@pytest.fixture
def ray_root() -> Iterator[Path]:
    """A short private Ray temp root (Unix socket paths must stay under 108 bytes)."""
    require("ray")
    root = Path(tempfile.mkdtemp(prefix="rw-ray-", dir="/tmp"))
    yield root / "ray"
    from recoworld.studies.ray_cleanup import end_processes, ray_processes

    end_processes([p for p in ray_processes() if p.session_dir.startswith(str(root) + "/")], grace_s=2)
    shutil.rmtree(root, ignore_errors=True)


def _env(ray_root: Path) -> dict[str, str]:
    return {**os.environ, "RAY_TMPDIR": str(ray_root.parent), "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _study(spec: Path, out: Path, ray_root: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "recoworld.cli", "study", str(spec), "--out", str(out), "--num-cpus", "2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(ray_root))


def _session_procs(ray_root: Path) -> list:
    from recoworld.studies.ray_cleanup import ray_processes

    return [p for p in ray_processes() if p.session_dir.startswith(str(ray_root) + "/")]


def _wait(cond: Callable[[], bool], proc: subprocess.Popen[str] | None, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the study ended before {what}: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:g} s")
        time.sleep(0.2)


def _shards_done(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _running_shard(ray_root: Path) -> bool:
    return any(p.role.startswith("ray::shard_task") for p in _session_procs(ray_root))


@pytest.mark.parametrize(("signum", "when"), [(signal.SIGTERM, "running"), (signal.SIGINT, "running"),
                                              (signal.SIGTERM, "starting"), (signal.SIGINT, "starting")],
                         ids=["SIGTERM-running", "SIGINT-running", "SIGTERM-starting", "SIGINT-starting"])
def test_a_signalled_study_leaves_no_ray_process(tmp_path: Path, ray_root: Path, signum: int, when: str) -> None:
    """Signalled while shards run, or while ray.init is still starting the session's processes."""
    out = tmp_path / "out"
    proc = _study(_spec(tmp_path), out, ray_root)
    try:
        if when == "running":
            _wait(lambda: _running_shard(ray_root), proc, 120, "running shard")
        else:
            _wait(lambda: bool(_session_procs(ray_root)), proc, 120, "Ray process")
        session = {p.session for p in _session_procs(ray_root)}
        assert len(session) == 1
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in proc.stderr.read()
    _wait(lambda: not _session_procs(ray_root), None, 90,  # a loaded 2-core CI machine is slow to reap them
          "exit of every Ray process of the session")
    n_shards = len(range(0, SPEC["n_users"], SPEC["shard_size"]))
    if when == "running":
        assert proc.returncode != 0, "signalled while shards were running, yet it ended as if complete"
        assert _shards_done(out) < n_shards
    else:  # stopped, or (a signal Ray absorbed while starting) a complete study: never a partial one
        assert (proc.returncode != 0 and _shards_done(out) < n_shards) or (
            proc.returncode == 0 and _shards_done(out) == n_shards), (proc.returncode, _shards_done(out))


def test_after_a_sigkill_the_next_study_ends_the_orphans_and_gives_the_uninterrupted_result(
    ray_session, tmp_path: Path, ray_root: Path,
) -> None:
    from recoworld.studies.ray_cleanup import live_sessions
    from recoworld.studies.runner import run_study
    from recoworld.studies.spec import StudySpec

    spec, killed = _spec(tmp_path), tmp_path / "killed"
    proc = _study(spec, killed, ray_root)
    try:
        _wait(lambda: _shards_done(killed) >= 1, proc, 180, "checkpointed shard")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "episodes.parquet").exists(), "killed after the end, not mid-study"
    dead = {p.session for p in _session_procs(ray_root)}
    assert len(dead) == 1
    # Ray's head processes notice the dead driver and exit; its agents stay behind.
    _wait(lambda: not live_sessions(_session_procs(ray_root)), None, 30, "exit of the killed session's raylet")
    orphans = _session_procs(ray_root)
    assert orphans, "no orphan was left to clean (Ray now cleans up after itself?)"

    # A live Ray session under the same root: the cleanup must leave it alone.
    bystander = subprocess.Popen(
        [sys.executable, "-c", "import ray, sys; ray.init(num_cpus=1, include_dashboard=False); "
                               "print('up', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(ray_root))
    try:
        assert bystander.stdout is not None and bystander.stdout.readline().strip() == "up"
        live = {(p.pid, p.start) for p in _session_procs(ray_root) if p.session not in dead}
        assert live

        rerun = _study(spec, killed, ray_root)
        try:
            _, err = rerun.communicate(timeout=300)
        finally:
            if rerun.poll() is None:
                rerun.kill()
                rerun.wait()
        assert rerun.returncode == 0, err
        left = {(p.pid, p.start) for p in _session_procs(ray_root)}
        assert not {(p.pid, p.start) for p in orphans} & left, "orphans of the killed session remain"
        assert live <= left, "the cleanup ended processes of a live session"
        assert bystander.poll() is None
    finally:
        if bystander.stdin is not None:
            bystander.stdin.close()  # it shuts its Ray down and ends
        try:
            bystander.wait(timeout=30)
        except subprocess.TimeoutExpired:
            bystander.kill()
            bystander.wait()

    whole = run_study(StudySpec.from_yaml(spec), tmp_path / "whole").out
    for name in ("trajectories.parquet", "episodes.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(killed / name), pd.read_parquet(whole / name), obj=name)
