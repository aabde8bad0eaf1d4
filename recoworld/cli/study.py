"""`recoworld study`: a population study on Ray, sharded and checkpointed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import bars, console, elapsed, fail, hold, note, outputs, validated, warn
from recoworld.cli.options import calibrated_option, seed_option
from recoworld.errors import RecoWorldError

RAY_EXTRA = "studies run on Ray (pip install 'recoworld[rllib]')"


def study(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="study spec (YAML), e.g. examples/creator_study.yaml")],
    out: Annotated[Path | None, typer.Option(help="output directory; default: spec `out`, else runs/<name>")] = None,
    address: Annotated[str | None, typer.Option(help="existing Ray cluster (e.g. 'auto'); default: local Ray")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray runtime")] = None,
    seed: Annotated[int | None, seed_option(" (default: the spec's)")] = None,
    calibrated: Annotated[Path | None, calibrated_option("; replaces the spec's `calibrated:`")] = None,
) -> None:
    """Run a population study on Ray, sharded and checkpointed: rerun the same command to resume."""
    from recoworld.studies.spec import StudySpec

    try:
        cfg = StudySpec.from_yaml(spec, calibrated=calibrated)
        if seed is not None:
            cfg = validated(StudySpec, {"seed": "--seed"}, {**cfg.model_dump(), "seed": seed})
        hold(ctx, cfg.out_dir(out))
        from recoworld.evaluation.digest import COLUMNS
        from recoworld.studies.notes import study_notes
        from recoworld.studies.report import ALL, write_report
        from recoworld.studies.runner import check_ray_options, run_study

        check_ray_options(address, num_cpus)  # before any work: a bad address fails in seconds, never hangs
    except ImportError as err:
        raise fail(RecoWorldError(f"{RAY_EXTRA}: {err}")) from None
    except (RecoWorldError, FileNotFoundError) as err:
        raise fail(err) from None
    from recoworld.evaluation.report import summary_table

    with bars() as progress:
        task = progress.add_task("planning the users", total=None)  # each shard draws its own
        note("planning the users, then the shards on Ray ...")

        def shard(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, description="shards")
            note(f"shards: {done}/{total} in {elapsed(progress.tasks[task].elapsed or 0.0)}")

        try:
            result = run_study(cfg, out, address=address, num_cpus=num_cpus, on_shard=shard)
        except RecoWorldError as err:
            raise fail(err) from None
    report, summary = write_report(
        result.trajectory_shards(COLUMNS),  # one shard in memory at a time, however large the study
        result.episodes,
        result.out,
        title=f"Study: {cfg.name}",
        horizon_days=cfg.world.horizon_days,
        target=cfg.creator.target_segment if cfg.creator else None,
        notes=study_notes(cfg, result.setup),
        llm_users=cfg.world.user_backend == "llm",
        catalog=result.setup.catalog,  # the HTML report's titles: a study's manifest names no catalog to rebuild
    )
    overall = summary[summary["segment"] == ALL].assign(recommender=lambda s: s["recommender"] + "/" + s["arm"])
    console.print(summary_table(overall, title=f"Study {cfg.name}: {len(result.setup.users)} users"))
    from recoworld.validity.bands import band_warnings

    for line in band_warnings(overall, cfg.world.horizon_days):
        warn(line)
    from recoworld.evaluation.html_report import write_report as write_html

    # Like the Markdown report, the page reads one shard at a time: it holds sums, the episodes and its journeys.
    written: list[str | Path] = ["trajectories.parquet", "episodes.parquet", report, write_html(result.out)]
    outputs(result.out, written, then=f"{result.shards_run} shard(s) run now, the rest resumed from the checkpoint")
