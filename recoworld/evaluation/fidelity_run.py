"""One fidelity run, as `recoworld fidelity` makes it: which scorers judge which users, and its three files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.data.split import Split
from recoworld.evaluation.fidelity import (
    ChoiceScorer,
    EvalPopulation,
    EvalUser,
    FidelityConfig,
    SimulatorScorer,
    default_scorers,
    llm_scorer,
)
from recoworld.storage import write_atomic, write_parquet_atomic


def fidelity_runs(
    catalog: Catalog,
    world: WorldConfig,
    population: EvalPopulation,
    passes: int,
    llm_users: int,
) -> tuple[list[tuple[Sequence[ChoiceScorer], list[EvalUser]]], SimulatorScorer | None]:
    """(scorers, users) groups to evaluate, and the LLM scorer if any: every test user under the default
    scorers (`passes` of shuffled slates for the simulated ones), and with `llm_users` > 0 the first that many
    warm users under LLM users too (slow, so on a few). Raises ImportError without the local extra."""
    runs: list[tuple[Sequence[ChoiceScorer], list[EvalUser]]] = [
        (default_scorers(catalog, world, repeats=passes), population.users)
    ]
    llm = None
    if llm_users > 0:
        llm = llm_scorer(catalog, world)
        runs.append(([llm], population.warm[:llm_users]))
    return runs, llm


def write_fidelity(
    out: Path,
    summary: pd.DataFrame,
    per_user: pd.DataFrame,
    population: EvalPopulation,
    split: Split,
    cfg: FidelityConfig,
    passes: int,
    test_fraction: float,
) -> tuple[Path, Path, Path]:
    """fidelity.csv (the summary), fidelity.json (user counts, passes, negatives, seed, the split and its
    leakage) and fidelity_per_user.parquet in `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    csv = write_atomic(out / "fidelity.csv", summary.to_csv(index=False))
    js = write_atomic(
        out / "fidelity.json",
        json.dumps(
            {
                "users": population.counts,
                "passes": passes,
                "negatives": cfg.n_negatives,
                "seed": cfg.seed,
                "split": {
                    "mode": split.mode,
                    "test_fraction": test_fraction,
                    "cutoff": split.cutoff,
                    "describe": split.describe(),
                    "leakage": vars(split.leakage()),
                },
            },
            indent=2,
        )
        + "\n",
    )
    parquet = write_parquet_atomic(
        pa.Table.from_pandas(per_user, preserve_index=False), out / "fidelity_per_user.parquet"
    )
    return csv, js, parquet
