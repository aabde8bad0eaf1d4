"""Scripted users do exactly what their script declares; the scripted chat backend answers
from its script through the real validation path, and its barrier proves calls overlap."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.llm import LLMOutputError, LLMUnavailable, Structured, Tool, ToolCall, Tools
from recoworld.llm.backend import Reply, Request
from recoworld.llm.scripted import ScriptedBackend, ScriptedRejection, ScriptExhausted, scripted_config
from recoworld.mindset import UNSEEN, Instruction, Intent, Mindset
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators import BatchUserSimulator, Script, ScriptedUsers
from recoworld.streams import UserStreams


def profiles(catalog: Catalog, n: int) -> list[Any]:
    return sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=n)


def streams(n: int) -> UserStreams:
    return UserStreams([np.random.default_rng(i) for i in range(n)])


# ---------------------------------------------------------------------- scripted users


def test_scripted_users_follow_their_script_turn_by_turn(catalog: Catalog) -> None:
    less_news = Instruction(text="less news please", intent=Intent(kind="less", topics=["news"]))
    script = Script(reactions=[[1, 0, 2], [0, 0, 0], [3]], instruct_on_turns={3: less_news, 5: "surprise me"},
                    leave_after_turns=[4, 2], return_gaps=[0.5, math.inf], dwell_min=4.0, skip_dwell_min=0.25)
    users = ScriptedUsers(catalog, script)
    assert isinstance(users, BatchUserSimulator)
    users.reset(profiles(catalog, 1))
    row, s = np.zeros(1, dtype=np.int64), streams(1)
    slate = np.array([[5, 6, 7]])
    log = []
    now = 0.0
    for session in range(2):
        users.start_sessions(row, np.array([now]), s)
        while True:
            fb = users.review(slate, s, row)
            log.append((session, fb.reactions[0].tolist(), fb.dwell_min[0].tolist(), bool(fb.left[0]),
                        fb.instructions[0]))
            if fb.left[0]:
                break
        now += float(users.end_sessions(row, np.array([now]), s)[0])
        assert now < math.inf or session == 1
    assert [entry[0] for entry in log] == [0, 0, 0, 0, 1, 1], "four turns, then two"
    assert [entry[1] for entry in log] == [[1, 0, 2], [0, 0, 0], [3, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert log[0][2] == [4.0, 0.25, 4.0]
    assert [entry[3] for entry in log] == [False, False, False, True, False, True]
    instructions = [entry[4] for entry in log]
    assert instructions[2] == less_news and instructions[4] is not None and instructions[4].text == "surprise me"
    assert [i is None for i in instructions] == [True, True, False, True, False, True], "exactly on turns 3 and 5"
    assert now == math.inf, "the second session's gap is churn"


def test_scripted_user_in_the_env(catalog: Catalog) -> None:
    """Through `RecoWorld-v0` (B = 1): the instruction arrives on turn 3 exactly, churn ends the episode."""
    cfg = WorldConfig(slate_size=3, n_candidates=10, max_steps=20, catalog={"n_items": len(catalog), "seed": 3})
    script = Script(reactions=[[1, 0, 2]], instruct_on_turns={3: "less of this"}, leave_after_turns=4,
                    return_gaps=[1.0, math.inf])
    env = RecoWorldEnv(cfg, catalog=catalog, user_simulator=ScriptedUsers(catalog, script))
    env.reset(seed=0)
    said, done, turn = [], False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(np.arange(3))
        turn += 1
        said.append(bool(info.get("instruction")))
        if turn == 1:
            assert info["reactions"].tolist() == [1, 0, 2]
        done = terminated or truncated
    assert said == [t == 3 for t in range(1, 9)] and terminated, "two sessions of four turns, then churn"


def test_scripted_rows_are_independent_and_draw_nothing(catalog: Catalog) -> None:
    a = Script(reactions=[[2, 2]], leave_after_turns=1, return_gaps=[3.0])
    b = Script(default_reaction=1, instruct_on_turns={1: "more of this"}, leave_after_turns=5, return_gaps=[7.0])
    users = ScriptedUsers(catalog, [a, b])
    users.reset(profiles(catalog, 2))
    s = streams(2)
    before = [g.bit_generator.state for g in s.generators]
    users.start_sessions(np.array([0, 1]), np.zeros(2), s)
    only_b = users.review(np.array([[1, 2]]), s, rows=np.array([1]))
    assert only_b.reactions.tolist() == [[1, 1]] and only_b.instructions[0] is not None
    both = users.review(np.array([[3, 4], [5, 6]]), s)
    assert both.reactions.tolist() == [[2, 2], [1, 1]], "row 0's first turn, row 1's second"
    assert both.left.tolist() == [True, False] and both.instructions == [None, None]
    assert users.end_sessions(np.array([1, 0]), np.array([0.2, 0.1]), s).tolist() == [7.0, 3.0]
    assert [g.bit_generator.state for g in s.generators] == before
    # Re-initialising one row restarts its script and leaves the other alone.
    users.reset(profiles(catalog, 1), rows=np.array([1]))
    assert users.turn.tolist() == [1, 0] and users.session.tolist() == [1, 0]
    assert users.review(np.array([[1, 2]]), s, rows=np.array([1])).instructions[0] is not None


def test_scripted_mindset_is_plausible(catalog: Catalog) -> None:
    users = ScriptedUsers(catalog, Script(reactions=[[1, UNSEEN]], satisfaction=0.3, summary="meh"))
    profile = profiles(catalog, 1)[0]
    users.reset([profile])
    users.review(np.array([[10, 11]]), streams(1))
    m = users.mindset(0)
    assert isinstance(m, Mindset) and m.satisfaction == 0.3 and m.summary == "meh"
    assert len(m.interests) == catalog.embedding_dim and m.patience_left == profile.patience
    assert [(e.item, e.reaction) for e in m.memory] == [(10, "click")], "unseen positions are not remembered"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reactions": [[0, 4]]}, r"reactions\[0\]\[1\].*got 4"),
    ({"reactions": [[-2]]}, "from -1"),
    ({"default_reaction": 7}, "default_reaction"),
    ({"reactions": [["click"]]}, "reactions"),
    ({"instruct_on_turns": {0: "hi"}}, "numbered from 1"),
    ({"instruct_on_turns": {2: {"text": "x", "intent": {"kind": "sideways"}}}}, r"instruct_on_turns\[2\]"),
    ({"leave_after_turns": 0}, "leave_after_turns"),
    ({"leave_after_turns": []}, "leave_after_turns"),
    ({"return_gaps": [1.0, -1.0]}, "return_gaps"),
    ({"return_gaps": [math.nan]}, "return_gaps"),
    ({"dwell_min": -1.0}, "dwell_min"),
    ({"satisfaction": 1.5}, "satisfaction"),
])
def test_bad_scripts_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Script(**kwargs)


def test_one_script_per_user_must_match_the_batch(catalog: Catalog) -> None:
    users = ScriptedUsers(catalog, [Script(), Script()])
    with pytest.raises(ConfigError, match="2 scripts"):
        users.reset(profiles(catalog, 3))
    with pytest.raises(ConfigError, match="Script"):
        ScriptedUsers(catalog, [])


# ---------------------------------------------------------------------- scripted backend


class Answer(BaseModel):
    value: int


class Args(BaseModel):
    query: str


def ask(value_check: Any = None) -> Structured[Answer]:
    return Structured(Answer, check=value_check)


MESSAGES = [{"role": "user", "content": "what is the answer?"}]


def test_scripted_replies_go_through_validation_retries_and_repair() -> None:
    backend = ScriptedBackend(["not json", '{"value": "x"}', "{}", '{"value": 42}'],
                              scripted_config(max_retries=2))
    assert backend.complete(MESSAGES, ask()).value == 42
    u = backend.usage
    assert (u.requests, u.invalid_outputs, u.repairs, u.failures) == (4, 3, 1, 0)
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    repair = backend.requests[-1].messages
    assert repair[-2] == {"role": "assistant", "content": "{}"} and "could not be used" in repair[-1]["content"]
    seeds = [r.params.seed for r in backend.requests]
    assert seeds == [0, 1, 2, 3], "resamples move the seed on"

    def positive(a: Answer) -> Answer:
        if a.value <= 0:
            raise ValueError("value must be positive")
        return a

    failing = ScriptedBackend([Answer(value=-1)] * 2, scripted_config(max_retries=1, repair=False))
    with pytest.raises(LLMOutputError, match="value must be positive"):
        failing.complete(MESSAGES, ask(positive))
    assert failing.pending == 0 and failing.usage.failures == 1


def test_scripted_transport_errors_tools_and_exhaustion() -> None:
    flaky = ScriptedBackend([TimeoutError("slow"), {"value": 1}], scripted_config(max_retries=1))
    assert flaky.complete(MESSAGES, ask()).value == 1 and flaky.usage.transport_errors == 1
    rejected = ScriptedBackend([ScriptedRejection("too long")], scripted_config(max_retries=3))
    with pytest.raises(LLMUnavailable, match="too long"):
        rejected.complete(MESSAGES, ask())
    assert len(rejected.requests) == 1, "a rejected request is not retried"

    tools = Tools((Tool("search", "find items", Args),), choice="required")
    call = ToolCall("search", Args(query="jazz"))
    native = ScriptedBackend([call])
    assert native.complete(MESSAGES, tools) == call and native.requests[0].mode == "tools"
    as_json = ScriptedBackend([call], scripted_config(tool_calling="json"))
    assert as_json.complete(MESSAGES, tools) == call and as_json.requests[0].mode == "json_schema"
    refused = ScriptedBackend([Reply(None, refusal="no"), Reply('{"value": 3}')])
    assert refused.complete(MESSAGES, ask()).value == 3

    def by_request(request: Request) -> dict[str, int]:
        return {"value": len(request.messages[-1]["content"])}

    assert ScriptedBackend(by_request).complete(MESSAGES, ask()).value == len(MESSAGES[0]["content"])
    empty = ScriptedBackend([])
    with pytest.raises(ScriptExhausted):
        empty.complete(MESSAGES, ask())


def test_barrier_proves_async_calls_are_in_flight_together() -> None:
    backend = ScriptedBackend(lambda r: {"value": int(r.messages[0]["content"])},
                              scripted_config(concurrency=4), barrier=4)

    async def many() -> list[Any]:
        spec = ask()
        return list(await asyncio.gather(*(backend.acomplete([{"role": "user", "content": str(i)}], spec)
                                           for i in range(6))))

    answers = asyncio.run(many())
    assert [a.value for a in answers] == list(range(6)), "in input order"
    assert backend.barrier_met and backend.max_in_flight == 4, "four overlapped, never more than the limit"


def test_barrier_is_not_met_when_calls_run_one_at_a_time() -> None:
    backend = ScriptedBackend(lambda r: {"value": 0}, scripted_config(concurrency=1), barrier=2,
                              barrier_timeout_s=0.2)

    async def two() -> None:
        await asyncio.gather(backend.acomplete(MESSAGES, ask()), backend.acomplete(MESSAGES, ask()))

    asyncio.run(two())
    assert not backend.barrier_met and backend.max_in_flight == 1


def test_barrier_holds_threads_too() -> None:
    backend = ScriptedBackend(lambda r: {"value": 7}, barrier=3)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(backend.complete(MESSAGES, ask()).value))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [7, 7, 7] and backend.barrier_met and backend.max_in_flight == 3
