"""`recoworld distill`: a fast surrogate fitted to an LLM user's decisions, and how well they agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import console, fail, hold, names, outputs, stages
from recoworld.cli.options import agents_option, seed_option, users_option, with_llm_flags
from recoworld.errors import ConfigError, RecoWorldError


@with_llm_flags
def distill(
    ctx: typer.Context,
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="a `recoworld simulate --user-backend llm ... --out RUN` folder: the LLM decisions to distill",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="output directory: world.yaml, profiles.jsonl, catalog.parquet, "
            "calibration.json, agreement.csv, agreement.png"
        ),
    ] = Path("runs/distilled"),
    holdout: Annotated[
        float, typer.Option(help="share of the users held out of the fit, for the agreement report")
    ] = 0.3,
    boot: Annotated[int, typer.Option(min=10, help="bootstrap resamples of the held-out users")] = 200,
    seed: Annotated[int, seed_option(": the held-out draw, the bootstrap and --collect's users")] = 0,
    min_decisions: Annotated[
        int, typer.Option(min=1, help="fewest LLM item decisions to fit on (fewer: an error)")
    ] = 200,
    rank_check: Annotated[
        bool,
        typer.Option(
            "--rank-check",
            help="rank the run's recommenders (4 or more) under "
            "the LLM users and the surrogate, report Spearman's rho (ranking.csv); "
            "without the flag, done when the run has 4 or more",
        ),
    ] = False,
    collect: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="instead of --from: run LLM users of --config's world "
            "in batches (under OUT/collect) until N decisions are logged or its "
            "llm budget stops them, then fit",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="--collect: the world config (YAML/JSON); its llm block sets the model, budget and concurrency"
        ),
    ] = None,
    agents: Annotated[str, agents_option("; --collect: those the LLM users meet")] = "random,popular,greedy,instruct",
    batch_users: Annotated[int, typer.Option(min=1, help="--collect: users in the first batch")] = 8,
    users: Annotated[int, users_option(" --collect simulates at most, in all")] = 10_000,
    neural: Annotated[
        bool,
        typer.Option(
            "--neural",
            help="also train the small torch choice model and add its "
            "column (item-level measures) to the agreement report",
        ),
    ] = False,
    llm_flags: dict[str, object] | None = None,
) -> None:
    """Fit the parametric user to an LLM user's decisions (a fast surrogate) and report their agreement."""
    from recoworld.calibration.agreement import table
    from recoworld.calibration.distill import distill_run

    if (from_ is None) == (collect is None):
        raise fail(ConfigError("give either --from RUN or --collect N --config WORLD"))
    if users < 1:
        raise fail(ConfigError(f"--users {users}: --collect needs at least 1 user"))
    try:
        hold(ctx, out)
        runs: Path | list[Path] | None = from_
        if collect is not None:
            from recoworld.agents import check_recommender_names
            from recoworld.calibration.distill import collect as collect_runs
            from recoworld.evaluation.simulation import load_world
            from recoworld.llm.health import check_server

            world = load_world(config, user_backend="llm", llm=llm_flags)
            agent_names = names(agents)
            check_recommender_names(agent_names)
            check_server(world.llm)

            def progress(run: Path, n: int) -> None:
                console.print(f"{run}: {n} LLM decisions so far (of {collect})", highlight=False)

            runs, stopped = collect_runs(
                world, collect, out, agent_names, seed, batch_users, users, on_batch=progress
            )
            if stopped:
                console.print(f"[yellow]collection stopped early:[/yellow] {stopped}")
        assert runs is not None  # exactly one of --from and --collect, checked above
        with stages() as stage:
            result, report = distill_run(
                runs, out, holdout, seed, boot, min_decisions, rank_check or None, neural, on_stage=stage
            )
    except ModuleNotFoundError as err:
        if err.name != "torch":
            raise
        raise fail(RecoWorldError("--neural trains a torch model: pip install 'recoworld[torch]'")) from None
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print(table(report), markup=False, highlight=False)
    written = ["world.yaml", "profiles.jsonl", "catalog.parquet", "calibration.json", "agreement.csv", "agreement.png"]
    if (out / "ranking.csv").is_file() and "ranking" in result.report:
        import pandas as pd

        from recoworld.calibration.ranking import table as ranking_table

        console.print("policy ranking, LLM users vs surrogate (Spearman's rho, 95% bootstrap CI over users):")
        console.print(ranking_table(pd.read_csv(out / "ranking.csv")), markup=False, highlight=False)
        written.append("ranking.csv")
    if neural:
        written.append("neural.pt")
    console.print(
        f"{result.report['decisions']['fit']} decisions fitted, {result.report['decisions']['held_out']} held out",
        highlight=False,
    )
    outputs(
        out,
        written,
        then=f"use it: recoworld simulate --calibrated {out} (its users), or `user_backend: surrogate` with "
        f"`surrogate: {out}` in a world config (any users)",
    )
