"""`recoworld bench`: RecoWorld-Bench's versioned, seeded scenarios, a leaderboard and a quadrant plot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recoworld.cli.common import clocked, console, elapsed, fail, hold, names, note, outputs, stages, warn
from recoworld.cli.options import DATA_HELP, agents_option, days_option, seed_option, users_option, with_llm_flags
from recoworld.errors import RecoWorldError

if TYPE_CHECKING:
    import pandas as pd
    from rich.status import Status


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
    from recoworld.bench import SCENARIOS, run_bench
    from recoworld.bench.report import LEADERBOARD, QUADRANT, RESULTS
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
        with stages() as stage:
            agent = Episodes(stage.status)

            def log(message: str) -> None:
                agent.end()
                stage(message)

            result = run_bench(scenario_names, agent_names, out, data=data, llm=world_llm, n_users=users, seed=seed,
                               days=days, overwrite=overwrite, log=log, on_episode=agent)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print((out / LEADERBOARD).read_text(), soft_wrap=True, highlight=False, markup=False)
    from recoworld.validity.bands import band_warnings

    for run in result.runs:
        for line in band_warnings(bench_summary(run.metrics), run.scenario.world_config().horizon_days,
                                  where=f"{run.scenario.name}: "):
            warn(line)
    from recoworld.evaluation.html_report import write_report as write_html

    reports = []
    with stages() as stage:
        for run in result.runs:  # one HTML report (summary, plots, journeys) per scenario folder
            stage(f"report of {run.scenario.name}")
            try:
                reports.append(write_html(run.out))
            except RecoWorldError as err:
                console.print(f"[yellow]no report for {run.scenario.name}:[/yellow] {err}", soft_wrap=True)
    outputs(out, [RESULTS, LEADERBOARD, QUADRANT, *reports],
            then=f"{len(result.runs)} scenario(s) x {len(result.agents)} agent(s) in "
                 f"{elapsed(time.perf_counter() - start)}")


def bench_summary(metrics: dict[str, dict[str, dict[str, float | None]]]) -> pd.DataFrame:
    """A scenario's {agent: {metric: {mean, ...}}} as a summary frame (a row per agent, a column per metric's
    mean), the shape the realism bands read; a metric the scenario does not report is not a column."""
    import pandas as pd

    rows = [{"recommender": agent, **{m: v["mean"] for m, v in values.items()}} for agent, values in metrics.items()]
    return pd.DataFrame(rows).astype(float, errors="ignore")


class Episodes:
    """Per-agent progress inside a scenario, from `run_bench`'s `on_episode(scenario, agent)`: the spinner
    counts users; a line every 50 users without a terminal, and one with the time when the agent is done
    (agents run one after another, so the next one's first episode, or the next stage, ends it)."""

    def __init__(self, status: Status | None) -> None:
        self.status, self.key, self.users, self.since = status, "", 0, 0.0

    def __call__(self, scenario: str, agent: str) -> None:
        key = f"{scenario} / {agent}"
        if key != self.key:
            self.end()
            self.key, self.users, self.since = key, 0, time.perf_counter()
        self.users += 1
        if self.status is not None:
            self.status.update(f"{key}: {self.users} users")
        if self.users % 50 == 0:
            note(f"{key}: {self.users} users in {elapsed(time.perf_counter() - self.since)}")

    def end(self) -> None:
        if self.key:
            clocked(f"{self.key}: {self.users} users done in {elapsed(time.perf_counter() - self.since)}")
            self.key = ""
