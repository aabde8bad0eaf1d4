"""LLM users and LLM recommenders in the population world and in studies, against the loopback fault server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fault_server import FaultServer

from recoworld.agents import make_recommender
from recoworld.catalog import Catalog
from recoworld.envs.population_env import PopulationParallelEnv
from recoworld.errors import ConfigError
from recoworld.simulators.llm_user import LLMUsers
from recoworld.studies.spec import StudySpec

WORLD: dict[str, Any] = {
    "slate_size": 3,
    "n_candidates": 10,
    "horizon_days": 2,
    "max_steps": 5,
    "catalog": {"n_items": 600, "seed": 3},
}  # the `catalog` fixture's config


def loopback(srv: FaultServer, tmp_path: Path, **over: Any) -> dict[str, Any]:
    """One request per turn: no retries and no repair, so every injected fault is exactly one fallback."""
    return {
        "backend": "openai",
        "base_url": srv.url,
        "model": "loopback",
        "structured_output": "json_object",
        "cache": "off",
        "cache_path": str(tmp_path / "llm.sqlite"),
        "timeout_s": 5.0,
        "retry_backoff_s": 0.01,
        "max_retries": 0,
        "repair": False,
        **over,
    }


def llm_world(catalog: Catalog, llm: dict[str, Any], n_users: int) -> PopulationParallelEnv:
    return PopulationParallelEnv(n_users=n_users, world={**WORLD, "user_backend": "llm", "llm": llm}, catalog=catalog)


def play(env: PopulationParallelEnv, seed: int) -> tuple[dict[str, list[tuple[Any, ...]]], list[dict[str, Any]]]:
    """One episode under the greedy recommender: each user's turns in order, and the infos of step 1."""
    obs, infos = env.reset(seed=seed)
    agents = {
        a: make_recommender("greedy", env.catalog, WORLD["slate_size"], i) for i, a in enumerate(env.possible_agents)
    }
    turns: dict[str, list[tuple[Any, ...]]] = {a: [] for a in env.possible_agents}
    first: list[dict[str, Any]] = []
    while env.agents:
        obs, rewards, _, _, infos = env.step({a: agents[a].act(obs[a], infos[a]) for a in env.agents})
        first = first or list(infos.values())
        for a, info in infos.items():
            turns[a].append(
                (
                    info["slate"].tolist(),
                    info["reactions"].tolist(),
                    info["dwell_min"].tolist(),
                    info["instruction"],
                    info["left"],
                    info["return_gap_days"],
                    info["churned"],
                    info["llm_fallback"],
                    rewards[a],
                )
            )
    return turns, first


def test_population_llm_turns_in_flight_match_one_at_a_time(catalog: Catalog, tmp_path: Path) -> None:
    n = 6
    runs = {}
    for concurrency in (1, 4):
        # The first requests wait until `concurrency` of them are in flight together (a barrier, not a timing).
        with FaultServer(barrier=concurrency) as srv:
            # Every turn of step 1 fails on purpose: not an outage for the circuit breaker to stop on.
            env = llm_world(catalog, loopback(srv, tmp_path, concurrency=concurrency, max_fallback_rate=1.0), n)
            assert isinstance(env.users, LLMUsers)
            srv.inject(*["malformed"] * n)  # every turn of step 1 falls back, whatever order requests arrive in
            runs[concurrency] = play(env, seed=7)[0]
            stats = env.users.stats
            met, in_flight = srv.barrier_met, srv.max_in_flight
        assert stats["llm_turns"] >= n and stats["llm_session_ends"] >= 1 and stats["fallback_turns"] == n
        assert met and in_flight == concurrency
    assert runs[4] == runs[1], "each user's turns do not depend on how many requests were in flight"
    assert all(len(turns) >= 2 and turns[0][7] and not turns[1][7] for turns in runs[1].values())


def test_population_llm_fallbacks_are_counted_per_turn(catalog: Catalog, tmp_path: Path) -> None:
    n = 5
    with FaultServer() as srv:
        env = llm_world(catalog, loopback(srv, tmp_path, concurrency=3), n)
        srv.inject("malformed", "500", "refuse")  # the first three of step 1's five turn requests
        turns, first = play(env, seed=2)
    assert len(first) == n and sum(info["llm_fallback"] for info in first) == 3
    assert sum(t[7] for user in turns.values() for t in user) == 3
    stats = env.users.stats
    assert stats["fallback_turns"] == 3
    assert stats["fallback_invalid_output"] == 2 and stats["fallback_unavailable"] == 1


@pytest.mark.slow
def test_study_with_llm_users_keeps_the_server_busy_and_reports_fallbacks(
    ray_session, catalog: Catalog, tmp_path: Path
) -> None:
    from recoworld.studies.report import ALL, write_report
    from recoworld.studies.runner import run_study

    with FaultServer(barrier=4) as srv:
        spec = StudySpec.parse(
            {
                "name": "llm-users",
                "seed": 3,
                "n_users": 6,
                "shard_size": 6,
                "world": WORLD,
                "recommenders": ["greedy"],
                "user_backend": "llm",
                "llm": loopback(srv, tmp_path, concurrency=4),
            }
        )
        srv.inject("malformed", "malformed")  # two of the first step's six turns
        result = run_study(spec, tmp_path / "study", catalog=catalog)
        assert srv.barrier_met and srv.max_in_flight == 4, "one shard's users were reviewed four at a time"
    turns = result.trajectories.drop_duplicates(["recommender", "arm", "user_id", "step"])
    assert int(turns["llm_fallback"].sum()) == 2
    assert int(turns[turns["step"] == 1]["llm_fallback"].sum()) == 2
    report, summary = write_report(
        result.trajectories,
        result.episodes,
        result.out,
        title="LLM users",
        horizon_days=spec.world.horizon_days,
        llm_users=True,
    )
    rate = summary[summary["segment"] == ALL]["llm_fallback_rate"].iloc[0]
    assert rate == pytest.approx(2 / len(turns))
    text = report.read_text()
    assert "llm_fallback_rate" in text and f"2 of {len(turns)} turns" in text


def test_llm_recommender_in_a_study_uses_the_study_llm(catalog: Catalog, tmp_path: Path) -> None:
    from recoworld.studies.runner import prepare, run_shard

    with FaultServer() as srv:
        spec = StudySpec.parse(
            {
                "seed": 1,
                "n_users": 2,
                "world": {**WORLD, "max_steps": 2},
                "recommenders": ["toolrec"],
                "llm": loopback(srv, tmp_path),
            }
        )
        setup = prepare(spec, catalog)
        traj, _ = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0))
        assert srv.requests and {r["model"] for r in srv.requests} == {"loopback"}
    frame = traj.to_pandas()
    assert frame["agent_trace"].notna().all() and not frame["llm_fallback"].any()  # parametric users


def test_spec_accepts_llm_recommenders_and_validates_the_llm_block() -> None:
    base = {"n_users": 4, "world": WORLD}
    llm = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "concurrency": 3}
    spec = StudySpec.parse({**base, "recommenders": ["toolrec", "greedy"], "user_backend": "llm", "llm": llm})
    assert spec.world.user_backend == "llm" and spec.world.llm.concurrency == 3 and spec.world.llm.model == "m"
    nested = StudySpec.parse({**base, "world": {**WORLD, "user_backend": "llm", "llm": llm}})
    assert nested.world == spec.world
    # How calls are made does not change the study, so a checkpoint resumes; what is asked does.
    more = StudySpec.parse({**base, "user_backend": "llm", "llm": {**llm, "concurrency": 32, "budget_usd": 5}})
    other = StudySpec.parse({**base, "user_backend": "llm", "llm": {**llm, "model": "m2"}})
    assert more.fingerprint() == nested.fingerprint() != other.fingerprint()

    with pytest.raises(ConfigError, match=r"world\.llm\.concurency: Extra inputs"):
        StudySpec.parse({**base, "llm": {"concurency": 3}})
    with pytest.raises(ConfigError, match=r"world\.llm\.temperature"):
        StudySpec.parse({**base, "llm": {"temperature": 0.2}})  # belongs under llm.sampling
    with pytest.raises(ConfigError, match=r"world\.user_backend"):
        StudySpec.parse({**base, "user_backend": "gpt"})
    with pytest.raises(ConfigError, match="llm is given twice"):
        StudySpec.parse({**base, "world": {**WORLD, "llm": llm}, "llm": llm})
    with pytest.raises(ConfigError, match=r"unknown agent 'toolrek'.*Did you mean 'toolrec'"):
        StudySpec.parse({**base, "recommenders": ["toolrek"]})
