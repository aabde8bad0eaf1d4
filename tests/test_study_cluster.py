"""Studies on a Ray cluster of several nodes (`ray.cluster_utils.Cluster`): the budget holds across nodes, a
worker node killed mid-study loses nothing, and a rerun replays every reply recorded on any node.

The head node has no CPU, so no shard runs beside the driver: every task is on a worker node, each with one
CPU. The LLM users answer from the loopback server of `fault_server`, not from a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import require
from fault_server import FaultServer
from test_study_llm import WORLD, loopback

from recoworld.catalog import Catalog
from recoworld.llm.cache import ResponseCache
from recoworld.llm.errors import BudgetExceeded
from recoworld.llm.ledger import LedgerFile
from recoworld.studies.spec import StudySpec

#: Each node as small as Ray allows; a dead node is noticed within about 2 s instead of Ray's default 15+ s.
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
HEAD = {
    **NODE,
    "num_cpus": 0,
    "include_dashboard": False,
    "_system_config": {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 500,
        "health_check_failure_threshold": 4,
    },
}
TRAJ_KEYS = ["recommender", "arm", "user_id", "step", "position"]
EPS_KEYS = ["recommender", "arm", "user_id"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and two worker nodes, this process their driver; the session's local runtime (if one was
    running, `ray_session`) is started again afterwards, as conftest starts it."""
    ray = require("ray")
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    had_local = ray.is_initialized()
    if had_local:
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args=HEAD)
    try:
        for _ in range(2):
            nodes.add_node(**NODE)
        ray.init(address=nodes.address, log_to_driver=False)
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        if had_local:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def llm_spec(name: str, llm: dict[str, Any]) -> StudySpec:
    """Four shards of two LLM users."""
    return StudySpec.parse(
        {
            "name": name,
            "seed": 5,
            "n_users": 8,
            "shard_size": 2,
            "world": WORLD,
            "recommenders": ["greedy"],
            "user_backend": "llm",
            "llm": llm,
        }
    )


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def assert_same_results(one: Any, other: Any) -> None:
    pd.testing.assert_frame_equal(_sorted(one.episodes, EPS_KEYS), _sorted(other.episodes, EPS_KEYS))
    pd.testing.assert_frame_equal(_sorted(one.trajectories, TRAJ_KEYS), _sorted(other.trajectories, TRAJ_KEYS))


@pytest.mark.slow
def test_the_budget_is_charged_exactly_across_nodes_and_a_resume_continues_it(
    cluster, catalog: Catalog, tmp_path: Path
) -> None:
    from recoworld.studies.runner import run_study

    budget, out = 12, tmp_path / "study"
    # One request in flight per shard; the first ones wait (at most 60 s) until two are in flight together,
    # which takes a shard on each worker node. The client waits longer than that.
    with FaultServer(barrier=2, barrier_timeout_s=60.0) as srv:
        spec = llm_spec("budget", loopback(srv, tmp_path, concurrency=1, timeout_s=120.0, budget_requests=budget))
        with pytest.raises(BudgetExceeded, match=rf"study-wide.*budget_requests={budget}"):
            run_study(spec, out, catalog=catalog)
        both_nodes, sent = srv.barrier_met, len(srv.requests)
        assert LedgerFile(out / "llm-budget.json").totals()["requests"] == budget
        with pytest.raises(BudgetExceeded, match=rf"{budget} calls sent"):  # resumed: the same budget, spent
            run_study(spec, out, catalog=catalog)
        assert len(srv.requests) == sent, "a resumed study sent nothing past the budget"
    assert both_nodes, "two shards called the model at once, one on each worker node"
    assert 0 < sent <= budget, f"{sent} requests reached the server, budget {budget}"
    assert LedgerFile(out / "llm-budget.json").totals()["requests"] == budget


@pytest.mark.slow
def test_a_rerun_replays_every_reply_recorded_on_any_node(cluster, catalog: Catalog, tmp_path: Path) -> None:
    from recoworld.studies.runner import run_study

    with FaultServer() as srv:
        llm = loopback(srv, tmp_path, cache="write", concurrency=2)
        recorded = run_study(llm_spec("replay", llm), tmp_path / "recorded", catalog=catalog)
        sent = len(srv.requests)
    assert sent > 0 and not recorded.trajectories["llm_fallback"].any()
    cache = ResponseCache(llm["cache_path"], "read")
    assert 0 < len(cache) <= sent, "the tasks' replies were merged into the study's cache"
    cache.close()
    # The server is gone: replay never calls it, and a reply missing from the cache would stop the study.
    replayed = run_study(llm_spec("replay", {**llm, "cache": "replay"}), tmp_path / "replayed", catalog=catalog)
    assert replayed.shards_run == 4
    assert_same_results(recorded, replayed)


class Crash(RuntimeError):
    """Stands in for the driver dying mid-study."""


@pytest.mark.slow
def test_a_worker_node_killed_mid_study_and_a_resume_lose_nothing(cluster, tmp_path: Path) -> None:
    from recoworld.studies.runner import run_study

    spec = StudySpec.parse(
        {
            "name": "node-lost",
            "seed": 9,
            "n_users": 12,
            "shard_size": 2,
            "recommenders": ["greedy"],
            "world": {**WORLD, "max_steps": 10},
        }
    )
    whole = run_study(spec, tmp_path / "whole")
    doomed = cluster.add_node(**NODE)

    def kill_then_stop(done: int, total: int) -> None:
        if done == 1:  # the next shards are in flight on the three worker nodes: Ray reruns the lost one
            cluster.remove_node(doomed, allow_graceful=False)
        if done == 3:
            raise Crash("the driver stops too")

    with pytest.raises(Crash):
        run_study(spec, tmp_path / "cut", on_shard=kill_then_stop)
    resumed = run_study(spec, tmp_path / "cut")
    assert resumed.shards_run == 6 - 3, "only the shards not checkpointed before the driver stopped"
    assert_same_results(whole, resumed)
    assert sorted(resumed.episodes["user_id"]) == sorted(whole.episodes["user_id"]), "nobody lost, nobody twice"


def test_a_task_records_into_its_own_copy_of_the_cache_and_returns_what_it_recorded(tmp_path: Path) -> None:
    """`TaskLLM.run` without Ray (no model call is charged here): the study's snapshot in, the new replies out,
    also from a shard a RecoWorld error stopped, and nothing left in the temporary directory."""
    from recoworld.llm.config import LLMConfig
    from recoworld.studies.shared_llm import ShardStopped, TaskLLM

    study = ResponseCache(tmp_path / "study.sqlite", "write")
    study.put("old", {"content": "kept"})
    task = TaskLLM(tmp_path / "llm-budget.json", keeper=None, cache=study.snapshot())
    config = LLMConfig(cache="write", cache_path=tmp_path / "study.sqlite", budget_ledger=tmp_path / "llm-budget.json")
    folders: list[Path] = []

    def work(config: LLMConfig, fail: bool = False) -> str:
        assert config.cache_path is not None and config.cache_path.parent != tmp_path, "a copy of its own"
        folders.append(config.cache_path.parent)
        copy = ResponseCache(config.cache_path, "write")
        assert copy.get("old") == {"content": "kept"}
        copy.put("new", {"content": "recorded"})
        copy.close()
        if fail:
            raise BudgetExceeded("LLM request budget reached (study-wide)")
        return "results"

    assert task.run(config, work) == ("results", [("new", '{"content": "recorded"}')])
    stopped = task.run(config, lambda config: work(config, fail=True))
    assert isinstance(stopped, ShardStopped) and isinstance(stopped.error, BudgetExceeded)
    assert stopped.recorded == [("new", '{"content": "recorded"}')], "replies paid for before the stop come back"
    assert not any(folder.exists() for folder in folders)
    study.merge(stopped.recorded)
    assert study.get("new") == {"content": "recorded"} and len(study) == 2
