"""Run a population of users against one or several recommenders and log everything.

Every recommender meets the same users with the same episode seeds (common random
numbers), so differences between recommenders are not sampling noise in who showed up.
Trajectories are written per recommender, atomically, as soon as that recommender is done,
and recorded in the output folder's manifest (`run_folder`): an interrupted run resumes at
the recommender it was on, and one folder never holds two runs.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from recoworld import seeding
from recoworld.agents import (
    AgentBuilder,
    CatalogSearcher,
    Recommender,
    agent_labels,
    make_recommender,
    mindset_ready,
)
from recoworld.agents.base import blame
from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import StrictModel, WorldConfig, load_config
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError, check_distinct
from recoworld.evaluation.metrics import summarize
from recoworld.evaluation.run_folder import LLM_RUNTIME_FIELDS, RunFolder, catalog_fingerprint
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.config import LLMConfig
from recoworld.llm.errors import BudgetExceeded
from recoworld.population import PopulationSpec, UserProfile, draw_profiles, sample_population
from recoworld.storage import write_atomic, write_parquet_atomic

EPISODES, SUMMARY = "episodes.parquet", "summary.csv"
_PART_DIRS = ("trajectories", "episodes")  # one file per recommender in each


class SimulationConfig(StrictModel):
    """What `recoworld simulate` runs."""

    n_users: int = Field(200, ge=1, le=10_000_000, description="users drawn from the population")
    agents: list[str] = Field(
        default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"], min_length=1
    )
    seed: int = Field(0, ge=0)
    world: WorldConfig = WorldConfig()
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)
    judge: LLMConfig | None = Field(
        None, description="an LLM judge of instruction following, run over each recommender's logged turns "
        "before they are written (`recoworld.evaluation.judge`); None: no judge (the column stays null)",
    )

    @field_validator("agents")
    @classmethod
    def _distinct(cls, agents: list[str]) -> list[str]:
        check_distinct(agents, "recommender")
        return agents


@dataclass
class SimulationResult:
    trajectories: pd.DataFrame
    episodes: pd.DataFrame
    summary: pd.DataFrame
    profiles: list[UserProfile]
    stopped: str | None = None  # why the study stopped early (an LLM budget), else None
    resumed: list[str] = field(default_factory=list)  # recommenders reused from an earlier run in `out`


def run_episode(
    env: RecoWorldEnv,
    agent: Recommender,
    profile: UserProfile,
    seed: int,
    log: TrajectoryLog,
    start_day: float = 0.0,
    name: str | None = None,
) -> dict[str, Any]:
    """One user's whole horizon with one recommender; appends rows to `log`. `start_day` opens the first
    session later than day 0 (a user continued from where they stood at a log's cutoff). What the
    recommender's own code raises is a `RecommenderFailed` naming it (`name`, else its class's), the user
    and the turn."""
    who = name or agent.name

    def own(method: str, turn: int) -> contextlib.AbstractContextManager[None]:
        return blame(who, method, profile.user_id, turn)

    options: dict[str, Any] = {"profile": profile} | ({"start_day": start_day} if start_day else {})
    obs, info = env.reset(seed=seed, options=options)
    with own("begin_episode", 0):
        if isinstance(agent, CatalogSearcher):  # an explicit capability: only such agents see the search service
            agent.connect_search(env.search)
        agent.begin_episode(seed)
    fell_back = getattr(agent, "fallback_turns", 0)
    total = 0.0
    done = False
    turn = 0
    while not done:
        turn += 1
        with own("act", turn):
            action = agent.act(obs, info)
        trace = getattr(agent, "last_trace", None)
        obs, reward, terminated, truncated, info = env.step(action)
        with own("observe", turn):
            agent.observe(info["reactions"], info)
        total += float(reward)
        assert env.last_batch is not None  # set by the step just taken
        log.add_step(env.world, env.last_batch, seed, [trace], env.last_searched)
        done = terminated or truncated
    stats = info["episode_stats"]
    return {"user_id": profile.user_id, "segment": profile.segment, "episode_seed": seed,
            "total_reward": total, "churned": bool(info["churned"]),
            "fallback_turns": getattr(agent, "fallback_turns", 0) - fell_back, **stats}


def simulate(
    config: SimulationConfig | None = None,
    *,
    catalog: Catalog | None = None,
    out: str | Path | None = None,
    build_agent: AgentBuilder | None = None,
    on_episode: Callable[[str], None] | None = None,
    profiles: list[UserProfile] | None = None,
    overwrite: bool = False,
    inputs: Mapping[str, str] | None = None,
    also_writes: Sequence[str] = (),
) -> SimulationResult:
    """Run every agent in `config.agents` on the same sampled users.

    With `out`, writes `trajectories/<agent>.parquet` and `episodes/<agent>.parquet` as each
    agent finishes, then `episodes.parquet` and `summary.csv`, both rebuilt from those files,
    and keeps `manifest.json` (`recoworld.evaluation.run_folder`): a rerun of the same run
    resumes at the agent it was on, and `out` holding another run is an error unless
    `overwrite` (its files are then removed first). `inputs` (where the catalog and users came
    from) are recorded in the manifest; `also_writes` names files the caller adds to `out`
    afterwards (the CLI's plot), so that they count as the run's too.
    Agents come from `build_agent`, by default `make_recommender` with the world's `llm` config;
    a custom builder's finished agents are not reused, since the manifest cannot tell what it built.
    With `profiles` (e.g. users built from a real log), `n_users` of them are drawn without
    replacement instead of sampling `config.population` (all of them when there are fewer).
    `on_episode(agent)` is called after each episode played, or reused from the manifest.
    """
    cfg = config or SimulationConfig()
    cfg = cfg.model_copy(update={"world": mindset_ready(cfg.world, cfg.agents)})
    catalog = catalog if catalog is not None else cached_catalog(cfg.world.catalog)
    pop_rng = seeding.rng(cfg.seed, seeding.POPULATION)
    if profiles is None:
        profiles = sample_population(cfg.population, catalog, pop_rng, n=cfg.n_users)
    else:
        profiles = draw_profiles(profiles, cfg.n_users, pop_rng)
    episode_seeds = [int(s) for s in seeding.stream(cfg.seed, seeding.EPISODES).generate_state(len(profiles),
                                                                                               dtype=np.uint32)]
    labels = agent_labels(cfg.agents)  # a plug-in's `name`, not its reference, in tables and file names
    folder = None
    if out is not None:
        _distinct_files(labels)
        folder = RunFolder.open(out, "simulate", run_identity(cfg, catalog, profiles, build_agent),
                                files=[EPISODES, SUMMARY, *also_writes], part_dirs=_PART_DIRS,
                                overwrite=overwrite, inputs=inputs)

    trajectories, episodes, resumed = [], [], []
    stopped: str | None = None
    for spec, name in zip(cfg.agents, labels):
        if stopped is not None:
            break
        files = {kind: f"{kind}/{_safe(name)}.parquet" for kind in _PART_DIRS}
        done = folder.done(name) if folder is not None and build_agent is None else None
        if done is not None:  # finished by an earlier run of this same run, files intact
            resumed.append(name)
            for _ in range(done["episodes"] if on_episode is not None else 0):
                on_episode(name)  # type: ignore[misc]
            continue
        env = RecoWorldEnv(cfg.world, catalog=catalog, population=profiles)
        agent = (build_agent(spec, catalog, cfg.world.slate_size, cfg.seed) if build_agent is not None
                 else make_recommender(spec, catalog, cfg.world.slate_size, cfg.seed, llm=cfg.world.llm))
        log = TrajectoryLog(catalog, name)
        rows = []
        for profile, seed in zip(profiles, episode_seeds):
            try:
                rows.append({"recommender": name, **run_episode(env, agent, profile, seed, log, name=spec)})
            except BudgetExceeded as err:  # keep everything played so far; the unfinished episode has no row
                stopped = str(err)
                break
            if on_episode is not None:
                on_episode(name)
        table, eps = log.table(), pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
        if cfg.judge is not None:  # at evaluation time, so the env stays fast; cached by the backend
            from recoworld.evaluation.judge import judge_table
            from recoworld.llm import shared_backend

            table = judge_table(table, catalog, shared_backend(cfg.judge))
        if folder is None:
            trajectories.append(table)
            episodes.append(eps)
            continue
        folder.begin(name, files)
        write_parquet_atomic(table, folder.path / files["trajectories"])
        write_parquet_atomic(eps, folder.path / files["episodes"])
        folder.finish(name, complete=stopped is None, episodes=len(rows), rows=table.num_rows)
    if folder is not None:  # the results are what the files hold, whichever run wrote them
        for name in labels:
            part = folder.manifest["parts"].get(name)
            if part is not None and part.get("status") in ("complete", "incomplete"):
                trajectories.append(pq.read_table(folder.path / part["files"]["trajectories"]))
                episodes.append(pq.read_table(folder.path / part["files"]["episodes"]))
    traj = pa.concat_tables(trajectories).to_pandas()
    parts = [t.to_pandas() for t in episodes if t.num_rows]
    eps = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    summary = summarize(traj, eps)
    if folder is not None:
        write_parquet_atomic(pa.Table.from_pandas(eps, preserve_index=False), folder.path / EPISODES)
        write_atomic(folder.path / SUMMARY, summary.to_csv(index=False))
        folder.finished()
    return SimulationResult(traj, eps, summary, profiles, stopped, resumed)


def run_identity(
    cfg: SimulationConfig, catalog: Catalog, profiles: list[UserProfile], build_agent: AgentBuilder | None = None,
) -> dict[str, Any]:
    """Everything that determines a simulate run's results, as plain values (its manifest's identity).

    The config (less the LLM settings that only change how calls are made), the catalog's and the
    drawn users' content (so `--data`, `--catalog` and `--calibrated` inputs count by what they
    hold, not where they lie), the agent builder and the package version.
    """
    import recoworld

    users = hashlib.sha256()
    for p in profiles:
        users.update(p.model_dump_json().encode())
    builder = "make_recommender" if build_agent is None else \
        f"{getattr(build_agent, '__module__', '?')}.{getattr(build_agent, '__qualname__', type(build_agent).__name__)}"
    return {
        "config": cfg.model_dump(mode="json", exclude={"world": {"llm": LLM_RUNTIME_FIELDS},
                                                       "judge": LLM_RUNTIME_FIELDS}),
        "catalog": catalog_fingerprint(catalog),
        "users": f"{len(profiles)} users, {users.hexdigest()[:16]}",
        "agent_builder": builder,
        "recoworld": recoworld.__version__,
    }


def _distinct_files(agents: list[str]) -> None:
    """Two names that map to one file name would overwrite each other's results."""
    seen: dict[str, str] = {}
    for name in agents:
        other = seen.setdefault(_safe(name), name)
        if other != name:
            raise ConfigError(f"recommenders {other!r} and {name!r} would share the file "
                              f"trajectories/{_safe(name)}.parquet; rename one (e.g. copy its checkpoint)")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def load_world(config_path: str | Path | None, **overrides: Any) -> WorldConfig:
    """A world config from an optional YAML/JSON file, with CLI overrides (None = keep) on top."""
    return load_config(WorldConfig, config_path, "world config", **overrides)
