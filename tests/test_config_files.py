"""Every config file the command line reads fails the same way: exit code 2, one `error:` line naming the file
(and the line, the column or the field), never a traceback. Table-driven over the four entry points."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recoworld.cli import app

#: entry point -> (command line for a config file, a scalar field of its top level)
ENTRY_POINTS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "world config": (lambda f: ["simulate", "--users", "1", "--config", str(f), "--out", str(f.parent / "o")],
                     "slate_size"),
    "population spec": (lambda f: ["simulate", "--users", "1", "--population", str(f), "--out", str(f.parent / "o")],
                        "name"),
    "training config": (lambda f: ["train", "--config", str(f), "--out", str(f.parent / "o")], "seed"),
    "study spec": (lambda f: ["study", str(f), "--out", str(f.parent / "o")], "seed"),
}


def _write(path: Path, content: bytes | None) -> None:
    """Content as the file's bytes; None leaves no file; b"<dir>" makes a directory of that name."""
    if content == b"<dir>":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)


#: bad file -> (its bytes, what the one error line must also say)
BAD_FILES: dict[str, tuple[bytes | None, list[str]]] = {
    "missing": (None, ["not found"]),
    "directory": (b"<dir>", ["is a directory"]),
    "not utf-8": (b"name: caf\xe9\n", ["not UTF-8", "byte 9"]),
    "syntax error": (b"seed: 1\nname: [1, 2\n", ["not valid YAML at line 3, column 1", "line 2, column 7"]),
    "control character": (b"seed: 1\x07\n", ["not valid YAML at line 1, column 8"]),
    "a list": (b"- seed\n- 1\n", ["must be a mapping", "got a list"]),
    "empty": (b"# nothing but a comment\n", ["must be a mapping", "got an empty file"]),
    "unknown key": (b"# a typo\nbogus_key: 1\n", ["bogus_key (line 2)", "Extra inputs are not permitted"]),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", list(BAD_FILES))
def test_a_bad_config_file_is_one_error_line(entry: str, bad: str, tmp_path: Path) -> None:
    command, _ = ENTRY_POINTS[entry]
    content, says = BAD_FILES[bad]
    path = tmp_path / "config.yaml"
    _write(path, content)
    result = CliRunner().invoke(app, command(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert entry in errors[0] and str(path) in errors[0], errors[0]
    for phrase in says:
        assert phrase in result.output, (phrase, result.output)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_wrong_shape_names_the_field_and_its_line(entry: str, tmp_path: Path) -> None:
    command, field = ENTRY_POINTS[entry]
    path = tmp_path / "config.yaml"
    path.write_text(f"# a mapping where a value belongs\n{field}:\n  nested: 1\n")
    result = CliRunner().invoke(app, command(path))
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == \
        [f"error: Invalid {entry} {path}:"], result.output
    assert f"  {field} (line 2): " in result.output, result.output


def test_a_nested_field_names_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "world.yaml"
    path.write_text("slate_size: 4\ncatalog:\n  n_items: 100\n  n_itemz: 5\n")
    result = CliRunner().invoke(app, ENTRY_POINTS["world config"][0](path))
    assert result.exit_code == 2 and "  catalog.n_itemz (line 4): Extra inputs are not permitted" in result.output


def test_a_study_names_its_population_file(tmp_path: Path) -> None:
    (tmp_path / "people.yaml").write_text("segments: [1, 2\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("population: people.yaml\n")
    result = CliRunner().invoke(app, ENTRY_POINTS["study spec"][0](spec))
    assert result.exit_code == 2
    assert f"population spec {tmp_path / 'people.yaml'} is not valid YAML at line 2" in result.output


@pytest.mark.parametrize(("world", "field"), [
    ("reward: {dwell: .nan}\n", "reward.dwell"),
    ("choice: {relevance: .nan}\n", "choice.relevance"),
    ("reward: {click: .inf}\n", "reward.click"),
])
def test_non_finite_numbers_are_refused_by_name(world: str, field: str, tmp_path: Path) -> None:
    (tmp_path / "world.yaml").write_text(world)
    res = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "world.yaml"), "--users", "2",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert field in res.output and "finite" in res.output
    assert not (tmp_path / "run").exists(), "nothing ran"


def test_an_inverted_normal_range_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pop.yaml").write_text(
        "name: p\nsegments:\n  - {name: a, size: 3, patience: {dist: normal, mean: 30, std: 5, low: 80, high: 5}}\n")
    res = CliRunner().invoke(app, ["simulate", "--population", str(tmp_path / "pop.yaml"), "--users", "2",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "low <= high" in res.output and "low=80" in res.output


@pytest.mark.parametrize(("agents", "message"), [
    ("greedy,greedy", "repeated: greedy"),
    ("greedy,nope", "unknown agent 'nope'"),
])
def test_agent_lists_are_checked_before_any_work(agents: str, message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--agents", agents, "--users", "2", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "run").exists(), "no recommender ran before the bad name was found"


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for args in (["simulate", "--users", "2"], ["study", str(Path(__file__).parents[1] / "examples" /
                                                             "creator_study.yaml")]):
        res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a-file" / "run")])
        assert res.exit_code == 2, res.output
        assert "--out" in res.output and "cannot write there" in res.output and "Traceback" not in res.output


def test_absurd_user_counts_are_refused_by_name(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--users", "99999999999999999999", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "--users 99999999999999999999" in res.output and "10000000" in res.output


def test_result_files_are_readable_like_their_neighbours(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--users", "2", "--agents", "random", "--days", "2",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    for name in ("trajectories/random.parquet", "episodes.parquet", "summary.csv"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name
