"""Run a population of users against one or several recommenders and log everything.

Every recommender meets the same users with the same episode seeds (common random
numbers), so differences between recommenders are not sampling noise in who showed up.
Trajectories are written per recommender, atomically, as soon as that recommender is done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from pydantic import Field

from recoworld.agents import Recommender, make_recommender
from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.llm.errors import BudgetExceeded
from recoworld.metrics import intent_match, slate_diversity, summarize
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.storage import write_parquet_atomic


class SimulationConfig(StrictModel):
    """What `recoworld simulate` runs."""

    n_users: int = Field(200, ge=1, description="users drawn from the population")
    agents: list[str] = Field(
        default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"], min_length=1
    )
    seed: int = Field(0, ge=0)
    world: WorldConfig = WorldConfig()
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)


AgentBuilder = Callable[[str, Catalog, int, int | None], Recommender]


@dataclass
class SimulationResult:
    trajectories: pd.DataFrame
    episodes: pd.DataFrame
    summary: pd.DataFrame
    profiles: list[UserProfile]
    stopped: str | None = None  # why the study stopped early (an LLM budget), else None


class _TurnLog:
    """Column buffers for one recommender's trajectory: per-turn scalars and per-slot arrays."""

    def __init__(self) -> None:
        self.turn_cols: dict[str, list[Any]] = {}
        self.slot_cols: dict[str, list[np.ndarray]] = {}
        self.slots: list[int] = []

    def add(self, turn: dict[str, Any], slots: dict[str, np.ndarray]) -> None:
        for key, value in turn.items():
            self.turn_cols.setdefault(key, []).append(value)
        for key, arr in slots.items():
            self.slot_cols.setdefault(key, []).append(arr)
        self.slots.append(len(next(iter(slots.values()))))

    def frame(self) -> pd.DataFrame:
        """One row per turn x slot; turn-level columns repeat on each of the turn's rows."""
        repeats = np.asarray(self.slots)
        data: dict[str, Any] = {k: np.repeat(np.asarray(v, dtype=object), repeats) for k, v in self.turn_cols.items()}
        data.update({k: np.concatenate(v) for k, v in self.slot_cols.items()})
        return pd.DataFrame(data).infer_objects()


def run_episode(
    env: RecoWorldEnv,
    agent: Recommender,
    profile: UserProfile,
    seed: int,
    log: _TurnLog,
) -> dict[str, Any]:
    """One user's whole horizon with one recommender; appends rows to `log`."""
    cat = env.catalog
    k = env.config.slate_size
    obs, info = env.reset(seed=seed, options={"profile": profile})
    agent.begin_episode(seed)
    total, intent = 0.0, None
    done = False
    while not done:
        action = agent.act(obs, info)
        trace = getattr(agent, "last_trace", None)
        obs, reward, terminated, truncated, info = env.step(action)
        agent.observe(info["reactions"], info)
        total += float(reward)
        slate = info["slate"]
        match = float(intent_match(intent, cat, slate).mean()) if intent is not None else np.nan
        instruction = info["instruction"]
        per_turn = {
            "user_id": profile.user_id, "segment": profile.segment, "episode_seed": seed,
            "session": info["session"], "day": info["day"], "turn": info["turn"], "step": info["step"],
            "time_days": info["time_days"], "turn_reward": float(reward),
            "instruction": instruction, "intent": json.dumps(info["instruction_intent"]) if instruction else None,
            "left": info["left"], "return_gap_days": info["return_gap_days"], "churned": info["churned"],
            "intent_match": match, "slate_diversity": slate_diversity(cat, slate),
            "llm_fallback": info["llm_fallback"], "agent_trace": json.dumps(trace) if trace else None,
        }
        log.add(per_turn, {
            "position": np.arange(k), "item": slate.astype(np.int64), "topic": cat.topic[slate].astype(np.int16),
            "reaction": info["reactions"].astype(np.int8), "dwell_min": info["dwell_min"].astype(np.float32),
            "self_information": cat.self_information[slate],
        })
        if instruction is not None:
            intent = info["instruction_intent"]
        if info["left"]:
            intent = None
        done = terminated or truncated
    stats = info["episode_stats"]
    return {"user_id": profile.user_id, "segment": profile.segment, "episode_seed": seed,
            "total_reward": total, "churned": bool(info["churned"]), **stats}


def _flatten(log: _TurnLog, name: str) -> pd.DataFrame:
    df = log.frame()
    df.insert(0, "recommender", name)
    return df


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
    elif len(profiles) > cfg.n_users:
        profiles = [profiles[i] for i in np.sort(pop_rng.choice(len(profiles), cfg.n_users, replace=False))]
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
        log = _TurnLog()
        for profile, seed in zip(profiles, episode_seeds):
            try:
                episodes.append({"recommender": name, **run_episode(env, agent, profile, seed, log)})
            except BudgetExceeded as err:  # keep everything played so far; the unfinished episode has no row
                stopped = str(err)
                break
            if on_episode is not None:
                on_episode(name)
        frame = _flatten(log, name)
        trajectories.append(frame)
        if out_dir is not None:
            write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False),
                                 out_dir / "trajectories" / f"{_safe(name)}.parquet")
    traj = pd.concat(trajectories, ignore_index=True)
    eps = pd.DataFrame(episodes)
    summary = summarize(traj, eps)
    if out_dir is not None:
        write_parquet_atomic(pa.Table.from_pandas(eps, preserve_index=False), out_dir / "episodes.parquet")
        summary.to_csv(out_dir / "summary.csv", index=False)
    return SimulationResult(traj, eps, summary, profiles, stopped)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def load_world(config_path: str | Path | None, **overrides: Any) -> WorldConfig:
    """A world config from an optional YAML/JSON file, with CLI overrides on top."""
    data: dict[str, Any] = {}
    if config_path is not None:
        try:
            loaded = yaml.safe_load(Path(config_path).read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{config_path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_path}: a world config must be a mapping, got {type(loaded).__name__}")
        data = loaded
    return build(WorldConfig, f"world config{f' {config_path}' if config_path else ''}", data,
                 **{k: v for k, v in overrides.items() if v is not None})
