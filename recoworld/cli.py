"""The `recoworld` command line."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recoworld.errors import RecoWorldError

app = typer.Typer(help="RecoWorld: a simulation environment for agentic recommender systems.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
if not console.is_terminal:  # piped or in CI: do not squeeze the summary table into 80 columns
    console = Console(width=180)


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {err}")
    return typer.Exit(code=2)


@app.command()
def simulate(
    users: Annotated[int, typer.Option(help="number of simulated users")] = 200,
    agents: Annotated[str, typer.Option(help="comma-separated recommenders")] = "random,popular,greedy,diverse,instruct",
    days: Annotated[float | None, typer.Option(help="horizon in days")] = None,
    slate_size: Annotated[int | None, typer.Option(help="items per slate")] = None,
    candidates: Annotated[int | None, typer.Option(help="candidates per turn")] = None,
    seed: Annotated[int, typer.Option(help="study seed; the same seed gives the same results")] = 0,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON)")] = None,
    population: Annotated[Path | None, typer.Option(help="population spec (YAML)")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog Parquet file")] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/simulate"),
) -> None:
    """Run a population of users against one or several recommenders."""
    from recoworld.catalog import Catalog
    from recoworld.metrics import daily_activity
    from recoworld.population import PopulationSpec
    from recoworld.report import plot_retention, summary_table
    from recoworld.simulation import SimulationConfig, load_world
    from recoworld.simulation import simulate as run

    try:
        world = load_world(config, horizon_days=days, slate_size=slate_size, n_candidates=candidates)
        spec = PopulationSpec.from_yaml(population) if population else PopulationSpec.default()
        cat = Catalog.from_parquet(catalog) if catalog else None
        names = [a.strip() for a in agents.split(",") if a.strip()]
        cfg = SimulationConfig(n_users=users, agents=names, seed=seed, world=world, population=spec)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise _fail(err) from None

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        tasks = {name: progress.add_task(f"{name:>10}", total=users) for name in names}
        try:
            result = run(cfg, catalog=cat, out=out, on_episode=lambda name: progress.advance(tasks[name]))
        except RecoWorldError as err:
            raise _fail(err) from None

    console.print(summary_table(result.summary, title=f"RecoWorld: {users} users, {world.horizon_days:g} days"))
    daily = daily_activity(result.trajectories, math.ceil(world.horizon_days))
    plot = plot_retention(result.summary, daily, out / "retention.png")
    console.print(f"trajectories: {out / 'trajectories'}  summary: {out / 'summary.csv'}  plot: {plot}")


@app.command("catalog")
def make_catalog(
    out: Annotated[Path, typer.Option(help="Parquet file to write")] = Path("catalog.parquet"),
    n_items: Annotated[int, typer.Option(help="number of items")] = 3000,
    seed: Annotated[int, typer.Option(help="catalog seed")] = 0,
) -> None:
    """Generate a synthetic catalog and save it as Parquet."""
    from recoworld.catalog import generate_catalog
    from recoworld.config import CatalogConfig, build

    try:
        cat = generate_catalog(build(CatalogConfig, "catalog config", n_items=n_items, seed=seed))
    except RecoWorldError as err:
        raise _fail(err) from None
    path = cat.to_parquet(out)
    console.print(f"wrote {len(cat)} items, {cat.n_topics} topics to {path}")


if __name__ == "__main__":
    app()
