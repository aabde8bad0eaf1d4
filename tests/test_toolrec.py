"""ToolRec: its tools on real candidates, its loop against a loopback server and the local model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require
from fault_server import FaultServer
from typer.testing import CliRunner

from recoworld.agents import GreedyRelevanceRecommender, make_recommender
from recoworld.agents.toolrec import ToolBox, ToolRecConfig, ToolRecRecommender
from recoworld.agents.toolrec.tools import RerankArgs, RetrieveArgs
from recoworld.catalog import Catalog
from recoworld.catalog.semantic_ids import format_semantic_id
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.llm import LLMConfig, SamplingParams, make_backend


class ToolCallServer(FaultServer):
    """The fault server, plus scripted replies: `call(name, arguments)` queues one tool call
    (arguments as a dict, or raw text to send a malformed call) and `content(text)` one plain reply."""

    def call(self, name: str, arguments: dict[str, Any] | str) -> None:
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self.inject("call:" + json.dumps([name, text]))

    def content(self, text: str) -> None:
        self.inject("content:" + text)

    def _answer(self, body: dict[str, Any], fault: str | None) -> tuple[int, dict[str, Any] | bytes]:
        if fault is None or not fault.startswith(("call:", "content:")):
            return super()._answer(body, fault)
        status, payload = super()._answer(body, None)
        assert isinstance(payload, dict)
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if fault.startswith("call:"):
            name, arguments = json.loads(fault[len("call:"):])
            message["tool_calls"] = [{"id": "call_0", "type": "function",
                                      "function": {"name": name, "arguments": arguments}}]
        else:
            message["content"] = fault[len("content:"):]
        payload["choices"][0]["message"] = message
        return status, payload


def loopback(srv: FaultServer, tmp_path: Path, **overrides: Any) -> LLMConfig:
    # No backend retries: every bad reply reaches ToolRec's own loop as an observation.
    base: dict[str, Any] = dict(backend="openai", base_url=srv.url, model="loopback", structured_output="json_object",
                                cache="off", cache_path=tmp_path / "cache.sqlite", timeout_s=2.0, max_retries=0,
                                repair=False, retry_backoff_s=0.01)
    return LLMConfig(**{**base, **overrides})


@pytest.fixture()
def env(catalog: Catalog) -> RecoWorldEnv:
    return RecoWorldEnv(catalog=catalog, slate_size=3, n_candidates=24, horizon_days=3)


def _warm(env: RecoWorldEnv) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """An observation with some history, so greedy relevance is not just popularity: turns until
    the user has clicked twice (clicks land on a few percent of impressions)."""
    obs, info = env.reset(seed=4)
    clicks = 0
    while clicks < 2:
        obs, *_, info = env.step(np.arange(3))
        clicks += int((info["reactions"] >= 1).sum())
    return obs, info


def _pool(env: RecoWorldEnv, obs: dict[str, np.ndarray]) -> Any:
    relevance = GreedyRelevanceRecommender(3).scores(obs)
    return ToolBox(env.catalog).pool(obs["candidate_ids"], obs["candidate_mask"].astype(bool), relevance), relevance


# ---------------------------------------------------------------------- tools


def test_retrieval_tools_condition_on_the_attribute_and_rank_by_relevance(env: RecoWorldEnv) -> None:
    obs, _ = _warm(env)
    cat = env.catalog
    pool, relevance = _pool(env, obs)
    topic = cat.topic_names[int(np.bincount(cat.topic[pool.items]).argmax())]
    got = pool.retrieve(RetrieveArgs(attribute="Topic", value=topic.upper(), k=3))
    assert got.error is None and 1 <= len(got.positions) <= 3
    assert all(cat.topic_names[cat.topic[obs["candidate_ids"][p]]] == topic for p in got.positions)
    assert np.all(np.diff(relevance[got.positions]) <= 0)
    assert set(got.positions) <= set(pool.positions)

    first = int(pool.items[0])
    prefix = format_semantic_id(cat.semantic_ids[first][:1])
    by_sid = pool.retrieve(RetrieveArgs(attribute="semantic_id", value=prefix, k=20))
    assert by_sid.error is None and int(np.flatnonzero(obs["candidate_ids"] == first)[0]) in by_sid.positions
    assert all(cat.semantic_ids[obs["candidate_ids"][p]][0] == cat.semantic_ids[first][0] for p in by_sid.positions)

    short = pool.retrieve(RetrieveArgs(attribute="duration", value="short", k=20))
    long_ = pool.retrieve(RetrieveArgs(attribute="duration", value="long", k=20))
    assert cat.duration_min[obs["candidate_ids"][short.positions]].max() < \
        cat.duration_min[obs["candidate_ids"][long_.positions]].min()

    subtopic = cat.subtopic_names[cat.subtopic[first]]
    by_query = pool.retrieve(RetrieveArgs(attribute="query", value=f"videos about {subtopic}", k=3))
    assert by_query.error is None
    assert cat.subtopic_names[cat.subtopic[obs["candidate_ids"][by_query.positions[0]]]] == subtopic


def test_rank_tools_reorder_what_was_retrieved(env: RecoWorldEnv) -> None:
    obs, _ = _warm(env)
    cat = env.catalog
    pool, relevance = _pool(env, obs)
    by_relevance = pool.rerank(RerankArgs(attribute="relevance", value="", k=5), np.empty(0, dtype=np.int64))
    assert by_relevance.positions.tolist() == pool.positions[np.argsort(-relevance[pool.positions],
                                                                        kind="stable")][:5].tolist()
    retrieved = pool.positions[:10]
    topic = cat.topic_names[cat.topic[obs["candidate_ids"][retrieved[-1]]]]
    moved = pool.rerank(RerankArgs(attribute="topic", value=topic, k=10), retrieved)
    assert set(moved.positions) == set(retrieved)
    assert cat.topic_names[cat.topic[obs["candidate_ids"][moved.positions[0]]]] == topic
    quality = pool.rerank(RerankArgs(attribute="quality", value="", k=10), retrieved)
    assert np.all(np.diff(cat.quality[obs["candidate_ids"][quality.positions]]) <= 0)


@pytest.mark.parametrize(("args", "message"), [
    (dict(attribute="topic", value="cooking", k=1307542086739161), "k=1307542086739161 is out of range"),
    (dict(attribute="topic", value="cooking", k=0), "k=0 is out of range"),
    (dict(attribute="colour", value="red", k=3), "unknown attribute 'colour'"),
    (dict(attribute="topic", value="footbal", k=3), "did you mean 'football'"),
    (dict(attribute="duration", value="forever", k=3), "unknown duration 'forever'"),
    (dict(attribute="semantic_id", value="a3", k=3), "not a semantic id"),
    (dict(attribute="query", value="  ", k=3), "give some words"),
])
def test_bad_arguments_become_errors_not_exceptions(env: RecoWorldEnv, args: dict[str, Any], message: str) -> None:
    obs, _ = env.reset(seed=0)
    pool, _ = _pool(env, obs)
    result = pool.retrieve(RetrieveArgs(**args))
    assert result.error is not None and message in result.error and len(result.positions) == 0


# ---------------------------------------------------------------------- the loop, over HTTP


def test_malformed_unknown_and_out_of_range_calls_come_back_as_observations(
    env: RecoWorldEnv, tmp_path: Path
) -> None:
    obs, info = _warm(env)
    cat = env.catalog
    with ToolCallServer() as srv:
        agent = make_recommender("toolrec", cat, 3, seed=0, llm=loopback(srv, tmp_path))
        assert isinstance(agent, ToolRecRecommender)
        available = obs["candidate_ids"][obs["candidate_mask"] > 0]
        topic = cat.topic_names[cat.topic[available[0]]]
        srv.call("retrieve", '{"thought": "half a call", "attribute": "topic", "val')   # malformed JSON
        srv.call("drop_tables", {"thought": "why not"})                                 # unknown tool
        srv.call("retrieve", {"thought": "big", "attribute": "topic", "value": topic, "k": 1307542086739161})
        srv.call("retrieve", {"thought": f"they like {topic}", "attribute": "topic", "value": topic, "k": 2})
        srv.call("rerank", {"thought": "best first", "attribute": "quality", "value": "", "k": 1})
        srv.call("finish", {"thought": "done", "items": [999_999, int(available[0])]})  # one id is invented
        srv.call("finish", {"thought": "again", "items": [int(available[0])]})
        slate = agent.act(obs, info)
        prompts = [r["messages"][-1]["content"] for r in srv.requests]
        tools = srv.requests[0]["tools"]
    # Native function calling: plain object schemas (OpenAI rejects a root-level anyOf).
    assert [t["function"]["name"] for t in tools] == ["retrieve", "rerank", "finish"]
    assert all(t["function"]["parameters"]["type"] == "object" and "anyOf" not in t["function"]["parameters"]
               for t in tools)
    trace = agent.last_trace
    assert trace is not None and json.loads(json.dumps(trace)) == trace
    steps, final = trace[:-1], trace[-1]
    assert [s.get("tool") for s in steps] == [None, None, "retrieve", "retrieve", "rerank", "finish", "finish"]
    assert "no valid action" in steps[0]["error"] and "unknown tool 'drop_tables'" in steps[1]["error"]
    assert steps[2]["error"].startswith("retrieve: k=1307542086739161 is out of range") and "error" not in steps[3]
    # Re-ranks the retrieved list (k=1 keeps its better item, a list no earlier step made).
    assert steps[4]["label"] == "rerank quality" and len(steps[4]["items"]) == 1
    assert set(steps[4]["items"]) <= set(steps[3]["items"])
    assert steps[5]["dropped"] == ["999999"] and "not among this turn's candidates" in steps[5]["error"]
    # Each error was shown to the model at the next step, and every list with the attribute that made it.
    assert "unknown tool 'drop_tables'" in prompts[2] and "out of range" in prompts[3]
    assert f"list L1 (retrieve topic={topic})" in prompts[5] and "list L2 (rerank quality)" in prompts[5]
    assert "999999" in prompts[6]
    assert final["ended_by"] == "finish" and final["finish"] == [int(available[0])]
    assert final["slate"][0] == int(available[0]) and set(steps[3]["items"]) <= set(final["slate"])
    assert slate.shape == (3,) and len(set(slate.tolist())) == 3
    assert obs["candidate_ids"][slate].tolist() == final["slate"]


def test_json_action_fallback_and_the_step_budget(env: RecoWorldEnv, tmp_path: Path) -> None:
    """Without native tools the action is one JSON object; a model that never finishes is cut off."""
    obs, info = _warm(env)
    with ToolCallServer() as srv:
        agent = ToolRecRecommender(3, env.catalog, loopback(srv, tmp_path, tool_calling="json"), seed=0,
                                   config=ToolRecConfig(max_steps=3))
        srv.content(json.dumps({"tool": "rerank", "arguments": {"thought": "", "attribute": "relevance",
                                                                "value": "", "k": 1307542086739161}}))
        srv.content(json.dumps({"tool": "retrieve", "arguments": {"thought": "x", "attribute": "popularity",
                                                                  "value": "popular", "k": 4}}))
        srv.content("I think the user wants football")
        slate = agent.act(obs, info)
        request = srv.requests[0]
    assert "tools" not in request
    assert {b["properties"]["tool"]["const"] for b in request["response_format"]["schema"]["anyOf"]} == \
        {"retrieve", "rerank", "finish"}
    trace = agent.last_trace
    assert trace is not None and len(trace) == 4 and trace[-1]["ended_by"] == "max_steps"
    assert trace[0]["error"].startswith("rerank: k=") and "no JSON object" in trace[2]["error"]
    # The popular list fills the slate before the greedy top-up.
    assert trace[-1]["slate"] == trace[1]["items"][:3] and slate.shape == (3,)


def test_repeated_calls_are_answered_then_cut_short(env: RecoWorldEnv, tmp_path: Path) -> None:
    obs, info = _warm(env)
    with ToolCallServer() as srv:
        agent = ToolRecRecommender(3, env.catalog, loopback(srv, tmp_path), seed=0)
        call = {"thought": "", "attribute": "popularity", "value": "popular", "k": 2}
        for _ in range(3):
            srv.call("retrieve", call)
        slate = agent.act(obs, info)
        assert "nothing new" in srv.requests[2]["messages"][-1]["content"] and len(srv.requests) == 3
    trace = agent.last_trace
    assert trace is not None and trace[-1]["ended_by"] == "repeat"
    assert "same result as step 1" in trace[1]["error"] and "same result as step 1" in trace[2]["error"]
    assert trace[-1]["slate"][:2] == trace[0]["items"] and slate.shape == (3,)


def test_unreachable_server_falls_back_to_greedy_relevance(env: RecoWorldEnv, tmp_path: Path) -> None:
    obs, info = _warm(env)
    llm = LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", cache="off", max_retries=0,
                    cache_path=tmp_path / "c.sqlite")
    agent = ToolRecRecommender(3, env.catalog, llm, seed=0)
    slate = agent.act(obs, info)
    assert agent.last_trace is not None and agent.last_trace[-1]["ended_by"] == "unavailable"
    assert slate.tolist() == GreedyRelevanceRecommender(3).act(obs, info).tolist()


def test_toolrec_runs_in_a_simulation_from_the_cli(tmp_path: Path) -> None:
    """`recoworld simulate --agents toolrec,...` with an OpenAI-compatible endpoint: traces and
    instruction following land in the trajectory and the summary of every recommender."""
    import pandas as pd

    from recoworld.cli import app

    with FaultServer() as srv:
        out = tmp_path / "run"
        result = CliRunner().invoke(app, [
            "simulate", "--users", "2", "--days", "2", "--slate-size", "3", "--candidates", "20",
            "--agents", "toolrec,instruct", "--llm", "openai", "--llm-base-url", srv.url, "--llm-model", "loopback",
            "--llm-cache", "off", "--out", str(out),
        ])
        assert result.exit_code == 0, result.output
        assert len(srv.requests) > 0
    assert "LLM:" in result.output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["recommender"]) == ["toolrec", "instruct"] and "instruction_following" in summary
    traj = pd.read_parquet(out / "trajectories" / "toolrec.parquet").drop_duplicates(["user_id", "step"])
    traces = [json.loads(t) for t in traj["agent_trace"]]
    assert all(t[-1]["slate"] for t in traces) and any(s.get("tool") for t in traces for s in t[:-1])


# ---------------------------------------------------------------------- the local model


def test_toolrec_with_the_local_model_calls_it_and_replays_from_the_cache(env: RecoWorldEnv, tmp_path: Path) -> None:
    require("llama_cpp")
    obs, info = _warm(env)
    cfg = ToolRecConfig(max_steps=2, history_items=3, show_items=3,
                        sampling=SamplingParams(temperature=0.3, max_tokens=80))
    llm = LLMConfig(backend="local", cache="write", cache_path=tmp_path / "llm.sqlite", max_retries=0, repair=False)
    backend = make_backend(llm)
    agent = ToolRecRecommender(3, env.catalog, seed=7, config=cfg, backend=backend)
    agent.begin_episode(7)
    slate = agent.act(obs, info)
    assert backend.usage.requests >= 1 and backend.usage.cache_hits == 0  # the model really ran
    trace = agent.last_trace
    assert trace is not None and 1 <= len(trace) - 1 <= cfg.max_steps
    assert slate.shape == (3,) and len(set(slate.tolist())) == 3 and (obs["candidate_mask"][slate] > 0).all()
    *_, info2 = env.step(slate)
    assert info2["duplicates_replaced"] == 0

    replay = make_backend(llm.model_copy(update={"cache": "read"}))
    again = ToolRecRecommender(3, env.catalog, seed=7, config=cfg, backend=replay)
    again.begin_episode(7)
    assert again.act(obs, info).tolist() == slate.tolist() and again.last_trace == trace
    assert replay.usage.cache_hits >= 1 and replay.usage.requests == 0


def test_bench_toolrec_script_runs() -> None:
    require("llama_cpp")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "experiments" / "bench_toolrec.py"), "--turns", "1",
                          "--max-steps", "1", "--max-tokens", "64"], capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "model calls / turn" in out.stdout and "instruct" in out.stdout and "LLM: 1 calls" in out.stdout
