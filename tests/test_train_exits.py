"""How `recoworld train` ends when it does not finish (issue 28, part 6): a signal, or the `max_minutes` safety stop.

Real subprocesses and real signals, as in tests/test_ray_exits.py (whose helpers these tests use): SIGTERM or
SIGINT once PPO iterations run ends the run with exit code 143 or 130, one line, no traceback or C++ stack dump
from Ray's signal handler, and no process of its Ray session left, its remote env runner included. The safety
stop is an error line naming `max_minutes` and where the run was, never a normal end. Ray's Python log lines
(its deprecation warnings) go to ray.log in --out, not to the terminal.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_ray_exits import _env, _session_procs, _wait, ray_root  # noqa: F401  (a fixture: used by name)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc (Linux)")]

#: Long enough never to finish while the test waits: one remote env runner of 4 tiny-world users.
CONFIG = {
    "iterations": 500, "num_env_runners": 1, "num_envs_per_env_runner": 4,
    "world": {"slate_size": 2, "n_candidates": 6, "history_len": 5, "horizon_days": 2, "max_steps": 40,
              "catalog": {"n_items": 300, "seed": 1}},
    "ppo": {"train_batch_size": 200, "minibatch_size": 50, "num_epochs": 1, "hidden": [16]},
    "eval": {"every": 1000, "n_users": 4, "baselines": ["random"], "oracle": False},
}
#: What Ray's own SIGTERM handler prints before it aborts the process.
STACK_DUMP = ("Traceback", "*** SIGTERM received", "*** SIGINT received", "logging.cc", "PC: @")


def _train(tmp_path: Path, ray_root: Path, **overrides: object) -> subprocess.Popen[str]:  # noqa: F811
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, **overrides}))
    cmd = [sys.executable, "-m", "recoworld.cli", "train", "--config", str(config), "--out", str(tmp_path / "out")]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(ray_root), "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1"})


def _ended(proc: subprocess.Popen[str], timeout_s: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signalled_training_stops_in_one_line_and_leaves_no_ray_process(
        tmp_path: Path, ray_root: Path, signum: int) -> None:  # noqa: F811
    proc = _train(tmp_path, ray_root)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # a progress line of the first PPO iteration: training has started
            seen.append(re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line))  # progress lines carry their time
            if seen[-1].startswith("iter    1/500"):
                assert seen[-1] != line, f"the iteration's line without its time: {line!r}"
                break
        else:
            pytest.fail(f"no progress line of iteration 1: {''.join(seen)[-2000:]}{proc.stderr.read()[-3000:]}")
        assert "evaluating random: 4/4 users\n" in seen  # the baselines' evaluation reported its users
        assert any(p.role.startswith("ray::") for p in _session_procs(ray_root)), "no Ray worker to leave behind"
        proc.send_signal(signum)
        rest, err = _ended(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, (proc.returncode, rest[-2000:], err[-3000:])
    assert rest.strip().splitlines()[-1].startswith(f"stopped by {signal.Signals(signum).name}; ")
    assert not [mark for mark in STACK_DUMP if mark in err], err[-3000:]
    assert "Deprecat" not in err and "Deprecat" in (tmp_path / "out" / "ray.log").read_text()
    _wait(lambda: not _session_procs(ray_root), None, 90, "exit of every Ray process of the session")


def test_passing_max_minutes_is_an_error_naming_it_and_where_the_run_was(
        tmp_path: Path, ray_root: Path) -> None:  # noqa: F811
    out, err = _ended(_train(tmp_path, ray_root, max_minutes=0.001, num_env_runners=0), 300)  # 60 ms: passed at once
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:] + err[-3000:]
    assert "max_minutes=0.001 passed" in errors[0] and "while evaluating random (1/4 users)" in errors[0]
    assert "no checkpoint was written yet" in errors[0]
    assert not [mark for mark in STACK_DUMP if mark in err], err[-3000:]
    _wait(lambda: not _session_procs(ray_root), None, 90, "exit of every Ray process of the session")
