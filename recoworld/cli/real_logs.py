"""The commands that hold a world against a real log: `calibrate`, `fidelity`, `validate` and `transfer`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import (
    Stages,
    advance,
    bars,
    console,
    fail,
    hold,
    names,
    note,
    outputs,
    stages,
    validated,
    warn,
    writable_dir,
)
from recoworld.cli.options import (
    AttentionOption,
    DataOption,
    DriftOption,
    EmbeddingOption,
    MaxDaysOption,
    PassesOption,
    agents_option,
    calibrated_option,
    data_config,
    days_option,
    one_agent,
    seed_option,
    split_option,
    test_fraction_option,
    users_option,
    with_llm_flags,
)
from recoworld.errors import RecoWorldError

LLM_EXTRA = "LLM users need the local extra (pip install 'recoworld[local]')"
CONTINUATION_HELP = (
    "out of sample, each simulated user starts where they stood at the cutoff (churned, or back after the "
    "residual gap of the world's return model); off: everyone opens a session on day 0"
)
CIRCULARITY_HELP = (
    "also calibrate a world whose mf representation is learned from one half of the users, judged on the other "
    "half (a simulator living in the ALS space may favour ALS)"
)


def calibrate(
    ctx: typer.Context,
    data: DataOption,
    out: Annotated[
        Path, typer.Option(help="output directory: world.yaml, profiles.jsonl, catalog.parquet, calibration.json")
    ] = Path("runs/calibrated"),
    embedding: EmbeddingOption = "auto",
    split: Annotated[str, split_option("; only the train part is fitted")] = "global",
    test_fraction: Annotated[float, test_fraction_option()] = 0.2,
    budget: Annotated[int, typer.Option(help="evaluation budget of the simulated-moments fit")] = 60,
    attention: AttentionOption = "none",
    drift: DriftOption = "none",
    seed: Annotated[int, seed_option(": the sampled negatives and the simulated users")] = 0,
) -> None:
    """Fit the parametric user to a real log; write a world config, the users and the fit report."""
    from recoworld.calibration import CalibrationConfig, save_calibration
    from recoworld.calibration import calibrate as run
    from recoworld.calibration.calibrated import FILES
    from recoworld.calibration.report import calibration_table, fit_check_table, folds_table

    try:
        data_cfg = data_config(
            data, embedding, seed, split=split, test_fraction=test_fraction, attention=attention, drift=drift
        )
        cfg = validated(
            CalibrationConfig,
            {"moment_budget": "--budget", "seed": "--seed"},
            {"data": data_cfg, "moment_budget": budget, "seed": seed},
        )
        hold(ctx, out)
        with stages(checks_first=True) as stage:  # a log that cannot be calibrated: one error line

            def moments(n: int, best: float) -> None:
                if stage.status is not None:
                    stage.status.update(f"simulated moments: {n}/{cfg.moment_budget} (best objective {best:.3g})")
                if n % 10 == 0:
                    note(f"simulated moments: {n}/{cfg.moment_budget} evaluations, best objective {best:.3g}")

            result = run(cfg, on_eval=moments, on_stage=stage)
            stage("writing the calibrated world")
            path = save_calibration(result, out)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print(calibration_table(result.report))
    console.print(folds_table(result.report))
    console.print(fit_check_table(result.report))
    for warning in result.report.get("warnings", []):
        warn(warning)
    outputs(path, FILES, then=f"use it: recoworld simulate --calibrated {path}")


@with_llm_flags
def fidelity(
    data: DataOption,
    embedding: EmbeddingOption = "auto",
    split: Annotated[str, split_option()] = "global",
    test_fraction: Annotated[float, test_fraction_option()] = 0.2,
    negatives: Annotated[int, typer.Option(help="sampled negatives per user; 0 ranks every unseen item")] = 99,
    users: Annotated[int | None, users_option(": the first N eligible users; default: all of them")] = None,
    llm_users: Annotated[int, typer.Option(help="also score LLM users on the first N users (slow); 0 = skip")] = 0,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON): choice model, LLM backend")] = None,
    calibrated: Annotated[Path | None, calibrated_option("; scored with its own split")] = None,
    passes: PassesOption = None,
    seed: Annotated[int, seed_option(": the negatives, the simulated users and tie-breaks")] = 0,
    out: Annotated[
        Path, typer.Option(help="output directory: fidelity.csv, fidelity.json, fidelity_per_user.parquet")
    ] = Path("runs/fidelity"),
    llm_flags: dict[str, object] | None = None,
) -> None:
    """How well simulated users, initialised from a real train log, rank the real held-out interactions.

    Every test user is accounted for: warm users (train history, new held-out items) and cold-start
    users (no train history, scored with the population's prior profile) are separate row groups of
    fidelity.csv, and fidelity.json holds the counts, the split and its leakage."""
    import pandas as pd

    from recoworld.calibration.worlds import load_calibrated, real_world_for
    from recoworld.evaluation.fidelity import DEFAULT_PASSES, FidelityConfig, eval_population, evaluate, fidelity_table
    from recoworld.evaluation.fidelity_run import fidelity_runs, write_fidelity
    from recoworld.evaluation.llm_run import llm_ready
    from recoworld.evaluation.simulation import load_world

    try:
        world = load_world(config, llm=llm_flags)
        cfg = validated(
            FidelityConfig,
            {"n_negatives": "--negatives", "max_users": "--users", "seed": "--seed"},
            {"n_negatives": negatives, "max_users": users, "seed": seed},
        )
        if llm_users < 0:
            raise RecoWorldError(f"--llm-users {llm_users}: give 0 (no LLM users) or a positive number of users")
        if passes is not None and passes < 1:
            raise RecoWorldError(f"--passes {passes}: give at least 1 pass of shuffled slates")
        fitted = load_calibrated(calibrated, config) if calibrated is not None else None
        with stages(f"loading {data}", checks_first=True):
            real = real_world_for(
                data_config(data, embedding, seed, split=split, test_fraction=test_fraction), fitted, calibrated
            )
        console.print(real.describe(), highlight=False)
        if fitted is not None:
            world, real.catalog, real.profiles = fitted.world, fitted.catalog, fitted.profiles
        world = llm_ready(world, out, calls_model=llm_users > 0)
        population = eval_population(real.catalog, real.profiles, real.split.train, real.split.test, cfg)
        if not population.users:
            raise RecoWorldError(f"no test user to score ({population.describe()}); raise --test-fraction")
        passes = DEFAULT_PASSES if passes is None else passes
        console.print(population.describe(), soft_wrap=True, highlight=False)
        runs, llm = fidelity_runs(real.catalog, world, population, passes, llm_users)
    except ImportError as err:
        raise fail(RecoWorldError(f"{LLM_EXTRA}: {err}")) from None
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    results = []
    with bars() as progress:
        # A bar's clock starts with its scorer's first user, not with the first scorer's: they run one by one.
        tasks = {
            s.name: progress.add_task(f"{s.name:>26}", total=len(group), start=False)
            for scorers, group in runs
            for s in scorers
        }
        order, stage = list(tasks), Stages()

        def begin(i: int) -> None:
            if i < len(order):
                progress.start_task(tasks[order[i]])
                stage(f"scoring {progress.tasks[tasks[order[i]]].total:.0f} users: {order[i]}")

        def scored(name: str) -> None:
            advance(progress, tasks[name])
            if progress.tasks[tasks[name]].finished:
                stage.end()
                begin(order.index(name) + 1)

        begin(0)
        for scorers, group in runs:
            try:
                results.append(evaluate(group, scorers, cfg, on_user=scored))
            except RecoWorldError as err:
                raise fail(err) from None
    summary = pd.concat([r[0] for r in results], ignore_index=True)
    per_user = pd.concat([r[1] for r in results], ignore_index=True)
    console.print(fidelity_table(summary, cfg.k))
    if llm is not None:  # how many slates the model decided, and how many fell back to the parametric user
        console.print(f"LLM users: {dict(getattr(llm.simulator, 'stats', {}))}", highlight=False)
    outputs(out, write_fidelity(out, summary, per_user, population, real.split, cfg, passes, test_fraction))


VALIDATE_FLAGS = {
    "users": "--users",
    "days": "--days",
    "max_days": "--max-days",
    "agent": "--agents",
    "candidates": "--candidate-pool",
    "passes": "--passes",
    "fidelity_users": "--fidelity-users",
    "llm_users": "--llm-users",
    "llm_max_steps": "--llm-turns",
    "continuation": "--continuation",
    "seed": "--seed",
}


@with_llm_flags
def validate(
    data: DataOption,
    embedding: EmbeddingOption = "auto",
    users: Annotated[int, users_option(": real users compared, drawn with the seed")] = 200,
    days: Annotated[float | None, days_option("; default: the log's span, capped")] = None,
    max_days: MaxDaysOption = 60.0,
    agents: Annotated[
        str,
        agents_option(
            "; one, the recommender the simulated users meet (random: uniform exposure, "
            "what a log without impressions identifies)"
        ),
    ] = "random",
    candidate_pool: Annotated[
        str,
        typer.Option(help="uniform: candidates drawn uniformly from the catalog; world: each world's retrieval"),
    ] = "uniform",
    passes: PassesOption = None,
    fidelity_users: Annotated[int, typer.Option(help="users of the held-out ranking fidelity")] = 100,
    llm_users: Annotated[int, typer.Option(help="also simulate N LLM users (world config's llm); 0 = skip")] = 0,
    llm_turns: Annotated[int, typer.Option(help="turns per LLM user")] = 20,
    continuation: Annotated[bool, typer.Option(help=CONTINUATION_HELP)] = True,
    config: Annotated[Path | None, typer.Option(help="world config (YAML or JSON) of the default world")] = None,
    calibrated: Annotated[Path | None, calibrated_option("; compared next to the default")] = None,
    split: Annotated[str, split_option("; a --calibrated world's own split wins")] = "global",
    test_fraction: Annotated[float, test_fraction_option(": the out-of-sample period")] = 0.2,
    seed: Annotated[int, seed_option(": the users drawn, the simulation and the negatives")] = 0,
    out: Annotated[
        Path, typer.Option(help="output directory: validity.csv, validity.png (out of sample), validity_in_sample.png")
    ] = Path("runs/validate"),
    llm_flags: dict[str, object] | None = None,
) -> None:
    """Compare simulated and real users on the same users and items: stylized facts, distances, plots.

    The headline column is out of sample: the period after the split's cutoff, which neither the
    calibration nor the profiles saw, simulated from the cutoff. The in-sample column (the train
    period, which calibration fitted) is second."""
    from recoworld.calibration.worlds import load_calibrated, real_world_for
    from recoworld.evaluation.fidelity import DEFAULT_PASSES
    from recoworld.evaluation.llm_run import llm_ready
    from recoworld.evaluation.simulation import load_world
    from recoworld.validity import SimWorld, ValidityConfig, validity_table, write_validity
    from recoworld.validity import validate as run

    try:
        cfg = validated(
            ValidityConfig,
            VALIDATE_FLAGS,
            {
                "users": users,
                "days": days,
                "max_days": max_days,
                "agent": one_agent(agents),
                "candidates": candidate_pool,
                "passes": DEFAULT_PASSES if passes is None else passes,
                "fidelity_users": fidelity_users,
                "llm_users": llm_users,
                "llm_max_steps": llm_turns,
                "continuation": continuation,
                "seed": seed,
            },
        )
        fitted = load_calibrated(calibrated) if calibrated is not None else None
        with stages(f"loading {data}", checks_first=True):
            real = real_world_for(
                data_config(data, embedding, seed, split=split, test_fraction=test_fraction), fitted, calibrated
            )
        console.print(real.describe(), highlight=False)
        default = llm_ready(load_world(config, llm=llm_flags), out, calls_model=llm_users > 0)  # LLM users: its llm
        worlds = [SimWorld("default", default, real.catalog, real.profiles)]
        if fitted is not None:
            worlds.append(SimWorld("calibrated", fitted.world, fitted.catalog, fitted.profiles))
        with stages() as stage:
            result = run(real, worlds, cfg, progress=stage)
            stage("writing the table and plots")
            written = write_validity(result, out)
    except ImportError as err:
        raise fail(RecoWorldError(f"{LLM_EXTRA}: {err}")) from None
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print(validity_table(result))
    for line in result.notes:
        console.print(line, soft_wrap=True, highlight=False)
    if llm_users:
        from recoworld.llm import shared_backend

        console.print(shared_backend(worlds[0].world.llm).usage.describe(), soft_wrap=True, highlight=False)
    outputs(out, written)


def transfer(
    data: DataOption,
    out: Annotated[Path, typer.Option(help="output directory: transfer.csv, transfer.json, transfer.png")] = Path(
        "runs/transfer"
    ),
    calibrated: Annotated[
        Path | None,
        calibrated_option("; fitted on this log with a global split (default: calibrate here, on the past only)"),
    ] = None,
    embedding: EmbeddingOption = "auto",
    test_fraction: Annotated[float, test_fraction_option("; a --calibrated world's own cutoff wins")] = 0.2,
    attention: AttentionOption = "none",
    drift: DriftOption = "none",
    panel: Annotated[
        str | None,
        typer.Option(help="comma-separated panel recommenders (default: all of recoworld.agents.log_rankers.PANEL)"),
    ] = None,
    users: Annotated[int | None, users_option(": judged, drawn with the seed; default: all of them")] = None,
    days: Annotated[float | None, days_option("; default: the log's future, capped")] = None,
    max_days: MaxDaysOption = 60.0,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples of users behind the intervals")] = 1000,
    budget: Annotated[int, typer.Option(help="evaluation budget of the calibration's simulated-moments fit")] = 60,
    circularity: Annotated[bool, typer.Option(help=CIRCULARITY_HELP)] = True,
    seed: Annotated[int, seed_option(": the calibration, the panel, the simulated users")] = 0,
) -> None:
    """Does the simulator order recommenders as the real future does? A panel trained on the past, scored on
    the real users' future (NDCG@k) and by simulated users (consumptions); rank correlation with CIs."""
    from recoworld.calibration import CalibrationConfig, load_calibration
    from recoworld.calibration.worlds import global_test_fraction, real_world_for, transfer_worlds
    from recoworld.evaluation.transfer import TransferConfig, run_transfer, transfer_table, write_transfer

    try:
        writable_dir(out, "--out")
        cfg = validated(
            TransferConfig,
            {
                "panel": "--panel",
                "max_users": "--users",
                "days": "--days",
                "max_days": "--max-days",
                "bootstrap": "--bootstrap",
                "seed": "--seed",
            },
            {
                "max_users": users,
                "days": days,
                "max_days": max_days,
                "bootstrap": bootstrap,
                "seed": seed,
                **({"panel": names(panel)} if panel is not None else {}),
            },
        )
        fitted = load_calibration(calibrated) if calibrated is not None else None
        if fitted is not None:
            test_fraction = global_test_fraction(fitted, calibrated, test_fraction)
        data_cfg = data_config(
            data, embedding, seed, split="global", test_fraction=test_fraction, attention=attention, drift=drift
        )
        calibration = validated(
            CalibrationConfig, {"moment_budget": "--budget"}, {"data": data_cfg, "moment_budget": budget, "seed": seed}
        )
        with stages(f"loading {data}", checks_first=True):
            real = real_world_for(data_cfg, None)
        console.print(real.describe(), highlight=False)

        with stages() as stage:
            worlds = transfer_worlds(real, calibration, fitted, circularity, stage)
            genres = [list(g) for g in real.dataset.items["genres"]]
            result = run_transfer(real.split, real.catalog, genres, worlds, cfg, progress=stage)
            stage("writing the table and plot")
            written = write_transfer(result, out)
    except (RecoWorldError, FileNotFoundError, ValueError) as err:
        raise fail(err) from None
    console.print(transfer_table(result))
    for line in result.notes:
        console.print(line, soft_wrap=True, highlight=False)
    outputs(out, written)
