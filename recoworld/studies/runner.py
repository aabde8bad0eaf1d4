"""Run a study on Ray: users in shards, shards as remote tasks, progress checkpointed.

Users are shuffled (seeded) and cut into shards of `shard_size`; a shard is one shared
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

LLM users and recommenders (`user_backend: llm`, `toolrec`) use the spec's `world.llm`.
Within a shard, a step's user turns are in flight together (`llm.concurrency`); every
Ray worker process has its own backend (cache connection, usage account, circuit breaker),
but the `budget_*` limits are study-wide: they are charged to one locked ledger file,
`<out>/llm-budget.json`, before every model call (`recoworld.llm.ledger`), and it persists,
so a resumed study counts what it already spent. The LLM cache defaults to
`<out>/llm-cache/llm.sqlite` (`llm.cache_path` shares one explicitly). Before any shard
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
import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recoworld.agents import make_recommender, mindset_ready
from recoworld.agents.base import blame
from recoworld.catalog import Catalog, cached_catalog
from recoworld.envs.platform import hold_back
from recoworld.envs.population_env import PopulationParallelEnv, PopulationWorldConfig
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.evaluation.run_folder import file_digest
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.health import check_server, uses_llm
from recoworld.population import UserProfile, draw_profiles, sample_population
from recoworld.storage import write_json_atomic, write_parquet_atomic
from recoworld.studies.creators import publish
from recoworld.studies.ray_cleanup import (
    STOP_REQUESTED,
    clean_stale_ray,
    end_own_sessions,
    restore_sigterm,
    sigterm_interrupts,
    stop_noted_during_init,
)
from recoworld.studies.spec import StudySpec

# Spawn keys of the study's independent random streams.
_POPULATION, _CREATOR, _CATALOG, _SHARD = 0, 1, 2, 3
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StudySetup:
    """Everything the shards share, fixed by the spec and its seed before any shard runs."""

    spec: StudySpec
    catalog: Catalog
    profiles: list[UserProfile]  # in shard order
    release_day: dict[str, np.ndarray]  # per arm, (N,) days; inf = never published
    new_items: np.ndarray  # indices of the creator's items (empty without a creator)
    target_topic: str | None

    @property
    def shards(self) -> list[list[UserProfile]]:
        k = self.spec.shard_size
        return [self.profiles[i : i + k] for i in range(0, len(self.profiles), k)]

    def fingerprint(self) -> str:
        """Spec plus catalog: a checkpoint only resumes a study over the same items."""
        h = hashlib.sha256(self.spec.fingerprint().encode())
        h.update(np.ascontiguousarray(self.catalog.embeddings).tobytes())
        h.update("\n".join(map(str, self.catalog.item_ids)).encode())
        return h.hexdigest()[:16]


@dataclass
class StudyResult:
    out: Path
    setup: StudySetup
    trajectories: pd.DataFrame
    episodes: pd.DataFrame
    shards_run: int  # shards computed by this call (the rest came from the checkpoint)


#: Sampling one simulated user costs about 85 us and its profile about 2.5 KB, held for the whole study
#: (measured on this project's 2-core machine, 2026-12: 4.2 s and 125 MB per 50,000 users).
PROFILE_BYTES, PROFILE_SECONDS = 2_500, 85e-6
#: Share of the available memory the profiles may take: the catalog, the shards in flight and the
#: results need the rest.
PROFILE_MEMORY_SHARE = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable, else free pages), None if unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_fits(n_users: int, available: int | None) -> None:
    """Refuse, with an estimate, a study whose users cannot all be drawn in `available` bytes of memory:
    they are drawn before the first shard, so 10 million users meant 14 minutes of `shards 0/?` and then
    running out of memory (issue 31)."""
    need = n_users * PROFILE_BYTES
    if available is None or need <= PROFILE_MEMORY_SHARE * available:
        return
    fits = int(PROFILE_MEMORY_SHARE * available / PROFILE_BYTES)
    raise ConfigError(
        f"n_users {n_users}: drawing them takes about {need / 1e9:.1f} GB and {n_users * PROFILE_SECONDS / 60:.0f} "
        f"min before the first shard, more than this machine can spare ({available / 1e9:.1f} GB available; half "
        f"is left for the shards and results); give n_users {fits} or fewer, or split the study by seed")


def _rng(seed: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def prepare(spec: StudySpec, catalog: Catalog | None = None) -> StudySetup:
    """Draw the users, publish the creator's items and fix the release days, all from `spec.seed`."""
    calibrated = None
    if spec.calibrated is not None:
        from recoworld.calibration.inputs import cached_calibration

        calibrated = cached_calibration(str(spec.calibrated))
    if catalog is not None:
        base = catalog
    else:
        base = calibrated.catalog if calibrated is not None else cached_catalog(spec.world.catalog)
    if spec.profiles is not None:
        profiles = list(spec.profiles)
    elif calibrated is not None:  # the log's own users; `n_users` of them, drawn with the study seed
        profiles = draw_profiles(calibrated.profiles, spec.n_users, _rng(spec.seed, _POPULATION))
    else:
        check_fits(sum(spec.population.allocate(spec.n_users)), available_memory())
        profiles = sample_population(spec.population, base, _rng(spec.seed, _POPULATION), n=spec.n_users)
    if not profiles:
        raise ConfigError("the study has no users: give n_users >= 1 or segments with size >= 1")
    order = _rng(spec.seed, _POPULATION + 100).permutation(len(profiles))  # mix segments across shards
    profiles = [profiles[i] for i in order]
    background = hold_back(np.zeros(len(base)), spec.new_item_share, spec.world.horizon_days,
                           _rng(spec.seed, _CATALOG))
    if spec.creator is None:
        return StudySetup(spec, base, profiles, {"baseline": background}, np.empty(0, np.int64), None)
    pub = publish(spec.creator, base, profiles, _rng(spec.seed, _CREATOR))
    release = {
        "without": np.concatenate([background, np.full(len(pub.new_items), np.inf)]),
        "with": np.concatenate([background, pub.release_day]),
    }
    return StudySetup(spec, pub.catalog, profiles, release, pub.new_items, pub.topic)


def shard_seeds(seed: int, shard: int) -> tuple[int, int]:
    """(world seed, recommender seed) of one shard: a function of the study seed and the index only."""
    world, agents = np.random.SeedSequence(seed, spawn_key=(_SHARD, shard)).generate_state(2)
    return int(world), int(agents)


def run_shard(
    spec: StudySpec,
    catalog: Catalog,
    release_day: dict[str, np.ndarray],
    new_items: np.ndarray,
    profiles: list[UserProfile],
    shard: int,
) -> tuple[pa.Table, pa.Table]:
    """Every recommender and arm on one shard's users; returns (trajectories, episodes)."""
    world_seed, agent_seed = shard_seeds(spec.seed, shard)
    config = PopulationWorldConfig(world=mindset_ready(spec.world, spec.recommenders), n_users=len(profiles),
                                   social=spec.social)
    tables, episodes = [], []
    for recommender in spec.recommenders:
        for arm, release in release_day.items():
            env = PopulationParallelEnv(config, catalog=catalog, population=profiles, release_day=release)
            log = TrajectoryLog(catalog, recommender, arm=arm, shard=shard, new_items=new_items)
            episodes += _play(env, recommender, arm, world_seed, agent_seed, log)
            tables.append(log.table())
    eps = pd.DataFrame(episodes)
    eps.insert(2, "shard", shard)
    return pa.concat_tables(tables), pa.Table.from_pandas(eps, preserve_index=False)


def _play(
    env: PopulationParallelEnv, recommender: str, arm: str, world_seed: int, agent_seed: int, log: TrajectoryLog,
) -> list[dict[str, Any]]:
    """One episode of the world with one recommender instance per user slot."""
    cat, k = env.catalog, env.config.world.slate_size
    obs, infos = env.reset(seed=world_seed)
    users = {a: str(infos[a].get("user_id", a)) for a in env.possible_agents}
    agents = {}
    for i, a in enumerate(env.possible_agents):
        agents[a] = make_recommender(recommender, cat, k, agent_seed + i, llm=env.config.world.llm)
        with blame(recommender, "begin_episode", users[a], 0):
            agents[a].begin_episode(agent_seed + i)
    totals = dict.fromkeys(env.possible_agents, 0.0)
    new_seen = dict.fromkeys(env.possible_agents, 0)
    new_clicked = dict.fromkeys(env.possible_agents, 0)
    rows = []
    turn = 0
    while env.agents:
        turn += 1
        actions = {}
        for a in env.agents:
            with blame(recommender, "act", users[a], turn):
                actions[a] = agents[a].act(obs[a], infos[a])
        traces = {a: getattr(agents[a], "last_trace", None) for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        for a, info in infos.items():
            with blame(recommender, "observe", users[a], turn):
                agents[a].observe(info["reactions"], info)
            slate, reactions = info["slate"], info["reactions"]
            totals[a] += rewards[a]
            fresh = log.is_new[slate]
            new_seen[a] += int((fresh & (reactions >= 0)).sum())
            new_clicked[a] += int((fresh & (reactions >= 1)).sum())
            log.add(info["user_id"], info["segment"], world_seed, info, rewards[a], traces[a])
            if terms[a] or truncs[a]:
                rows.append({"recommender": recommender, "arm": arm, "user_id": info["user_id"],
                             "segment": info["segment"],
                             "total_reward": totals[a], "churned": bool(info["churned"]),
                             "new_items_seen": new_seen[a], "new_items_clicked": new_clicked[a],
                             "fallback_turns": getattr(agents[a], "fallback_turns", 0), **info["episode_stats"]})
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
    each shard is checkpointed; if it raises, in-flight shards are cancelled and the
    error propagates, leaving a checkpoint that a rerun resumes from.
    """
    import ray

    check_ray_options(address, num_cpus)
    out_dir = spec.out_dir(out)
    spec = _llm_for_run(spec, out_dir)
    setup = prepare(spec, catalog)
    manifest = _load_manifest(out_dir, setup)
    shards = setup.shards
    todo = [i for i in range(len(shards)) if str(i) not in manifest["shards"]]
    if on_shard is not None:  # the users are drawn: the total is known before Ray starts
        on_shard(len(shards) - len(todo), len(shards))
    if todo and uses_llm(spec.world.user_backend, spec.recommenders):
        check_server(spec.world.llm)  # an unreachable server stops the study before any shard falls back
    started = not ray.is_initialized()
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        if started:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            if address in (None, "local"):
                clean_stale_ray()  # orphans of a local Ray whose driver was killed (kill -9)
            try:
                with stop_noted_during_init():
                    ray.init(address=address, num_cpus=num_cpus if address is None else None,
                             include_dashboard=False, log_to_driver=False)
            except (ConnectionError, ValueError) as err:  # e.g. --address auto with no cluster running
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ConfigError(f"--address {address}: cannot start or reach Ray ({reason})") from None
            sigterm_interrupts(sigterm)  # ray.init took SIGTERM over; it ends the study like Ctrl-C
        if STOP_REQUESTED.is_set():  # a signal during ray.init whose KeyboardInterrupt Ray swallowed
            raise KeyboardInterrupt
        task = ray.remote(run_shard)
        cat_ref = ray.put(setup.catalog)
        pending = {
            task.remote(spec, cat_ref, setup.release_day, setup.new_items, shards[i], i): i for i in todo
        }
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                if STOP_REQUESTED.is_set():
                    raise KeyboardInterrupt
                if not ready:
                    continue
                shard = pending.pop(ready[0])
                try:
                    traj, eps = ray.get(ready[0])
                except ray.exceptions.RayTaskError as err:  # a budget, the circuit breaker: one clear error
                    if isinstance(err.cause, RecoWorldError):
                        raise err.cause from None
                    raise
                _checkpoint(out_dir, manifest, shard, shards[shard], traj, eps)
                if on_shard is not None:
                    on_shard(len(manifest["shards"]), len(shards))
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
            if address in (None, "local"):
                end_own_sessions()  # what a signal during ray.init left running
            restore_sigterm(sigterm)
    traj, eps = _assemble(out_dir, manifest)
    return StudyResult(out_dir, setup, traj, eps, shards_run=len(todo))


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
        raise ConfigError(f"--address {address}: no Ray cluster answers there within {timeout_s:g} s ({reason})") \
            from None


def _llm_for_run(spec: StudySpec, out_dir: Path) -> StudySpec:
    """The spec with its LLM cache under `out_dir` (unless set) and its budgets on the study-wide ledger."""
    llm = spec.world.llm.for_run(out_dir, ledger=True)
    if llm == spec.world.llm:
        return spec
    return spec.model_copy(update={"world": spec.world.model_copy(update={"llm": llm})})


def _load_manifest(out_dir: Path, setup: StudySetup) -> dict[str, Any]:
    fingerprint = setup.fingerprint()
    path = out_dir / MANIFEST
    if not path.exists():
        return {"study": setup.spec.name, "fingerprint": fingerprint, "n_shards": len(setup.shards), "shards": {}}
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
            if "sha256" in entry and (path.stat().st_size != entry["bytes"][kind]
                                      or file_digest(path) != entry["sha256"][kind]):
                return False
            if kind == "trajectories":
                pq.read_metadata(path)
        users = pq.read_table(out_dir / entry["episodes"], columns=["user_id"]).column("user_id").to_pylist()
    except (OSError, KeyError, TypeError, pa.ArrowException):
        return False
    return len(users) == entry["n_episodes"] and set(users) == set(entry["users"])


def _checkpoint(out_dir: Path, manifest: dict[str, Any], shard: int, profiles: list[UserProfile],
                traj: pa.Table, eps: pa.Table) -> None:
    """Parts first, then the manifest that makes them count: a crash in between only redoes the shard."""
    files, sizes, digests = {}, {}, {}
    for kind, table in (("trajectories", traj), ("episodes", eps)):
        rel = f"parts/shard-{shard:05d}-{kind}.parquet"
        path = write_parquet_atomic(table, out_dir / rel)
        files[kind], sizes[kind], digests[kind] = rel, path.stat().st_size, file_digest(path)
    manifest["shards"][str(shard)] = {**files, "users": [p.user_id for p in profiles], "n_episodes": eps.num_rows,
                                      "bytes": sizes, "sha256": digests}
    write_json_atomic(manifest, out_dir / MANIFEST)


def _assemble(out_dir: Path, manifest: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results so far, in shard order; written as `trajectories.parquet` and `episodes.parquet`."""
    done = sorted(manifest["shards"], key=int)
    if not done:
        return pd.DataFrame(), pd.DataFrame()
    traj = pa.concat_tables([pq.read_table(out_dir / manifest["shards"][k]["trajectories"]) for k in done])
    eps = pd.concat([pd.read_parquet(out_dir / manifest["shards"][k]["episodes"]) for k in done], ignore_index=True)
    if len(done) == manifest["n_shards"]:
        write_parquet_atomic(traj, out_dir / "trajectories.parquet")
        write_parquet_atomic(pa.Table.from_pandas(eps, preserve_index=False), out_dir / "episodes.parquet")
    return traj.to_pandas(), eps
