"""`recoworld check-agent SPEC`: is this recommender ready for a run, and what will runs call it?

The command-line face of `recoworld.agents.check.check_recommender`, for a built-in name, a
`module:Class` or a `file.py:Class`: it finds the class, reads the name runs will label it by
(`recoworld.agents.agent_label`), builds it on a real catalog and plays a few short episodes.
One line per stage and per rule of the contract, then a verdict: exit code 0 when every rule
held, 2 with the one-line error of the first that broke.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from recoworld.cli.common import console, fail
from recoworld.cli.options import seed_option
from recoworld.errors import RecoWorldError

PASSED, FAILED, NOT_REACHED = "[green]✓[/green]", "[red]✗[/red]", "[dim]·[/dim]"


def check_agent(
    spec: Annotated[str, typer.Argument(help="a built-in recommender (greedy), module:Class or file.py:Class")],
    slate_size: Annotated[int, typer.Option(min=1, help="items per slate the recommender is built for")] = 10,
    candidates: Annotated[
        int | None, typer.Option(min=1, help="candidates per turn; default 20, or twice --slate-size when more")
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="short episodes to play")] = 2,
    seed: Annotated[int, seed_option(": the recommender and the episodes' users")] = 0,
    catalog: Annotated[
        Path | None, typer.Option(help="catalog Parquet file; default: the default world's synthetic catalog")
    ] = None,
) -> None:
    """Check your own recommender against the Recommender contract before a long run does."""
    from recoworld.agents import (
        RLLIB_PREFIX,
        Recommender,
        agent_labels,
        check_recommender_names,
        make_recommender,
        plugins,
    )
    from recoworld.agents.check import CHECK_WORLD, RULES, RecommenderCheckError, check_recommender
    from recoworld.catalog import Catalog, cached_catalog
    from recoworld.config import WorldConfig

    def line(mark: str, what: str, detail: str = "") -> None:
        console.print(f"  {mark} {escape(what)}" + (f": {escape(detail)}" if detail else ""),
                      soft_wrap=True, highlight=False)

    console.print(f"check-agent {escape(spec)}", highlight=False, soft_wrap=True)
    if seed < 0:
        raise fail(RecoWorldError(f"--seed {seed}: give a seed >= 0"))
    stage = "found"
    try:
        reference = plugins.is_reference(spec) and not spec.startswith(RLLIB_PREFIX)
        cls = plugins.load_class(spec) if reference else None  # its name is checked next, not here
        if cls is None:
            check_recommender_names([spec])
        line(PASSED, stage, f"{cls.__qualname__}, a Recommender subclass" if cls else "a recommender known by name")
        stage = "named"
        (label,) = agent_labels([spec])
        unnamed = cls is not None and cls.name == Recommender.name  # labelled by its class name
        line(PASSED, stage, f"{label!r} in tables, file names, plots and reports"
                            + (" (its class name: the class sets no `name`)" if unnamed else ""))
        stage = "built"
        items = Catalog.from_parquet(catalog) if catalog is not None else cached_catalog(WorldConfig().catalog)
        agent = make_recommender(spec, items, slate_size, seed)
        line(PASSED, stage, f"{type(agent).__name__}(slate_size={slate_size}, seed={seed}) "
                            f"on a catalog of {len(items)} items")
        stage = "played"
        result = check_recommender(agent, items, episodes=episodes, seed=seed, world={
            "n_candidates": candidates or max(CHECK_WORLD["n_candidates"], 2 * slate_size)})
    except RecommenderCheckError as err:
        for rule, what in RULES.items():
            held = rule in err.held
            line(FAILED if rule == err.rule else PASSED if held else NOT_REACHED, what,
                 "" if held or rule == err.rule else "not reached")
        console.print(f"[red]FAILED[/red] {escape(spec)}: {escape(RULES.get(err.rule or '', 'the contract'))}",
                      highlight=False, soft_wrap=True)
        raise fail(err) from None
    except (RecoWorldError, FileNotFoundError, ValueError) as err:  # not found, named, built, or no world to play
        line(FAILED, stage)
        console.print(f"[red]FAILED[/red] {escape(spec)}: stopped at {stage!r}, before the contract's rules",
                      highlight=False, soft_wrap=True)
        raise fail(err) from None
    for what in RULES.values():
        line(PASSED, what)
    console.print(
        f"[green]PASSED[/green] {escape(spec)}, labelled {label!r}: {result.episodes} episodes, {result.turns} turns, "
        f"slates of {result.slate_size} from {result.n_candidates} candidates",
        highlight=False, soft_wrap=True,
    )
