"""Benchmark: `recoworld calibrate` on a MovieLens-100K-sized reference log, and what it buys.

Writes the reference log (`recoworld.data.reference_log`: an independent generator, not
RecoWorld's user model) with 943 users, 1,682 items and about 100k interactions, times the
calibration (target: under 5 minutes on 2 cores), prints every fitted parameter, then the
held-out AUC of calibrated users, default users and the popularity reference on the same
users and candidates. Calibrated clicks are rare, so simulated users are also scored with
200 passes of sampled reactions, which resolves their ranking (5 passes do not).

    taskset -c 0,1 python experiments/bench_calibrate.py [--users 943] [--items 1682]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console

from recoworld.calibration import CalibrationConfig, calibrate
from recoworld.calibration.report import calibration_table
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
from recoworld.simulators.parametric import ParametricUsers


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


def main(args: Args) -> None:
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_reference_log(Path(tmp) / "ref", args.users, args.items, seed=args.seed)
        data = DataConfig(path=path, seed=args.seed)
        t = time.perf_counter()
        fitted = calibrate(CalibrationConfig(data=data, seed=args.seed))
        seconds = time.perf_counter() - t
        console.print(f"calibration: {seconds:.1f} s ({fitted.report['split']})")
        console.print(calibration_table(fitted.report))

        cfg = FidelityConfig(max_users=args.fidelity_users, seed=args.seed)
        real = prepare_world(data)
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
    console.print(f"calibration time: {seconds:.1f} s")


if __name__ == "__main__":
    main(tyro.cli(Args))
