"""One CLI vocabulary: `--agents`, `--users`, `--seed`, `--days` and `--llm*` mean the same thing in every command
that takes them, declared once in `recoworld.cli.options`; an input that can't be honoured as given gets a note."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from recoworld.cli import app
from recoworld.cli.options import AGENTS_HELP, DAYS_HELP, LLM_FLAGS, SEED_HELP, USERS_HELP
from recoworld.data.reference_log import write_reference_log

SHARED = {"--agents": AGENTS_HELP, "--users": USERS_HELP, "--seed": SEED_HELP, "--days": DAYS_HELP}
LLM_OPTIONS = {"--" + name.replace("_", "-") for name, _ in LLM_FLAGS.values()}


def commands() -> dict[str, Any]:
    """The app's commands as typer builds them (on its own copy of click)."""
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def options(command: Any) -> dict[str, Any]:
    return {decl: p for p in command.params if p.param_type_name == "option" for decl in p.opts}


@pytest.mark.parametrize("flag", sorted(SHARED))
def test_a_shared_flag_is_the_shared_option_in_every_command(flag: str) -> None:
    having = {name: options(cmd)[flag] for name, cmd in commands().items() if flag in options(cmd)}
    assert len(having) >= 2, f"{flag} is shared by several commands"
    for name, option in having.items():
        assert (option.help or "").startswith(SHARED[flag]), f"recoworld {name} {flag}: {option.help!r}"


def test_no_command_keeps_a_retired_spelling() -> None:
    for name, cmd in commands().items():
        assert not {"--agent", "--max-users"} & set(options(cmd)), name
    assert "--candidates" not in options(commands()["validate"]), "validate's pool is --candidate-pool"


def test_every_command_that_calls_a_model_takes_all_llm_flags_in_one_order() -> None:
    with_llm = {name: cmd for name, cmd in commands().items() if LLM_OPTIONS & set(options(cmd))}
    assert {"simulate", "bench", "fidelity", "validate", "distill"} <= set(with_llm)
    for name, cmd in with_llm.items():
        flags = [p.opts[0] for p in cmd.params if p.param_type_name == "option" and p.opts[0] in LLM_OPTIONS]
        assert flags == [f"--{n.replace('_', '-')}" for n, _ in LLM_FLAGS.values()], name


def test_the_llm_flags_reach_the_command_by_the_one_rule(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "--llm", "local", "--llm-base-url", "http://h/v1", "--out",
                                   str(tmp_path)])
    assert res.exit_code == 2
    assert "--llm-base-url 'http://h/v1' is an OpenAI-compatible endpoint, but --llm is 'local'" in res.output


def test_validate_runs_one_recommender_named_by_agents(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["validate", "--data", str(tmp_path), "--agents", "greedy,popular"])
    assert res.exit_code == 2
    assert "--agents 'greedy,popular': this command runs one recommender; name exactly one" in res.output


def test_bench_takes_seed_and_days_into_the_config_hash(tmp_path: Path) -> None:
    base = ["bench", "--scenarios", "retention-30d", "--agents", "random", "--users", "4"]
    results = {}
    for name, more in {"own": [], "varied": ["--seed", "7", "--days", "2"]}.items():
        res = CliRunner().invoke(app, [*base, *more, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        results[name] = json.loads((tmp_path / name / "results.json").read_text())["scenarios"]["retention-30d"]
    assert "seed 7, 2 days" in res.output
    assert results["own"]["seed"] == 0 and results["varied"]["seed"] == 7
    assert results["own"]["config_hash"] != results["varied"]["config_hash"]


def test_bench_days_before_an_interest_shift_is_refused_naming_it(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["bench", "--scenarios", "interest-shift", "--days", "5", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--days 5: scenario interest-shift shifts interests on day" in res.output


def test_relative_segment_sizes_get_a_note_with_the_counts(tmp_path: Path) -> None:
    spec = {"name": "two", "segments": [{"name": "a", "size": 60}, {"name": "b", "size": 40}]}
    (tmp_path / "pop.yaml").write_text(yaml.safe_dump(spec))
    res = CliRunner().invoke(app, ["simulate", "--population", str(tmp_path / "pop.yaml"), "--users", "20",
                                   "--days", "1", "--agents", "random", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "segment sizes 60 a + 40 b are shares of --users 20: 12 + 8" in res.output


def test_more_users_than_a_log_holds_gets_a_note(tmp_path: Path) -> None:
    log = write_reference_log(tmp_path / "log", n_users=30, n_items=80, mean_activity=15, seed=1)
    res = CliRunner().invoke(app, ["simulate", "--data", str(log), "--users", "300", "--days", "1",
                                   "--agents", "random", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "--users 300: the users' source holds" in res.output
    held = int(res.output.split("the users' source holds ")[1].split(";")[0])
    assert held <= 30 and f"all {held} simulated" in res.output


@pytest.mark.parametrize(("argv", "expected"), [
    (["bench", "--users", "0"], "--users 0: give at least 1"),
    (["bench", "--seed", "-2"], "--seed -2: give at least 0"),
    (["bench", "--days", "0"], "--days 0: give a finite horizon above 0 days"),
    (["bench", "--days", "nan"], "--days nan: give a finite horizon"),
    (["distill", "--collect", "10", "--users", "0"], "--users 0: --collect needs at least 1 user"),
])
def test_a_bad_shared_flag_is_one_line_naming_it(tmp_path: Path, argv: list[str], expected: str) -> None:
    res = CliRunner().invoke(app, [*argv, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], res.output
