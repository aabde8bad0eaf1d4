"""RecoWorld-Bench: the scenario list, a run end to end, determinism, the interest shift and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from recoworld.bench import SCENARIOS, OfflineConfig, Scenario, offline_accuracy, run_bench
from recoworld.bench.metrics import METRICS
from recoworld.bench.scenarios import InterestShift, shift_interests
from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams

TINY_OFFLINE = OfflineConfig(n_users=60, n_items=150, mean_activity=25, max_users=30)


def _one_line_error(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_list_names_every_scenario_with_its_version() -> None:
    result = CliRunner().invoke(app, ["bench", "--list"])
    assert result.exit_code == 0, result.output
    for name in ("retention-30d", "cold-start", "interest-shift", "instruction-probe", "creator-launch",
                 "llm-users-small", "real-log"):
        line = next(line for line in result.output.splitlines() if line.startswith(name))
        assert f"v{SCENARIOS[name].version}" in line and SCENARIOS[name].description[:30] in line


def test_every_scenario_is_versioned_seeded_and_reports_known_metrics() -> None:
    seeds = [s.seed for s in SCENARIOS.values()]
    assert len(set(seeds)) == len(seeds)
    for s in SCENARIOS.values():
        assert s.version and s.metrics and set(s.metrics) <= set(METRICS)
        s.world_config()  # the overrides make a valid world
        if s.interest_shift is not None:
            assert s.interest_shift.day < s.world_config().horizon_days


def test_a_scenario_runs_end_to_end_with_two_agents(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--scenarios", "retention-30d", "--agents", "random,greedy",
                                      "--users", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    import recoworld

    assert data["recoworld"] == recoworld.__version__ and data["agents"] == ["random", "greedy"]
    sc = data["scenarios"]["retention-30d"]
    assert sc["version"] == SCENARIOS["retention-30d"].version and sc["seed"] == SCENARIOS["retention-30d"].seed
    assert len(sc["config_hash"]) == 16 and sc["n_users"] == 8
    for agent in ("random", "greedy"):
        ret = sc["metrics"][agent]["retention"]
        assert 0 <= ret["mean"] <= 1 and ret["ci95"] >= 0 and ret["n"] == 8
        ndcg = data["offline"]["agents"][agent]["ndcg@10"]
        assert 0 <= ndcg["mean"] <= 1 and ndcg["n"] > 0
    # greedy ranks the log's held-out items far better than chance
    offline = data["offline"]["agents"]
    assert offline["greedy"]["ndcg@10"]["mean"] > offline["random"]["ndcg@10"]["mean"]
    board = (out / "leaderboard.md").read_text()
    assert "## retention-30d (v1.0" in board and "| rank | agent | retention |" in board and " ± " in board
    assert (out / "quadrant.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "retention-30d" / "manifest.json").exists()  # a simulate run folder, resumable


def test_the_same_seed_gives_the_same_results_json(tmp_path: Path) -> None:
    texts = []
    for run in ("a", "b"):
        run_bench(["cold-start", "interest-shift"], ["random", "greedy"], tmp_path / run, n_users=6,
                  offline=TINY_OFFLINE)
        texts.append((tmp_path / run / "results.json").read_text())
    assert texts[0] == texts[1]
    data = json.loads(texts[0])
    assert data["scenarios"]["cold-start"]["config_hash"] != data["scenarios"]["interest-shift"]["config_hash"]
    assert data["scenarios"]["interest-shift"]["metrics"]["greedy"]["retention_after_shift"]["n"] == 6


def test_creator_launch_runs_both_arms_in_process(tmp_path: Path) -> None:
    result = run_bench(["creator-launch"], ["greedy"], tmp_path, n_users=8, offline=TINY_OFFLINE)
    metrics = result.runs[0].metrics["greedy"]
    assert set(metrics) == set(SCENARIOS["creator-launch"].metrics)
    assert metrics["retention_lift"]["n"] == 8  # paired: every user played both arms
    assert metrics["target_new_item_clicks"]["n"] >= 1
    assert (tmp_path / "creator-launch" / "episodes.parquet").exists()


class _Crashes:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def begin_episode(self, seed: int | None = None) -> None:
        pass

    def act(self, observation: dict[str, np.ndarray], info: dict[str, Any]) -> np.ndarray:
        raise RuntimeError("needs a live user")


def test_offline_ranking_reports_recommenders_that_cannot_rank_instead_of_numbers() -> None:
    from recoworld.agents import make_recommender

    def build(name: str, catalog: Catalog, k: int, seed: int) -> Any:
        return _Crashes() if name == "crashes" else make_recommender(name, catalog, k, seed)

    out = offline_accuracy(["popular", "oracle", "toolrec", "crashes"], TINY_OFFLINE, build=build)
    assert 0 <= out["popular"]["ndcg@10"]["mean"] <= 1
    assert "mindset" in out["oracle"]["not_ranked"] and "LLM" in out["toolrec"]["not_ranked"]
    assert "needs a live user" in out["crashes"]["not_ranked"] and "ndcg@10" not in out["crashes"]


# ---------------------------------------------------------------------- the interest shift


def _profiles(catalog: Catalog, n: int = 4) -> list[UserProfile]:
    rng = np.random.default_rng(0)
    base = sample_population(PopulationSpec.default(), catalog, rng, n=n)
    return shift_interests(base, catalog, InterestShift(day=5, n_topics=2), rng)


def test_shifted_interests_are_new_topics_and_come_with_a_day(catalog: Catalog) -> None:
    for p in _profiles(catalog):
        assert p.interest_shift_day == 5 and len(p.shifted_interests) == 2
        assert not set(p.shifted_interests) & set(p.topic_interests)
        assert abs(sum(p.shifted_interests.values()) - 1) < 1e-9
    with pytest.raises(ValueError, match="go together"):
        UserProfile.model_validate({**_profiles(catalog, 1)[0].model_dump(), "shifted_interests": None})


def test_long_term_interests_switch_at_the_first_session_on_or_after_the_shift_day(catalog: Catalog) -> None:
    profiles = _profiles(catalog, 2)
    users = ParametricUsers(catalog)
    users.reset(profiles)
    streams = UserStreams.spawn(np.random.default_rng(1), 2)
    before = users.long_term.copy()
    users.start_sessions(np.array([0, 1]), np.array([4.9, 4.9]), streams)
    np.testing.assert_array_equal(users.long_term, before)  # not yet
    users.start_sessions(np.array([0]), np.array([5.2]), streams)
    np.testing.assert_allclose(users.long_term[0], profiles[0].shifted_vector(catalog), atol=1e-6)
    np.testing.assert_array_equal(users.long_term[1], before[1])  # user 1 has not had a session since
    # the short-term interests regress toward the new long-term ones like after any gap
    moved = users.interests[0] @ profiles[0].shifted_vector(catalog)
    assert moved > before[0] @ profiles[0].shifted_vector(catalog)


def test_profiles_without_a_shift_keep_their_interests(catalog: Catalog) -> None:
    p = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=1)[0]
    users = ParametricUsers(catalog)
    users.reset([p])
    before = users.long_term.copy()
    users.start_sessions(np.array([0]), np.array([100.0]), UserStreams.spawn(np.random.default_rng(1), 1))
    np.testing.assert_array_equal(users.long_term, before)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("args", "needle"), [
    (["--scenarios", "retention-3d", "--agents", "random"], "known scenarios: retention-30d, cold-start"),
    (["--scenarios", "retention-30d", "--agents", "random,nowhere.mod:Agent"], "nowhere.mod"),
    (["--scenarios", "retention-30d", "--agents", "randomm"], "unknown agent 'randomm'"),
    (["--scenarios", "real-log", "--agents", "random"], "real-log needs a log: give --data"),
    (["--scenarios", "llm-users-small", "--agents", "random"], "needs a configured chat-model server"),
    (["--scenarios", "llm-users-small", "--agents", "random", "--llm-base-url", "http://127.0.0.1:9/v1",
      "--llm-model", "m"], "cannot be reached"),
])
def test_bad_input_is_one_error_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", *args, "--out", str(tmp_path / "b")])
    assert needle in _one_line_error(result)
    assert not (tmp_path / "b" / "results.json").exists()


def test_missing_data_folder_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--scenarios", "real-log", "--agents", "random",
                                      "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")])
    assert "no such file or folder" in _one_line_error(result)


def test_scenarios_are_frozen_specs() -> None:
    with pytest.raises(ValueError):
        Scenario(name="x", version="1", description="d", metrics=["retention"], unknown=1)  # type: ignore[call-arg]


def test_real_log_calibrates_the_log_it_is_given(tmp_path: Path) -> None:
    from recoworld.data.reference_log import write_reference_log

    log = write_reference_log(tmp_path / "log", n_users=40, n_items=120, mean_activity=20, seed=2)
    result = run_bench(["real-log"], ["greedy"], tmp_path / "out", data=log, n_users=500, offline=TINY_OFFLINE)
    run = result.runs[0]
    played = run.metrics["greedy"]["retention"]["n"]
    assert played == run.n_users < 40 and "calibrated from" in run.notes[0]  # the log's users, not the 500 asked
    assert (tmp_path / "out" / "real-log" / "calibrated" / "world.yaml").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scenarios"]["real-log"]["n_users"] == played
    assert f"; {played} users." in (tmp_path / "out" / "leaderboard.md").read_text()


def test_llm_users_small_runs_on_the_configured_server_and_caches(tmp_path: Path) -> None:
    from fault_server import FaultServer

    from recoworld.llm.config import LLMConfig

    with FaultServer() as srv:
        llm = LLMConfig(backend="openai", base_url=srv.url, model="loopback", structured_output="json_object")
        result = run_bench(["llm-users-small"], ["greedy"], tmp_path, llm=llm, n_users=2, offline=TINY_OFFLINE)
    metrics = result.runs[0].metrics["greedy"]
    assert metrics["retention"]["n"] == 2 and metrics["llm_fallback_rate"]["mean"] == 0
    assert list((tmp_path / "llm-users-small" / "llm-cache").iterdir())
