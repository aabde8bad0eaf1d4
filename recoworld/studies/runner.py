"""Run a study on Ray: users in shards, shards as remote tasks, progress checkpointed.

Users are planned (segments shuffled, seeded), cut into shards of `shard_size` and drawn
inside each shard's task (`recoworld.studies.users`); a shard is one shared
platform, so its users influence each other and nobody else. Each shard runs every
recommender and arm on the same users with the same seeds (common random numbers).
Its seeds derive from the study seed and the shard's index alone, so results do not
depend on how many workers there are or in which order shards finish.

Checkpoints: each finished shard is written as Parquet parts (atomically) and then
recorded in `manifest.json` (also atomically), with each part's size and SHA-256. A rerun
with the same spec and output directory skips the recorded shards, so an interrupted study
resumes without losing or duplicating any user; a part written but not yet recorded is
simply redone, and so is a recorded one that is missing, unreadable, emptied or no longer
matches its record. A `manifest.json` that is not a readable manifest is one clear error.
The manifest records every shard, so it is not rewritten after every shard (that
costs the driver time quadratic in the shards: hours for a million users) but whenever the
shards finished since its last write pass `MANIFEST_SLACK` of those it records, and always
when the study stops, an error or Ctrl-C included; only a driver killed outright
(`kill -9`, a lost machine) redoes the shards it had not recorded, at most 1% of them.

Results stream: no study's trajectories are ever whole in memory (a million users for 30 days with five
recommenders would be 1.6 TB). `trajectories.parquet` is the shards' parts concatenated in shard order, one row
group per part, appended by `TrajectoryFile` while the study runs and renamed into place once every shard is in;
`StudyResult` loads only the episodes and reads trajectories one shard at a time (`trajectory_shards`), as the
report does. So `check_fits` bounds what is held: the shards in flight, and every user's plan and episodes.
Shard tasks are submitted a window at a time (`TASKS_PER_CPU`), so the first shards start and are checkpointed
at once however many there are.

LLM users and recommenders (`user_backend: llm`, `toolrec`) use the spec's `world.llm`.
Within a shard, a step's user turns are in flight together (`llm.concurrency`); every
Ray worker process has its own backend (cache copy, usage account, circuit breaker),
but the `budget_*` limits are study-wide: every model call is charged first to one Ray actor
that the driver persists to `<out>/llm-budget.json`, so the budget holds across the nodes of
a cluster and a resumed study counts what it already spent. The LLM cache defaults to
`<out>/llm-cache/llm.sqlite` (`llm.cache_path` shares one explicitly); the tasks get a snapshot
of it through the object store and return the replies they recorded, which the driver merges
(`recoworld.studies.shared_llm`: nothing a task needs is on the driver's disk). Before any shard
runs, an OpenAI-compatible server is probed once (`recoworld.llm.health.check_server`):
unreachable, the study stops with `LLMServerUnreachable` before anything falls back. A
shard whose calls keep failing stops the study with `FallbackRateExceeded` (the circuit
breaker, `llm.max_fallback_rate`) and is not checkpointed, so a rerun once the server is
back redoes it; errors like these reach the caller as themselves, not wrapped by Ray.
With the local backend each Ray worker
also supervises its own model process (`recoworld.llm.supervisor`): a crash there costs
that worker one turn and a restart, and the process ends with the worker. Fallback turns are flagged in the
trajectories' `llm_fallback` column; `agent_trace` keeps an LLM recommender's reasoning.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import signal
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recoworld import seeding
from recoworld.agents import agent_labels, make_recommender, mindset_ready, uses_llm
from recoworld.agents.base import blame
from recoworld.catalog import Catalog, cached_catalog
from recoworld.envs.platform import hold_back
from recoworld.envs.population_env import PopulationParallelEnv, PopulationWorldConfig
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.evaluation.run_folder import file_digest
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.cache import Row
from recoworld.llm.config import LLMConfig
from recoworld.llm.health import check_server
from recoworld.population import UserProfile, draw_profiles
from recoworld.storage import commit, temp_beside, write_atomic, write_json_atomic, write_parquet_atomic
from recoworld.studies.creators import publish
from recoworld.studies.parquet_concat import ParquetConcat
from recoworld.studies.ray_cleanup import (
    STOP_REQUESTED,
    clean_stale_ray,
    end_own_sessions,
    restore_sigterm,
    sigterm_interrupts,
    stop_noted_during_init,
)
from recoworld.studies.shared_llm import ShardStopped, StudyLLM, TaskLLM, shared_llm
from recoworld.studies.spec import StudySpec
from recoworld.studies.users import ShardUsers, StudyUsers

#: Users of the creator's target segment drawn to find the topic it cares about most (when the spec names none).
TARGET_SAMPLE = 2_000
MANIFEST = "manifest.json"
TRAJECTORIES = "trajectories.parquet"
#: A shard's results as the bytes of its Parquet parts, by kind ("trajectories", "episodes").
Parts = dict[str, bytes]
#: Shards finished but not yet in the manifest on disk, as a share of those in it, that make it due for a write
#: (`manifest_due`): about 100 x ln(shards) writes in all instead of one per shard.
MANIFEST_SLACK = 0.01
#: Shard tasks submitted at a time per CPU of the Ray cluster, topped up as they finish: enough to keep every worker
#: busy while the driver checkpoints; few enough that the driver neither spends minutes submitting millions of
#: shards before checkpointing the first nor holds them, and that each `ray.wait` scans a short list (over all
#: shards, that scan alone was quadratic in them).
TASKS_PER_CPU = 2
#: Seconds a stopping study waits for its cancelled tasks to end (they are killed; this is only their exit).
CANCEL_WAIT_S = 10.0


@dataclass(frozen=True)
class StudySetup:
    """Everything the shards share, fixed by the spec and its seed before any shard runs."""

    spec: StudySpec
    catalog: Catalog
    base: Catalog  # the items before the creator's: users are drawn on it (unpublished items shape no taste)
    users: StudyUsers  # drawn by each shard's task (see `recoworld.studies.users`)
    release_day: dict[str, np.ndarray]  # per arm, (N,) days; inf = never published
    new_items: np.ndarray  # indices of the creator's items (empty without a creator)
    target_topic: str | None

    @property
    def n_shards(self) -> int:
        return self.users.n_shards

    def fingerprint(self) -> str:
        """Spec plus catalog: a checkpoint only resumes a study over the same items."""
        h = hashlib.sha256(self.spec.fingerprint().encode())
        h.update(np.ascontiguousarray(self.catalog.embeddings).tobytes())
        h.update("\n".join(map(str, self.catalog.item_ids)).encode())
        h.update(USERS_PER_SHARD.encode())
        return h.hexdigest()[:16]


#: How users are drawn, in the fingerprint: checkpoints from when all users were drawn up front (other users
#: for the same seed) are not resumed with users drawn per shard.
USERS_PER_SHARD = "users drawn per shard"


@dataclass
class StudyResult:
    """A study's results, on disk under `out`: the episodes (one row per user x recommender run, small) are
    loaded; the trajectories, which grow with users x days x runs (1.6 TB for a million users over 30 days with
    five recommenders), are read shard by shard (`trajectory_shards`), or whole only when asked (`trajectories`)."""

    out: Path
    setup: StudySetup
    episodes: pd.DataFrame
    parts: list[Path]  # each shard's trajectories part, in shard order: `trajectories.parquet` is their concatenation
    shards_run: int  # shards computed by this call (the rest came from the checkpoint)

    @property
    def trajectories_path(self) -> Path:
        return self.out / TRAJECTORIES

    def trajectory_rows(self) -> int:
        """How many trajectory rows the study has, from the parts' footers (nothing is read)."""
        return sum(pq.read_metadata(part).num_rows for part in self.parts)

    def trajectory_shards(self, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """Each shard's trajectory rows (only `columns`, default all), in shard order: one shard in memory at a
        time, which is how the report reads them (`recoworld.studies.report`)."""
        for part in self.parts:
            yield pq.read_table(part, columns=columns).to_pandas()

    @cached_property
    def trajectories(self) -> pd.DataFrame:
        """Every trajectory row in one frame, read on first use: for small studies and tests; `check_fits` does
        not bound it (read a large study with `trajectory_shards` or `pyarrow.dataset` on `trajectories_path`)."""
        if not self.parts:
            return pd.DataFrame()
        return pa.concat_tables([pq.read_table(part) for part in self.parts]).to_pandas()


#: Memory one shard's task holds at its peak, per user (its world: the same for any horizon) and per user,
#: simulated day and recommender run (its trajectory rows as Arrow and their Parquet encoding): fitted to
#: `experiments/bench_study.py`'s "memory per 100k users in flight" (the growth of a task's peak from 200 to 600
#: users, or 40 to 120) with the five baselines on the default world: 683 KB a user at 7 days (c7ab3d3,
#: docs/results.md) and 429 KB at 2 days (61cfb52).
FLIGHT_BYTES_PER_USER = 330_000
FLIGHT_BYTES_PER_USER_DAY = 10_000
#: Memory of the episodes per user and recommender run, which the driver holds whole (`StudyResult.episodes`,
#: the report): 142 bytes a row in pandas (deep; default world, 64 users x 5 recommenders, 2026-12), held up to
#: three times at once (the shards' frames and their concatenation, then the frame and the Arrow table written).
EPISODE_BYTES_PER_RUN = 450
#: Per user, before and beside the shards: the plan (a segment each: `recoworld.studies.users`, 2 bytes).
PLAN_BYTES_PER_USER = 2
#: Per shard: the manifest's record (part names, sizes, digests: about 420 bytes as JSON, twice that as Python
#: objects while it is written).
SHARD_RECORD_BYTES = 1_300
#: Share of the available memory a study may take: the catalog, Ray and the rest of the machine need the rest.
MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable, else free pages), None if unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def memory_need(spec: StudySpec, n_users: int, workers: int) -> tuple[float, float]:
    """(bytes held whatever the study's size lets run at once, bytes held per user): the shards in flight (one
    per worker, at most every shard) and, per user, the plan and the episodes. The trajectories are not held:
    they stream to disk shard by shard (`TrajectoryFile`) and the report reads them one shard at a time."""
    in_flight = min(workers, -(-n_users // spec.shard_size)) * min(spec.shard_size, n_users)
    per_user = PLAN_BYTES_PER_USER + SHARD_RECORD_BYTES / spec.shard_size + spec.runs * EPISODE_BYTES_PER_RUN
    return in_flight * flight_bytes_per_user(spec), per_user


def flight_bytes_per_user(spec: StudySpec) -> float:
    """Memory a user of a shard in flight takes in its task, at the spec's horizon and recommender runs."""
    return FLIGHT_BYTES_PER_USER + spec.runs * spec.world.horizon_days * FLIGHT_BYTES_PER_USER_DAY


def check_fits(spec: StudySpec, n_users: int, available: int | None, workers: int | None = None) -> None:
    """Refuse, with an estimate, a study whose state cannot be held in `available` bytes of memory, before
    anything runs (10 million users declared used to mean minutes of `shards 0/?` and then running out of
    memory: issue 31): the shards in flight on `workers` local workers (default: this machine's cores) and the
    plan and episodes of every user. Its trajectories, however large, are on disk, not in memory."""
    workers = workers or os.cpu_count() or 1
    fixed, per_user = memory_need(spec, n_users, workers)
    need = fixed + n_users * per_user
    if available is None or need <= MEMORY_SHARE * available:
        return
    runs = spec.runs
    if fixed > MEMORY_SHARE * available:
        shard = int(MEMORY_SHARE * available / (workers * flight_bytes_per_user(spec)))
        raise ConfigError(
            f"shard_size {spec.shard_size}: {workers} shards in flight take about {fixed / 1e9:.1f} GB "
            f"(about {flight_bytes_per_user(spec) / 1e6:.1f} MB a user in a shard's task at "
            f"{spec.world.horizon_days:g} days x {runs} recommender runs), more than this machine can spare "
            f"({available / 1e9:.1f} GB available, half of it for the study); give shard_size {shard} or fewer, "
            "fewer days or recommenders, or fewer CPUs (--num-cpus)"
        )
    fits = int((MEMORY_SHARE * available - fixed) / per_user)
    raise ConfigError(
        f"n_users {n_users}: the study holds about {need / 1e9:.1f} GB (every user's plan and episodes, "
        f"{per_user:.0f} bytes a user for {runs} recommender runs, and {fixed / 1e9:.1f} GB of shards in flight), "
        f"more than this machine can spare ({available / 1e9:.1f} GB available, half of it for the study); give "
        f"n_users {fits} or fewer, or split the study by seed"
    )


def prepare(spec: StudySpec, catalog: Catalog | None = None, workers: int | None = None) -> StudySetup:
    """Plan the users, publish the creator's items and fix the release days, all from `spec.seed`; no user
    is drawn here (each shard draws its own, `recoworld.studies.users`). `workers`: the local Ray runtime's CPUs,
    whose shards in flight `check_fits` counts (default: this machine's cores)."""
    calibrated = None
    if spec.calibrated is not None:
        from recoworld.calibration.inputs import cached_calibration

        calibrated = cached_calibration(str(spec.calibrated))
    if catalog is not None:
        base = catalog
    else:
        base = calibrated.catalog if calibrated is not None else cached_catalog(spec.world.catalog)
    given: list[UserProfile] | None = None
    if spec.profiles is not None:
        given = list(spec.profiles)
    elif calibrated is not None:  # the log's own users; `n_users` of them, drawn with the study seed
        given = draw_profiles(calibrated.profiles, spec.n_users, seeding.rng(spec.seed, seeding.POPULATION))
    if given is not None:
        check_fits(spec, len(given), available_memory(), workers)
        users = StudyUsers.of_profiles(given, spec.shard_size, spec.seed)
    else:
        spec.population.check_topics(base)
        check_fits(spec, sum(spec.population.allocate(spec.n_users)), available_memory(), workers)  # before the plan
        users = StudyUsers.planned(spec.population, spec.n_users, spec.shard_size, spec.seed)
    background = hold_back(
        np.zeros(len(base)),
        spec.new_item_share,
        spec.world.horizon_days,
        seeding.rng(spec.seed, seeding.STUDY_RELEASES),
    )
    if spec.creator is None:
        return StudySetup(spec, base, base, users, {"baseline": background}, np.empty(0, np.int64), None)
    target = users.segment_sample(spec.creator.target_segment, base, TARGET_SAMPLE)
    pub = publish(spec.creator, base, target, seeding.rng(spec.seed, seeding.STUDY_CREATOR))
    release = {
        "without": np.concatenate([background, np.full(len(pub.new_items), np.inf)]),
        "with": np.concatenate([background, pub.release_day]),
    }
    return StudySetup(spec, pub.catalog, base, users, release, pub.new_items, pub.topic)


def shard_seeds(seed: int, shard: int) -> tuple[int, int]:
    """(world seed, recommender seed) of one shard: a function of the study seed and the index only."""
    world, agents = seeding.stream(seed, seeding.STUDY_SHARD, shard).generate_state(2)
    return int(world), int(agents)


def run_shard(
    spec: StudySpec,
    catalog: Catalog,
    release_day: dict[str, np.ndarray],
    new_items: np.ndarray,
    users: ShardUsers,
    base: Catalog | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Every recommender and arm on one shard's users, drawn here on `base` (the items before a creator's;
    default `catalog`); returns (trajectories, episodes)."""
    shard = users.shard
    profiles = users.profiles(catalog if base is None else base)
    world_seed, agent_seed = shard_seeds(spec.seed, shard)
    config = PopulationWorldConfig(
        world=mindset_ready(spec.world, spec.recommenders), n_users=len(profiles), social=spec.social
    )
    tables, episodes = [], []
    for recommender, label in zip(spec.recommenders, agent_labels(spec.recommenders)):
        for arm, release in release_day.items():
            env = PopulationParallelEnv(config, catalog=catalog, population=profiles, release_day=release)
            log = TrajectoryLog(catalog, label, arm=arm, shard=shard, new_items=new_items)
            episodes += _play(env, recommender, label, arm, world_seed, agent_seed, log)
            tables.append(log.table())
    eps = pd.DataFrame(episodes)
    eps.insert(2, "shard", shard)
    return pa.concat_tables(tables), pa.Table.from_pandas(eps, preserve_index=False)


def _play(
    env: PopulationParallelEnv,
    recommender: str,
    label: str,
    arm: str,
    world_seed: int,
    agent_seed: int,
    log: TrajectoryLog,
) -> list[dict[str, Any]]:
    """One episode of the world with one instance of `recommender` per user slot, called `label` in the rows.

    The log and the episode rows read the world's step arrays (`env.last_batch`), not the agents' infos.
    Recommenders still get their `info` (any may read it), so the env keeps building it for them."""
    cat, k = env.catalog, env.config.world.slate_size
    obs, infos = env.reset(seed=world_seed)
    users = {a: profile.user_id for a, profile in zip(env.possible_agents, env.profiles)}
    agents = {}
    for i, a in enumerate(env.possible_agents):
        agents[a] = make_recommender(recommender, cat, k, agent_seed + i, llm=env.config.world.llm)
        with blame(recommender, "begin_episode", users[a], 0):
            agents[a].begin_episode(agent_seed + i)
    slots = len(env.possible_agents)
    totals, new_seen, new_clicked = np.zeros(slots), np.zeros(slots, np.int64), np.zeros(slots, np.int64)
    rows = []
    turn = 0
    while env.agents:
        turn += 1
        actions = {}
        for a in env.agents:
            with blame(recommender, "act", users[a], turn):
                actions[a] = agents[a].act(obs[a], infos[a])
        traces = [getattr(agents[a], "last_trace", None) for a in env.agents]
        obs, _, _, _, infos = env.step(actions)
        batch = env.last_batch
        assert batch is not None
        for (a, info), reactions in zip(infos.items(), batch.reactions):
            with blame(recommender, "observe", users[a], turn):
                agents[a].observe(reactions, info)
        log.add_step(env.world, batch, world_seed, traces)
        totals[batch.rows] += batch.reward  # rows are distinct: one addition per user, as a scalar sum
        fresh = log.is_new[batch.slates]
        new_seen[batch.rows] += (fresh & (batch.reactions >= 0)).sum(axis=1)
        new_clicked[batch.rows] += (fresh & (batch.reactions >= 1)).sum(axis=1)
        ended = batch.terminated | batch.truncated
        for row, gap in zip(batch.rows[ended].tolist(), batch.return_gap[ended].tolist()):
            a, profile = env.possible_agents[row], env.profiles[row]
            rows.append(
                {
                    "recommender": label,
                    "arm": arm,
                    "user_id": profile.user_id,
                    "segment": profile.segment,
                    "total_reward": float(totals[row]),
                    "churned": math.isinf(gap),
                    "new_items_seen": int(new_seen[row]),
                    "new_items_clicked": int(new_clicked[row]),
                    "fallback_turns": getattr(agents[a], "fallback_turns", 0),
                    **env.episode_stats(row),
                }
            )
    return rows


# ---------------------------------------------------------------------- driver


def run_study(
    spec: StudySpec,
    out: str | os.PathLike[str] | None = None,
    *,
    catalog: Catalog | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> StudyResult:
    """Run (or resume) a study on Ray and write its results under `out`.

    Uses the running Ray runtime if there is one, else starts a local one (or connects
    to `address`) and shuts it down at the end. `on_shard(done, total)` is called after
    each shard's parts are written; if it raises, in-flight shards are cancelled, the
    manifest records every finished shard and the error propagates, leaving a checkpoint
    that a rerun resumes from.
    """
    import ray

    check_ray_options(address, num_cpus)
    out_dir = spec.out_dir(out)
    spec = _llm_for_run(spec, out_dir)
    setup = prepare(spec, catalog, num_cpus)
    manifest = _load_manifest(out_dir, setup)
    n_shards = setup.n_shards
    todo = [i for i in range(n_shards) if str(i) not in manifest["shards"]]
    if on_shard is not None:  # the users are planned: the total is known before Ray starts
        on_shard(n_shards - len(todo), n_shards)
    asks_llm = bool(todo) and uses_llm(spec.world.user_backend, spec.recommenders)
    if asks_llm:
        check_server(spec.world.llm)  # an unreachable server stops the study before any shard falls back
    started = not ray.is_initialized()
    sigterm = signal.getsignal(signal.SIGTERM)
    trajectories = TrajectoryFile(out_dir, n_shards)
    try:
        trajectories.extend(manifest)  # the shards already checkpointed
        if started:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            if address in (None, "local"):
                clean_stale_ray()  # orphans of a local Ray whose driver was killed (kill -9)
            try:
                with stop_noted_during_init():
                    ray.init(
                        address=address,
                        num_cpus=num_cpus if address is None else None,
                        include_dashboard=False,
                        log_to_driver=False,
                    )
            except (ConnectionError, ValueError) as err:  # e.g. --address auto with no cluster running
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(f"--address {address}: cannot start or reach Ray ({reason})") from None
            sigterm_interrupts(sigterm)  # ray.init took SIGTERM over; it ends the study like Ctrl-C
        if STOP_REQUESTED.is_set():  # a signal during ray.init whose KeyboardInterrupt Ray swallowed
            raise KeyboardInterrupt
        with shared_llm(spec.world.llm) if asks_llm else contextlib.nullcontext() as llm:
            _run_shards(setup, out_dir, manifest, todo, llm, on_shard, trajectories)
        trajectories.commit()
    finally:
        trajectories.discard()
        if started:
            ray.shutdown()
            if address in (None, "local"):
                end_own_sessions()  # what a signal during ray.init left running
            restore_sigterm(sigterm)
    parts = [out_dir / manifest["shards"][k]["trajectories"] for k in sorted(manifest["shards"], key=int)]
    return StudyResult(out_dir, setup, _episodes(out_dir, manifest), parts, shards_run=len(todo))


def shard_task(
    spec: StudySpec,
    catalog: Catalog,
    release_day: dict[str, np.ndarray],
    new_items: np.ndarray,
    users: ShardUsers,
    base: Catalog | None,
    llm: TaskLLM | None,
) -> tuple[Parts, list[Row]] | ShardStopped:
    """One shard as a Ray task: `run_shard`, its results encoded as the Parquet files the driver writes (the
    encoding is the task's work, in parallel, not the driver's; and Parquet travels 25 times smaller than Arrow),
    and with LLM users or recommenders the study's shared LLM state (`recoworld.studies.shared_llm`): the cache
    replies it recorded come back with its results."""

    def work(spec: StudySpec) -> Parts:
        return encode_parts(*run_shard(spec, catalog, release_day, new_items, users, base))

    if llm is None:
        return work(spec), []
    return llm.run(spec.world.llm, lambda config: work(_with_llm(spec, config)))


def encode_parts(traj: pa.Table, eps: pa.Table) -> Parts:
    """A shard's trajectories and episodes as the bytes of their Parquet parts."""
    parts = {}
    for kind, table in (("trajectories", traj), ("episodes", eps)):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        parts[kind] = sink.getvalue().to_pybytes()
    return parts


def _run_shards(
    setup: StudySetup,
    out_dir: Path,
    manifest: dict[str, Any],
    todo: list[int],
    llm: StudyLLM | None,
    on_shard: Callable[[int, int], None] | None,
    trajectories: TrajectoryFile,
) -> None:
    """The shards in `todo` as Ray tasks, each checkpointed as it comes back (its parts at once, the manifest
    when due and when this ends) and appended to `trajectories` once those before it are. Everything a task
    needs travels through the object store (put once), never through the driver's disk."""
    import ray

    spec, n_shards = setup.spec, setup.n_shards
    task: Any = ray.remote(shard_task)  # Ray's stubs cannot type a task taking ObjectRefs of optional values
    common = (ray.put(setup.catalog), ray.put(setup.release_day), ray.put(setup.new_items))
    base = ray.put(setup.base) if len(setup.new_items) else None
    shared = ray.put(llm.task) if llm is not None else None
    waiting = iter(todo)
    window = max(1, TASKS_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, int] = {}

    def submit() -> None:
        for i in itertools.islice(waiting, window - len(pending)):
            pending[task.remote(spec, *common, setup.users.shard(i), base, shared)] = i

    written = len(manifest["shards"])  # shards the manifest on disk records
    try:
        submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if STOP_REQUESTED.is_set():
                raise KeyboardInterrupt
            if llm is not None:
                llm.persist()  # the budget spent so far, in case the driver dies
            if not ready:
                continue
            shard = pending.pop(ready[0])
            submit()  # the next shard starts while this one is checkpointed
            try:
                done = ray.get(ready[0])
            except ray.exceptions.RayTaskError as err:  # a bug in a shard: Ray's traceback
                if isinstance(err.cause, RecoWorldError):
                    raise err.cause from None
                raise
            if isinstance(done, ShardStopped):  # a budget, the circuit breaker: one clear error
                llm.merge(done.recorded)  # type: ignore[union-attr]  # the replies it paid for are kept
                raise done.error
            parts, recorded = done
            if llm is not None:
                llm.merge(recorded)
            write_parts(out_dir, manifest, shard, setup.users.shard(shard).user_ids(), parts)
            del done, parts  # the shard's bytes are on disk: the driver holds no finished shard
            trajectories.extend(manifest)
            if manifest_due(len(manifest["shards"]) - written, written):
                written = _write_manifest(out_dir, manifest)
            if on_shard is not None:
                on_shard(len(manifest["shards"]), n_shards)
    finally:
        if len(manifest["shards"]) > written:  # what is done stays done, however the study stops
            _write_manifest(out_dir, manifest)
        for ref in pending:
            ray.cancel(ref, force=True)
        # Cancelled tasks end before the budget's totals are written for the last time (`shared_llm`).
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)


def check_ray_options(address: str | None, num_cpus: int | None, timeout_s: float = 5.0) -> None:
    """`ConfigError` for CPUs below 1 (Ray would wait for ever) or an address that is malformed or where nothing
    answers within `timeout_s` (Ray would retry for minutes): checked before any work."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus {num_cpus}: a local Ray runtime needs at least 1 CPU")
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--address {address!r} is not a Ray address; give host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(
            f"--address {address}: no Ray cluster answers there within {timeout_s:g} s ({reason})"
        ) from None


def _llm_for_run(spec: StudySpec, out_dir: Path) -> StudySpec:
    """The spec with its LLM cache under `out_dir` (unless set) and its budgets on the study-wide ledger."""
    return _with_llm(spec, spec.world.llm.for_run(out_dir, ledger=True))


def _with_llm(spec: StudySpec, llm: LLMConfig) -> StudySpec:
    if llm == spec.world.llm:
        return spec
    return spec.model_copy(update={"world": spec.world.model_copy(update={"llm": llm})})


def _load_manifest(out_dir: Path, setup: StudySetup) -> dict[str, Any]:
    fingerprint = setup.fingerprint()
    path = out_dir / MANIFEST
    if not path.exists():
        return {"study": setup.spec.name, "fingerprint": fingerprint, "n_shards": setup.n_shards, "shards": {}}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), dict):
            raise ValueError("not a study manifest")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(
            f"{path} is damaged ({type(err).__name__}: {err}); it records which shards are done. Delete it to "
            "redo every shard, or choose another output directory"
        ) from None
    if manifest.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"{out_dir} holds a checkpoint of a different study (fingerprint {manifest.get('fingerprint')} != "
            f"{fingerprint}); resume only with the same spec and catalog, or choose another output directory"
        )
    # A shard whose parts are missing, unreadable, emptied or changed since they were recorded is run again.
    manifest["shards"] = {k: v for k, v in manifest["shards"].items() if _intact(out_dir, v)}
    return manifest


def _intact(out_dir: Path, entry: Any) -> bool:
    """The shard's parts are on disk as recorded: same size and SHA-256 (manifests from before those were
    recorded: readable Parquet), with one episode row per recorded episode, of the recorded users."""
    try:
        for kind in ("trajectories", "episodes"):
            path = out_dir / entry[kind]
            if "sha256" in entry and (
                path.stat().st_size != entry["bytes"][kind] or file_digest(path) != entry["sha256"][kind]
            ):
                return False
            if kind == "trajectories":
                pq.read_metadata(path)
        users = pq.read_table(out_dir / entry["episodes"], columns=["user_id"]).column("user_id").to_pylist()
    except (OSError, KeyError, TypeError, pa.ArrowException):
        return False
    if len(users) != entry["n_episodes"]:
        return False
    if "users" in entry:  # manifests from before `users_sha256`
        return set(users) == set(entry["users"])
    return users_digest(users) == entry["users_sha256"]


def users_digest(user_ids: Iterable[str]) -> str:
    """SHA-256 of a shard's distinct user ids, sorted: what the manifest records of who a shard's parts are
    about. The ids themselves would make a 10M-user study's manifest some 150 MB, rewritten at every checkpoint,
    and the shard's seed already says who they are."""
    return hashlib.sha256("\n".join(sorted(set(user_ids))).encode()).hexdigest()


def manifest_due(unrecorded: int, recorded: int) -> bool:
    """Whether `unrecorded` finished shards warrant rewriting a manifest that records `recorded` (see the module
    docstring)."""
    return unrecorded > MANIFEST_SLACK * recorded


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> int:
    """The manifest to disk, atomically; returns the number of shards it records."""
    write_json_atomic(manifest, out_dir / MANIFEST)
    return len(manifest["shards"])


def write_parts(out_dir: Path, manifest: dict[str, Any], shard: int, user_ids: list[str], parts: Parts) -> None:
    """A shard's parts (`encode_parts`), and its record in `manifest` (in memory): parts first, then the manifest
    that makes them count, so a crash in between only redoes the shard."""
    files, sizes, digests = {}, {}, {}
    for kind, data in parts.items():
        rel = f"parts/shard-{shard:05d}-{kind}.parquet"
        write_atomic(out_dir / rel, data)
        files[kind], sizes[kind], digests[kind] = rel, len(data), hashlib.sha256(data).hexdigest()
    n_episodes = pq.read_metadata(pa.BufferReader(parts["episodes"])).num_rows
    manifest["shards"][str(shard)] = {
        **files,
        "users_sha256": users_digest(user_ids),
        "n_episodes": n_episodes,
        "bytes": sizes,
        "sha256": digests,
    }


class TrajectoryFile:
    """`trajectories.parquet`, the concatenation of the shards' trajectory parts in shard order, written while
    the study runs: a shard's part is appended as soon as it and every shard before it are checkpointed, its
    pages copied as they are and its row groups added to the footer (`recoworld.studies.parquet_concat`: not
    decoded and encoded again, which cost the driver as much as two hours for a million users). The driver never
    holds a shard's rows, and its appends overlap the tasks instead of following them. The file is built under a
    temporary name and renamed into place (`commit`) only once every shard is in; a study that stops leaves the
    previous file, if any, as it was."""

    def __init__(self, out_dir: Path, n_shards: int) -> None:
        self.path, self.out_dir, self.n_shards = out_dir / TRAJECTORIES, out_dir, n_shards
        self.next = 0  # the next shard to append
        self._tmp: str | None = None
        self._sink: BinaryIO | None = None
        self._concat: ParquetConcat | None = None

    def extend(self, manifest: dict[str, Any]) -> None:
        """Append every shard the manifest (in memory) records from `next` on, up to the first gap. A study
        rerun after it finished keeps its file when the file is already those parts (`_holds`): rebuilding it
        would copy every byte of a study that may be far larger than memory to change nothing."""
        if self.next == 0 and self._concat is None and self._holds(manifest):
            self.next = self.n_shards
            return
        while str(self.next) in manifest["shards"]:
            if self._concat is None:
                self._tmp = temp_beside(self.path)
                self._sink = open(self._tmp, "wb")  # noqa: SIM115  # open across calls, closed by commit or discard
                self._concat = ParquetConcat(self._sink)
            self._concat.append(self.out_dir / manifest["shards"][str(self.next)]["trajectories"])
            self.next += 1

    def _holds(self, manifest: dict[str, Any]) -> bool:
        """Whether every shard is recorded and the file on disk is their parts' concatenation, as far as the
        footers tell (the parts themselves are checked against the manifest's digests when it is loaded): one
        row group per part's row group, with the same row counts and schema. Footers only: cheap at any size."""
        if len(manifest["shards"]) < self.n_shards or not self.path.is_file():
            return False
        try:
            whole = pq.read_metadata(self.path)
            parts = [pq.read_metadata(self.out_dir / manifest["shards"][str(k)]["trajectories"])
                     for k in range(self.n_shards)]
        except (OSError, KeyError, pa.ArrowException):
            return False
        groups = [part.row_group(g).num_rows for part in parts for g in range(part.num_row_groups)]
        return (whole.schema.equals(parts[0].schema)
                and [whole.row_group(g).num_rows for g in range(whole.num_row_groups)] == groups)

    def commit(self) -> None:
        """Rename the file into place if every shard is in it (a study with shards still to run leaves none)."""
        if self._concat is None or self.next < self.n_shards:
            return
        assert self._sink is not None and self._tmp is not None
        self._concat.close()
        self._sink.close()
        commit(self._tmp, self.path)
        self._sink = self._concat = self._tmp = None

    def discard(self) -> None:
        """Drop an uncommitted file (the study stopped first)."""
        if self._sink is not None:
            self._sink.close()
        if self._tmp is not None and os.path.exists(self._tmp):
            os.unlink(self._tmp)
        self._sink = self._concat = self._tmp = None


def _episodes(out_dir: Path, manifest: dict[str, Any]) -> pd.DataFrame:
    """The episodes so far, in shard order (one row per user x recommender run: small enough to hold whole);
    written as `episodes.parquet` when every shard is done."""
    done = sorted(manifest["shards"], key=int)
    if not done:
        return pd.DataFrame()
    eps = pd.concat([pd.read_parquet(out_dir / manifest["shards"][k]["episodes"]) for k in done], ignore_index=True)
    if len(done) == manifest["n_shards"]:
        write_parquet_atomic(pa.Table.from_pandas(eps, preserve_index=False), out_dir / "episodes.parquet")
    return eps
