"""Benchmark: `recoworld calibrate` on a MovieLens-100K-sized reference log, and what it buys.

Writes the reference log (`recoworld.data.reference_log`: an independent generator, not
RecoWorld's user model) with 943 users, 1,682 items and about 100k interactions, and times each
step in CPU seconds (`time.process_time`: every thread of this process, so BLAS threads count)
and wall seconds. Target for `calibrate` (the fit, its time folds and its fitted-vs-log check):
under `CALIBRATE_TARGET_CPU_S` = 180 CPU seconds on 2 cores; `recoworld transfer`'s work on the
same log (the panel of nine recommenders trained, scored on the future and served to simulated
users) gets the other 120 of the 5 CPU minutes the two may take. It prints every fitted parameter,
the fit check, the folds and the transfer table, then (unless `--no-fidelity`) the held-out AUC of calibrated users,
default users and the popularity reference on the same users and candidates. Calibrated clicks
are rare, so simulated users are also scored with 200 passes of sampled reactions, which resolves
their ranking (5 passes do not).

A further timed step is one more `timed(...)` call in `main`; the closing table lists them all.

    taskset -c 0,1 python experiments/bench_calibrate.py [--users 943] [--items 1682] [--no-fidelity]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tyro
from rich.console import Console
from rich.table import Table

from recoworld.calibration import CalibrationConfig, calibrate
from recoworld.calibration.report import calibration_table, fit_check_table, folds_table
from recoworld.config import WorldConfig
from recoworld.data import DataConfig, prepare_world
from recoworld.data.reference_log import write_reference_log
from recoworld.evaluation.fidelity import (
    BatchParametricScorer,
    ChoiceModelScorer,
    FidelityConfig,
    PopularityScorer,
    eval_users,
    evaluate,
    fidelity_table,
)
from recoworld.evaluation.transfer import SimulatedWorld, TransferConfig, run_transfer, transfer_table
from recoworld.simulators.parametric import ParametricUsers

CALIBRATE_TARGET_CPU_S = 180.0
#: calibrate plus transfer on a 100K log: under 5 CPU minutes on 2 cores (issue 27).
TRANSFER_TARGET_CPU_S = 300.0 - CALIBRATE_TARGET_CPU_S
T = TypeVar("T")


@dataclass
class Args:
    users: int = 943
    """users in the reference log (MovieLens 100K has 943)"""
    items: int = 1682
    """items in the reference log (MovieLens 100K has 1,682)"""
    fidelity_users: int = 300
    """users scored in the held-out AUC comparison"""
    seed: int = 0
    """seed of the log, the calibration and the negatives"""
    split: str = "global"
    """per_user or global (one time cutoff: nothing fitted reads past it)"""
    fidelity: bool = True
    """also score held-out AUC of calibrated and default users (not timed)"""


@dataclass
class Timing:
    step: str
    cpu_s: float
    wall_s: float
    target_cpu_s: float | None = None


def timed(timings: list[Timing], step: str, run: Callable[[], T], target_cpu_s: float | None = None) -> T:
    """Run one step, recording its CPU and wall seconds in `timings`."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = run()
    timings.append(Timing(step, time.process_time() - cpu, time.perf_counter() - wall, target_cpu_s))
    return out


def timing_table(timings: list[Timing]) -> Table:
    table = Table(title="Timings")
    for header in ("step", "CPU s", "wall s", "target CPU s"):
        table.add_column(header, justify="left" if header == "step" else "right")
    for t in timings:
        over = t.target_cpu_s is not None and t.cpu_s > t.target_cpu_s
        target = "" if t.target_cpu_s is None else f"{t.target_cpu_s:.0f}" + (" [bold red]OVER[/]" if over else "")
        table.add_row(t.step, f"{t.cpu_s:.1f}", f"{t.wall_s:.1f}", target)
    return table


def main(args: Args) -> None:
    console = Console(width=160)
    timings: list[Timing] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = write_reference_log(Path(tmp) / "ref", args.users, args.items, seed=args.seed)
        data = DataConfig(path=path, seed=args.seed, split=args.split)
        fitted = timed(timings, "calibrate", lambda: calibrate(CalibrationConfig(data=data, seed=args.seed)),
                       CALIBRATE_TARGET_CPU_S)
        console.print(f"calibration: {timings[-1].cpu_s:.1f} CPU s ({fitted.report['split']})")
        console.print(calibration_table(fitted.report))
        console.print(folds_table(fitted.report))
        console.print(fit_check_table(fitted.report))
        for warning in fitted.report["warnings"]:
            console.print(f"[yellow]warning:[/] {warning}")
        real = prepare_world(data)
        worlds = [SimulatedWorld("calibrated", fitted.world, fitted.catalog, fitted.profiles)]
        genres = [list(g) for g in real.dataset.items["genres"]]
        moved = timed(timings, "transfer (9 recommenders, real + simulated)",
                      lambda: run_transfer(real.split, real.catalog, genres, worlds,
                                           TransferConfig(seed=args.seed)), TRANSFER_TARGET_CPU_S)
        console.print(transfer_table(moved))
        if not args.fidelity:
            console.print(timing_table(timings))
            return

        cfg = FidelityConfig(max_users=args.fidelity_users, seed=args.seed)
        users = eval_users(fitted.catalog, fitted.profiles, real.split.train, real.split.test, cfg)
        w = fitted.world
        sim = ParametricUsers(fitted.catalog, w.choice, w.dynamics, w.returns)
        scorers = [ChoiceModelScorer(fitted.catalog, w.choice),
                   BatchParametricScorer("calibrated simulated (5 passes)", sim, w.slate_size, 5),
                   BatchParametricScorer("calibrated simulated (200 passes)", sim, w.slate_size, 200),
                   PopularityScorer(fitted.catalog)]
        summary, _ = evaluate(users, scorers, cfg)
        console.print(fidelity_table(summary, cfg.k, title="Calibrated users (choice model = calibrated)"))
        for embedding in ("mf", "tfidf"):
            default = prepare_world(data.model_copy(update={"representation": data.representation.model_copy(
                update={"embedding": embedding})}))
            d_users = eval_users(default.catalog, default.profiles, default.split.train, default.split.test, cfg)
            d = WorldConfig()
            d_sim = ParametricUsers(default.catalog, d.choice, d.dynamics, d.returns)
            summary, _ = evaluate(d_users, [ChoiceModelScorer(default.catalog, d.choice),
                                            BatchParametricScorer("default simulated (5 passes)", d_sim, 10, 5),
                                            BatchParametricScorer("default simulated (200 passes)", d_sim, 10, 200)],
                                  cfg)
            console.print(fidelity_table(summary, cfg.k, title=f"Default (uncalibrated) users, {embedding} items"))
    console.print(timing_table(timings))


if __name__ == "__main__":
    main(tyro.cli(Args))
