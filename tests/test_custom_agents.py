"""Your own recommender: `module:Class`, `file.py:Class`, installed plug-ins, and `check_recommender`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recoworld.agents import (
    Recommender,
    RecommenderCheckError,
    check_recommender,
    check_recommender_names,
    make_recommender,
    plugins,
)
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

MY_AGENT = textwrap.dedent('''
    import numpy as np
    from recoworld.agents import Recommender

    class CheapestFirst(Recommender):
        """Shortest items first: a made-up policy that needs the catalog."""

        def __init__(self, slate_size, seed=None, catalog=None):
            super().__init__(slate_size, seed)
            self.catalog = catalog

        def act(self, observation, info):
            return self.top_k(-self.catalog.duration_min[observation["candidate_ids"]], observation)

    class NotAnAgent:
        pass
''')


@pytest.fixture()
def agent_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_agents.py"
    path.write_text(MY_AGENT)
    return path


def test_a_file_reference_builds_the_class_with_the_catalog(agent_file: Path, catalog: Catalog) -> None:
    agent = make_recommender(f"{agent_file}:CheapestFirst", catalog, 4, seed=0)
    assert type(agent).__name__ == "CheapestFirst" and agent.catalog is catalog and agent.slate_size == 4
    check_recommender(agent, catalog)


def test_simulate_runs_your_own_recommender_next_to_the_built_in_ones(agent_file: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "3", "--days", "2",
         "--agents", f"greedy,{agent_file}:CheapestFirst", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert set(summary["recommender"]) == {"greedy", "CheapestFirst"}  # a class without `name`: its class name


def test_a_module_reference_imports_it(agent_file: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(agent_file.parent))
    agent = make_recommender("my_agents:CheapestFirst", catalog, 3)
    assert isinstance(agent, Recommender)


def test_an_installed_plugin_is_found_by_name(tmp_path: Path, catalog: Catalog,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution registering `[project.entry-points."recoworld.agents"] cheapest = ...`."""
    (tmp_path / "my_agents.py").write_text(MY_AGENT)
    dist = tmp_path / "my_agents-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-agents\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[recoworld.agents]\ncheapest = my_agents:CheapestFirst\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.plugin_names.cache_clear()
    try:
        assert "cheapest" in plugins.plugin_names()
        check_recommender_names(["cheapest"])
        assert type(make_recommender("cheapest", catalog, 3)).__name__ == "CheapestFirst"
    finally:
        plugins.plugin_names.cache_clear()


@pytest.mark.parametrize(("name", "message"), [
    ("no_such_module_xyz:Agent", "module 'no_such_module_xyz' does not import"),
    ("{file}:NotAnAgent", "is not a recoworld.agents.Recommender subclass"),
    ("{file}:Missing", "has no attribute 'Missing'"),
    ("recoworld.agents.base:Recommender", "is abstract"),
    ("{dir}/nowhere.py:Agent", "no Python file at"),
])
def test_bad_references_are_one_clear_error(name: str, message: str, agent_file: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        check_recommender_names([name.format(file=agent_file, dir=agent_file.parent)])


def test_the_cli_rejects_a_bad_reference_before_any_work(agent_file: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "2", "--days", "1",
         "--agents", f"greedy,{agent_file}:NotAnAgent", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text and "is not a recoworld.agents.Recommender subclass" in text
    assert not (tmp_path / "run" / "summary.csv").exists()


class _Broken(Recommender):
    def __init__(self, slate_size: int, fault: str) -> None:
        super().__init__(slate_size, 0)
        self.fault = fault

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        good = np.arange(self.slate_size)
        return {
            "shape": good[:-1],
            "repeats": np.zeros(self.slate_size, dtype=np.int64),
            "range": good + 10_000,
            "floats": good.astype(float),
        }.get(self.fault, good)

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        if self.fault == "observe":
            raise KeyError("clicks")


@pytest.mark.parametrize(("fault", "message"), [
    ("shape", r"act\(\) returned shape \(3,\), expected \(4,\)"),
    ("repeats", "with repeats"),
    ("range", r"positions must be in 0\.\.19"),
    ("floats", "float64 values"),
    ("observe", r"observe\(\) raised KeyError: 'clicks' \(episode 0, step 0\)"),
])
def test_check_recommender_names_the_broken_rule(fault: str, message: str, catalog: Catalog) -> None:
    with pytest.raises(RecommenderCheckError, match=message):
        check_recommender(_Broken(4, fault), catalog)


def test_check_recommender_passes_the_built_in_baselines(catalog: Catalog) -> None:
    for name in ("random", "popular", "greedy", "diverse", "instruct"):
        check_recommender(make_recommender(name, catalog, 5, seed=1), catalog)


BROKEN_CONSTRUCTORS = '''
import numpy as np
from recoworld.agents import Recommender


class BadInit(Recommender):
    def __init__(self, slate_size, seed=None):
        raise RuntimeError("model file missing")

    def act(self, observation, info):
        return np.arange(self.slate_size)


class NoAct(Recommender):
    def __init__(self, slate_size, seed=None):
        raise RuntimeError("model file missing")

    def rank(self, observation, info):
        return np.arange(self.slate_size)
'''


@pytest.mark.parametrize(("cls", "expected", "not_said"), [
    ("BadInit", "BadInit(slate_size=3, seed=...) failed: RuntimeError: model file missing", "abstract"),
    ("NoAct", "NoAct is abstract: it does not implement act(), so it cannot be built (its __init__ never ran)",
     "model file"),
])
def test_a_constructor_that_raises_is_reported_as_such(catalog: Catalog, tmp_path: Path, cls: str, expected: str,
                                                        not_said: str) -> None:
    """Issue 31: an agent whose __init__ raised was reported as "abstract (implement act())". The cause named
    is the one Python met: the constructor's exception, or the methods an abstract class lacks."""
    (tmp_path / "broken.py").write_text(BROKEN_CONSTRUCTORS)
    with pytest.raises(ConfigError) as err:
        make_recommender(f"{tmp_path / 'broken.py'}:{cls}", catalog, 3)
    assert expected in str(err.value) and not_said not in str(err.value), str(err.value)
