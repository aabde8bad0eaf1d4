"""The policy-ranking check of `recoworld distill` on the scripted hidden-rule LLM user, over run seeds (issue 15).

    python experiments/distill_rank_check.py                      # 24 users, run seeds 1 2 3
    python experiments/distill_rank_check.py --users 48 --seeds 1 2 3 4 5

Each run seed draws other users and other recommender randomness for the LLM run (tests/distill_rule.py: comes
back in half a day after two or more likes, else in three days); `recoworld distill` fits the surrogate on it, and
the rank check compares the two rankings of random, popular, greedy and instruct. Printed per seed and metric:
Spearman's rho with its 95% bootstrap interval over users, for the distilled surrogate and for the same surrogate
with its return model flattened to one Gamma over all sessions (the first version of distill); then each
recommender's retention under the LLM users and the two surrogates, averaged over seeds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recoworld.calibration.distill import distill, fit_gamma, read_run
from recoworld.calibration.ranking import METRICS, rank_check
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.llm import backend as llm_backend
from recoworld.llm.scripted import ScriptedBackend
from tests.distill_rule import HiddenRule, rule_llm, rule_world

AGENTS = ["random", "popular", "greedy", "instruct"]


def llm_run(out: Path, users: int, seed: int) -> Path:
    """A `simulate` run of the hidden-rule LLM user (the world of tests/test_distill.py)."""
    llm = rule_llm()
    llm_backend._SHARED[llm] = ScriptedBackend(HiddenRule(), llm)
    simulate(SimulationConfig(n_users=users, agents=AGENTS, seed=seed, world=rule_world(llm)), out=out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=24)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--replicas", type=int, default=5, help="surrogate simulations per check")
    args = ap.parse_args()
    rows, values = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            decisions = read_run(llm_run(Path(tmp) / f"run-{seed}", args.users, seed))
            surrogate, _ = distill(decisions)
            gaps = decisions.turns.loc[decisions.turns["left"].astype(bool), "return_gap_days"].to_numpy(np.float64)
            shape, mean = fit_gamma(gaps)
            flat_world = surrogate.world.model_copy(update={"returns": surrogate.world.returns.model_copy(update={
                "satisfaction_effect": 0.0, "churn_satisfaction": 0.0, "gap_shape": shape, "base_rate": 1 / mean})})
            flat = surrogate.__class__(flat_world, surrogate.catalog, surrogate.profiles, surrogate.report)
            for name, model in (("distilled", surrogate), ("flat returns", flat)):
                check = rank_check(decisions, model, replicas=args.replicas)
                for metric, g in check.groupby("metric", sort=False):
                    first = g.iloc[0]
                    if metric == "retention":
                        values.append(g.assign(seed=seed, model=name))
                    rows.append({"seed": seed, "surrogate": name, "metric": metric, "rho": first["spearman_rho"],
                                 "ci_low": first["rho_ci_low"], "ci_high": first["rho_ci_high"],
                                 "per_replica": first["rho_per_replica"]})
            print(f"seed {seed}: satisfaction_effect {surrogate.world.returns.satisfaction_effect:.2f}", flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 160)
    print(table.to_string(index=False, float_format=lambda x: f"{x:+.2f}"))
    means = table.groupby(["surrogate", "metric"], sort=False)["rho"].agg(["mean", "min", "max"])
    print(means.reindex(list(METRICS), level="metric").to_string(float_format=lambda x: f"{x:+.2f}"))
    retention = pd.concat(values)
    wide = retention.pivot_table(index="recommender", columns="model", values="surrogate", aggfunc="mean")
    wide.insert(0, "LLM users", retention.groupby("recommender")["llm"].mean())
    print("retention per recommender, mean over seeds (the surrogates: mean of their replicas)")
    print(wide.reindex(AGENTS).to_string(float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
