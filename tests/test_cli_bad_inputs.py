"""Bad command-line inputs (issue 17): each is one `error:` line naming the flag or the file
(and the line, for YAML), exit code 2, no traceback, and no hang.

Most cases run in-process through typer's CliRunner (fast; pytest-timeout bounds them). The
Ray cases run as subprocesses with a timeout of their own: their failure mode was a hang.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recoworld.cli import app
from recoworld.data.sample import write_movielens_100k

TINY_SIM = ["--users", "3", "--days", "1", "--agents", "random"]
TINY_STUDY = ("name: tiny\nn_users: 4\nshard_size: 2\nrecommenders: [greedy]\n"
              "world: {slate_size: 3, n_candidates: 12, horizon_days: 1, catalog: {n_items: 100}}\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    write_movielens_100k(root / "ml", n_users=30, n_items=120, seed=5)
    six = write_movielens_100k(root / "ml6", n_users=30, n_items=120, seed=5)
    lines = (six / "u.data").read_text().splitlines()
    lines[3] += "\t7\t8"  # a line with 6 fields
    (six / "u.data").write_text("\n".join(lines) + "\n")
    write_movielens_100k(root / "ml40", n_users=30, n_items=40, seed=5)
    (root / "afile").write_text("x")
    (root / "adir").mkdir()
    (root / "bad.yaml").write_text("a: [1, 2\nb: 3\n")
    (root / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    (root / "topic.yaml").write_text("segments:\n  - name: x\n    size: 3\n    topics: [nosuchtopic]\n")
    (root / "huge.yaml").write_text("name: huge\nn_users: 1000000000000\n")
    (root / "tiny.yaml").write_text(TINY_STUDY)
    (root / "rllib.yaml").write_text(TINY_STUDY.replace("[greedy]", "['rllib:nonexistent-checkpoint']"))
    return root


# (case id, argv with {root} and {out} placeholders, substrings the error line must contain)
CASES = [
    ("out-under-proc", ["simulate", *TINY_SIM, "--out", "/proc/x"], ["--out", "/proc/x"]),
    ("out-under-a-file", ["simulate", *TINY_SIM, "--out", "{root}/afile/sub"], ["--out", "afile/sub"]),
    ("study-out-under-a-file", ["study", "{root}/tiny.yaml", "--out", "{root}/afile/sub"], ["--out", "afile"]),
    ("config-is-a-folder", ["simulate", *TINY_SIM, "--config", "{root}/adir", "--out", "{out}"],
     ["world config", "adir", "directory"]),
    ("population-is-a-folder", ["simulate", *TINY_SIM, "--population", "{root}/adir", "--out", "{out}"],
     ["population spec", "adir", "directory"]),
    ("study-spec-is-a-folder", ["study", "{root}/adir"], ["study spec", "adir", "directory"]),
    ("train-config-is-a-folder", ["train", "--config", "{root}/adir"], ["training config", "adir", "directory"]),
    ("catalog-out-is-a-folder", ["catalog", "--out", "{root}/adir", "--n-items", "50"], ["--out", "adir"]),
    ("catalog-out-under-a-file", ["catalog", "--out", "{root}/afile/c.parquet", "--n-items", "50"],
     ["--out", "afile/c.parquet"]),
    ("catalog-out-under-proc", ["catalog", "--out", "/proc/x.parquet", "--n-items", "50"],
     ["--out /proc/x.parquet:"]),  # issue 31: the path given, not its folder
    ("malformed-population-yaml", ["simulate", *TINY_SIM, "--population", "{root}/bad.yaml", "--out", "{out}"],
     ["bad.yaml", "line 2"]),
    ("malformed-study-yaml", ["study", "{root}/bad.yaml"], ["bad.yaml", "line 2"]),
    ("malformed-train-yaml", ["train", "--config", "{root}/bad.yaml"], ["bad.yaml", "line 2"]),
    ("non-utf8-study", ["study", "{root}/latin1.yaml"], ["latin1.yaml", "UTF-8"]),
    ("non-utf8-config", ["simulate", *TINY_SIM, "--config", "{root}/latin1.yaml", "--out", "{out}"],
     ["latin1.yaml", "UTF-8"]),
    ("non-utf8-train", ["train", "--config", "{root}/latin1.yaml"], ["latin1.yaml", "UTF-8"]),
    ("unknown-topic", ["simulate", *TINY_SIM, "--population", "{root}/topic.yaml", "--out", "{out}"],
     ["--population", "topic.yaml", "nosuchtopic"]),
    ("users-overflow", ["simulate", "--users", "99999999999999999999", "--out", "{out}"], ["--users"]),
    ("study-n-users-huge", ["study", "{root}/huge.yaml"], ["huge.yaml", "n_users", "line 2"]),
    ("users-zero", ["simulate", "--users", "0", "--out", "{out}"], ["--users 0"]),
    ("seed-negative", ["simulate", "--seed", "-1", "--out", "{out}"], ["--seed -1"]),
    ("study-seed-negative", ["study", "{root}/tiny.yaml", "--seed", "-1", "--out", "{out}"], ["--seed -1"]),
    ("agents-empty", ["simulate", "--agents", "", "--out", "{out}"], ["--agents"]),
    ("agents-unknown", ["simulate", *TINY_SIM, "--agents", "greedy,nope", "--out", "{out}"], ["'nope'"]),
    ("fidelity-negatives", ["fidelity", "--data", "{root}/ml", "--negatives", "-1", "--out", "{out}"],
     ["--negatives -1"]),
    ("fidelity-llm-users", ["fidelity", "--data", "{root}/ml", "--llm-users", "-1", "--out", "{out}"],
     ["--llm-users -1"]),
    ("u.data-six-fields", ["fidelity", "--data", "{root}/ml6", "--out", "{out}"], ["u.data", "line 4", "6 fields"]),
    ("embedding-without-data", ["simulate", *TINY_SIM, "--embedding", "bogus", "--out", "{out}"],
     ["--embedding", "--data"]),
    ("embedding-unknown", ["fidelity", "--data", "{root}/ml", "--embedding", "bogus", "--out", "{out}"],
     ["--embedding 'bogus'"]),
    ("dataset-smaller-than-candidates", ["simulate", *TINY_SIM, "--data", "{root}/ml40", "--out", "{out}"],
     ["--candidates", "40"]),
    ("rllib-checkpoint-missing", ["study", "{root}/rllib.yaml", "--out", "{out}"], ["nonexistent-checkpoint"]),
    ("catalog-n-items", ["catalog", "--out", "{out}/c.parquet", "--n-items", "5"], ["--n-items 5"]),
    ("calibrate-test-fraction", ["calibrate", "--data", "{root}/ml", "--test-fraction", "2", "--out", "{out}"],
     ["--test-fraction"]),
    ("validate-users", ["validate", "--data", "{root}/ml", "--users", "1", "--out", "{out}"], ["--users 1"]),
    ("fidelity-split", ["fidelity", "--data", "{root}/ml", "--split", "random", "--out", "{out}"],
     ["--split 'random'", "'per_user' or 'global'"]),
    ("validate-split", ["validate", "--data", "{root}/ml", "--split", "leave-last", "--out", "{out}"],
     ["--split 'leave-last'"]),
    ("calibrate-split", ["calibrate", "--data", "{root}/ml", "--split", "random", "--out", "{out}"],
     ["--split 'random'"]),
    ("fidelity-passes", ["fidelity", "--data", "{root}/ml", "--passes", "0", "--out", "{out}"], ["--passes 0"]),
    ("validate-passes", ["validate", "--data", "{root}/ml", "--passes", "0", "--out", "{out}"], ["--passes 0"]),
    ("validate-test-fraction", ["validate", "--data", "{root}/ml", "--test-fraction", "1", "--out", "{out}"],
     ["--test-fraction", "less than 1"]),
]

# Ray resources and addresses: each once hung for minutes or died in a Ray traceback.
RAY_CASES = [
    ("num-cpus-negative", ["--num-cpus", "-1"], ["--num-cpus -1"]),
    ("num-cpus-zero", ["--num-cpus", "0"], ["--num-cpus 0"]),
    ("address-malformed", ["--address", "not an address"], ["--address", "not an address"]),
    ("address-refused", ["--address", "127.0.0.1:1"], ["--address 127.0.0.1:1"]),
]


def _check(code: int, output: str, expected: list[str]) -> None:
    assert "Traceback" not in output, output
    lines = output.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert len(errors) == 1, output
    assert code == 2, output
    # The error line, and the indented field lines of a config file's report under it.
    end = next((j for j in range(errors[0] + 1, len(lines)) if not lines[j].startswith("  ")), len(lines))
    message = "\n".join(lines[errors[0]:end])
    for text in expected:
        assert text in message, (text, output)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error(files: Path, tmp_path: Path, argv: list[str], expected: list[str]) -> None:
    out = tmp_path / "out"
    args = [a.format(root=files, out=out) for a in argv]
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    _check(result.exit_code, result.output, expected)


def test_unknown_agent_is_rejected_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", *TINY_SIM, "--agents", "greedy,nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert not (tmp_path / "o").exists()  # nothing ran for greedy


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("flags", "expected"), [c[1:] for c in RAY_CASES], ids=[c[0] for c in RAY_CASES])
def test_bad_ray_option_fails_fast(files: Path, tmp_path: Path, flags: list[str], expected: list[str]) -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "recoworld.cli", "study", str(files / "tiny.yaml"), *flags,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=90)
    _check(proc.returncode, proc.stdout + proc.stderr, expected)
    assert time.monotonic() - start < 60  # a connect timeout, not Ray's minutes of retries
