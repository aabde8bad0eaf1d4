"""Benchmark: env steps RLlib's env runner samples per second, old way vs native vector env.

Builds the env runner `recoworld train` uses (`build_ppo_config`: same world, users,
features, action mask and `SlateScorerRLModule`) for the world in `--config`, and times
`SingleAgentEnvRunner.sample` (env steps, connectors, exploration forward passes; no
learning) in this process:

- old: one `RecoWorld-v0` per runner (`num_envs_per_env_runner=1`, RLlib's `sync` vectorization);
- new: `RecoWorldVectorEnv` of N users (`vector_entry_point`), for each N in `--users`.

Prints steps/s for each and the ratio of the config's N (`num_envs_per_env_runner`) to
the old way. Then sampling plus learning: `--learn-iterations` PPO iterations (`algo.train()`:
sampling, GAE, `ppo.num_epochs` SGD passes; after one warm-up iteration) with the config's own
runners and batch, as env steps sampled per second of training. Runs in a few minutes on 2 CPUs.
The old way has no training-only reward terms (`day_reward`, `satisfaction_reward`, `rating_reward` need the
vector env), so time a config without them, such as configs/ppo_small.yaml.

    python experiments/bench_rllib.py [--config configs/ppo_small.yaml] [--steps 4000] [--users 4 8 16 32]
    python experiments/bench_rllib.py --config configs/ppo_retention.yaml --skip-old --users 64 256 \
        --num-envs-per-env-runner 256 --train-batch-size 8192 --minibatch-size 2048 --num-epochs 2
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from recoworld.rl.train_config import TrainConfig
from recoworld.rl.training_env import build_ppo_config


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
    skip_old: bool = False
    """skip the one-env-per-runner timing (it cannot run a config with training-only reward terms)"""


def steps_per_second(cfg: TrainConfig, num_envs: int, mode: str, steps: int, repeats: int) -> float:
    """Env steps/s of one local env runner sampling `steps` steps (best of `repeats`)."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    config = build_ppo_config(cfg).env_runners(num_envs_per_env_runner=num_envs, gym_env_vectorize_mode=mode,
                                               rollout_fragment_length=max(1, steps // num_envs))
    runner = SingleAgentEnvRunner(config=config)
    try:
        runner.sample(num_timesteps=steps // 4, random_actions=False)  # warm-up: build, reset, first episodes
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            episodes = runner.sample(num_timesteps=steps, random_actions=False)
            elapsed = time.perf_counter() - t0
            best = max(best, sum(len(e) for e in episodes) / elapsed)
        return best
    finally:
        runner.stop()


def train_steps_per_second(cfg: TrainConfig, iterations: int) -> float:
    """Env steps/s of `iterations` PPO iterations (sampling and learning), after one warm-up iteration."""
    algo = build_ppo_config(cfg).build_algo()
    try:
        before = algo.train()["num_env_steps_sampled_lifetime"]  # warm-up: build, reset, first episodes
        t0 = time.perf_counter()
        for _ in range(iterations):
            after = algo.train()["num_env_steps_sampled_lifetime"]
        return (after - before) / (time.perf_counter() - t0)
    finally:
        algo.stop()


def main(args: Args) -> None:
    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ppo = {"train_batch_size": args.train_batch_size, "minibatch_size": args.minibatch_size,
           "num_epochs": args.num_epochs}
    cfg = TrainConfig.load(args.config, num_envs_per_env_runner=args.num_envs_per_env_runner,
                           ppo={k: v for k, v in ppo.items() if v is not None})
    torch.set_num_threads(cfg.ppo.torch_threads)
    w = cfg.world
    print(f"world: slate {w.slate_size} of {w.n_candidates} candidates, history {w.history_len}, "
          f"{w.horizon_days:g} days; network {cfg.ppo.network}; {args.steps} env steps per timing")
    old = None if args.skip_old else steps_per_second(cfg, 1, "sync", args.steps, args.repeats)
    if old is not None:
        print(f"old  one RecoWorld-v0 per runner (sync, num_envs 1)      {old:9.0f} env steps/s")
    rates = {}
    for n in sorted({*args.users, cfg.num_envs_per_env_runner}):
        rates[n] = steps_per_second(cfg, n, "vector_entry_point", max(args.steps, n), args.repeats)
        print(f"new  RecoWorldVectorEnv, {n:4d} users (vector_entry_point) {rates[n]:9.0f} env steps/s"
              + (f"  x{rates[n] / old:.2f}" if old else ""))
    n = cfg.num_envs_per_env_runner
    if old is not None:
        print(f"\nnum_envs_per_env_runner={n} (the config's): {rates[n]:.0f} vs {old:.0f} env steps/s, "
              f"ratio {rates[n] / old:.2f}")
    if args.learn_iterations:
        rate = train_steps_per_second(cfg, args.learn_iterations)
        print(f"sampling + learning: {args.learn_iterations} PPO iterations of {cfg.ppo.train_batch_size} env steps "
              f"({cfg.ppo.num_epochs} epochs, minibatch {cfg.ppo.minibatch_size}), {cfg.num_env_runners} env runner(s) "
              f"x {n} users: {rate:.0f} env steps/s")


if __name__ == "__main__":
    main(tyro.cli(Args))
