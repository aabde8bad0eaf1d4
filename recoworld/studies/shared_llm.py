"""A study's LLM state on a Ray cluster: the budget kept by one actor, the cache shipped out and merged back.

A study's tasks may run on other machines than its driver, so nothing they share may be a file
on the driver's disk (a budget charged to per-node files would silently become per node, and a
rerun would miss the other nodes' replies: issue 32). For the study's lifetime the driver holds
a `StudyLLM` (`shared_llm`), and each shard's task receives its `TaskLLM` through the object store:

- **The budget** (`llm.budget_*`) is kept by one actor, `BudgetKeeper`. Ray serves an actor's
  calls one at a time, so every model call is reserved there atomically before it is sent (one
  round trip), and at most `budget_requests` calls reach the server whatever the number of nodes
  and workers. The actor asks for no CPU, is pinned to the driver's node (a worker node may die
  mid-study; the driver's node is the study's), is owned by the driver (it ends with the study),
  and is named after the study's ledger in the `recoworld` namespace, so a second driver running
  the same study folder is refused. It starts from `llm.budget_ledger` (`<out>/llm-budget.json`),
  and the driver writes its totals back there atomically as the study goes and when it stops,
  so a resumed study continues the same budget.
- **The cache** (`llm.cache_path`, by default `<out>/llm-cache/llm.sqlite`): the driver ships one
  snapshot of it to all tasks; each task writes it to a folder of its own on its node, its
  backends replay from and record into that copy, and it returns what they recorded with the
  shard's results, or with the error that stopped the shard (`ShardStopped`: replies already
  paid for are kept). The driver merges them into the study's cache before it checkpoints the
  shard, so a rerun (`llm.cache: replay`) replays them wherever its tasks land. Replies recorded
  by one task are not seen by another task of the same run, only by later runs.

Outside Ray (simulate, the bench's in-process studies, distill) the ledger stays the locked file
(`recoworld.llm.ledger.LedgerFile`) and the cache the SQLite file itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from recoworld.errors import ConfigError, RecoWorldError
from recoworld.llm.cache import ResponseCache, Row
from recoworld.llm.config import LLMConfig
from recoworld.llm.errors import BudgetExceeded
from recoworld.llm.ledger import LedgerFile, add_tokens, charge, kept_by, limits
from recoworld.llm.usage import Usage

T = TypeVar("T")

#: The Ray namespace of the budget actors: one name per study ledger across all drivers of a cluster.
NAMESPACE = "recoworld"


class BudgetKeeper:
    """The study's budget totals, as a Ray actor (`ray.remote(BudgetKeeper)`): one call at a time, so a
    reservation is read, checked and counted in one step (`recoworld.llm.ledger.charge`)."""

    def __init__(self, totals: dict[str, int]) -> None:
        self._totals = dict(totals)

    def reserve(self, budget: dict[str, float | None]) -> str | None:
        """Count one model call, or say why `budget` (`recoworld.llm.ledger.limits`) leaves no room for it."""
        return charge(self._totals, budget)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        add_tokens(self._totals, prompt_tokens, completion_tokens)

    def totals(self) -> dict[str, int]:
        return dict(self._totals)


@dataclass(frozen=True)
class KeeperAccount:
    """A task's account at the study's `BudgetKeeper` (a `recoworld.llm.ledger.Account`): each call waits for
    the actor's answer, so a call is counted before it is sent and tokens before the shard's results return."""

    keeper: Any  # ray.actor.ActorHandle of a BudgetKeeper

    def reserve(self, usage: Usage) -> None:
        import ray

        why = ray.get(self.keeper.reserve.remote(limits(usage)))
        if why is not None:
            raise BudgetExceeded(why)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        import ray

        if prompt_tokens or completion_tokens:
            ray.get(self.keeper.spend.remote(prompt_tokens, completion_tokens))

    def totals(self) -> dict[str, int]:
        import ray

        return ray.get(self.keeper.totals.remote())


@dataclass(frozen=True)
class ShardStopped:
    """A shard's task stopped by a RecoWorld error (the budget, the circuit breaker, a replay miss), with the
    replies it recorded before: the driver merges them, then raises the error."""

    error: RecoWorldError
    recorded: list[Row]


@dataclass(frozen=True)
class TaskLLM:
    """What a shard's task needs of the study's LLM state; it travels through the object store."""

    ledger: Path  # the study's `llm.budget_ledger`: the name the task's backends charge, kept by `keeper`
    keeper: Any  # ray.actor.ActorHandle of the study's BudgetKeeper
    cache: bytes | None  # the study's cache when the study started (`ResponseCache.snapshot`); None: empty or off

    def run(self, config: LLMConfig, work: Callable[[LLMConfig], T]) -> tuple[T, list[Row]] | ShardStopped:
        """`work(config)` in a shard's task, with its own copy of the study's cache in a folder of its own (also
        the default home of the local model's log) and every model call charged to the keeper; returns what it
        returned and the replies it recorded, or `ShardStopped`. The copy is removed at the end, and the folder
        with it unless the local model's log is there. A task killed outright (its node lost, a study
        cancelling it) leaves its folder in the node's temporary directory."""
        folder = Path(tempfile.mkdtemp(prefix="recoworld-shard-llm-"))
        path = folder / "llm.sqlite"
        if self.cache is not None and config.cache != "off":
            path.write_bytes(self.cache)
        copy = ResponseCache(path, "read")
        first = copy.last_row()

        def recorded() -> list[Row]:
            return copy.recorded_after(first) if config.cache == "write" else []

        try:
            with kept_by(self.ledger, KeeperAccount(self.keeper)):
                try:
                    result = work(config.model_copy(update={"cache_path": path}))
                except RecoWorldError as err:
                    return ShardStopped(err, recorded())
            return result, recorded()
        finally:
            copy.close()
            for part in folder.glob(f"{path.name}*"):  # the copy, its WAL and shared memory
                part.unlink()
            with contextlib.suppress(OSError):  # kept when the local model's log is there
                folder.rmdir()


class StudyLLM:
    """The driver's side, for the study's lifetime (`shared_llm`): the keeper and the study's cache."""

    def __init__(self, config: LLMConfig, keeper: Any) -> None:
        assert config.budget_ledger is not None, "a study's LLM config names its ledger (LLMConfig.for_run)"
        self.ledger = LedgerFile(config.budget_ledger)
        self.cache = ResponseCache(config.resolved_cache_path, config.cache)
        self.keeper = keeper
        self._recorded: dict[str, int] | None = None
        self.task = TaskLLM(self.ledger.path, keeper, None if config.cache == "off" else self.cache.snapshot())

    def merge(self, recorded: list[Row]) -> None:
        """A shard's replies into the study's cache (before its checkpoint: a checkpointed shard's replies are
        always there)."""
        self.cache.merge(recorded)

    def persist(self) -> None:
        """The keeper's totals to the ledger file, when they changed since the last time."""
        import ray

        totals = ray.get(self.keeper.totals.remote())
        if totals != self._recorded:
            self.ledger.record(totals)
            self._recorded = totals


def keeper_name(ledger: Path) -> str:
    """One actor name per study ledger, whichever driver asks (the resolved path, hashed)."""
    return "recoworld-budget-" + hashlib.sha256(str(ledger.resolve()).encode()).hexdigest()[:16]


@contextmanager
def shared_llm(config: LLMConfig) -> Iterator[StudyLLM]:
    """On the driver, with Ray running: start the study's keeper from the ledger file on this node, snapshot
    the cache; at the end write the keeper's totals back and end it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    assert config.budget_ledger is not None, "a study's LLM config names its ledger (LLMConfig.for_run)"
    name = keeper_name(config.budget_ledger)
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    try:
        keeper: Any = (  # Ray's stubs type an actor's methods as plain functions, without `.remote`
            ray.remote(BudgetKeeper)
            .options(
                name=name,
                namespace=NAMESPACE,
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=here,
            )
            .remote(LedgerFile(config.budget_ledger).totals())
        )
        ray.get(keeper.totals.remote())  # placed and started, or the error now
    except ValueError as err:  # Ray: the name is taken
        raise ConfigError(
            f"llm.budget_ledger {config.budget_ledger}: another driver on this Ray cluster is running a study "
            f"charging this ledger (its budget actor {NAMESPACE}/{name} is alive: {err}); wait for it to end, or "
            "give this study another output folder"
        ) from None
    try:
        study = StudyLLM(config, keeper)
        try:
            yield study
        finally:
            study.persist()
            study.cache.close()
    finally:
        ray.kill(keeper)
