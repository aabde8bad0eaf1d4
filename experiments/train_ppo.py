"""PPO (Ray RLlib, new API stack) on RecoWorld-v0's multi-turn retention reward.

Trains a slate policy, evaluates it every few iterations against the baselines on a fixed,
seeded evaluation population, and prints retention with 95% confidence intervals, plus the
policy's paired per-user advantage over each baseline and the share of the random-to-oracle
gap closed (the oracle reads the hidden mindset: a headroom reference, not a recommender).
With `--seeds N` it trains N seeds one after another (seed, seed + 1, ...) and ends with the
mean over seeds of the final paired advantage over each baseline, with a 95% t interval. How
observations reach the model (user-relative features + action mask) is documented in
recoworld/rl/training_env.py.

    python experiments/train_ppo.py --config configs/ppo_small.yaml            # one seed
    python experiments/train_ppo.py --config configs/ppo_small.yaml --seeds 3  # seeds 0, 1, 2: out/seed_N each
    python experiments/train_ppo.py --config configs/ppo_small.yaml --resume   # continue from out/
    python experiments/train_ppo.py --config configs/ppo_retention.yaml --seeds 3  # RL from reward alone
    recoworld simulate --agents random,popular,rllib:runs/ppo_small            # use it in a study
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import tyro

from recoworld.rl.evaluation import POLICY, evaluate_references, format_seed_summary, format_table, seed_summary
from recoworld.rl.train_config import TrainConfig
from recoworld.rl.training import STAGE_START, progress, start_ray, train


@dataclass
class Args:
    config: Path = Path("configs/ppo_small.yaml")
    """training config (YAML): world, population, reward weights, PPO settings, budget"""
    out: Path = Path("runs/ppo_small")
    """output folder: checkpoints/, curve.parquet, evaluation.parquet, learning_curve.png"""
    resume: bool = False
    """continue from the newest checkpoint in `out`"""
    iterations: int | None = None
    """override the budget in PPO iterations"""
    num_env_runners: int | None = None
    """override the number of remote env runners (0 = sample in this process)"""
    num_envs_per_env_runner: int | None = None
    """override the users each env runner samples together (one RecoWorldVectorEnv)"""
    seed: int | None = None
    """override the training seed (the first one with --seeds)"""
    seeds: int = 1
    """train this many seeds (seed, seed + 1, ...), each in out/seed_N, and summarise them"""
    train_batch_size: int | None = None
    """override the env steps per iteration"""
    minibatch_size: int | None = None
    """override the SGD minibatch size"""
    eval_users: int | None = None
    """override the number of evaluation users"""
    eval_every: int | None = None
    """override the iterations between evaluations"""
    teacher_rounds: int | None = None
    """override the oracle teacher's DAgger rounds before PPO (0 = PPO alone)"""
    teacher_users: int | None = None
    """override the training users per teacher round"""
    gamma: float | None = None
    """override PPO's discount per turn"""
    lr: float | None = None
    """override PPO's learning rate"""
    satisfaction_reward: float | None = None
    """override the weight of the per-turn change of satisfaction in the training reward (0 = off)"""
    rating_reward: float | None = None
    """override the weight of (rating - 3) at each session end in the training reward (0 = off)"""
    features: str | None = None
    """override the policy's feature set: episode, session or intent (recoworld/rl/features.py)"""
    slate: str | None = None
    """override how training draws a slate: independent (each slot on its own) or distinct (slot by slot)"""
    num_epochs: int | None = None
    """override the SGD passes per iteration"""
    critic_hidden_state: bool | None = None
    """override whether the value head also reads the users' hidden state in training (the policy head never)"""
    references: Path | None = None
    """a parquet of the baselines' and oracle's evaluation episodes: read if it exists, else written once computed.
    They depend only on the world and the evaluation users, so an ablation's runs can share them; the file does not
    record which world and users made it: name it after them"""


if __name__ == "__main__":
    args = tyro.cli(Args)

    # CONFIG: the YAML file, with command-line overrides on top (validated by pydantic)
    cfg = TrainConfig.load(
        args.config,
        iterations=args.iterations,
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner,
        seed=args.seed,
        satisfaction_reward=args.satisfaction_reward,
        rating_reward=args.rating_reward,
        critic_hidden_state=args.critic_hidden_state,
        features=args.features,
        ppo={k: v for k, v in {"train_batch_size": args.train_batch_size, "minibatch_size": args.minibatch_size,
                               "gamma": args.gamma, "lr": args.lr, "slate": args.slate,
                               "num_epochs": args.num_epochs}.items() if v is not None},
        eval={k: v for k, v in {"n_users": args.eval_users, "every": args.eval_every}.items() if v is not None},
        teacher={k: v for k, v in {"rounds": args.teacher_rounds, "users": args.teacher_users}.items()
                 if v is not None},
    )
    print(f"world: slate {cfg.world.slate_size} of {cfg.world.n_candidates} candidates, "
          f"{cfg.world.horizon_days:g} days; PPO: {cfg.iterations} iterations x {cfg.ppo.train_batch_size} steps, "
          f"{cfg.num_env_runners} env runners x {cfg.num_envs_per_env_runner} users, action mask {cfg.action_mask}, "
          f"seed {cfg.seed}")

    # TRY NOT TO MODIFY: Ray runtime (seeding happens in RLlib via config.debugging(seed=...))
    start_ray(cfg.num_env_runners)

    print(f"machine: {platform.machine()} {platform.processor() or platform.platform()}, "
          f"{os.cpu_count()} CPUs; started {time.strftime('%Y-%m-%d %H:%M')}")
    # The baselines and the oracle play the same evaluation users whatever the training seed: once for all seeds
    references = None
    if args.references is not None and args.references.exists():
        references = pd.read_parquet(args.references)
        print(f"references: {args.references} ({references['recommender'].nunique()} recommenders)")
    elif (args.seeds > 1 or args.references is not None) and not args.resume:
        wall = time.perf_counter()
        references = evaluate_references(cfg, progress("evaluating {agent}", cfg.eval.n_users, print))
        if args.references is not None:
            references.to_parquet(args.references)
        print(f"references ({', '.join(cfg.eval.baselines)}{', oracle' if cfg.eval.oracle else ''}) on "
              f"{cfg.eval.n_users} evaluation users: {time.perf_counter() - wall:.0f} s")

    tables: dict[int, pd.DataFrame] = {}
    seconds: dict[int, float] = {}
    for seed in range(cfg.seed, cfg.seed + args.seeds):
        run_cfg = cfg.model_copy(update={"seed": seed})
        out = args.out if args.seeds == 1 else args.out / f"seed_{seed}"
        if args.seeds > 1:
            print(f"\n=== seed {seed} -> {out}")

        # ALGO LOGIC: PPO iterations, periodic evaluation, checkpoints (recoworld.rl.training.train)
        wall = time.perf_counter()
        result = train(run_cfg, out, resume=args.resume, references=references)
        wall = time.perf_counter() - wall
        tables[seed] = result.table
        seconds[seed] = result.train_seconds

        # RESULTS: retention on the evaluation users (95% CI) and the paired advantage of the policy
        print()
        print(f"evaluation: {cfg.eval.n_users} users (seed {cfg.eval.seed}), retention = share of days active")
        print(format_table(result.table))
        taught = result.curve[result.curve["iteration"] == 0]
        if len(taught):  # the teacher's DAgger rounds ran before PPO: what PPO added on top
            before = taught[f"retention/{POLICY}"].iloc[0]
            after = result.table.set_index("recommender").loc[POLICY, "retention"]
            last = result.curve.iloc[-1]
            stage = (f"; PPO's own stage, final - iteration 0 (paired): {last[f'paired/{STAGE_START}']:+.3f} ± "
                     f"{last[f'paired_ci/{STAGE_START}']:.3f}" if f"paired/{STAGE_START}" in result.curve else "")
            print(f"after the teacher's rounds (iteration 0): retention {before:.3f}; after PPO: {after:.3f}{stage}")
        print()
        print(f"charts/train_seconds {result.train_seconds:.1f} (teacher rounds, sampling and learning)  "
              f"policy evaluation {result.eval_seconds:.1f}  wall incl. setup and evaluation {wall:.1f}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"learning curve: {result.plot}")

    if args.seeds > 1:
        print(f"\n=== {args.seeds} seeds ({cfg.seed}..{cfg.seed + args.seeds - 1}): final paired advantage, "
              "mean over seeds ± 95% t interval")
        print(format_seed_summary(seed_summary(tables)))
        print("training seconds per seed (teacher rounds, sampling and learning): "
              + ", ".join(f"seed {k}: {v:.0f}" for k, v in seconds.items()))
