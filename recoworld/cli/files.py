"""The commands that write one file: `report` (a run's HTML report) and `catalog` (a synthetic catalog)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recoworld.cli.common import fail, outputs, validated, writable_dir
from recoworld.cli.options import seed_option
from recoworld.errors import RecoWorldError


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder: simulate --out, a bench scenario folder, a study")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write; default RUN_DIR/report.html")] = None,
    journeys: Annotated[int, typer.Option(min=1, help="user journeys per recommender in the journey explorer")] = 100,
    catalog: Annotated[
        Path | None,
        typer.Option(help="catalog Parquet file for item titles and topics; default: rebuilt from the run's config"),
    ] = None,
) -> None:
    """Write one self-contained HTML report of a run (summary, plots, segments, user journey explorer)."""
    from recoworld.evaluation.html_report import write_report

    try:
        if out is not None and out.is_dir():
            raise RecoWorldError(f"--out {out} is a directory; give the HTML file to write, e.g. {out / 'report.html'}")
        path = write_report(run_dir, out, max_users=journeys, catalog=catalog)
    except RecoWorldError as err:
        raise fail(err) from None
    except OSError as err:
        raise fail(
            RecoWorldError(f"cannot write the report: {err.strerror or type(err).__name__} ({err.filename or out})")
        ) from None
    outputs(path.parent, [path], then=f"open {path} in a browser (self-contained, offline)")


def make_catalog(
    out: Annotated[Path, typer.Option(help="Parquet file to write")] = Path("catalog.parquet"),
    n_items: Annotated[int, typer.Option(help="number of items")] = 3000,
    seed: Annotated[int, seed_option(": the catalog's items")] = 0,
) -> None:
    """Generate a synthetic catalog and save it as Parquet."""
    from recoworld.catalog import generate_catalog
    from recoworld.config import CatalogConfig

    try:
        if out.is_dir():
            raise RecoWorldError(
                f"--out {out} is a directory; give the Parquet file to write, e.g. {out / 'catalog.parquet'}"
            )
        writable_dir(out.parent, "--out", given=out)
        cat = generate_catalog(
            validated(CatalogConfig, {"n_items": "--n-items", "seed": "--seed"}, {"n_items": n_items, "seed": seed})
        )
        path = cat.to_parquet(out)
    except RecoWorldError as err:
        raise fail(err) from None
    except OSError as err:
        raise fail(RecoWorldError(f"--out {out}: cannot write there ({err.strerror or type(err).__name__})")) from None
    outputs(path.parent, [path], then=f"{len(cat)} items, {cat.n_topics} topics")
