"""A read-only `--out` (issue 17): one clear error naming the flag, exit 2, before any work.

Permissions do not bind root, so as root the read-only place is sysfs, where nobody may create
a folder; as an ordinary user it is a folder without write permission. `/proc/x` and a path
under a file are in tests/test_cli_bad_inputs.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recoworld.cli import app

TINY_STUDY = ("name: tiny\nn_users: 4\nshard_size: 2\nrecommenders: [greedy]\n"
              "world: {slate_size: 3, n_candidates: 12, horizon_days: 1, catalog: {n_items: 100}}\n")


@pytest.mark.parametrize("command", ["simulate", "study", "catalog"])
def test_a_read_only_out_is_one_clear_error_before_any_work(tmp_path: Path, command: str) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_STUDY)
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    locked = Path("/sys/recoworld-read-only") if root else tmp_path / "locked"
    if not root:
        locked.mkdir()
        locked.chmod(0o555)
    out = locked / "run"
    argv = {"simulate": ["simulate", "--users", "3", "--days", "1", "--agents", "random", "--out", str(out)],
            "study": ["study", str(spec), "--out", str(out)],
            "catalog": ["catalog", "--n-items", "50", "--out", str(out / "c.parquet")]}[command]
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        if not root:
            locked.chmod(0o755)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--out" in errors[0] and "Traceback" not in result.output, result.output
    assert not out.exists()
