"""Catalog search through the platform: found items enter the candidates up to a per-turn cap, and ToolRec's
`search` tool brings items from outside the retrieved candidates into the slate and the logs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recoworld.agents import GreedyRelevanceRecommender, Recommender
from recoworld.agents.toolrec import ToolRecConfig, ToolRecRecommender
from recoworld.catalog import Catalog
from recoworld.catalog.search import BadQuery
from recoworld.catalog.semantic_ids import format_semantic_id
from recoworld.config import CatalogConfig, WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.llm.backend import Reply, Request
from recoworld.llm.scripted import ScriptedBackend, scripted_config

CAP = 2


@pytest.fixture()
def env(catalog: Catalog) -> RecoWorldEnv:
    return RecoWorldEnv(catalog=catalog, slate_size=3, n_candidates=24, horizon_days=3,
                        retrieval={"search_cap": CAP})


def _absent_topic(catalog: Catalog, candidates: np.ndarray) -> str:
    """A topic none of the candidates is on, so whatever a search finds on it comes from outside them."""
    present = set(catalog.topic[candidates].tolist())
    return catalog.topic_names[next(t for t in range(catalog.n_topics) if t not in present)]


def _call(name: str, **arguments: Any) -> Reply:
    return Reply(None, [(name, json.dumps({"thought": "", **arguments}))])


def _toolrec(catalog: Catalog, replies: list[Reply], max_steps: int = 4) -> tuple[ToolRecRecommender, ScriptedBackend]:
    backend = ScriptedBackend(replies, scripted_config(max_retries=0, repair=False))
    agent = ToolRecRecommender(3, catalog, seed=0, backend=backend, config=ToolRecConfig(max_steps=max_steps))
    return agent, backend


# ---------------------------------------------------------------------- the platform's search service


def test_search_finds_items_outside_the_candidates_and_admits_them_up_to_the_cap(env: RecoWorldEnv) -> None:
    obs, _ = env.reset(seed=4)
    cat, search = env.catalog, env.search
    assert search is not None and search.cap == CAP
    before = obs["candidate_ids"].copy()
    topic = _absent_topic(cat, before)
    found = search.search("Topic", topic.upper(), 5)
    assert len(found.items) == 5 and all(cat.topic_names[cat.topic[i]] == topic for i in found.items)
    assert not np.isin(found.items, before).any()
    # Only `CAP` of the five enter the candidates; the rest are left out.
    assert found.admitted.tolist() == found.items[:CAP].tolist()
    assert found.left_out.tolist() == found.items[CAP:].tolist()
    new = found.observation["candidate_ids"]
    assert new[found.positions[:CAP]].tolist() == found.admitted.tolist()
    assert (found.positions[CAP:] == -1).all()
    # The lowest-priority candidates made room: the last in retrieval order (none is consumed yet).
    assert sorted(found.positions[:CAP].tolist()) == [22, 23]
    assert (new[:22] == before[:22]).all()
    np.testing.assert_array_equal(new, env._observation()["candidate_ids"])
    # The cap spans the turn: a second search admits nothing new.
    again = search.search("query", "cooking recipes", 3)
    assert len(again.admitted) == 0 and search.remaining == 0


def test_search_by_query_and_by_semantic_id_prefix(env: RecoWorldEnv) -> None:
    obs, _ = env.reset(seed=4)
    cat, search = env.catalog, env.search
    assert search is not None
    outside = np.setdiff1d(np.arange(len(cat)), obs["candidate_ids"])
    target = int(outside[0])
    prefix = format_semantic_id(cat.semantic_ids[target][:2])
    by_prefix = search.search("semantic_id", prefix, 20)
    assert target in by_prefix.items.tolist()
    assert all(tuple(cat.semantic_ids[i][:2]) == tuple(cat.semantic_ids[target][:2]) for i in by_prefix.items)
    subtopic = cat.subtopic_names[cat.subtopic[target]]
    by_query = search.search("query", f"videos about {subtopic}", 3)
    assert cat.subtopic_names[cat.subtopic[by_query.items[0]]] == subtopic


def test_search_is_deterministic_leaves_out_consumed_items_and_resets_each_turn(catalog: Catalog) -> None:
    def play() -> tuple[list[int], list[int], RecoWorldEnv]:
        env = RecoWorldEnv(catalog=catalog, slate_size=3, n_candidates=24, horizon_days=3,
                           retrieval={"search_cap": CAP})
        obs, info = env.reset(seed=7)
        greedy = GreedyRelevanceRecommender(3)
        for _ in range(6):
            obs, *_, info = env.step(greedy.act(obs, info))
        assert env.search is not None
        first = env.search.search("query", "football match highlights", 6)
        return first.items.tolist(), first.admitted.tolist(), env

    items, admitted, env = play()
    assert (items, admitted) == play()[:2]
    assert not env.world.consumed[0, items].any()
    assert env.search is not None and env.search.remaining == 0
    env.step(np.arange(3))
    assert env.search.remaining == CAP  # a new turn, a fresh cap


@pytest.mark.parametrize(("by", "value", "k", "message"), [
    ("creator", "anyone", 3, "unknown search field"),
    ("topic", "underwater basket weaving", 3, "unknown topic"),
    ("query", "   ", 3, "give some words"),
    ("query", "zzqx vvbn", 3, "none of the words"),
    ("semantic_id", "garbage", 3, "not a semantic id"),
    ("semantic_id", "<a_99>", 3, "no item in the catalog"),
    ("topic", "cooking", 0, "out of range"),
])
def test_bad_search_arguments_raise_a_readable_bad_query(env: RecoWorldEnv, by: str, value: str, k: int,
                                                         message: str) -> None:
    env.reset(seed=4)
    assert env.search is not None
    before = env.world.candidates.copy()
    with pytest.raises(BadQuery, match=message):
        env.search.search(by, value, k)
    np.testing.assert_array_equal(env.world.candidates, before)


def test_the_cap_is_validated_and_zero_turns_search_off(catalog: Catalog) -> None:
    assert RecoWorldEnv(catalog=catalog, retrieval={"search_cap": 0}).search is None
    with pytest.raises(ConfigError, match=r"retrieval\.search_cap"):
        RecoWorldEnv(catalog=catalog, n_candidates=20, retrieval={"search_cap": 21})
    with pytest.raises(ConfigError, match="search_cap"):
        RecoWorldEnv(catalog=catalog, retrieval={"search_cap": -1})
    assert WorldConfig().retrieval.search_cap == 5
    # The default never makes a small world invalid: with 3 candidates the platform admits 3.
    assert RecoWorldEnv(catalog=catalog, slate_size=3, n_candidates=3).search.cap == 3


# ---------------------------------------------------------------------- ToolRec's search tool


@pytest.mark.parametrize("how", ["topic", "query", "semantic_id"])
def test_toolrec_search_brings_an_outside_item_into_the_slate_and_the_trace(env: RecoWorldEnv, how: str) -> None:
    obs, info = env.reset(seed=4)
    cat = env.catalog
    before = obs["candidate_ids"].copy()
    topic = _absent_topic(cat, before)
    unique = ~pd.Series(cat.titles).duplicated(keep=False).to_numpy()  # a title two items share names neither
    target = int(np.flatnonzero((cat.topic == cat.topic_names.index(topic)) & unique)[0])
    value = {"topic": topic, "query": f"{cat.titles[target]}",
             "semantic_id": format_semantic_id(cat.semantic_ids[target])}[how]
    agent, backend = _toolrec(cat, [_call("search", attribute=how, value=value, k=1), _call("finish", items=[])])
    agent.connect_search(env.search)
    agent.begin_episode(0)
    slate = agent.act(obs, info)
    trace = agent.last_trace
    assert trace is not None
    found = trace[0]["items"][0]
    assert found not in before.tolist() and trace[0]["admitted"] == [found]
    assert cat.topic_names[cat.topic[found]] == topic
    if how == "query":  # the title names one item
        assert found == target
    if how == "semantic_id":
        assert (cat.semantic_ids[found] == cat.semantic_ids[target]).all()
    assert trace[-1]["ended_by"] == "finish"
    # The model was told the search tool exists and how much room it has left.
    assert "search(attribute, value, k)" in backend.requests[0].messages[0]["content"]
    assert f"{CAP} of {CAP} new items" in backend.requests[0].messages[1]["content"]
    assert f"1 of {CAP} new items" in backend.requests[1].messages[1]["content"]
    _, _, _, _, step_info = env.step(slate)
    shown = step_info["slate"].tolist()
    assert found in shown and trace[-1]["slate"] == shown
    assert step_info["searched"].tolist() == [item == found for item in shown]


def test_toolrec_search_respects_the_cap_and_bad_arguments_become_observations(env: RecoWorldEnv) -> None:
    obs, info = env.reset(seed=4)
    cat = env.catalog
    before = obs["candidate_ids"].copy()
    topic = _absent_topic(cat, before)
    agent, backend = _toolrec(cat, [
        _call("search", attribute="topic", value="no such topic", k=3),
        _call("search", attribute="topic", value=topic, k=5),
        _call("search", attribute="query", value=f"{cat.topic_names[0]} videos", k=3),
        _call("finish", items=[]),
    ])
    agent.connect_search(env.search)
    agent.begin_episode(0)
    slate = agent.act(obs, info)
    trace = agent.last_trace
    assert trace is not None
    assert "unknown topic" in trace[0]["error"] and "unknown topic" in backend.requests[1].messages[1]["content"]
    assert len(trace[1]["admitted"]) == CAP and len(trace[1]["left_out"]) == 5 - CAP
    assert trace[2]["admitted"] == []
    shown = env.step(slate)[4]["slate"]
    assert np.isin(shown, before, invert=True).sum() <= CAP
    # The searched items came first in the merge (the latest list first), so both are on the slate.
    assert set(trace[1]["admitted"]) <= set(shown.tolist())


def test_simulate_hands_the_search_service_only_to_agents_that_declare_it(tmp_path: Any) -> None:
    catalog_cfg = CatalogConfig(n_items=600, seed=3)

    def reply(request: Request) -> Reply:
        """Search once per turn, then finish with nothing (the merge puts the found items first)."""
        text = request.messages[1]["content"]
        return _call("finish", items=[]) if "-> list L1" in text else _call("search", attribute="query",
                                                                                 value="football goals", k=3)

    def build(name: str, catalog: Catalog, k: int, seed: int | None) -> Recommender:
        if name == "greedy":
            return GreedyRelevanceRecommender(k, seed)
        backend = ScriptedBackend(reply, scripted_config(max_retries=0, repair=False))
        return ToolRecRecommender(k, catalog, seed=seed, backend=backend, config=ToolRecConfig(max_steps=3))

    world = WorldConfig(slate_size=3, n_candidates=24, horizon_days=2, catalog=catalog_cfg,
                        retrieval={"search_cap": CAP})
    result = simulate(SimulationConfig(n_users=2, agents=["toolrec", "greedy"], world=world, seed=1),
                      build_agent=build)
    traj = result.trajectories
    toolrec, greedy = traj[traj.recommender == "toolrec"], traj[traj.recommender == "greedy"]
    assert not greedy.searched.any()
    assert toolrec.searched.any() and toolrec.searched.groupby([toolrec.user_id, toolrec.step]).sum().max() <= CAP
    turn = toolrec[toolrec.searched].iloc[0]
    steps = json.loads(turn.agent_trace)
    assert steps[0]["tool"] == "search" and int(turn["item"]) in steps[0]["items"]
