"""`recoworld check-agent SPEC`: the contract checked rule by rule, the name runs will use, a verdict and
its exit code (0 passed, 2 failed with one error line)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recoworld.agents.check import RULES
from recoworld.cli import app

AGENTS = textwrap.dedent('''
    import numpy as np
    from recoworld.agents import Recommender

    class Good(Recommender):
        name = "good-one"

        def act(self, observation, info):
            return self.top_k(observation["candidate_features"][:, -1], observation)

    class ShortSlate(Good):
        name = "short"

        def act(self, observation, info):
            return super().act(observation, info)[:-1]

    class Repeats(Good):
        name = "repeats"

        def act(self, observation, info):
            return np.zeros(self.slate_size, dtype=np.int64)

    class Deaf(Good):
        name = "deaf"

        def observe(self, reactions, info):
            raise KeyError("clicks")

    class Spaced(Good):
        name = "my agent"
''')


@pytest.fixture()
def agents(tmp_path: Path) -> Path:
    path = tmp_path / "agents.py"
    path.write_text(AGENTS)
    return path


def _check(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(app, ["check-agent", *args])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output.splitlines()


def _marked(lines: list[str], mark: str) -> list[str]:
    return [line.strip()[2:] for line in lines if line.strip().startswith(mark)]


def test_a_good_plugin_passes_every_rule_and_says_its_name(agents: Path) -> None:
    code, lines = _check(f"{agents}:Good", "--slate-size", "5", "--seed", "3")
    assert code == 0, lines
    passed = _marked(lines, "✓")
    assert passed[:3] == ["found: Good, a Recommender subclass",
                          "named: 'good-one' in tables, file names, plots and reports",
                          "built: Good(slate_size=5, seed=3) on a catalog of 3000 items"]
    assert passed[3:] == list(RULES.values())
    assert lines[-1].startswith(f"PASSED {agents}:Good, labelled 'good-one': 2 episodes, ")
    assert "slates of 5 from 20 candidates" in lines[-1]


def test_a_built_in_passes(agents: Path) -> None:
    code, lines = _check("greedy", "--episodes", "1")
    assert code == 0 and lines[-1].startswith("PASSED greedy, labelled 'greedy': 1 episodes"), lines


@pytest.mark.parametrize(("cls", "rule", "error"), [
    ("ShortSlate", "shape", "ShortSlate.act() returned shape (9,), expected (10,): one candidate position per "
                            "slate slot (episode 0, step 0)"),
    ("Repeats", "distinct", "Repeats.act() returned [0, 0, 0, 0, 0, 0, 0, 0, 0, 0], with repeats"),
    ("Deaf", "observe", "Deaf.observe() raised KeyError: 'clicks' (episode 0, step 0)"),
])
def test_a_broken_plugin_fails_at_its_rule_with_one_error_line(agents: Path, cls: str, rule: str,
                                                                error: str) -> None:
    code, lines = _check(f"{agents}:{cls}")
    assert code == 2, lines
    assert _marked(lines, "✗") == [RULES[rule]]
    order = list(RULES)
    assert _marked(lines, "✓")[3:] == [RULES[r] for r in order[: order.index(rule)]]  # held until it broke
    assert _marked(lines, "·") == [f"{RULES[r]}: not reached" for r in order[order.index(rule) + 1:]]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and error in errors[0] and lines[-1] == errors[0], lines


def test_an_unusable_name_fails_before_the_contract(agents: Path) -> None:
    code, lines = _check(f"{agents}:Spaced")
    assert code == 2, lines
    assert _marked(lines, "✗") == ["named"] and not _marked(lines, "·")
    assert "Spaced.name = 'my agent' cannot label it in tables and file names" in lines[-1], lines


def test_an_unknown_name_is_a_one_line_error() -> None:
    code, lines = _check("gredy")
    assert code == 2 and _marked(lines, "✗") == ["found"], lines
    assert lines[-1].startswith("error: unknown agent 'gredy'") and "Did you mean 'greedy'?" in lines[-1]


def test_a_negative_seed_is_one_line_naming_it() -> None:
    res = CliRunner().invoke(app, ["check-agent", "greedy", "--seed", "-1"])
    assert res.exit_code == 2
    assert [line for line in res.output.splitlines() if line.startswith("error:")] == [
        "error: --seed -1: give a seed >= 0"]
