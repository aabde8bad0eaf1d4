"""The distilled surrogate: its agreement over hidden rules (issue 33), and its speed (issue 15).

    python experiments/bench_distill.py --rules             # agreement over the rules, with their ceilings
    python experiments/bench_distill.py                     # speed of a surrogate fitted on the spot
    python experiments/bench_distill.py --world runs/distilled --batch 4096 --slate 10

`--rules` plays each scripted rule of tests/distill_rule.py (persona-based, a global topic taste, a length
threshold, a persona x topic interaction; each noiseless and with 10% of its decisions flipped) as the LLM user of
a `simulate` run (`--users`, `--days`; random, popular, greedy, instruct), distills it, and prints one markdown row
per rule: the distilled user's held-out reaction accuracy and click AUC with 95% intervals over users, the ceiling
of each (the rule's own oracle on the same decisions), the default user's and the neural scorer's (`--neural`)
accuracy, and the term group whose removal costs the most cross-validated likelihood.

Without --world it runs the scripted hidden-rule LLM user of tests/distill_rule.py through a small `simulate`
run and distills it with `--neural`. One evaluation = one user reviewing one item. Two figures:
- the distilled parametric user: `ParametricUsers.review` on the distilled world, B users x K items per call,
  the way the vector env and studies drive it (reactions, dwell, mindset updates, leaving, instructions);
- the neural choice model (DIR/neural.pt, when distill ran with --neural): `NeuralChoice.scores` on B x K
  decisions per call (reaction probabilities, share watched, leaving), from prepared inputs; and end to end from
  a decision table (`inputs` + `scores`), as the agreement report calls it.
"""

from __future__ import annotations

import os

import one_core  # noqa: F401  (first: one pinned core, single-threaded BLAS, before numpy loads)

# isort: split

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recoworld.calibration import load_calibration
from recoworld.calibration.distill import distill_run, read_run
from recoworld.calibration.neural import inputs, load_neural
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.llm import backend as llm_backend
from recoworld.llm.scripted import ScriptedBackend
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams
from tests.distill_rule import RULES, HiddenRule, Rule, rule_llm, rule_world


def rule_run(rule: Rule, out: Path, users: int, days: float, agents: list[str]) -> Path:
    """A `simulate` run (seed 1) whose LLM users follow `rule`; its folder."""
    llm = rule_llm()
    llm_backend._SHARED[llm] = ScriptedBackend(rule, llm)
    simulate(SimulationConfig(n_users=users, agents=agents, seed=1, world=rule_world(llm, days)), out=out)
    return out


def scripted_world(tmp: Path) -> Path:
    """Distill (with --neural) a small run of the hidden-rule LLM user; the distilled folder."""
    distill_run(rule_run(HiddenRule(), tmp / "run", 20, 5.0, ["random", "popular"]), tmp / "distilled", n_boot=20,
                neural=True)
    return tmp / "distilled"


def rules_table(users: int, days: float, boot: int) -> str:
    """The markdown table of `--rules` (module docstring)."""
    lines = ["| rule | noise | held-out decisions | distilled accuracy | ceiling | distilled click AUC | ceiling "
             "| default accuracy | neural accuracy | term carrying most |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in RULES:
        for noise in (0.0, 0.1):
            rule = kind(noise=noise, seed=3)
            with tempfile.TemporaryDirectory() as tmp:
                run = rule_run(rule, Path(tmp) / "run", users, days, ["random", "popular", "greedy", "instruct"])
                _, report = distill_run(run, Path(tmp) / "distilled", n_boot=boot, rank_check=False, neural=True,
                                        ceiling=lambda d, rule=rule: rule.oracle(d.profiles, d.catalog))
            r = report.set_index(["model", "measure"])

            def cell(model: str, measure: str, r: pd.DataFrame = r) -> str:
                v = r.loc[(model, measure)]
                return f"{v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]"

            acc = r.loc[("distilled", "reaction_accuracy")]
            top = report.attrs["terms"][0]
            lines.append(f"| {kind.name} | {noise:.0%} | {int(acc.n_decisions)}"
                         f" | {cell('distilled', 'reaction_accuracy')} | {acc.ceiling:.3f}"
                         f" | {cell('distilled', 'click_auc')}"
                         f" | {r.loc[('distilled', 'click_auc'), 'ceiling']:.3f}"
                         f" | {r.loc[('default', 'reaction_accuracy'), 'value']:.3f}"
                         f" | {r.loc[('neural', 'reaction_accuracy'), 'value']:.3f}"
                         f" | {top['term']} ({top['loglik_drop']:+.3f} nats) |")
    return "\n".join(lines)


def rate(call: Callable[[int], None], per_call: int, seconds: float) -> str:
    """Evaluations per second of `call(i)` (each `per_call` evaluations) after a warm-up call: the median over
    the calls of `seconds`, and the best call's (what the core does when no other process takes it: on a shared
    machine the median moves with the load, the best much less)."""
    call(0)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call(len(times) + 1)
        times.append(time.perf_counter() - t0)
    return f"median {per_call / float(np.median(times)):>11,.0f}, best {per_call / min(times):>11,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, help="a distilled folder (recoworld distill --out)")
    ap.add_argument("--run", type=Path, help="its LLM run (for the end-to-end neural figure; default: none)")
    ap.add_argument("--batch", type=int, default=4096, help="users reviewing at once")
    ap.add_argument("--slate", type=int, default=10, help="items per slate")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to time each figure")
    ap.add_argument("--rules", action="store_true", help="print the agreement table over the rules instead")
    ap.add_argument("--users", type=int, default=24, help="--rules: LLM users per run")
    ap.add_argument("--days", type=float, default=5.0, help="--rules: days per run")
    ap.add_argument("--boot", type=int, default=200, help="--rules: bootstrap resamples of the held-out users")
    args = ap.parse_args()
    if args.rules:
        print(rules_table(args.users, args.days, args.boot))
        return
    tmp = tempfile.TemporaryDirectory()
    folder = args.world or scripted_world(Path(tmp.name))
    run = args.run or (None if args.world else Path(tmp.name) / "run")
    world = load_calibration(folder)
    n = args.batch * args.slate
    print(f"one pinned core (cpu {min(os.sched_getaffinity(0))}), batch {args.batch} x slate {args.slate}")

    users = ParametricUsers(world.catalog, world.world.choice, world.world.dynamics, world.world.returns)
    users.reset([world.profiles[i % len(world.profiles)] for i in range(args.batch)])
    streams = UserStreams([np.random.default_rng(i) for i in range(args.batch)])
    slates = np.random.default_rng(0).integers(0, len(world.catalog), (8, args.batch, args.slate))
    users.start_sessions(np.arange(args.batch), np.zeros(args.batch), streams)
    print(f"distilled parametric user: {rate(lambda i: users.review(slates[i % 8], streams), n, args.seconds)}"
          f" user-item evaluations/s (choice.duration {world.world.choice.duration:.2f})")

    if not (folder / "neural.pt").is_file():
        print("neural choice model: none in this folder (distill without --neural)")
        return
    model = load_neural(folder / "neural.pt")
    table = None
    if run is not None:
        decisions = read_run(run)
        table = decisions.items.iloc[np.arange(n) % len(decisions.items)].reset_index(drop=True)
        x = inputs(table, model.layout, decisions.profiles, decisions.catalog)
    else:  # inputs drawn around the fitted standardization: the scorer's cost does not depend on their values
        x = (model.mean + model.std * np.random.default_rng(0).standard_normal((n, len(model.mean)))).astype(
            np.float32)
    print(f"neural choice model:       {rate(lambda i: model.scores(x), n, args.seconds)}"
          " user-item evaluations/s (scores on prepared inputs)")
    if table is not None:
        def from_table(i: int) -> None:
            model.scores(inputs(table, model.layout, decisions.profiles, decisions.catalog))

        print(f"neural, from a table:      {rate(from_table, n, args.seconds)}"
              " user-item evaluations/s (inputs + scores)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
