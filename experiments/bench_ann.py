"""The platform's ANN index against the exact scan: what users see, what a study concludes, what it costs.

`retrieval.index: ivf | hnsw` (`recoworld.envs.ann_index`) changes the interest block of the
candidates, the items nearest each user's taste. For each index (and each `--refresh-every`
cadence of the taste ranking) this prints, against `exact` with the same users and seeds:

- recall: the share of the exact interest block, and of all the exact candidates, that the
  index's retrieval also gives, on the tastes of users who have played `--warm-steps` turns
  (the same histories and the same random draws for both);
- the baselines' retention ranking: each recommender's mean retention on the same users, and
  Kendall's tau between the exact ranking and the index's;
- the validity facts (`recoworld.validity`, as `experiments/stylized_facts.py` computes them)
  per recommender, and the largest change of each over the recommenders;
- speed: user-steps/s of the vector env (as `experiments/bench_env.py` times it, one core),
  per second of wall time and per second of the process's CPU time (the steadier figure on a
  shared machine), next to the target of issue 32 (>= 70,000 with an ANN index).

    python experiments/bench_ann.py [--users 300] [--days 30] [--indexes exact ivf hnsw] [--refresh-every 1 5]
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: one pinned core, single-threaded BLAS, before numpy loads)

# isort: split

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import tyro
from scipy.stats import kendalltau
from stylized_facts import facts_of  # experiments/ is the script's folder

from recoworld.catalog import cached_catalog
from recoworld.config import WorldConfig
from recoworld.envs import RecoWorldVectorEnv
from recoworld.envs.retrieval import CandidateRetriever
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.streams import UserStreams


@dataclass
class Args:
    users: int = 300
    """users of each simulation (the same users for every index and recommender)"""
    days: float = 30.0
    """horizon of each simulation, days"""
    agents: list[str] = field(default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"])
    """baseline recommenders whose retention ranking is compared"""
    indexes: list[str] = field(default_factory=lambda: ["exact", "ivf", "hnsw"])
    """values of retrieval.index; the first is the reference (exact)"""
    refresh_every: list[int] = field(default_factory=lambda: [1])
    """values of retrieval.refresh_every, each run with every index"""
    recall_users: int = 1_024
    """users whose tastes measure recall"""
    warm_steps: int = 20
    """turns those users play (random slates) before their tastes are read"""
    vector_users: int = 1_024
    """users of the timed vector env"""
    vector_steps: int = 60
    """timed vector env steps"""
    repeats: int = 3
    """timings of each setting, taken in turn with the others'; the best counts (a shared machine's noise only
    slows); 0: no timing"""
    n_items: int = 3_000
    """catalog size (the default world's is 3,000; an index pays off on larger catalogs)"""
    seed: int = 0
    """seed of the users, the episodes and the actions"""
    simulate: bool = True
    """run the simulations (ranking and facts); off: recall and speed only"""


def world(args: Args, index: str, refresh_every: int) -> WorldConfig:
    return WorldConfig(horizon_days=args.days, catalog={"n_items": args.n_items},
                       retrieval={"index": index, "refresh_every": refresh_every})


def recall(args: Args, configs: dict[str, WorldConfig]) -> pd.DataFrame:
    """Per setting, the share of the reference's interest block and candidates that it also retrieves."""
    reference = next(iter(configs.values()))
    env = RecoWorldVectorEnv(args.recall_users, reference)
    rng = np.random.default_rng(args.seed)
    env.reset(seed=args.seed)
    n_cand, k = reference.n_candidates, reference.slate_size
    for _ in range(args.warm_steps):
        env.step(np.stack([rng.permutation(n_cand)[:k] for _ in range(args.recall_users)]))
    items, reactions = env.world.history_ids.copy(), env.world.history_reactions.copy()
    has_taste = ((items >= 0) & (reactions > 0)).any(axis=1)
    rows = np.arange(args.recall_users)
    catalog = env.catalog
    out: dict[str, np.ndarray] = {}
    for name, cfg in configs.items():
        retriever = CandidateRetriever(catalog, cfg.retrieval, n_cand)
        streams = UserStreams.spawn(np.random.default_rng(args.seed), args.recall_users)  # the same draws for each
        out[name] = retriever.retrieve(items, reactions, streams, rows)
    n_interest = round(reference.retrieval.interest_share * n_cand)  # no instruction: the block comes first
    first = out[next(iter(configs))]

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([len(np.intersect1d(x, y)) / len(y) for x, y in zip(a, b)]))

    return pd.DataFrame({name: {"recall@interest block": overlap(c[has_taste, :n_interest],
                                                                 first[has_taste, :n_interest]),
                                "recall@candidates": overlap(c[has_taste], first[has_taste]),
                                "users with a taste": int(has_taste.sum())}
                         for name, c in out.items()}).T


def speed(args: Args, cfg: WorldConfig) -> tuple[float, float]:
    """User-steps/s of the vector env, timed as bench_env.py's `bench_vector`: per second of wall time, and
    per second of this process's CPU time, which other processes on a shared core slow far less."""
    env = RecoWorldVectorEnv(args.vector_users, cfg)
    rng = np.random.default_rng(args.seed)
    n_cand = cfg.n_candidates
    actions = np.stack([rng.permutation(n_cand)[: cfg.slate_size] for _ in range(args.vector_users)])
    env.reset(seed=args.seed)
    for _ in range(5):
        env.step(actions)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.vector_steps):
        env.step(actions)
    steps = args.vector_steps * args.vector_users
    return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu)


def simulated(args: Args, cfg: WorldConfig) -> tuple[pd.Series, dict[str, dict[str, float]]]:
    """Each recommender's mean retention, and its validity facts, in world `cfg`."""
    config = SimulationConfig(n_users=args.users, agents=args.agents, seed=args.seed, world=cfg)
    result = simulate(config, catalog=cached_catalog(cfg.catalog))
    retention = result.episodes.groupby("recommender")["retention"].mean()[args.agents]
    facts = {a: facts_of(result.trajectories[result.trajectories["recommender"] == a],
                         result.episodes[result.episodes["recommender"] == a], config) for a in args.agents}
    return retention, facts


def main(args: Args) -> None:
    start = time.perf_counter()
    configs = {f"{index}, refresh {r}": world(args, index, r) for r in args.refresh_every for index in args.indexes}
    reference = next(iter(configs))
    table = recall(args, configs)
    if args.repeats:
        timings = [[speed(args, cfg) for cfg in configs.values()] for _ in range(args.repeats)]
        table["vector user-steps/s"], table["per CPU second"] = np.max(timings, axis=0).T
    print(f"recall and speed ({args.n_items:,} items; {args.recall_users} users after {args.warm_steps} turns; "
          f"vector env, B = {args.vector_users}, one core, best of {args.repeats}; target >= 70,000 user-steps/s "
          "with an ANN index)")
    with pd.option_context("display.width", 250, "display.float_format", "{:,.3f}".format):
        print(table.to_string())
    if not args.simulate:
        return
    runs: dict[str, tuple[pd.Series, dict[str, dict[str, float]]]] = {}
    for name, cfg in configs.items():
        runs[name] = simulated(args, cfg)
        print(f"  simulated {name}: {time.perf_counter() - start:.0f} s")
    retention = pd.DataFrame({name: run[0] for name, run in runs.items()})
    base = retention[reference]
    taus: dict[str, Any] = {name: kendalltau(base, retention[name]).statistic for name in configs}
    retention.loc["Kendall tau vs " + reference] = taus
    print(f"\nmean retention ({args.users} users x {args.days:g} days, seed {args.seed}) and Kendall tau of the "
          "recommenders' ranking against the reference")
    with pd.option_context("display.width", 250, "display.float_format", "{:.4f}".format):
        print(retention.to_string())
    facts = {name: pd.DataFrame(run[1]) for name, run in runs.items()}
    change = pd.DataFrame({name: (facts[name] - facts[reference]).abs().max(axis=1) for name in configs})
    change.insert(0, f"{reference} (mean over recommenders)", facts[reference].mean(axis=1))
    print("\nvalidity facts: the reference's mean over the recommenders, and each setting's largest change "
          "from it over the recommenders")
    with pd.option_context("display.width", 250, "display.float_format", "{:.4f}".format):
        print(change.to_string())
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(tyro.cli(Args))
