"""`recoworld simulate`: a population of users against one or several recommenders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import TaskID

from recoworld.cli.common import advance, bars, console, fail, hold, names, outputs, say, stages, validated, warn
from recoworld.cli.options import (
    DATA_HELP,
    EMBEDDING_HELP,
    CalibratedOption,
    OverwriteOption,
    agents_option,
    data_config,
    days_option,
    seed_option,
    users_option,
    with_llm_flags,
)
from recoworld.errors import RecoWorldError


@with_llm_flags
def simulate(
    ctx: typer.Context,
    users: Annotated[
        int, users_option(" simulated; a --data log or --calibrated world with fewer: all of them, with a note")
    ] = 200,
    agents: Annotated[str, agents_option()] = "random,popular,greedy,diverse,instruct",
    days: Annotated[float | None, days_option("; default: the world config's horizon_days")] = None,
    slate_size: Annotated[int | None, typer.Option(help="items per slate")] = None,
    candidates: Annotated[int | None, typer.Option(help="candidates per turn")] = None,
    seed: Annotated[int, seed_option()] = 0,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON)")] = None,
    population: Annotated[Path | None, typer.Option(help="population spec (YAML)")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog Parquet file")] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    embedding: Annotated[str, typer.Option(help=EMBEDDING_HELP)] = "auto",
    calibrated: CalibratedOption = None,
    out: Annotated[Path, typer.Option(help="output directory; rerun to resume")] = Path("runs/simulate"),
    overwrite: OverwriteOption = False,
    user_backend: Annotated[
        str | None,
        typer.Option(
            help="simulated users: parametric, llm, or surrogate (a distilled LLM user: `surrogate: DIR` in --config)",
        ),
    ] = None,
    judge: Annotated[
        bool,
        typer.Option(
            help="score instruction following with an LLM judge over the logged "
            "turns, on the --llm* model (cached like every LLM call)"
        ),
    ] = False,
    llm_flags: dict[str, object] | None = None,
) -> None:
    """Run a population of users against one or several recommenders."""
    from recoworld.agents import LLM_AGENTS, check_recommender_names
    from recoworld.calibration.worlds import load_calibrated, real_world_for, simulation_inputs
    from recoworld.catalog import Catalog
    from recoworld.evaluation.llm_run import llm_ready
    from recoworld.evaluation.metrics import daily_activity
    from recoworld.evaluation.report import plot_retention, summary_table
    from recoworld.evaluation.simulation import SimulationConfig, load_world
    from recoworld.evaluation.simulation import simulate as run
    from recoworld.population import PopulationSpec

    try:
        overrides = {
            "horizon_days": days,
            "slate_size": slate_size,
            "n_candidates": candidates,
            "user_backend": user_backend,
            "llm": llm_flags,
        }
        if calibrated is not None and (data or catalog or population):
            raise RecoWorldError(
                "--calibrated brings its own catalog and users; drop --data, --catalog and --population"
            )
        fitted = load_calibrated(calibrated, config, **overrides) if calibrated is not None else None
        world = fitted.world if fitted is not None else load_world(config, **overrides)
        if data is not None and (catalog or population):
            raise RecoWorldError("--data builds the catalog and the users; drop --catalog and --population")
        if data is None and embedding != "auto":
            raise RecoWorldError(f"--embedding {embedding} applies to --data only; give --data or drop --embedding")
        spec = PopulationSpec.from_yaml(population) if population else PopulationSpec.default()
        agent_names = names(agents)
        if not agent_names:
            raise RecoWorldError(f"--agents {agents!r}: name at least one recommender, e.g. --agents greedy")
        check_recommender_names(agent_names)
        world = llm_ready(
            world, out, calls_model=world.user_backend == "llm" or judge or any(n in LLM_AGENTS for n in agent_names)
        )
        cfg = validated(
            SimulationConfig,
            {"n_users": "--users", "agents": "--agents", "seed": "--seed"},
            {
                "n_users": users,
                "agents": agent_names,
                "seed": seed,
                "world": world,
                "population": spec,
                "judge": world.llm if judge else None,
            },
        )
        real = None
        if data is not None:
            with stages(f"loading {data}", checks_first=True):
                real = real_world_for(data_config(data, embedding, seed), None)
            console.print(real.describe(), highlight=False)
        cat, profiles = simulation_inputs(
            world,
            spec,
            catalog=Catalog.from_parquet(catalog) if catalog else None,
            real=real,
            fitted=fitted,
            population=f"--population {population}" if population else None,
        )
        notes = []
        if profiles is not None and users > len(profiles):
            notes.append(f"--users {users}: the users' source holds {len(profiles)}; all {len(profiles)} simulated")
            users = len(profiles)
        elif population is not None and sum(s.size for s in spec.segments) != users:
            shares = " + ".join(f"{s.size} {s.name}" for s in spec.segments)
            counts = " + ".join(str(n) for n in spec.allocate(users))
            notes.append(f"--population {population}: segment sizes {shares} are shares of --users {users}: {counts}")
        hold(ctx, out)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None

    for line in notes:
        console.print(f"[yellow]note:[/yellow] {escape(line)}", soft_wrap=True, highlight=False)  # paths may hold [
    progress = bars()
    tasks: dict[str, TaskID] = {}

    def episode(name: str) -> None:  # bars start with the first episode: a refused --out prints its error alone
        if not tasks:
            progress.start()
        if name not in tasks:
            tasks[name] = progress.add_task(f"{name:>10}", total=users)
        advance(progress, tasks[name])

    inputs = {
        k: str(v)
        for k, v in {
            "config": config,
            "population": population,
            "catalog": catalog,
            "data": data,
            "calibrated": calibrated,
        }.items()
        if v is not None
    }
    try:
        result = run(cfg, catalog=cat, out=out, profiles=profiles, on_episode=episode, overwrite=overwrite,
                     inputs=inputs, also_writes=["retention.png"])
    except RecoWorldError as err:
        raise fail(err) from None
    finally:
        if tasks:
            progress.stop()
    if result.resumed:
        console.print(
            f"resumed {out}: {', '.join(result.resumed)} finished earlier, not recomputed",
            soft_wrap=True,
            highlight=False,
        )

    from recoworld.validity.bands import band_warnings

    console.print(summary_table(result.summary, title=f"RecoWorld: {users} users, {world.horizon_days:g} days"))
    for row in result.summary[result.summary["fallback_turns"] > 0].itertuples():
        say(f"{row.recommender}: {row.fallback_turns} turns decided by its fallback (summary.csv fallback_turns)")
    for line in band_warnings(result.summary, world.horizon_days):
        warn(line)
    daily = daily_activity(result.trajectories, math.ceil(world.horizon_days))
    plot = plot_retention(result.summary, daily, out / "retention.png")
    if world.user_backend == "llm":
        from recoworld.llm import shared_backend

        turns = result.trajectories.drop_duplicates(["recommender", "user_id", "step"])
        fallbacks = int(turns["llm_fallback"].sum())
        say(f"{shared_backend(world.llm).usage.describe()}; {fallbacks} of {len(turns)} turns "
            "fell back to the parametric user")
    elif judge or any(name in LLM_AGENTS for name in agent_names):  # LLM recommenders and the judge share it
        from recoworld.llm import shared_backend

        say(shared_backend(world.llm).usage.describe())
    if result.stopped:
        console.print(f"[yellow]stopped early:[/yellow] {result.stopped}")
    outputs(out, ["trajectories/", "episodes.parquet", "summary.csv", plot], then=f"report: recoworld report {out}")
