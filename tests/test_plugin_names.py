"""Issue 29, part 2: a `module:Class` or `file.py:Class` recommender is called by its class's `name`
everywhere a run names it (tables, file names, reports), and two recommenders called alike are an
error naming both, before any run starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recoworld.agents import agent_label, agent_labels, check_recommender_names, make_recommender
from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.errors import ConfigError

FRESH = textwrap.dedent('''
    import numpy as np
    from recoworld.agents import Recommender

    class FreshFirst(Recommender):
        """Least popular candidates first."""

        name = "fresh"

        def act(self, observation, info):
            return self.top_k(-observation["candidate_features"][:, -1], observation)
''')


def _plugin(folder: Path, file: str, cls: str, name_line: str, base: str = "Recommender") -> str:
    """A file holding one recommender class whose body starts with `name_line`; its `file.py:Class` spec."""
    path = folder / file
    path.write_text(textwrap.dedent(f'''
        from recoworld.agents import {base}

        class {cls}({base}):
            {name_line}

            def act(self, observation, info):
                return self.top_k(observation["candidate_features"][:, -1], observation)
    '''))
    return f"{path}:{cls}"


@pytest.fixture()
def fresh(tmp_path: Path) -> str:
    (tmp_path / "fresh_agent.py").write_text(FRESH)
    return f"{tmp_path / 'fresh_agent.py'}:FreshFirst"


def test_simulate_names_a_plugin_by_its_name_in_the_summary_and_the_files(fresh: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["simulate", "--users", "3", "--days", "2", "--agents", f"greedy,{fresh}",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["recommender"].tolist() == ["greedy", "fresh"]
    for kind in ("trajectories", "episodes"):
        assert sorted(p.name for p in (out / kind).iterdir()) == ["fresh.parquet", "greedy.parquet"], kind
    traj = pd.read_parquet(out / "trajectories" / "fresh.parquet")
    assert set(traj["recommender"]) == {"fresh"} and len(traj) > 0
    assert set(pd.read_parquet(out / "episodes.parquet")["recommender"]) == {"greedy", "fresh"}
    assert "fresh" in result.output and "fresh_agent.py" not in result.output  # the printed summary table


def test_the_html_report_names_the_plugin(fresh: str, tmp_path: Path) -> None:
    from recoworld.evaluation.html_report import write_report

    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["simulate", "--users", "2", "--days", "1", "--agents", fresh,
                                    "--out", str(out)]).exit_code == 0
    html = Path(write_report(out)).read_text()
    assert '"fresh"' in html and "fresh_agent.py" not in html


def test_a_study_shard_names_the_plugin(fresh: str) -> None:
    from recoworld.studies.runner import prepare, run_shard
    from recoworld.studies.spec import StudySpec

    spec = StudySpec(name="names", n_users=3, shard_size=3, recommenders=["greedy", fresh],
                     world={"horizon_days": 2})
    setup = prepare(spec)
    traj, episodes = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0))
    assert set(traj.column("recommender").to_pylist()) == {"greedy", "fresh"}
    assert set(episodes.column("recommender").to_pylist()) == {"greedy", "fresh"}


def test_the_bench_names_the_plugin_offline_and_in_its_results(fresh: str) -> None:
    from recoworld.bench.offline import OfflineConfig, offline_accuracy
    from recoworld.bench.report import results_dict
    from recoworld.bench.runner import BenchResult

    config = OfflineConfig(n_users=60, n_items=150, mean_activity=25, max_users=30)
    offline = offline_accuracy(["greedy", fresh], config)
    assert list(offline) == ["greedy", "fresh"] and "ndcg@10" in offline["fresh"]
    results = results_dict(BenchResult(["greedy", fresh], [], offline, config))
    assert results["agents"] == ["greedy", "fresh"]  # the leaderboard and quadrant plot look them up so


def test_two_plugins_with_one_name_are_an_error_naming_both(tmp_path: Path) -> None:
    a = _plugin(tmp_path, "a.py", "A", 'name = "twin"')
    b = _plugin(tmp_path, "b.py", "B", 'name = "twin"')
    with pytest.raises(ConfigError) as err:
        check_recommender_names(["greedy", a, b])
    assert f"agents {a!r} and {b!r} are both named 'twin'" in str(err.value)


def test_names_that_differ_only_in_case_clash(tmp_path: Path) -> None:
    """`Fresh.parquet` and `fresh.parquet` are one file on macOS and Windows."""
    a = _plugin(tmp_path, "a.py", "A", 'name = "fresh"')
    b = _plugin(tmp_path, "b.py", "B", 'name = "Fresh"')
    with pytest.raises(ConfigError, match=r"agents '.*a\.py:A' and '.*b\.py:B' are named 'fresh' and 'Fresh'"):
        agent_labels([a, b])


def test_the_cli_refuses_a_clash_before_any_run(tmp_path: Path) -> None:
    a = _plugin(tmp_path, "a.py", "A", 'name = "twin"')
    b = _plugin(tmp_path, "b.py", "B", 'name = "twin"')
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["simulate", "--users", "2", "--days", "1", "--agents", f"{a},{b}",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and a in errors[0] and b in errors[0] and "twin" in errors[0], result.output
    assert not (out / "trajectories").exists()


@pytest.mark.parametrize(("name_line", "base"), [
    ('name = "greedy"', "Recommender"),
    ("pass", "GreedyRelevanceRecommender"),  # inherits the built-in's name
])
def test_a_plugin_named_like_a_built_in_is_an_error(tmp_path: Path, name_line: str, base: str) -> None:
    spec = _plugin(tmp_path, "mine.py", "Mine", name_line, base)
    with pytest.raises(ConfigError) as err:
        check_recommender_names([spec])  # even when the built-in is not in the run
    assert f"agent {spec!r} is named 'greedy'" in str(err.value)
    assert "the built-in recommender 'greedy'" in str(err.value)


@pytest.mark.parametrize("value", ['""', "3", '"my agent"', '"../escape"', '"a/b"', '"x:Y"', '".hidden"',
                                   '"é"', repr("n" * 65), "property(lambda self: 'late')"])
def test_an_unusable_name_is_one_clear_error(tmp_path: Path, value: str) -> None:
    spec = _plugin(tmp_path, "mine.py", "Mine", f"name = {value}")
    with pytest.raises(ConfigError) as err:
        agent_label(spec)
    assert f"agent {spec!r}: Mine.name = " in str(err.value) and "cannot label it" in str(err.value)
    assert "1 to 64 ASCII letters" in str(err.value)


def test_a_class_without_a_name_is_called_by_its_class_name(tmp_path: Path, catalog: Catalog) -> None:
    spec = _plugin(tmp_path, "mine.py", "NoName", "pass")
    assert agent_label(spec) == "NoName"
    assert make_recommender(spec, catalog, 3).slate_size == 3


def test_names_that_are_not_references_are_their_own_labels(fresh: str) -> None:
    assert agent_labels(["greedy", "toolrec", "rllib:runs/train", fresh]) == ["greedy", "toolrec",
                                                                          "rllib:runs/train", "fresh"]
