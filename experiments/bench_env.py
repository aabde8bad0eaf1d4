"""Benchmark: env steps/s for one RecoWorld-v0, and user-item evaluations/s for a batch of users.

Targets (one core): >= 5,000 steps/s for one env with slate size 10, and >= 1,000,000
user-item evaluations/s for a batch of 1,000 parametric users.

    python experiments/bench_env.py [--steps 20000] [--users 1000] [--reviews 200]
"""

from __future__ import annotations

import os

# The targets are for one core: pin the process and keep BLAS single-threaded, which also
# avoids thread start-up cost on the small matrix products of one env step.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import tyro  # noqa: E402

from recoworld.catalog import cached_catalog  # noqa: E402
from recoworld.config import CatalogConfig  # noqa: E402
from recoworld.envs.recoworld_env import RecoWorldEnv  # noqa: E402
from recoworld.population import PopulationSpec, sample_population  # noqa: E402
from recoworld.simulators import ParametricUsers  # noqa: E402


@dataclass
class Args:
    steps: int = 20_000
    """env steps to time for the single env"""
    slate_size: int = 10
    """items per slate"""
    users: int = 1_000
    """parametric users in the batch"""
    reviews: int = 200
    """batched slate reviews to time"""
    seed: int = 0
    """seed of the env, the actions and the population"""


def bench_env(args: Args) -> float:
    env = RecoWorldEnv(slate_size=args.slate_size)
    rng = np.random.default_rng(args.seed)
    n_cand = env.config.n_candidates
    actions = [rng.choice(n_cand, args.slate_size, replace=False) for _ in range(1024)]
    env.reset(seed=args.seed)
    for i in range(200):  # warm-up: caches, first allocations
        if any(env.step(actions[i % 1024])[2:4]):
            env.reset()
    start = time.perf_counter()
    for i in range(args.steps):
        _, _, terminated, truncated, _ = env.step(actions[i % 1024])
        if terminated or truncated:
            env.reset()
    return args.steps / (time.perf_counter() - start)


def bench_batch(args: Args) -> float:
    catalog = cached_catalog(CatalogConfig())
    rng = np.random.default_rng(args.seed)
    profiles = sample_population(PopulationSpec.default(), catalog, rng, n=args.users)
    users = ParametricUsers(catalog)
    users.reset(profiles, rng)
    everyone = np.arange(args.users)
    slates = rng.integers(len(catalog), size=(args.reviews, args.users, args.slate_size))
    now = 0.0
    users.start_sessions(everyone, np.full(args.users, now), rng)
    start = time.perf_counter()
    for r in range(args.reviews):
        feedback = users.review(slates[r], rng)
        gone = np.flatnonzero(feedback.left)
        if len(gone):  # keep the batch busy: users who leave come back for a new session
            now += 1.0
            users.end_sessions(gone, np.full(len(gone), now), rng)
            users.start_sessions(gone, np.full(len(gone), now + 0.5), rng)
    elapsed = time.perf_counter() - start
    return args.reviews * args.users * args.slate_size / elapsed


if __name__ == "__main__":
    args = tyro.cli(Args)
    steps_per_s = bench_env(args)
    evals_per_s = bench_batch(args)
    print(f"{'benchmark':<44}{'value':>14}{'target':>12}")
    print(f"{f'RecoWorld-v0 steps/s (slate {args.slate_size})':<44}{steps_per_s:>14,.0f}{5_000:>12,}")
    print(f"{f'user-item evaluations/s ({args.users} users)':<44}{evals_per_s:>14,.0f}{1_000_000:>12,}")
