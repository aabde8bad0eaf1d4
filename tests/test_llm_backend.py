"""The chat backend against a loopback chat-completions server that injects faults."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Literal

import pytest
from fault_server import FaultServer
from pydantic import BaseModel

from recoworld.llm import (
    BudgetExceeded,
    LLMConfig,
    LLMOutputError,
    LLMUnavailable,
    SamplingParams,
    Structured,
    Tool,
    ToolCall,
    Tools,
    make_backend,
)
from recoworld.llm.scripted import ScriptedBackend, scripted_config


class Answer(BaseModel):
    choice: Literal["a", "b"]
    score: float


class Search(BaseModel):
    query: str
    k: int


class Finish(BaseModel):
    items: list[int]


MESSAGES = [{"role": "system", "content": "You answer in JSON."}, {"role": "user", "content": "Pick a or b."}]


def loopback(srv: FaultServer, tmp_path: Path, **overrides: Any) -> LLMConfig:
    base: dict[str, Any] = dict(backend="openai", base_url=srv.url, model="loopback", structured_output="json_object",
                                cache="off", cache_path=tmp_path / "cache.sqlite", timeout_s=0.5,
                                retry_backoff_s=0.01, max_retries=1)
    return LLMConfig(**{**base, **overrides})


def test_timeouts_500s_and_garbage_are_retried(tmp_path: Path) -> None:
    with FaultServer(hang_s=2.0) as srv:
        backend = make_backend(loopback(srv, tmp_path, max_retries=3))
        srv.inject("timeout", "500", "garbage")
        answer = backend.complete(MESSAGES, Structured(Answer))
    assert isinstance(answer, Answer)
    assert backend.usage.transport_errors == 3
    assert backend.usage.requests == 4
    assert backend.usage.failures == 0


def test_transport_errors_past_the_retries_raise_unavailable(tmp_path: Path) -> None:
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, max_retries=1))
        srv.inject("500", "500", "500")
        with pytest.raises(LLMUnavailable, match="failed after 2 attempt"):
            backend.complete(MESSAGES, Structured(Answer))
        assert len(srv.requests) == 2
    assert backend.usage.failures == 1


def test_invalid_output_is_resampled_then_repaired(tmp_path: Path) -> None:
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, max_retries=1))
        srv.inject("malformed", "refuse")
        answer = backend.complete(MESSAGES, Structured(Answer))
        seeds = [r["seed"] for r in srv.requests]
        repair = srv.requests[-1]["messages"]
    assert isinstance(answer, Answer)
    assert seeds == [0, 1, 2], "each resample draws a new seed"
    assert repair[-2]["role"] == "assistant" and repair[-1]["content"].startswith("Your previous reply could not")
    assert "refused" in repair[-1]["content"]
    assert (backend.usage.invalid_outputs, backend.usage.repairs, backend.usage.failures) == (2, 1, 0)


def test_semantic_check_failures_count_as_invalid(tmp_path: Path) -> None:
    def only_b(a: Answer) -> Answer:
        if a.choice != "b":
            raise ValueError(f"choice must be b, got {a.choice}")
        return a

    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, max_retries=8, repair=False))
        answer = backend.complete(MESSAGES, Structured(Answer, check=only_b))
    assert answer.choice == "b"
    assert backend.usage.requests == backend.usage.invalid_outputs + 1


def test_a_failure_is_never_cached(tmp_path: Path) -> None:
    """A bad reply must not outlive the run that saw it: the next run asks the model again."""
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, max_retries=1, cache="write"))
        srv.inject("malformed", "malformed", "malformed")
        with pytest.raises(LLMOutputError, match="no valid Answer after 3 replies"):
            backend.complete(MESSAGES, Structured(Answer))
        sent = len(srv.requests)
        again = make_backend(loopback(srv, tmp_path, max_retries=1, cache="write"))
        assert isinstance(again.complete(MESSAGES, Structured(Answer)), Answer)
        assert len(srv.requests) == sent + 1 and again.usage.cache_hits == 0
        replay = make_backend(loopback(srv, tmp_path, max_retries=1, cache="read"))
        assert isinstance(replay.complete(MESSAGES, Structured(Answer)), Answer)
        assert len(srv.requests) == sent + 1, "the good reply is recorded and replayed"
    assert replay.usage.cache_hits == 1 and replay.usage.requests == 0


def _refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens once the socket closes


def test_an_unreachable_server_never_makes_auto_settle_on_prompt_mode(tmp_path: Path) -> None:
    """The outage of issue 17: a server down at the start must not poison the mode for the run or the cache."""
    config = dict(backend="openai", model="loopback", structured_output="auto", cache="write",
                  cache_path=tmp_path / "cache.sqlite", timeout_s=0.5, retry_backoff_s=0.01, max_retries=1)
    down = make_backend(LLMConfig(**config, base_url=_refused_url()))
    with pytest.raises(LLMUnavailable, match="while probing its structured-output mode"):
        down.complete(MESSAGES, Structured(Answer))
    assert down.usage.transport_errors == 2
    with FaultServer() as srv:
        srv.reject_formats = {"json_schema"}
        up = make_backend(LLMConfig(**config, base_url=srv.url))
        up.complete(MESSAGES, Structured(Answer))
        probed = [(r.get("response_format") or {}).get("type") for r in srv.requests]
    assert probed == ["json_schema", "json_object", "json_object"], "probed afresh, then json_object"
    with FaultServer() as srv:  # a later run replays the detected mode from the cache: no probe
        later = make_backend(LLMConfig(**config, base_url=srv.url))
        later.complete([*MESSAGES, {"role": "user", "content": "Again."}], Structured(Answer))
        assert [(r.get("response_format") or {}).get("type") for r in srv.requests] == ["json_object"]


@pytest.mark.parametrize("status", ["503", "429"])
def test_a_busy_server_during_the_probe_is_retried_and_never_cached(tmp_path: Path, status: str) -> None:
    """Issue 31: a 503 or 429 says the server is busy, not that it lacks a mode; `prompt` learned from it
    would be cached and outlive the outage in every later run."""
    config = dict(backend="openai", model="loopback", structured_output="auto", cache="write",
                  cache_path=tmp_path / "cache.sqlite", timeout_s=0.5, retry_backoff_s=0.01, max_retries=1)
    with FaultServer() as srv:
        srv.inject(status)  # once: the retry finds the server well, and the first mode wins
        make_backend(LLMConfig(**config, base_url=srv.url)).complete(MESSAGES, Structured(Answer))
        assert [(r.get("response_format") or {}).get("type") for r in srv.requests][:2] == ["json_schema"] * 2
    (tmp_path / "cache.sqlite").unlink()
    with FaultServer() as srv:
        srv.inject(status, status)  # busy for every attempt: no mode, an error
        with pytest.raises(LLMUnavailable, match=f"HTTP {status}"):
            make_backend(LLMConfig(**config, base_url=srv.url)).complete(MESSAGES, Structured(Answer))
    with FaultServer() as srv:  # the healthy server is probed afresh, and structured output wins
        make_backend(LLMConfig(**config, base_url=srv.url)).complete(MESSAGES, Structured(Answer))
        assert "response_format" in srv.requests[-1] and srv.requests[0]["response_format"]["type"] == "json_schema"


def test_auto_detects_the_llama_cpp_json_object_form(tmp_path: Path) -> None:
    with FaultServer() as srv:
        srv.reject_formats = {"json_schema"}  # what llama-cpp-python's server does
        backend = make_backend(loopback(srv, tmp_path, structured_output="auto"))
        backend.complete(MESSAGES, Structured(Answer))
        backend.complete([*MESSAGES, {"role": "user", "content": "Again."}], Structured(Answer))
        formats = [(r.get("response_format") or {}).get("type") for r in srv.requests]
    assert formats == ["json_schema", "json_object", "json_object", "json_object"], "probe once, then reuse"
    assert srv.requests[2]["response_format"]["schema"] == Answer.model_json_schema()


def test_auto_falls_back_to_the_schema_in_the_prompt(tmp_path: Path) -> None:
    with FaultServer() as srv:
        srv.reject_formats = {"json_schema", "json_object"}
        backend = make_backend(loopback(srv, tmp_path, structured_output="auto"))
        answer = backend.complete(MESSAGES, Structured(Answer))
        last = srv.requests[-1]
    assert isinstance(answer, Answer)
    assert "response_format" not in last
    assert "follows this JSON schema" in last["messages"][-1]["content"]


def test_json_schema_mode_sends_the_schema(tmp_path: Path) -> None:
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, structured_output="json_schema"))
        backend.complete(MESSAGES, Structured(Answer))
        fmt = srv.requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == Answer.model_json_schema()


@pytest.mark.parametrize("tool_calling", ["native", "json"])
def test_tools_return_validated_calls(tmp_path: Path, tool_calling: str) -> None:
    tools = Tools((Tool("search", "find items", Search), Tool("finish", "return the slate", Finish)), choice="search")
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, tool_calling=tool_calling))
        call = backend.complete(MESSAGES, tools)
        request = srv.requests[0]
    assert isinstance(call, ToolCall) and call.name == "search" and isinstance(call.arguments, Search)
    if tool_calling == "native":
        assert request["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    else:
        assert "tools" not in request
        branches = request["response_format"]["schema"]["anyOf"]
        assert [b["properties"]["tool"]["const"] for b in branches] == ["search"]


def test_budget_stops_new_calls_but_not_cache_hits(tmp_path: Path) -> None:
    with FaultServer() as srv:
        backend = make_backend(loopback(srv, tmp_path, cache="write", budget_tokens=1))
        backend.complete(MESSAGES, Structured(Answer))
        with pytest.raises(BudgetExceeded, match="budget_tokens=1"):
            backend.complete([*MESSAGES, {"role": "user", "content": "Again."}], Structured(Answer))
        assert backend.complete(MESSAGES, Structured(Answer)) is not None
        assert len(srv.requests) == 1


def test_unreachable_server_and_missing_model_name(tmp_path: Path) -> None:
    from recoworld.errors import ConfigError

    backend = make_backend(LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m",
                                     max_retries=0, cache="off", cache_path=tmp_path / "c.sqlite"))
    with pytest.raises(LLMUnavailable, match="APIConnectionError"):
        backend.complete(MESSAGES, Structured(Answer))
    with pytest.raises(ConfigError, match=r"llm\.model"):
        make_backend(LLMConfig(backend="openai", base_url="http://127.0.0.1:9/v1"))


def test_the_cache_key_holds_everything_that_shapes_a_reply(tmp_path: Path) -> None:
    """A hit needs the same messages, schema, structured-output mode, model and sampling; changing
    any of them asks the model again (a scripted backend counts what reaches it)."""
    sent: list[str] = []

    def answer(request: Any) -> dict[str, Any]:
        sent.append(request.mode)
        return {"choice": "a", "score": 1.0, "query": "q", "k": 1}

    def ask(spec: Any = None, params: SamplingParams | None = None, **config: Any) -> None:
        cfg = scripted_config(cache="write", cache_path=tmp_path / "cache.sqlite", **config)
        ScriptedBackend(answer, cfg).complete(MESSAGES, spec or Structured(Answer), params)

    ask()
    ask()  # a new backend on the same cache file: a hit
    assert len(sent) == 1
    ask(params=SamplingParams(temperature=0.2))
    ask(structured_output="json_object")
    ask(model="another-model")
    ask(Structured(Search))
    assert len(sent) == 5 and sent[2] == "json_object"
    ask(params=SamplingParams(temperature=0.2))  # each variant is now cached in turn
    ask(structured_output="json_object")
    assert len(sent) == 5
