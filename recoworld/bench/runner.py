"""Run benchmark scenarios against recommenders: `recoworld bench --scenarios ... --agents ...`.

Inputs are checked before any scenario runs (`check_inputs`): unknown scenarios, agent
references that do not load a `Recommender`, `real-log` without `--data`, and
`llm-users-small` without a configured chat-model server are one `ConfigError` each.

Each scenario writes its own folder under the bench's `out` (a `recoworld simulate` run
folder with its manifest, so a rerun resumes; a creator scenario's trajectories and
episodes), then `run_bench` writes `results.json`, `leaderboard.md` and `quadrant.png`
(`recoworld.bench.report`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from recoworld import seeding
from recoworld.agents import check_recommender_names
from recoworld.bench.metrics import scenario_metrics
from recoworld.bench.offline import OfflineConfig, offline_accuracy
from recoworld.bench.scenarios import Scenario, get_scenarios
from recoworld.catalog import Catalog, cached_catalog
from recoworld.config import WorldConfig, deep_merge
from recoworld.errors import ConfigError
from recoworld.evaluation.run_folder import LLM_RUNTIME_FIELDS, catalog_fingerprint, fingerprint
from recoworld.llm.config import LLMConfig
from recoworld.population import UserProfile, draw_profiles
from recoworld.storage import write_parquet_atomic

#: Calibration effort when `--data` is a raw log rather than a `recoworld calibrate` folder.
REAL_LOG_MOMENT_BUDGET, REAL_LOG_MOMENT_USERS = 10, 100
#: The split a raw real-log is calibrated on: one global time cutoff, so nothing fitted reads the future
#: (`recoworld.data.split`); the scenario's version records it.
REAL_LOG_SPLIT = "global"


@dataclass
class ScenarioRun:
    scenario: Scenario
    config_hash: str
    metrics: dict[str, dict[str, Any]]  # agent -> metric -> {mean, ci95, n}
    out: Path
    n_users: int  # the users who played: a real log may hold fewer than the scenario asks for
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    agents: list[str]
    runs: list[ScenarioRun]
    offline: dict[str, dict[str, Any]]
    offline_config: OfflineConfig


def check_inputs(names: Sequence[str], agents: Sequence[str], data: Path | None = None,
                 llm: LLMConfig | None = None) -> list[Scenario]:
    """The scenarios, once everything they need is known to be there (else one `ConfigError`)."""
    scenarios = get_scenarios(list(names))
    if not agents:
        raise ConfigError("no agent named; give --agents, e.g. random,greedy")
    check_recommender_names(list(agents))
    kinds = {s.kind for s in scenarios}
    if "real-log" in kinds:
        if data is None:
            raise ConfigError("scenario real-log needs a log: give --data PATH (a MovieLens folder, RecBole atomic "
                              "files, interactions.csv/jsonl/parquet, or a `recoworld calibrate` output folder)")
        if not Path(data).exists():
            raise ConfigError(f"--data {data}: no such file or folder")
    if "llm" in kinds:
        from recoworld.llm.health import check_server

        check_llm(llm or LLMConfig())
        check_server(llm or LLMConfig())  # unreachable: an error before anything runs or falls back
    return scenarios


def check_llm(llm: LLMConfig) -> None:
    """`llm-users-small` runs on a configured OpenAI-compatible server; no server, no run (never a silent fallback)."""
    if llm.backend != "openai" or not llm.model:
        raise ConfigError("scenario llm-users-small needs a configured chat-model server: give --llm-base-url URL "
                          "and --llm-model NAME (or a --config whose llm block sets backend: openai and model); "
                          f"configured now: backend {llm.backend}, model {llm.model or 'none'}")


def run_bench(
    names: Sequence[str],
    agents: Sequence[str],
    out: str | Path,
    *,
    data: Path | None = None,
    llm: LLMConfig | None = None,
    n_users: int | None = None,
    seed: int | None = None,
    days: float | None = None,
    offline: OfflineConfig | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    on_episode: Callable[[str, str], None] | None = None,
) -> BenchResult:
    """Run every scenario in `names` with every agent and write the bench's files into `out`.

    `n_users`, `seed` and `days` replace every scenario's number of users, seed and horizon (a smaller,
    quicker run, or another draw; the config hash changes with them). `llm` is the chat model of LLM
    users (`llm-users-small`). `log(message)` is called as each stage starts (a scenario, its calibration's
    stages, a creator scenario's shards, the offline ranking, the files); `on_episode(scenario, agent)`
    after each episode of a simulated scenario.
    """
    from recoworld.bench.report import write_outputs

    agents = list(agents)
    scenarios = check_inputs(names, agents, data, llm)
    out = Path(out)
    say = log or (lambda _msg: None)
    runs = []
    scenarios = [scenario.varied(n_users, seed, days) for scenario in scenarios]  # all refused before any runs
    for scenario in scenarios:
        say(
            f"scenario {scenario.name} v{scenario.version}: {scenario.n_users} users, seed {scenario.seed}, "
            f"{scenario.world_config().horizon_days:g} days"
        )
        if scenario.kind == "creator":
            runs.append(_run_creator(scenario, agents, out / scenario.name, say))
        else:
            episode = (lambda agent, name=scenario.name: on_episode(name, agent)) if on_episode else None
            runs.append(_run_simulate(scenario, agents, out / scenario.name, data=data, llm=llm, overwrite=overwrite,
                                      say=say, on_episode=episode))
    offline_cfg = offline or OfflineConfig()
    say(f"offline ranking on a reference log ({offline_cfg.n_users} users, {offline_cfg.n_items} items)")
    result = BenchResult(agents, runs, offline_accuracy(agents, offline_cfg), offline_cfg)
    say("writing results.json, leaderboard.md and quadrant.png")
    write_outputs(result, out)
    return result


def _users_hash(profiles: list[UserProfile]) -> str:
    h = hashlib.sha256()
    for p in profiles:
        h.update(p.model_dump_json().encode())
    return f"{len(profiles)} users, {h.hexdigest()[:16]}"


def config_hash(scenario: Scenario, world: WorldConfig, catalog: Catalog, profiles: list[UserProfile]) -> str:
    """Hash of what fixes a scenario's numbers for given agents: its spec, resolved world, items and users."""
    return fingerprint({
        "scenario": scenario.model_dump(mode="json", exclude={"description"}),
        "world": world.model_dump(mode="json", exclude={"llm": LLM_RUNTIME_FIELDS, "expose_mindset": True}),
        "catalog": catalog_fingerprint(catalog),
        "users": _users_hash(profiles),
    })


def _run_simulate(scenario: Scenario, agents: list[str], out: Path, *, data: Path | None, llm: LLMConfig | None,
                  overwrite: bool, say: Callable[[str], None],
                  on_episode: Callable[[str], None] | None) -> ScenarioRun:
    from recoworld.evaluation.simulation import SimulationConfig, simulate

    notes: list[str] = []
    inputs: dict[str, str] = {"scenario": f"{scenario.name} v{scenario.version}"}
    if scenario.kind == "real-log":
        assert data is not None  # check_inputs
        calibrated = _calibrated(Path(data), out / "calibrated", scenario.seed,
                                 lambda stage: say(f"{scenario.name}: calibrating {data}: {stage}"))
        world = WorldConfig.model_validate(deep_merge(calibrated.world.model_dump(), scenario.world))
        catalog = calibrated.catalog
        profiles = draw_profiles(calibrated.profiles, scenario.n_users, seeding.rng(scenario.seed, seeding.BENCH_USERS))
        inputs["data"] = str(data)
        split = calibrated.report.get("data", {}).get("split", "per_user (a calibration older than the split field)")
        notes.append(f"{len(profiles)} of the log's {len(calibrated.profiles)} users, calibrated from {data} "
                     f"({split} split)")
    else:
        world = scenario.world_config(**({"llm": llm.model_dump()} if scenario.kind == "llm" and llm else {}))
        catalog = cached_catalog(world.catalog)
        profiles = scenario.draw_profiles(catalog)
    if scenario.kind == "llm":
        world = world.model_copy(update={"llm": world.llm.for_run(out)})
        check_llm(world.llm)
        notes.append(f"LLM users on {world.llm.base_url or 'the default OpenAI URL'}, model {world.llm.model}; "
                     f"cache {world.llm.cache_path}")
    cfg = SimulationConfig(n_users=len(profiles), agents=agents, seed=scenario.seed, world=world,
                           population=scenario.population)
    say(f"{scenario.name}: simulating {len(profiles)} users x {len(agents)} agents")
    result = simulate(cfg, catalog=catalog, out=out, profiles=profiles, overwrite=overwrite, inputs=inputs,
                      on_episode=on_episode)
    if result.stopped:
        notes.append(f"stopped early: {result.stopped}")
    return ScenarioRun(scenario, config_hash(scenario, world, catalog, profiles),
                       scenario_metrics(scenario, result.trajectories, result.episodes), out, len(profiles), notes)


def _calibrated(data: Path, out: Path, seed: int, on_stage: Callable[[str], None]) -> Any:
    """A `recoworld calibrate` folder as it is, or a raw log calibrated now (small budget) into `out`."""
    from recoworld.calibration import CalibrationConfig, calibrate, load_calibration, save_calibration
    from recoworld.data import DataConfig

    if (data / "calibration.json").is_file():
        return load_calibration(data)
    result = calibrate(CalibrationConfig(data=DataConfig(path=data, seed=seed, split=REAL_LOG_SPLIT),
                                         moment_budget=REAL_LOG_MOMENT_BUDGET, moment_users=REAL_LOG_MOMENT_USERS,
                                         seed=seed), on_stage=on_stage)
    save_calibration(result, out)
    return result


def _run_creator(scenario: Scenario, agents: list[str], out: Path, say: Callable[[str], None]) -> ScenarioRun:
    """The study creator machinery, in this process: `prepare` then every shard with `run_shard`."""
    from recoworld.studies.runner import prepare, run_shard
    from recoworld.studies.spec import StudySpec

    world = scenario.world_config()
    spec = StudySpec(name=scenario.name, seed=scenario.seed, n_users=scenario.n_users,
                     shard_size=scenario.shard_size, recommenders=agents, world=world,
                     population=scenario.population, creator=scenario.creator)
    setup = prepare(spec)
    trajs, eps, profiles = [], [], []
    for i in range(setup.n_shards):
        say(f"{scenario.name}: shared platform {i + 1} of {setup.n_shards} ({len(agents)} agents)")
        shard = setup.users.shard(i)
        traj, ep = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, shard, setup.base)
        trajs.append(traj)
        eps.append(ep)
        profiles += shard.profiles(setup.base)  # for the hash: drawn again, the same users
    traj_table = pa.concat_tables(trajs)
    eps_frame = pd.concat([e.to_pandas() for e in eps], ignore_index=True)
    write_parquet_atomic(traj_table, out / "trajectories.parquet")
    write_parquet_atomic(pa.Table.from_pandas(eps_frame, preserve_index=False), out / "episodes.parquet")
    notes = [f"creator {scenario.creator.name!r}: {len(setup.new_items)} items on {setup.target_topic!r} for "
             f"segment {scenario.creator.target_segment!r}; {setup.n_shards} shared platforms of up to "
             f"{scenario.shard_size} users"] if scenario.creator else []
    return ScenarioRun(scenario, config_hash(scenario, world, setup.catalog, profiles),
                       scenario_metrics(scenario, traj_table.to_pandas(), eps_frame), out, len(profiles), notes)
