"""Population infos on demand (issue 32, part 5): `infos="none"` steps build no info dicts, `last_infos` builds
the ones asked for, and the study runner logs from the world's step arrays with the same values as from infos."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from recoworld.agents import make_recommender
from recoworld.catalog import slate_diversity
from recoworld.envs.population_env import Infos, PopulationParallelEnv, PopulationWorldConfig
from recoworld.errors import ConfigError
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.studies.runner import _play

WORLD = {"slate_size": 3, "n_candidates": 12, "horizon_days": 3, "catalog": {"n_items": 300, "seed": 4}}


def _env(infos: Infos = "full", **world: Any) -> PopulationParallelEnv:
    return PopulationParallelEnv(n_users=6, world={**WORLD, **world}, infos=infos)


def _same(a: Any, b: Any) -> bool:
    """Equal infos: the same keys, equal arrays and values (nan equal to nan)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b) or (a != a and b != b)


def test_on_demand_steps_return_empty_infos_and_last_infos_builds_the_full_ones() -> None:
    full, lazy = _env("full", expose_mindset=True), _env("none", expose_mindset=True)
    (_, want), (_, got) = full.reset(seed=3), lazy.reset(seed=3)
    assert got == {a: {} for a in full.possible_agents}
    assert _same(lazy.last_infos(), want) and lazy.last_batch is None
    rng = np.random.default_rng(0)
    steps = 0
    while full.agents:
        actions = {a: rng.choice(12, 3, replace=False) for a in full.agents}
        *_, want = full.step(actions)
        *_, got = lazy.step(actions)
        assert got == {a: {} for a in want}  # a dict per live agent, as PettingZoo wants
        assert _same(lazy.last_infos(), want)
        some = list(want)[::-2]  # a subset, in another order
        assert list(lazy.last_infos(some)) == some
        assert _same(lazy.last_infos(some), {a: want[a] for a in some})
        batch = lazy.last_batch
        assert batch is not None and [lazy.possible_agents[r] for r in batch.rows.tolist()] == list(want)
        steps += 1
    assert steps > 3 and not lazy.agents


def test_parallel_api_test_passes_with_infos_on_demand() -> None:
    parallel_api_test(_env("none"), num_cycles=30)


def test_bad_infos_and_unknown_agents_are_one_line_naming_them() -> None:
    with pytest.raises(ConfigError, match="infos must be one of \\['full', 'none'\\], got 'lazy'"):
        PopulationParallelEnv(n_users=2, world=WORLD, infos="lazy")  # type: ignore[arg-type]
    env = _env("none")
    env.reset(seed=1)
    with pytest.raises(ConfigError, match="last_infos: agents \\['user_99'\\]"):
        env.last_infos(["user_99"])


def _log_from_info(log: TrajectoryLog, episode_seed: int, info: dict[str, Any], reward: float, trace: Any) -> None:
    """One turn's columns derived from the user's info dict, the way every writer logged before they all read
    the step's arrays (`TrajectoryLog.add_step`): the definition the arrays must reproduce."""
    instruction = info["logged_instruction"]
    slate = np.asarray(info["slate"])
    turn = {
        "user_id": info["user_id"], "segment": info["segment"], "episode_seed": episode_seed,
        "session": info["session"], "day": info["day"], "turn": info["turn"], "step": info["step"],
        "time_days": info["time_days"], "turn_reward": float(reward), "instruction": instruction,
        "intent": json.dumps(info["logged_intent"]) if instruction else None,
        "left": info["left"], "return_gap_days": info["return_gap_days"], "churned": info["churned"],
        "exit_reason": info.get("exit_reason"), "exit_text": info.get("exit_text"),
        "interview_score": info.get("interview_score"), "interview": info.get("interview"),
        "intent_match": info["instruction_followed"], "instruction_satisfiable": info["instruction_satisfiable"],
        "instruction_similarity": info["instruction_similarity"],
        "instruction_judge": None, "instruction_judge_reason": None,
        "slate_diversity": slate_diversity(log.catalog, slate), "llm_fallback": info["llm_fallback"],
        "agent_trace": json.dumps(trace) if trace else None,
    }
    slots = {"reaction": info["reactions"], "disliked": info["disliked"], "dwell_min": info["dwell_min"],
             "searched": np.zeros(len(slate), dtype=bool)}
    log._append({name: [value] for name, value in turn.items()}, [info.get("mindset")], slate[None], slots)


def _reference_play(env: PopulationParallelEnv, recommender: str, world_seed: int, agent_seed: int,
                    log: TrajectoryLog) -> list[dict[str, Any]]:
    """The study runner's loop before infos on demand: every logged value read from the agents' infos."""
    obs, infos = env.reset(seed=world_seed)
    k = env.config.world.slate_size
    agents = {a: make_recommender(recommender, env.catalog, k, agent_seed + i)
              for i, a in enumerate(env.possible_agents)}
    for i, a in enumerate(env.possible_agents):
        agents[a].begin_episode(agent_seed + i)
    totals = dict.fromkeys(env.possible_agents, 0.0)
    seen = dict.fromkeys(env.possible_agents, 0)
    clicked = dict.fromkeys(env.possible_agents, 0)
    rows = []
    while env.agents:
        actions = {a: agents[a].act(obs[a], infos[a]) for a in env.agents}
        traces = {a: getattr(agents[a], "last_trace", None) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        for a, info in infos.items():
            agents[a].observe(info["reactions"], info)
            totals[a] += rewards[a]
            fresh = log.is_new[info["slate"]]
            seen[a] += int((fresh & (info["reactions"] >= 0)).sum())
            clicked[a] += int((fresh & (info["reactions"] >= 1)).sum())
            _log_from_info(log, world_seed, info, rewards[a], traces[a])
            if terms[a] or truncs[a]:
                rows.append({"recommender": recommender, "arm": "with", "user_id": info["user_id"],
                             "segment": info["segment"], "total_reward": totals[a], "churned": bool(info["churned"]),
                             "new_items_seen": seen[a], "new_items_clicked": clicked[a],
                             "fallback_turns": getattr(agents[a], "fallback_turns", 0), **info["episode_stats"]})
    return rows


@pytest.mark.parametrize(("recommender", "world"), [
    ("hrl-novelty", {"expose_mindset": True}),  # keeps a trace; the mindset columns
    ("instruct", {"instruction_channel": "text"}),
])
def test_the_runner_logs_from_the_world_what_the_infos_say(recommender: str, world: dict[str, Any]) -> None:
    config = PopulationWorldConfig(n_users=8, world={**WORLD, "horizon_days": 5, **world})
    new_items = np.arange(0, 300, 7)
    release = np.zeros(300)
    release[new_items] = 1.0  # published on day 1: some users see them, some click
    logs, episodes = [], []
    for play in (_play, None):
        env = PopulationParallelEnv(config, release_day=release)
        log = TrajectoryLog(env.catalog, recommender, arm="with", shard=2, new_items=new_items)
        if play is None:
            episodes.append(_reference_play(env, recommender, 11, 5, log))
        else:
            episodes.append(play(env, recommender, recommender, "with", 11, 5, log))
        logs.append(log.table())
    ours, reference = logs
    assert ours.num_rows > 100 and ours.schema == reference.schema and ours.equals(reference)
    if recommender == "hrl-novelty":
        assert ours["agent_trace"].null_count < ours.num_rows
    else:
        assert ours["instruction"].null_count < ours.num_rows
    assert ours["new_item"].to_numpy().any() and ours["reaction"].to_numpy().max() >= 1
    assert episodes[0] == episodes[1] and len(episodes[0]) == 8
