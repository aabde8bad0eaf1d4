"""`recoworld bench`: RecoWorld-Bench's versioned, seeded scenarios, a leaderboard and a quadrant plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import console, fail, hold, names
from recoworld.cli.options import DATA_HELP, agents_option, days_option, seed_option, users_option, with_llm_flags
from recoworld.errors import RecoWorldError


@with_llm_flags
def bench(
    ctx: typer.Context,
    list_: Annotated[bool, typer.Option("--list", help="list the scenarios (name, version, description)")] = False,
    scenarios: Annotated[str, typer.Option(help="comma-separated scenarios (see --list)")] = "retention-30d",
    agents: Annotated[str, agents_option()] = "random,popular,greedy,diverse,instruct",
    out: Annotated[
        Path,
        typer.Option(help="output directory: results.json, leaderboard.md, quadrant.png and one folder per scenario"),
    ] = Path("runs/bench"),
    data: Annotated[
        Path | None, typer.Option(help="real-log: " + DATA_HELP + "; or a `recoworld calibrate` folder")
    ] = None,
    users: Annotated[
        int | None,
        users_option(" simulated per scenario (default: each scenario's own; another number changes its config hash)"),
    ] = None,
    seed: Annotated[
        int | None, seed_option(" (default: each scenario's own; another seed changes its config hash)")
    ] = None,
    days: Annotated[
        float | None, days_option("; default: each scenario's own (another horizon changes its config hash)")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="world config whose llm block configures llm-users-small")] = None,
    overwrite: Annotated[bool, typer.Option(help="a scenario folder holds another run: replace it")] = False,
    llm_flags: dict[str, object] | None = None,
) -> None:
    """RecoWorld-Bench: run versioned, seeded scenarios; write results.json, leaderboard.md and quadrant.png.

    The --llm* flags configure the LLM users of llm-users-small, by the same rule as `simulate`'s."""
    import time

    from recoworld.bench import SCENARIOS, run_bench
    from recoworld.bench.runner import check_inputs

    if list_:
        for s in SCENARIOS.values():
            console.print(f"{s.name:<18} v{s.version:<5} {s.description}", soft_wrap=True, highlight=False)
        return
    try:
        from recoworld.evaluation.simulation import load_world

        scenario_names, agent_names = names(scenarios), names(agents)
        world_llm = load_world(config, llm=llm_flags).llm
        check_inputs(scenario_names, agent_names, data, world_llm)
        hold(ctx, out)
        start = time.perf_counter()
        result = run_bench(
            scenario_names,
            agent_names,
            out,
            data=data,
            llm=world_llm,
            n_users=users,
            seed=seed,
            days=days,
            overwrite=overwrite,
            log=lambda msg: console.print(msg, soft_wrap=True, highlight=False),
        )
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print((out / "leaderboard.md").read_text(), soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"{len(result.runs)} scenario(s) x {len(result.agents)} agent(s) in "
        f"{time.perf_counter() - start:.0f} s; results: {out / 'results.json'}  leaderboard: "
        f"{out / 'leaderboard.md'}  quadrant plot: {out / 'quadrant.png'}",
        soft_wrap=True,
        highlight=False,
    )
    from recoworld.evaluation.html_report import write_report as write_html

    for run in result.runs:  # one HTML report (summary, plots, journeys) per scenario folder
        try:
            console.print(f"report {run.scenario.name}: {write_html(run.out)}", soft_wrap=True, highlight=False)
        except RecoWorldError as err:
            console.print(f"[yellow]no report for {run.scenario.name}:[/yellow] {err}", soft_wrap=True)
