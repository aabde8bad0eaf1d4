"""Run a population of users against one or several recommenders and log everything.

Every recommender meets the same users with the same episode seeds (common random
numbers), so differences between recommenders are not sampling noise in who showed up.
Trajectories are written per recommender, atomically, as soon as that recommender is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator

from recoworld.agents import Recommender, make_recommender
from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import StrictModel, WorldConfig, load_config
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.evaluation.metrics import summarize
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.errors import BudgetExceeded
from recoworld.population import PopulationSpec, UserProfile, draw_profiles, sample_population
from recoworld.storage import write_parquet_atomic


class SimulationConfig(StrictModel):
    """What `recoworld simulate` runs."""

    n_users: int = Field(200, ge=1, le=10_000_000, description="users drawn from the population")
    agents: list[str] = Field(
        default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"], min_length=1
    )
    seed: int = Field(0, ge=0)
    world: WorldConfig = WorldConfig()
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)

    @field_validator("agents")
    @classmethod
    def _distinct(cls, agents: list[str]) -> list[str]:
        """A repeated name would run twice and count its users twice in the summary."""
        repeated = sorted({a for a in agents if agents.count(a) > 1})
        if repeated:
            raise ValueError(f"each recommender may be named once; repeated: {', '.join(repeated)}")
        return agents


AgentBuilder = Callable[[str, Catalog, int, int | None], Recommender]


@dataclass
class SimulationResult:
    trajectories: pd.DataFrame
    episodes: pd.DataFrame
    summary: pd.DataFrame
    profiles: list[UserProfile]
    stopped: str | None = None  # why the study stopped early (an LLM budget), else None


def run_episode(
    env: RecoWorldEnv,
    agent: Recommender,
    profile: UserProfile,
    seed: int,
    log: TrajectoryLog,
) -> dict[str, Any]:
    """One user's whole horizon with one recommender; appends rows to `log`."""
    obs, info = env.reset(seed=seed, options={"profile": profile})
    agent.begin_episode(seed)
    total = 0.0
    done = False
    while not done:
        action = agent.act(obs, info)
        trace = getattr(agent, "last_trace", None)
        obs, reward, terminated, truncated, info = env.step(action)
        agent.observe(info["reactions"], info)
        total += float(reward)
        log.add(profile.user_id, profile.segment, seed, info, float(reward), trace)
        done = terminated or truncated
    stats = info["episode_stats"]
    return {"user_id": profile.user_id, "segment": profile.segment, "episode_seed": seed,
            "total_reward": total, "churned": bool(info["churned"]), **stats}


def simulate(
    config: SimulationConfig | None = None,
    *,
    catalog: Catalog | None = None,
    out: str | Path | None = None,
    build_agent: AgentBuilder | None = None,
    on_episode: Callable[[str], None] | None = None,
    profiles: list[UserProfile] | None = None,
) -> SimulationResult:
    """Run every agent in `config.agents` on the same sampled users.

    With `out`, writes `trajectories/<agent>.parquet`, `episodes.parquet` and `summary.csv`.
    Agents come from `build_agent`, by default `make_recommender` with the world's `llm` config.
    With `profiles` (e.g. users built from a real log), `n_users` of them are drawn without
    replacement instead of sampling `config.population` (all of them when there are fewer).
    """
    cfg = config or SimulationConfig()
    catalog = catalog if catalog is not None else cached_catalog(cfg.world.catalog)
    seeds = np.random.SeedSequence(cfg.seed)
    pop_seed, ep_seed = seeds.spawn(2)
    pop_rng = np.random.default_rng(pop_seed)
    if profiles is None:
        profiles = sample_population(cfg.population, catalog, pop_rng, n=cfg.n_users)
    else:
        profiles = draw_profiles(profiles, cfg.n_users, pop_rng)
    episode_seeds = ep_seed.generate_state(len(profiles), dtype=np.uint32).astype(int).tolist()
    out_dir = Path(out) if out is not None else None

    trajectories, episodes = [], []
    stopped: str | None = None
    for name in cfg.agents:
        if stopped is not None:
            break
        env = RecoWorldEnv(cfg.world, catalog=catalog, population=profiles)
        agent = (build_agent(name, catalog, cfg.world.slate_size, cfg.seed) if build_agent is not None
                 else make_recommender(name, catalog, cfg.world.slate_size, cfg.seed, llm=cfg.world.llm))
        log = TrajectoryLog(catalog, name)
        for profile, seed in zip(profiles, episode_seeds):
            try:
                episodes.append({"recommender": name, **run_episode(env, agent, profile, seed, log)})
            except BudgetExceeded as err:  # keep everything played so far; the unfinished episode has no row
                stopped = str(err)
                break
            if on_episode is not None:
                on_episode(name)
        table = log.table()
        trajectories.append(table)
        if out_dir is not None:
            write_parquet_atomic(table, out_dir / "trajectories" / f"{_safe(name)}.parquet")
    traj = pa.concat_tables(trajectories).to_pandas()
    eps = pd.DataFrame(episodes)
    summary = summarize(traj, eps)
    if out_dir is not None:
        write_parquet_atomic(pa.Table.from_pandas(eps, preserve_index=False), out_dir / "episodes.parquet")
        summary.to_csv(out_dir / "summary.csv", index=False)
    return SimulationResult(traj, eps, summary, profiles, stopped)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def load_world(config_path: str | Path | None, **overrides: Any) -> WorldConfig:
    """A world config from an optional YAML/JSON file, with CLI overrides (None = keep) on top."""
    return load_config(WorldConfig, config_path, "world config", **overrides)
