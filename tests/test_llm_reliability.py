"""LLM reliability: the health check before a run, the fallback-rate circuit breaker, the study-wide
budget ledger and where the cache lives, against the loopback fault server (killed and restarted)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from fault_server import FaultServer
from pydantic import BaseModel
from typer.testing import CliRunner

from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.llm import (
    BudgetExceeded,
    BudgetLedger,
    FallbackRateExceeded,
    LLMConfig,
    LLMOutputError,
    LLMServerUnreachable,
    ReplayMiss,
    Structured,
    check_server,
    make_backend,
)
from recoworld.llm.health import FallbackBreaker
from recoworld.studies.spec import StudySpec

WORLD: dict[str, Any] = {"slate_size": 3, "n_candidates": 10, "horizon_days": 2, "max_steps": 4,
                         "catalog": {"n_items": 600, "seed": 3}}  # the `catalog` fixture's config
MESSAGES = [{"role": "user", "content": "Pick a or b."}]


class Answer(BaseModel):
    choice: str


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llm(url: str, tmp_path: Path, **over: Any) -> dict[str, Any]:
    """One request per call (no retries, no repair): every failure is exactly one fallback."""
    return {"backend": "openai", "base_url": url, "model": "loopback", "structured_output": "json_object",
            "cache": "off", "cache_path": str(tmp_path / "llm.sqlite"), "timeout_s": 5.0, "retry_backoff_s": 0.01,
            "max_retries": 0, "repair": False, **over}


# ---------------------------------------------------------------------- health check


def test_health_check_names_the_unreachable_url(tmp_path: Path) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMServerUnreachable, match=rf"server at {refused} cannot be reached.*--llm-cache replay"):
        check_server(LLMConfig(**llm(refused, tmp_path, cache="write")))
    with pytest.raises(LLMServerUnreachable, match=r"'notaurl' is not an http\(s\) URL"):
        check_server(LLMConfig(**llm("notaurl", tmp_path)))
    # Replay never calls the model, and the local backend has no server: nothing to probe.
    check_server(LLMConfig(**llm(refused, tmp_path, cache="replay")))
    check_server(LLMConfig(backend="local"))
    with FaultServer() as srv:  # it answers GET /models with an error status: still there
        check_server(LLMConfig(**llm(srv.url, tmp_path)))
        assert not srv.requests, "the probe is no chat request"


def simulate_args(out: Path, *more: str) -> list[str]:
    return ["simulate", "--users", "2", "--days", "1", "--agents", "greedy", "--slate-size", "3",
            "--candidates", "10", "--out", str(out), *more]


@pytest.mark.parametrize("url", ["refused", "notaurl"])
def test_cli_stops_before_any_user_runs_when_the_server_is_unreachable(tmp_path: Path, url: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if url == "refused" else url
    out = tmp_path / "run"
    res = CliRunner().invoke(app, simulate_args(out, "--user-backend", "llm", "--llm", "openai",
                                                "--llm-base-url", url, "--llm-model", "m"))
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and url in lines[0], res.output
    assert not (out / "trajectories").exists() and not (out / "episodes.parquet").exists()


def test_cache_defaults_under_out_and_replays_with_the_server_down(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "world.yaml"
    with FaultServer() as srv:
        base = llm(srv.url, tmp_path, cache="write")
        del base["cache_path"]  # the default: under --out
        config.write_text(yaml.safe_dump({"user_backend": "llm", "max_steps": 3, "llm": base}))
        first = CliRunner().invoke(app, simulate_args(tmp_path / "run1", "--config", str(config)))
        assert first.exit_code == 0, first.output
        sent = len(srv.requests)
    cache = tmp_path / "run1" / "llm-cache" / "llm.sqlite"
    assert sent > 0 and cache.exists() and not (tmp_path / ".recoworld_cache").exists()

    # The server is gone. Pointed at that cache, `replay` reproduces the run without it ...
    shared = {**base, "cache_path": str(cache)}
    config.write_text(yaml.safe_dump({"user_backend": "llm", "max_steps": 3, "llm": shared}))
    replay = CliRunner().invoke(app, simulate_args(tmp_path / "run2", "--config", str(config), "--llm-cache", "replay"))
    assert replay.exit_code == 0, replay.output
    assert "0 calls" in replay.output and "0 of" in replay.output, "every turn replayed, none fell back"
    assert (tmp_path / "run1" / "summary.csv").read_text() == (tmp_path / "run2" / "summary.csv").read_text()
    # ... while a run that would call the server says so before it starts.
    write = CliRunner().invoke(app, simulate_args(tmp_path / "run3", "--config", str(config)))
    assert write.exit_code == 2 and "cannot be reached" in write.output and "replay" in write.output


@pytest.mark.parametrize("damage", ["not-sqlite", "truncated"])
def test_a_cache_that_is_not_sqlite_is_one_error_naming_it(tmp_path: Path, damage: str) -> None:
    """Issue 31: a cache_path at a file that is not SQLite (or a damaged default cache) gave a 77-line
    sqlite3.DatabaseError. Now one line names the file and how to move it aside; the file is left as it was."""
    cache = tmp_path / "llm.sqlite"
    if damage == "not-sqlite":
        cache.write_text("my notes, not a cache\n" * 50)
    else:  # a real cache cut short, as a full disk or a killed copy leaves it
        with FaultServer() as srv:
            backend = make_backend(LLMConfig(**llm(srv.url, tmp_path, cache="write")))
            backend.complete(MESSAGES, Structured(Answer))
            backend.cache.close()  # its write-ahead log folded into the file
        image = cache.read_bytes()
        cache.write_bytes(image[:100] + b"\xff" * (len(image) - 100))  # the header kept, every page overwritten
    before = cache.read_bytes()
    config = tmp_path / "world.yaml"
    with FaultServer() as srv:
        config.write_text(yaml.safe_dump({"user_backend": "llm", "max_steps": 3,
                                          "llm": llm(srv.url, tmp_path, cache="write")}))
        res = CliRunner().invoke(app, simulate_args(tmp_path / "run", "--config", str(config)))
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert f"llm.cache_path {cache}" in lines[0] and f"mv '{cache}'" in lines[0], res.output
    assert cache.read_bytes() == before


def test_replay_miss_stops_instead_of_falling_back(tmp_path: Path) -> None:
    backend = make_backend(LLMConfig(**llm(f"http://127.0.0.1:{free_port()}/v1", tmp_path, cache="replay")))
    with pytest.raises(ReplayMiss, match=r"llm\.cache=replay"):
        backend.complete(MESSAGES, Structured(Answer))
    assert backend.usage.requests == 0


# ---------------------------------------------------------------------- circuit breaker


def test_breaker_trips_on_the_failure_past_the_rate_and_starts_afresh() -> None:
    breaker = FallbackBreaker(max_rate=0.25, window=20)
    err = LLMOutputError("bad reply")
    for _ in range(14):
        breaker.success()
    for _ in range(5):
        breaker.failure(err)  # 5 of 20 is the ceiling, not over it
    with pytest.raises(FallbackRateExceeded, match=r"6 of the last 20 model calls fell back.*bad reply"):
        breaker.failure(err)
    breaker.failure(err)  # a fresh window after a trip
    off = FallbackBreaker(max_rate=1.0, window=3)
    for _ in range(10):
        off.failure(err)


def test_a_dead_server_stops_a_population_run_instead_of_falling_back(catalog: Catalog, tmp_path: Path) -> None:
    from recoworld.agents import make_recommender
    from recoworld.envs.population_env import PopulationParallelEnv

    with FaultServer(down_after=9) as srv:  # 8 answers, then the server dies
        env = PopulationParallelEnv(n_users=4, catalog=catalog, world={
            **WORLD, "max_steps": 10, "user_backend": "llm", "llm": llm(srv.url, tmp_path, concurrency=2)})
        obs, infos = env.reset(seed=1)
        agents = {a: make_recommender("greedy", catalog, 3, i) for i, a in enumerate(env.possible_agents)}
        fallbacks = 0
        with pytest.raises(FallbackRateExceeded, match="fell back"):
            while env.agents:
                obs, _, _, _, infos = env.step({a: agents[a].act(obs[a], infos[a]) for a in env.agents})
                fallbacks += sum(bool(i["llm_fallback"]) for i in infos.values())
        assert len(srv.requests) == 8
    assert fallbacks <= 5, "the run stopped at the sixth failure, not after a run of fallbacks"


# ---------------------------------------------------------------------- studies on Ray


def study(srv_url: str, tmp_path: Path, **llm_over: Any) -> StudySpec:
    """Three shards of two users; the LLM cache in its default place, under the study's output folder."""
    block = llm(srv_url, tmp_path, **llm_over)
    del block["cache_path"]
    return StudySpec.parse({"name": "reliability", "seed": 5, "n_users": 6, "shard_size": 2, "world": WORLD,
                            "recommenders": ["greedy"], "user_backend": "llm", "llm": block})


def test_study_with_an_unreachable_server_stops_before_any_shard(catalog: Catalog, tmp_path: Path) -> None:
    from conftest import require

    require("ray")
    from recoworld.studies.runner import run_study

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(LLMServerUnreachable, match=url):
        run_study(study(url, tmp_path), tmp_path / "study", catalog=catalog)
    assert not (tmp_path / "study" / "parts").exists()


@pytest.mark.slow
def test_study_stops_when_the_server_dies_and_resumes_once_it_is_back(ray_session, catalog: Catalog,
                                                                     tmp_path: Path) -> None:
    from recoworld.studies.runner import MANIFEST, run_study

    out = tmp_path / "study"
    with FaultServer(down_after=13) as srv:  # 12 answers: less than one shard's worth
        spec = study(srv.url, tmp_path, cache="write", concurrency=2)
        port = srv.port
        with pytest.raises(FallbackRateExceeded, match="fell back") as caught:
            run_study(spec, out, catalog=catalog)
        answered = len(srv.requests)
    assert "Traceback" not in str(caught.value) and "\n" not in str(caught.value), "one line, not Ray's wrapper"
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else {"shards": {}}
    assert len(manifest["shards"]) < 3, "the shards the outage hit are not checkpointed"
    cache = out / "llm-cache" / "llm.sqlite"
    assert answered == 12 and cache.exists()

    with FaultServer(port=port) as back:  # the server is back, same URL: rerun the same study
        result = run_study(spec, out, catalog=catalog)
        assert back.requests, "the unfinished shards were redone"
    assert result.shards_run == 3 - len(manifest["shards"])
    turns = result.trajectories.drop_duplicates(["recommender", "arm", "user_id", "step"])
    assert len(result.episodes) == 6
    assert turns["llm_fallback"].mean() < 0.25, "under the ceiling: the cache replayed no failure"


@pytest.mark.slow
def test_a_study_budget_holds_across_ray_workers(ray_session, catalog: Catalog, tmp_path: Path) -> None:
    from recoworld.studies.runner import run_study

    budget = 10
    out = tmp_path / "study"
    with FaultServer(latency_s=0.02) as srv:  # slow enough that both workers' shards run together
        spec = study(srv.url, tmp_path, budget_requests=budget)
        with pytest.raises(BudgetExceeded, match=rf"study-wide.*budget_requests={budget}"):
            run_study(spec, out, catalog=catalog)
        sent = len(srv.requests)
    assert 0 < sent <= budget, f"{sent} requests reached the server, budget {budget}"
    assert BudgetLedger(out / "llm-budget.json").totals()["requests"] == budget


def test_ledger_charges_requests_before_they_are_sent(tmp_path: Path) -> None:
    ledger = BudgetLedger(tmp_path / "ledger.json")
    cfg = LLMConfig(**llm("http://127.0.0.1:1/v1", tmp_path, budget_requests=2, budget_ledger=ledger.path))
    one, two = make_backend(cfg), make_backend(cfg)  # two processes' backends, one ledger
    one._charge()
    two._charge()
    with pytest.raises(BudgetExceeded, match="study-wide"):
        one._charge()
    ledger.spend(3, 4)
    assert ledger.totals() == {"requests": 2, "prompt_tokens": 3, "completion_tokens": 4}


def test_for_run_fills_in_only_what_is_unset(tmp_path: Path) -> None:
    cfg = LLMConfig()
    assert cfg.cache_path is None and cfg.resolved_cache_path == Path(".recoworld_cache/llm.sqlite")
    run = cfg.for_run(tmp_path, ledger=True)
    assert run.cache_path == tmp_path / "llm-cache" / "llm.sqlite"
    assert run.budget_ledger == tmp_path / "llm-budget.json"
    shared = LLMConfig(cache_path=tmp_path / "shared.sqlite")
    assert shared.for_run(tmp_path / "x").cache_path == tmp_path / "shared.sqlite"
    # How calls are made is not what the study is: a resume may change these.
    a = StudySpec.parse({"n_users": 2, "world": WORLD, "llm": {"model": "m"}})
    b = StudySpec.parse({"n_users": 2, "world": WORLD, "llm": {"model": "m", "max_fallback_rate": 0.5,
                                                               "fallback_window": 50, "budget_requests": 9}})
    assert a.fingerprint() == b.fingerprint()
