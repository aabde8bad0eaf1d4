"""Benchmark: the world core and its three views, on one core.

Prints each figure next to its target (issue: batched world core):

| figure | target |
|---|---|
| `RecoWorld-v0` steps/s, slate 10 of 50 candidates | >= 10,000 |
| native vector env user-steps/s, B = 1,024, slate 10 of 50 | >= 100,000; >= 70,000 with `--index ivf` (issue 32) |
| batched user review, user-item evaluations/s | >= 3,000,000 |
| population env (1,000 users on one platform) user-steps/s, infos built | |
| population env user-steps/s, infos on demand (`infos="none"`) | >= 60,000 (issue 32) |

The two population figures are the same steps of the same seeded world, with every live user's info
dict built each step (`PopulationParallelEnv`'s default) and with none built (`infos="none"`, what a
loop that reads no infos, or builds a few with `last_infos`, pays).

RLlib's sampling rate on the vector env is `experiments/bench_rllib.py`.

`--rounds N` runs every figure N times, interleaved (round 1 of each, then round 2, ...), and prints the
median with the lowest and highest round: on a shared or virtual machine one run of a figure can be 10% off
its median, and a target is met only when the median meets it.

`--breakdown` then times the vector and population envs' steps again with each part of a turn
timed on its own (time spent in a part's own code, not in the parts it calls) and prints where a
user-step goes, in microseconds, next to the 10 us a user-step may take at 100,000 user-steps/s.

    python experiments/bench_env.py [--steps 20000] [--vector-users 1024] [--population-users 1000] [--index hnsw]
        [--refresh-every 1] [--rounds 1] [--breakdown]
"""

from __future__ import annotations

import one_core  # noqa: F401  (first: one pinned core, single-threaded BLAS, before numpy loads)

# isort: split

import functools
import gc
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tyro

from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig
from recoworld.envs import PopulationParallelEnv, RecoWorldEnv, RecoWorldVectorEnv, retrieval, vector_env
from recoworld.envs.population_env import Infos
from recoworld.envs.world import World
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators import ParametricUsers
from recoworld.streams import UserStreams


@dataclass
class Args:
    steps: int = 20_000
    """env steps to time for the single env"""
    slate_size: int = 10
    """items per slate"""
    vector_users: int = 1_024
    """users of the vector env"""
    vector_steps: int = 60
    """vector env steps to time"""
    users: int = 1_000
    """parametric users in the review batch"""
    reviews: int = 200
    """batched slate reviews to time"""
    population_users: int = 1_000
    """users of the population env"""
    population_steps: int = 30
    """population env steps to time"""
    index: Literal["exact", "ivf", "hnsw"] = "exact"
    """the vector and population envs' retrieval index (`retrieval.index`; issue 32 sets their targets with an
    ANN index)"""
    refresh_every: int = 1
    """the vector and population envs' taste refresh cadence (`retrieval.refresh_every`; 1, the default,
    searches after every turn that changed a taste)"""
    seed: int = 0
    """seed of the envs, the actions and the population"""
    rounds: int = 1
    """times each figure is measured (interleaved); the median is printed, with the range when above 1"""
    breakdown: bool = False
    """also print where a vector env step spends its time"""


def _retrieval(args: Args) -> dict[str, Any]:
    return {"index": args.index, "refresh_every": args.refresh_every}


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


def bench_vector(args: Args, on_start: Callable[[], object] | None = None, repeats: bool = False) -> float:
    """User-steps/s of the vector env fed distinct slates, or with `repeats` slates whose slots are drawn
    independently, as `action_space.sample()` and RLlib's `MultiDiscrete` policies draw them."""
    env = RecoWorldVectorEnv(args.vector_users, slate_size=args.slate_size, retrieval=_retrieval(args))
    rng = np.random.default_rng(args.seed)
    n_cand = env.config.n_candidates
    if repeats:
        actions = rng.integers(0, n_cand, size=(args.vector_users, args.slate_size))
    else:
        actions = np.stack([rng.permutation(n_cand)[: args.slate_size] for _ in range(args.vector_users)])
    env.reset(seed=args.seed)
    for _ in range(5):
        env.step(actions)
    if on_start is not None:
        on_start()
    start = time.perf_counter()
    for _ in range(args.vector_steps):
        env.step(actions)
    return args.vector_steps * args.vector_users / (time.perf_counter() - start)


def bench_review(args: Args) -> float:
    catalog = cached_catalog(CatalogConfig())
    rng = np.random.default_rng(args.seed)
    profiles = sample_population(PopulationSpec.default(), catalog, rng, n=args.users)
    users = ParametricUsers(catalog)
    users.reset(profiles)
    streams = UserStreams.spawn(rng, args.users)
    everyone = np.arange(args.users)
    slates = rng.integers(len(catalog), size=(args.reviews, args.users, args.slate_size))
    now = 0.0
    users.start_sessions(everyone, np.full(args.users, now), streams)
    users.review(slates[-1], streams)  # warm-up: loads the compiled kernels
    start = time.perf_counter()
    for r in range(args.reviews):
        feedback = users.review(slates[r], streams)
        gone = np.flatnonzero(feedback.left)
        if len(gone):  # keep the batch busy: users who leave come back for a new session
            now += 1.0
            users.end_sessions(gone, np.full(len(gone), now), streams)
            users.start_sessions(gone, np.full(len(gone), now + 0.5), streams)
    elapsed = time.perf_counter() - start
    return args.reviews * args.users * args.slate_size / elapsed


def bench_population(args: Args, on_start: Callable[[], object] | None = None, infos: Infos = "full") -> float:
    env = PopulationParallelEnv(n_users=args.population_users, infos=infos,
                                world={"slate_size": args.slate_size, "retrieval": _retrieval(args)})
    env.reset(seed=args.seed)
    slate = np.arange(args.slate_size)
    for _ in range(5):  # warm-up: caches (the instruction text space is fit on the first instruction)
        env.step(dict.fromkeys(env.agents, slate))
    if on_start is not None:
        on_start()
    user_steps = 0
    start = time.perf_counter()
    for _ in range(args.population_steps):
        if not env.agents:
            env.reset()
        user_steps += len(env.agents)
        env.step(dict.fromkeys(env.agents, slate))
    return user_steps / (time.perf_counter() - start)


class _Parts:
    """Exclusive wall time per named part: a wrapped call's time, less that of wrapped calls inside it."""

    def __init__(self) -> None:
        self.own: Counter[str] = Counter()
        self._stack: list[list[Any]] = []  # [part, time its own clock last resumed]

    def wrap(self, owner: object, attribute: str, part: str) -> None:
        original: Callable[..., Any] = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            if self._stack:  # the caller's own clock pauses
                self.own[self._stack[-1][0]] += start - self._stack[-1][1]
            self._stack.append([part, start])
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                done = self._stack.pop()
                self.own[done[0]] += end - done[1]
                if self._stack:
                    self._stack[-1][1] = end

        setattr(owner, attribute, timed)


#: The parts of a world turn, timed in every view: (owner, attribute, part).
_WORLD_PARTS = [
    (World, "step", "world turn: slates, measures, rewards, clock"),
    (retrieval, "_top_rows", "catalog rankings (taste, instructions)"),
    (retrieval.CandidateRetriever, "_taste_scores", "catalog rankings (taste, instructions)"),
    (retrieval.CandidateRetriever, "retrieve", "retrieval: composing candidates"),
    (ParametricUsers, "review", "users' review"),
    (ParametricUsers, "_instruct", "users writing instructions"),
    (World, "listen", "world taking instructions in"),
    (ParametricUsers, "start_sessions", "sessions: start, end, return gaps"),
    (ParametricUsers, "end_sessions", "sessions: start, end, return gaps"),
    (World, "reset", "episode starts: resetting state"),
    (World, "observe", "observations"),
]


def breakdown(args: Args, view: str) -> list[tuple[str, float]]:
    """Where a step of `view` ("vector" or "population") goes: (part, seconds per user-step), each
    part's own time in the timed steps over the user-steps timed (the wrapping adds a little to every
    call)."""
    parts = _Parts()
    if view == "vector":
        own = [(RecoWorldVectorEnv, "step", "vector env: actions, autoreset"),
               (vector_env, "draw_profile", "episode starts: drawing users"),
               (RecoWorldVectorEnv, "_infos", "infos")]
        timed: Callable[..., float] = bench_vector
    else:
        own = [(PopulationParallelEnv, "step", "PettingZoo dicts: actions, observations, rewards, infos"),
               (World, "turn_infos", "infos")]
        timed = bench_population
    started: list[float] = []

    def on_start() -> None:  # only the timed steps count, and not the earlier benchmarks' garbage
        gc.collect()
        parts.own.clear()
        started.append(time.perf_counter())

    for owner, attribute, part in _WORLD_PARTS + own:
        parts.wrap(owner, attribute, part)
    try:
        rate = timed(args, on_start=on_start)
        user_steps = rate * (time.perf_counter() - started[0])
    finally:
        for owner, attribute, _ in _WORLD_PARTS + own:  # unwrapped, so that the next view is timed alone
            setattr(owner, attribute, getattr(owner, attribute).__wrapped__)
    return [(part, seconds / user_steps) for part, seconds in parts.own.most_common()]


def print_breakdown(title: str, shares: list[tuple[str, float]], target: int) -> None:
    total = sum(seconds for _, seconds in shares)
    print(f"\n{title}: {1e6 * total:.1f} us per user-step; the target, {target:,} user-steps/s, allows "
          f"{1e6 / target:.1f} us")
    for part, seconds in shares:
        print(f"  {part:<58}{1e6 * seconds:>7.2f} us{100 * seconds / total:>7.1f}%")


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be at least 1, got {args.rounds}")
    figures: list[tuple[str, Callable[[], float], int | None]] = [
        (f"RecoWorld-v0 steps/s (slate {args.slate_size} of 50)", lambda: bench_env(args), 10_000),
        (f"vector env user-steps/s (B = {args.vector_users}, {args.index})", lambda: bench_vector(args),
         100_000 if args.index == "exact" else 70_000),
        (f"vector env user-steps/s (B = {args.vector_users}, {args.index}, sampled slates with repeats)",
         lambda: bench_vector(args, repeats=True), None),
        (f"user-item evaluations/s ({args.users} users)", lambda: bench_review(args), 3_000_000),
        (f"population env user-steps/s ({args.population_users} users, {args.index}, infos built)",
         lambda: bench_population(args), None),
        (f"population env user-steps/s ({args.population_users} users, {args.index}, infos on demand)",
         lambda: bench_population(args, infos="none"), 60_000),
    ]
    rounds = [[measure() for _, measure, _ in figures] for _ in range(args.rounds)]
    spread = args.rounds > 1
    print(f"{'benchmark':<64}{'median' if spread else 'value':>14}{'target':>12}"
          + (f"{f'range of {args.rounds} rounds':>28}" if spread else ""))
    for i, (name, _, target) in enumerate(figures):
        values = [measured[i] for measured in rounds]
        line = f"{name:<64}{float(np.median(values)):>14,.0f}{'' if target is None else f'{target:,}':>12}"
        print(line + (f"{f'{min(values):,.0f} - {max(values):,.0f}':>28}" if spread else ""))
    if args.breakdown:
        print_breakdown(f"vector env step (B = {args.vector_users})", breakdown(args, "vector"), 100_000)
        print_breakdown(f"population env step ({args.population_users} users)", breakdown(args, "population"),
                        100_000)
