"""Benchmark: env steps RLlib's env runner samples per second, old way vs native vector env.

Builds the env runner `recoworld train` uses (`streamline(build_ppo_config(cfg))`: same world, users,
features, action mask and `SlateScorerRLModule`) for the world in `--config`, and times
`SingleAgentEnvRunner.sample` (env steps, connectors, exploration forward passes; no
learning) in this process:

- old: one `RecoWorld-v0` per runner (`num_envs_per_env_runner=1`, RLlib's `sync` vectorization);
- new: `RecoWorldVectorEnv` of N users (`vector_entry_point`), for each N in `--users`.

Prints steps/s for each and the ratio of the config's N (`num_envs_per_env_runner`) to
the old way. Then sampling plus learning: `--learn-iterations` PPO iterations (`algo.train()`:
sampling, GAE, `ppo.num_epochs` SGD passes; after one warm-up iteration) with the config's own
runners and batch, as env steps sampled per second of training, for each learner pipeline in
`--pipelines`: `default` (RLlib's own learner connectors, what `build_ppo_config` builds),
`streamlined` (`recoworld.rl.connectors.streamline`: the same train batch built in array operations) and
`batched` (`streamline` plus `recoworld.rl.env_runner.batched_sampling`, what `recoworld train` runs: the same
episodes, each user's chunks built once per sample). The sampling-only timing runs each env runner in
`--runners` (`default`: RLlib's `SingleAgentEnvRunner`; `batched`: `BatchedEnvRunner`), their runs interleaved.
The pipelines' algorithms are built side by side and their iterations interleaved, so a change in the machine's
load hits both alike (with several `--learn-threads`, each pipeline at each torch thread count, interleaved the
same way); each line also splits the iteration into learning (`learner_group.update`: the learner connectors and
SGD) and the rest (mostly sampling). Runs in a few minutes on 2 CPUs.
The old way has no training-only reward terms (`day_reward`, `satisfaction_reward`, `rating_reward` need the
vector env), so time a config without them, such as configs/ppo_small.yaml.

    python experiments/bench_rllib.py [--config configs/ppo_small.yaml] [--steps 4000] [--users 4 8 16 32]
    python experiments/bench_rllib.py --config configs/ppo_retention.yaml --skip-old --users 1024 \
        --num-envs-per-env-runner 1024 --train-batch-size 16384 --minibatch-size 4096 --num-epochs 1 --steps 16384
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tyro

from recoworld.rl.connectors import streamline
from recoworld.rl.env_runner import BatchedEnvRunner, batched_sampling
from recoworld.rl.train_config import TrainConfig
from recoworld.rl.training_env import build_ppo_config

Pipeline = Literal["default", "streamlined", "batched"]
Runner = Literal["default", "batched"]


@dataclass
class Args:
    config: Path = Path("configs/ppo_small.yaml")
    """training config whose world, users and network are sampled"""
    steps: int = 4000
    """env steps timed per setting (after a warm-up of a quarter of that)"""
    users: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    """vector env sizes to time besides the config's `num_envs_per_env_runner`"""
    repeats: int = 2
    """timed runs per setting; the best is reported"""
    learn_iterations: int = 3
    """PPO iterations timed for sampling plus learning (0 = skip)"""
    num_envs_per_env_runner: int | None = None
    """override the config's users per env runner (sampling plus learning, and the ratio line)"""
    train_batch_size: int | None = None
    """override the config's env steps per PPO iteration"""
    minibatch_size: int | None = None
    """override the config's SGD minibatch"""
    num_epochs: int | None = None
    """override the config's SGD passes per iteration"""
    hidden: list[int] | None = None
    """override the config's hidden layers (SGD's cost grows with their width)"""
    num_env_runners: int | None = None
    """override the config's env runners (0: sample in this process)"""
    torch_threads: int | None = None
    """override the config's torch threads in this process (sampling forward passes and SGD)"""
    pipelines: list[Pipeline] = field(default_factory=lambda: ["default", "streamlined", "batched"])
    """learner pipelines timed for sampling plus learning (see the module docstring)"""
    learn_threads: list[int] | None = None
    """torch thread counts timed for sampling plus learning, interleaved (default: the config's torch_threads)"""
    runners: list[Runner] = field(default_factory=lambda: ["default", "batched"])
    """env runners timed for sampling alone (see the module docstring)"""
    skip_old: bool = False
    """skip the one-env-per-runner timing (it cannot run a config with training-only reward terms)"""


def steps_per_second(cfg: TrainConfig, num_envs: int, mode: str, steps: int, repeats: int,
                     runners: list[Runner]) -> dict[Runner, float]:
    """Env steps/s of one local env runner of each kind sampling `steps` steps (best of `repeats`, the kinds'
    runs interleaved)."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    config = streamline(build_ppo_config(cfg)).env_runners(
        num_envs_per_env_runner=num_envs, gym_env_vectorize_mode=mode,
        rollout_fragment_length=max(1, steps // num_envs))
    classes = {"default": SingleAgentEnvRunner, "batched": BatchedEnvRunner}
    built = {r: classes[r](config=config) for r in runners}
    try:
        for runner in built.values():  # warm-up: build, reset, first episodes
            runner.sample(num_timesteps=steps // 4, random_actions=False)
        best = dict.fromkeys(runners, 0.0)
        for _ in range(repeats):
            for r, runner in built.items():
                t0 = time.perf_counter()
                episodes = runner.sample(num_timesteps=steps, random_actions=False)
                elapsed = time.perf_counter() - t0
                best[r] = max(best[r], sum(len(e) for e in episodes) / elapsed)
        return best
    finally:
        for runner in built.values():
            runner.stop()


@dataclass
class Timing:
    """One pipeline's timed PPO iterations: env steps sampled, seconds in all, seconds in `learner_group.update`."""

    steps: int = 0
    seconds: float = 0.0
    learning: float = 0.0


def timed_updates(algo: Any, timing: Timing) -> None:
    """Count the seconds of this algorithm's learner updates into `timing` (wraps its `learner_group.update`)."""
    update: Callable[..., Any] = algo.learner_group.update

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return update(*args, **kwargs)
        finally:
            timing.learning += time.perf_counter() - t0

    algo.learner_group.update = timed


Variant = tuple[Pipeline, int]  # (learner pipeline, torch threads)


def train_steps_per_second(cfg: TrainConfig, iterations: int, variants: list[Variant]) -> dict[Variant, Timing]:
    """`iterations` PPO iterations (sampling and learning) per (pipeline, torch threads), after one warm-up
    iteration each, the variants' iterations interleaved."""
    import torch

    build = {"default": build_ppo_config, "streamlined": lambda c: streamline(build_ppo_config(c)),
             "batched": lambda c: batched_sampling(streamline(build_ppo_config(c)))}
    algos = {v: build[v[0]](cfg).build_algo() for v in variants}
    try:
        timings = {v: Timing() for v in variants}
        lifetime = {}
        for v in variants:  # warm-up
            torch.set_num_threads(v[1])
            lifetime[v] = algos[v].train()["num_env_steps_sampled_lifetime"]
            timed_updates(algos[v], timings[v])
        for _ in range(iterations):
            for v in variants:
                torch.set_num_threads(v[1])
                t0 = time.perf_counter()
                after = algos[v].train()["num_env_steps_sampled_lifetime"]
                timings[v].seconds += time.perf_counter() - t0
                timings[v].steps += int(after - lifetime[v])
                lifetime[v] = after
        return timings
    finally:
        for algo in algos.values():
            algo.stop()


def main(args: Args) -> None:
    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ppo = {"train_batch_size": args.train_batch_size, "minibatch_size": args.minibatch_size,
           "num_epochs": args.num_epochs, "torch_threads": args.torch_threads, "hidden": args.hidden}
    cfg = TrainConfig.load(args.config, num_envs_per_env_runner=args.num_envs_per_env_runner,
                           num_env_runners=args.num_env_runners, ppo={k: v for k, v in ppo.items() if v is not None})
    torch.set_num_threads(cfg.ppo.torch_threads)
    w = cfg.world
    print(f"world: slate {w.slate_size} of {w.n_candidates} candidates, history {w.history_len}, "
          f"{w.horizon_days:g} days; network {cfg.ppo.network} {cfg.ppo.hidden}; {args.steps} env steps per timing")
    old = None if args.skip_old else steps_per_second(cfg, 1, "sync", args.steps, args.repeats, ["default"])["default"]
    if old is not None:
        print(f"old  one RecoWorld-v0 per runner (sync, num_envs 1)      {old:9.0f} env steps/s")
    rates = {}
    for n in sorted({*args.users, cfg.num_envs_per_env_runner}):
        by_runner = steps_per_second(cfg, n, "vector_entry_point", max(args.steps, n), args.repeats, args.runners)
        rates[n] = by_runner[args.runners[0]]
        for r, rate in by_runner.items():
            print(f"new  RecoWorldVectorEnv, {n:4d} users (vector_entry_point), {r:7s} env runner {rate:9.0f} "
                  "env steps/s" + (f"  x{rate / old:.2f}" if old else ""))
    n = cfg.num_envs_per_env_runner
    if old is not None:
        print(f"\nnum_envs_per_env_runner={n} (the config's): {rates[n]:.0f} vs {old:.0f} env steps/s, "
              f"ratio {rates[n] / old:.2f}")
    if args.learn_iterations:
        threads = args.learn_threads or [cfg.ppo.torch_threads]
        print(f"sampling + learning: {args.learn_iterations} PPO iterations of {cfg.ppo.train_batch_size} env steps "
              f"({cfg.ppo.num_epochs} epochs, minibatch {cfg.ppo.minibatch_size}), {cfg.num_env_runners} env runner(s) "
              f"x {n} users:")
        variants = [(p, t) for p in args.pipelines for t in threads]
        for (p, t), timing in train_steps_per_second(cfg, args.learn_iterations, variants).items():
            per, learning = timing.seconds / args.learn_iterations, timing.learning / args.learn_iterations
            print(f"  {p:11s} learner pipeline, {t} torch thread(s): {timing.steps / timing.seconds:7.0f} env steps/s; "
                  f"per iteration {per:.2f} s: learning {learning:.2f} s, sampling and the rest {per - learning:.2f} s")


if __name__ == "__main__":
    main(tyro.cli(Args))
