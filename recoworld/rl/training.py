"""Train recommender policies with PPO (Ray RLlib, new API stack) on multi-turn retention rewards: the
training loop (`train`: the teacher, PPO iterations, evaluations, checkpoints, the safety stop, progress)
and the local Ray runtime it runs in.

The rest lives beside it: the config in recoworld/rl/train_config.py (`TrainConfig`), the env, its
reward wrappers and the PPO config in recoworld/rl/training_env.py (the observation path, action
masking and the retention-reward ablation), the comparison with the baselines in
recoworld/rl/evaluation.py.

## What made PPO learn (measured on configs/ppo_small.yaml, 2 shared CPUs)
What drives retention in the user model: the return rate grows as exp(4 x the satisfaction a
session ends on); with about 4% of impressions clicked, that satisfaction is mostly an average
over the *skipped* items' relevance to the user's current interests, worn down by fatigue from
near-duplicates of what the user saw lately. The oracle (recoworld/agents/oracle.py) ranks by
exactly that, reading the hidden interests and fatigue. A deployable policy has to infer the
interests from clicks, and the observation's 10-item history window usually holds no click at
all: the heuristics that rank by it (greedy, diverse) fall below random. Hand-written rankers,
300 users paired with random (a scratch harness on the vector env, not part of the package):
ranking by the *hidden* current interests +0.042 ± 0.020; by similarity to an episode-long
profile of engaged items +0.028 ± 0.022, +0.037 ± 0.022 with a near-duplicate penalty.

1. **Memory: the episode profile** (`EpisodeProfile` in recoworld/rl/features.py). The
   features add each candidate's cosine to decaying sums of every engaged and every skipped
   item since the episode began (the platform's own log), and how many engaged items the
   profile rests on. It is kept identically by the training wrappers and `RLlibRecommender`
   (tested turn by turn). With the old features and any reward below PPO stayed level with
   random (30-250 iterations; see git history of this docstring for that table).
2. **The reward: engagement only.** Paired with random, 500 users, retention (greedy decode):
   the env's default reward (engagement + return bonus 10 + churn penalty -10), 40 iterations:
   +0.016 ± 0.017; engagement only (`return_bonus: 0`, `churn_penalty: 0`), lr 3e-4, 50
   iterations: +0.032 ± 0.017; the same with lr 1e-3: +0.039 ± 0.017 at 50 iterations;
   engagement plus `day_reward: 10` (a reward per new active day, the metric itself): +0.020
   ± 0.018 at 50 and +0.018 ± 0.017 at 100; engagement plus `dislike: -2`: +0.034 ± 0.018 at
   30. The session-end terms are the metric's own signal but arrive once per session as a
   draw from a heavy-tailed gap, and their variance drowns what 100k env steps can learn;
   engagement is dense, and with the profile features it teaches relevance, which is what
   satisfaction (and so retention) follows.
3. **Not training too long.** More iterations raise clicks, not retention: lr 1e-3 +0.039 at
   50 iterations, +0.025 at 100; with `entropy_coeff: 0.01` +0.028 at 40, +0.025 at 80; with
   `dislike: -2` +0.034 at 30, +0.014 at 60 (all ± 0.017). As the policy sharpens on clicks
   it drifts from what keeps users satisfied.
4. **A teacher that knows the hidden state** (recoworld/rl/teacher.py, `teacher:` in the
   config). With 1-3 alone, PPO ended at 0.306 (3 seeds, 500 evaluation users): level with
   random (0.297) and instruct (0.305), 14% of the random-to-oracle gap. In simulation the
   hidden mindset exists, so before PPO the module learns by DAgger from the `oracle`, which
   reads it: the oracle plays round 0, the student the next rounds, and the scorer is refit
   after each on every turn gathered (the features the student saw, the oracle's slate). The
   deployed policy still sees only the observation features. Scratch runs (500 evaluation
   users, paired with random; gap = random-to-oracle): 3 rounds x 200 users with [64, 64],
   +0.030 ± 0.017 (44% of the gap); 4 x 250 with [128, 128], +0.038 ± 0.017 (55%). The
   student agrees with the oracle's first pick on about 60% of turns from round 1 on.
5. **PPO after the teacher is short and gentle.** On the engagement reward PPO pulls the
   distilled policy back towards clicks: at lr 1e-3, retention 0.339 after the teacher, 0.328
   after 10 iterations, 0.320 after 20 (seed 0). So `ppo_small` runs 10 iterations at lr 1e-4,
   which moved retention by +0.007, +0.005 and -0.003 in seeds 0-2: PPO's own stage adds
   little on this reward.
   The ablations above were measured before commit 63bfc9d, when the env runners drew every
   training user from the population's largest segment (the teacher and the evaluation drew
   the whole mix); then this stage moved retention by -0.002, +0.007 and -0.016.
   Iteration 0 of the curve is the policy right after the teacher, so a run shows what PPO
   added or took away.
6. Unchanged and not the bottleneck: the shared per-candidate scorer with one categorical per
   slot (distinct items at decode), gamma 0.9 per turn, PPO's advantage normalisation.
   Tried and not better: an entropy bonus (above), a disliked-items profile in hand-written
   rankers (+0.031 and +0.026 against +0.035 without, 500 users).
Evaluation users: 500 (`eval.n_users`); the paired 95% CI is then about ±0.017 instead of
±0.025 with 200. Where it stands: see docs/results.md ("Training a recommender with
RLlib"), from experiments/train_ppo.py --seeds 3.
Untried: a Plackett-Luce (top-K without replacement) action distribution, a per-session critic
target. The reward that follows retention without its noise is `SatisfactionReward` (recoworld/rl/training_env.py).

## Budget, progress and stopping
The budget is counts, never time: `teacher.rounds` DAgger rounds (of `teacher.users` users each),
then `iterations` PPO iterations (of `ppo.train_batch_size` env steps each), so the same config and
seed give the same curve. `max_minutes` is only a safety stop on the run's wall clock: hitting it
raises `TrainingTimeLimit`, one line saying how far the run got and which checkpoint it kept,
never a result that depends on the machine's speed. Every long step logs progress: the baselines'
evaluation (which recommender, users done), each teacher round, each PPO iteration, and the
policy's evaluations with their retention. The logged training return is the mean over the last
`RETURN_WINDOW` (100) finished episodes (`FinishedEpisodes` in each env runner), not over the
7-15 episodes one iteration finishes. `recoworld train` runs in `local_ray`: Ray's Python logs go to
`out/ray.log`, and SIGINT or SIGTERM stop the run with one line, exit code 130 or 143, and no
Ray process left.

## Outputs (under `out`)
`checkpoints/iter_NNNNNN/` (RLlib checkpoints, each moved into place only once complete),
`curve.parquet` (one row per iteration; retention columns on evaluation rounds),
`evaluation.parquet` (every evaluation round, policy and baselines), `learning_curve.png` and, from
`recoworld train`, `ray.log`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recoworld.agents import AgentFactory
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.rl.connectors import streamline
from recoworld.rl.env_runner import batched_sampling
from recoworld.rl.evaluation import FLOOR, POLICY, compare, evaluate, evaluate_references, play, plot_learning_curve
from recoworld.rl.policy import RLlibRecommender
from recoworld.rl.teacher import dagger
from recoworld.rl.train_config import TrainConfig
from recoworld.rl.training_env import RETURN_WINDOW, FinishedEpisodes, build_ppo_config, register_training_env
from recoworld.stats import mean_ci
from recoworld.storage import write_parquet_atomic

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.learner.learner_group import LearnerGroup
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.env.env_runner_group import EnvRunnerGroup

#: The curve's name for the policy at iteration 0 (right after the teacher): `paired/iteration_0` is the
#: policy's paired advantage over itself there, what PPO's own stage added.
STAGE_START = "iteration_0"


# ---------------------------------------------------------------------------- checkpoints


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under `out/checkpoints`, or None."""
    root = Path(out) / "checkpoints"
    done = sorted(p for p in root.glob("iter_*") if p.is_dir()) if root.is_dir() else []
    return done[-1] if done else None


def save_checkpoint(algo: Algorithm, out: str | os.PathLike[str]) -> Path:
    """Save to a temporary folder, then rename it into place: a crash never leaves a half checkpoint."""
    root = Path(out) / "checkpoints"
    final = root / f"iter_{algo.iteration:06d}"
    tmp = root / f".tmp_iter_{algo.iteration:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


# ---------------------------------------------------------------------------- training loop


def env_runners(algo: Algorithm) -> tuple[EnvRunnerGroup, bool]:
    """The algorithm's env runners, and whether the remote ones sample (else the driver's own runner does)."""
    if algo.config is None or algo.env_runner_group is None:
        raise RuntimeError("the algorithm has no env runners: it was never built, or it was stopped")
    return algo.env_runner_group, algo.config.num_env_runners > 0


def learners(algo: Algorithm) -> LearnerGroup:
    """The algorithm's learners, where the trained weights live."""
    if algo.learner_group is None:
        raise RuntimeError("the algorithm has no learner group: it was never built, or it was stopped")
    return algo.learner_group


def policy_module(algo: Algorithm) -> RLModule:
    """The policy's module in the driver (its local env runner's, or the learner's)."""
    module = algo.get_module()
    if module is None:
        raise RuntimeError("the algorithm holds no policy module in this process")
    return module


def sampling_envs(algo: Algorithm) -> list[tuple[str, int]]:
    """(env class, users) of every env runner that samples: the driver's with
    `num_env_runners: 0`, else the remote ones."""

    def describe(runner: Any) -> tuple[str, int]:  # a SingleAgentEnvRunner: RLlib's EnvRunner declares no env
        return type(runner.env.unwrapped).__name__, int(runner.num_envs)

    group, remote = env_runners(algo)
    return group.foreach_env_runner(describe, local_env_runner=not remote)


def collect_finished_episodes(algo: Algorithm) -> list[tuple[float, int]]:
    """(return, turns) of every training episode that ended since the last call, runner by runner in a
    fixed order (`FinishedEpisodes` of each sampling env runner)."""

    def take(runner: Any) -> list[tuple[float, int]]:
        env = runner.env
        while not isinstance(env, FinishedEpisodes):
            env = env.env
        finished, env.finished = env.finished, []
        return finished

    group, remote = env_runners(algo)
    return [ep for part in group.foreach_env_runner(take, local_env_runner=not remote) for ep in part]


class TrainingTimeLimit(RecoWorldError):
    """The run was still going at `max_minutes`: a safety stop, never a normal end (the budget is
    `iterations`), since a result cut short by the clock would depend on the machine."""


@dataclass
class SafetyStop:
    """`TrainConfig.max_minutes`, counted in wall-clock time from the start of `train`."""

    max_minutes: float | None
    started: float = field(default_factory=time.perf_counter)

    def passed(self) -> bool:
        return self.max_minutes is not None and time.perf_counter() - self.started > 60 * self.max_minutes

    def error(self, where: str, checkpoint: Path | None) -> TrainingTimeLimit:
        """The one-line error: the limit, the time, how far the run got and what it kept."""
        return TrainingTimeLimit(
            f"max_minutes={self.max_minutes:g} passed ({(time.perf_counter() - self.started) / 60:.1f} min) {where}; "
            f"{kept(checkpoint)}. It is a safety stop, not a budget: raise it, or lower iterations, teacher.rounds "
            "or eval.n_users")


def kept(checkpoint: Path | None) -> str:
    """What a stopped run leaves to resume from, for its one-line message."""
    return (f"the last checkpoint, {checkpoint}, is kept (--resume continues from it)" if checkpoint
            else "no checkpoint was written yet")


def progress(what: str, users: int, log: Callable[[str], None],
             check: Callable[[str], None] = lambda where: None) -> Callable[[str], None]:
    """An `on_episode` callback for `play` that logs `what` (formatted with `{agent}`) and the users done
    per recommender, every fifth of `users` and at the end, and passes where it is to `check` after
    each episode (the safety stop), so a minutes-long evaluation is never a silent wait."""
    done: dict[str, int] = {}
    every = max(1, users // 5)

    def on_episode(agent: str) -> None:
        done[agent] = n = done.get(agent, 0) + 1
        label = what.format(agent=agent)
        if n % every == 0 or n == users:
            log(f"{label}: {n}/{users} users")
        check(f"while {label} ({n}/{users} users)")

    return on_episode


@dataclass
class TrainResult:
    checkpoint: Path
    curve: pd.DataFrame
    table: pd.DataFrame
    plot: Path
    train_seconds: float
    envs: list[tuple[str, int]]  # (env class, users) of each sampling env runner (`sampling_envs`)
    eval_seconds: float = 0.0  # the policy's evaluation rounds and checkpoints, not in `train_seconds`


def train(
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
    references: pd.DataFrame | None = None,
) -> TrainResult:
    """Train PPO for `cfg.iterations`, evaluating every `cfg.eval.every`.

    The budget is `cfg.teacher.rounds` teacher rounds, then `cfg.iterations` PPO iterations (each
    `ppo.train_batch_size` env steps), so the same config and seed give the same curve and table on
    the same machine. `cfg.max_minutes` is only a safety stop: past it the run raises
    `TrainingTimeLimit` (saying how far it got) at the next check, after each episode of an
    evaluation or a teacher round and after each iteration; checkpoints written so far are kept.
    Everything long logs progress: the baselines' and the policy's evaluations (users done), each
    teacher round and each iteration (the return over the last `RETURN_WINDOW` finished episodes).

    `references` are the baselines' and oracle's evaluation episodes (`evaluate_references(cfg)`),
    computed here when None; they depend only on the world and the evaluation users, not on the
    training seed, so experiments/train_ppo.py --seeds computes them once for all seeds.
    `TrainResult.train_seconds` counts the teacher's rounds (`cfg.teacher`, before PPO, logged
    as iteration 0 of the curve), sampling and learning (`algo.train()`);
    `TrainResult.eval_seconds` the policy's evaluation rounds and checkpoints.

    With `resume`, continues from the newest checkpoint in `out` and its learning curve (the return
    window starts empty again). Ray must be initialised by the caller (or RLlib starts a default
    local cluster). Resuming restores the checkpoint's algorithm config (including its env runners),
    not `cfg`'s. A KeyboardInterrupt (Ctrl-C, or SIGTERM as the CLI maps it) stops the algorithm and
    propagates; the checkpoints written so far stay.
    """
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    clock = SafetyStop(cfg.max_minutes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = latest_checkpoint(out) if resume else None
    if resume and start is None:
        log(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
    torch.set_num_threads(cfg.ppo.torch_threads)
    register_training_env()
    # `streamline`: RLlib's default learner pipeline rebuilt in array operations, the same train batch bit for bit;
    # `batched_sampling`: RLlib's env runner with each user's episode chunks built once per sample, the same episodes
    algo = (Algorithm.from_checkpoint(str(start.resolve())) if start
            else batched_sampling(streamline(build_ppo_config(cfg))).build_algo())
    curve_path, eval_path = out / "curve.parquet", out / "evaluation.parquet"
    curve = pd.read_parquet(curve_path) if start and curve_path.exists() else pd.DataFrame()
    curve = curve[curve["iteration"] <= algo.iteration] if len(curve) else curve
    evals = pd.read_parquet(eval_path) if start and eval_path.exists() else pd.DataFrame()
    evals = evals[evals["iteration"] <= algo.iteration] if len(evals) else evals
    users_path = out / "policy_users.parquet"  # the policy's retention per evaluation user and round
    per_user = pd.read_parquet(users_path) if start and users_path.exists() else pd.DataFrame()
    per_user = per_user[per_user["iteration"] <= algo.iteration] if len(per_user) else per_user
    checkpoint = start

    def check(where: str) -> None:
        if clock.passed():
            raise clock.error(where, checkpoint)

    def checkpoint_now() -> Path:
        """The checkpoint of the current iteration, saved unless it already is."""
        nonlocal checkpoint
        if checkpoint is None or checkpoint.name != f"iter_{algo.iteration:06d}":
            checkpoint = save_checkpoint(algo, out)
        return checkpoint

    try:
        baselines = references
        if baselines is None:
            log(f"evaluating the baselines on {cfg.eval.n_users} evaluation users (once; they do not train)")
            baselines = evaluate_references(cfg, progress("evaluating {agent}", cfg.eval.n_users, log, check))
            if len(baselines):
                log("baselines' retention: " + ", ".join(
                    f"{name} {ret:.3f}" for name, ret in baselines.groupby("recommender", sort=False)["retention"]
                    .mean().items()))

        def evaluate_policy(row: dict[str, Any]) -> str:
            """Evaluate the current policy into `row`, `evals` and `per_user`, checkpoint it; the log's line."""
            nonlocal evals, per_user
            policy = evaluate(cfg, {POLICY: lambda catalog, k, seed: RLlibRecommender(
                policy_module(algo), k, seed, sample=cfg.eval.decode == "sample")},
                on_episode=progress(f"evaluating {{agent}} at iteration {algo.iteration}", cfg.eval.n_users, log,
                                    check))
            table = compare(pd.concat([policy, baselines], ignore_index=True))
            for _, r in table.iterrows():
                row[f"retention/{r['recommender']}"] = r["retention"]
                row[f"retention_ci/{r['recommender']}"] = r["retention_ci"]
                if r["recommender"] != POLICY:
                    row[f"paired/{r['recommender']}"] = r[f"{POLICY}_minus_this"]
                    row[f"paired_ci/{r['recommender']}"] = r[f"{POLICY}_minus_this_ci"]
            mine = policy.set_index("user_id")["retention"]
            if len(per_user) and (per_user["iteration"] == 0).any() and algo.iteration > 0:
                # What PPO's own stage did to the policy it started from (after the teacher): paired per user.
                taught = per_user[per_user["iteration"] == 0].set_index("user_id")["retention"]
                row[f"paired/{STAGE_START}"], row[f"paired_ci/{STAGE_START}"] = mean_ci((mine - taught).dropna())
            per_user = pd.concat([per_user, policy[["user_id", "retention"]].assign(iteration=algo.iteration)],
                                 ignore_index=True)
            write_parquet_atomic(pa.Table.from_pandas(per_user, preserve_index=False), users_path)
            evals = pd.concat([evals, table.assign(iteration=algo.iteration)], ignore_index=True)
            write_parquet_atomic(pa.Table.from_pandas(evals, preserve_index=False), eval_path)
            checkpoint_now()
            paired = (f", {row[f'paired/{FLOOR}']:+.3f} ± {row[f'paired_ci/{FLOOR}']:.3f} over {FLOOR} (paired)"
                      if f"paired/{FLOOR}" in row else "")
            return (f"iter {algo.iteration:4d}  retention {row[f'retention/{POLICY}']:.3f} ± "
                    f"{row[f'retention_ci/{POLICY}']:.3f} on {cfg.eval.n_users} evaluation users{paired}")

        eval_seconds = 0.0
        t0, rows = time.perf_counter(), curve.to_dict("records")
        if start:
            log(f"resumed from {start} at iteration {algo.iteration}")
        elif cfg.teacher.rounds:
            rounds = pretrain_with_teacher(cfg, algo, log, check)
            row: dict[str, Any] = {"iteration": 0, "env_steps": 0, "seconds": time.perf_counter() - t0,
                                   "teacher/turns": int(rounds["turns"].iloc[-1]),
                                   "teacher/loss": float(rounds["loss"].iloc[-1])}
            t_eval = time.perf_counter()
            msg = evaluate_policy(row)
            eval_seconds += time.perf_counter() - t_eval
            rows.append(row)
            write_parquet_atomic(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), curve_path)
            log(f"{msg}  (after {cfg.teacher.rounds} teacher round(s), {row['seconds']:.1f}s)")
        envs = sampling_envs(algo)
        log(f"sampling: {len(envs)} env runner(s), each a {envs[0][0]} of {envs[0][1]} user(s)")
        log(f"PPO: iterations {algo.iteration + 1}-{cfg.iterations} of {cfg.ppo.train_batch_size} env steps; return = "
            f"mean training return of the last {RETURN_WINDOW} finished episodes")
        window: deque[tuple[float, int]] = deque(maxlen=RETURN_WINDOW)
        finished = 0
        while algo.iteration < cfg.iterations:
            result = algo.train()
            it = algo.iteration
            t_eval = time.perf_counter()
            episodes = collect_finished_episodes(algo)
            window.extend(episodes)
            finished += len(episodes)
            returns, lengths = np.array([r for r, _ in window]), np.array([n for _, n in window])
            learner = result.get("learners", {}).get("default_policy", {})
            row = {
                "iteration": it,
                "env_steps": int(result.get("num_env_steps_sampled_lifetime", 0)),
                "seconds": time.perf_counter() - t0 - eval_seconds,  # teacher, sampling and learning so far
                "charts/episode_return_mean": float(returns.mean()) if len(window) else np.nan,
                "charts/episode_len_mean": float(lengths.mean()) if len(window) else np.nan,
                "charts/episodes_in_window": len(window),
                "charts/episodes": finished,
                "losses/policy_loss": float(learner.get("policy_loss", np.nan)),
                "losses/vf_loss": float(learner.get("vf_loss", np.nan)),
                "losses/entropy": float(learner.get("entropy", np.nan)),
            }
            log(f"iter {it:4d}/{cfg.iterations}  steps {row['env_steps']:8d}  return "
                f"{row['charts/episode_return_mean']:8.2f} (last {len(window)} episodes)  "
                f"entropy {row['losses/entropy']:.3f}  {row['seconds']:6.1f}s")
            if it % cfg.eval.every == 0 or it >= cfg.iterations:
                log(evaluate_policy(row))
            eval_seconds += time.perf_counter() - t_eval
            rows.append(row)
            write_parquet_atomic(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False), curve_path)
            if it < cfg.iterations and clock.passed():
                checkpoint_now()
                check(f"after PPO iteration {it} of {cfg.iterations}")
        train_seconds = time.perf_counter() - t0 - eval_seconds
        last = checkpoint_now()
    finally:
        algo.stop()
    curve = pd.DataFrame(rows)
    final = evals[evals["iteration"] == evals["iteration"].max()].drop(columns="iteration") if len(evals) else evals
    plot = plot_learning_curve(curve, out / "learning_curve.png")
    return TrainResult(last, curve, final.reset_index(drop=True), plot, train_seconds, envs, eval_seconds)


def pretrain_with_teacher(cfg: TrainConfig, algo: Algorithm, log: Callable[[str], None] = print,
                          check: Callable[[str], None] = lambda where: None) -> pd.DataFrame:
    """DAgger from the oracle into the policy before PPO (recoworld/rl/teacher.py), on fresh
    training users in the training world; then the learner and every env runner hold the
    distilled weights. One row per round; each round logs its users' progress and passes where
    it is to `check` (the safety stop)."""
    from ray.rllib.core import DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

    # The env runners' modules are inference-only, so the student is a trainable copy of the learner's.
    runner = policy_module(algo)
    student = RLModuleSpec(module_class=type(runner), observation_space=runner.observation_space,
                           action_space=runner.action_space, model_config=runner.model_config).build()
    if not isinstance(student, TorchRLModule):
        raise ConfigError(f"the teacher fits a torch module, got {type(student).__name__}")
    student.set_state(algo.get_weights()[DEFAULT_MODULE_ID])
    played = count()

    def play_round(agents: dict[str, AgentFactory], n_users: int,
                   seed: int) -> pd.DataFrame:
        round_ = next(played)
        who = "the oracle plays" if round_ == 0 else "the student plays"
        return play(cfg, cfg.world, agents, n_users, seed, expose_mindset=True, on_episode=progress(
            f"teacher round {round_} of {cfg.teacher.rounds}, {who}", n_users, log, check))

    rounds = dagger(student, cfg.teacher, cfg.seed, play_round, log)
    learner_group, (group, _) = learners(algo), env_runners(algo)
    learner_group.set_weights({DEFAULT_MODULE_ID: student.get_state()})
    group.sync_weights(from_worker_or_learner_group=learner_group, inference_only=True, timeout_seconds=60.0)
    return rounds


@contextlib.contextmanager
def ray_logs_to(path: Path) -> Iterator[Path]:
    """While inside, Ray's and RLlib's Python log records (start-up notes, deprecation warnings for
    RLlib's own internals, which a user can do nothing about) go to `path` instead of the terminal,
    where they would bury the progress lines. Ray's C++ core logs its errors to stderr regardless."""
    import logging

    import ray.rllib  # noqa: F401  (sets up the `ray.rllib` logger's own terminal handler, replaced below)

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = [(logger, logger.handlers[:]) for logger in map(logging.getLogger, ("ray", "ray.rllib", "ray.tune"))]
    for logger, _ in saved:
        logger.handlers = [handler]
    try:
        yield path
    finally:
        for logger, handlers in saved:
            logger.handlers = handlers
        handler.close()


class StopSignals:
    """While inside, SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so `finally` blocks
    stop RLlib and shut Ray down; the first one is kept (`received`, for the exit code 128 + its number)
    and later ones are ignored, so cleanup is not interrupted in turn.

    `ray.init` puts its own SIGTERM handler in place, which on Ray 2.60 prints a C++ stack dump and
    aborts the process (exit -6) with its workers left to Ray's own cleanup: call `arm()` again once Ray
    is up."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        self._previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        self.arm()
        return self

    def arm(self) -> None:
        for signum in self._previous:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def start_ray(num_env_runners: int) -> None:
    """A local Ray runtime with one CPU per env runner plus one for the driver (at least 2)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(num_cpus=max(2, num_env_runners + 1), include_dashboard=False, log_to_driver=False)


@contextlib.contextmanager
def local_ray(num_env_runners: int, logs: Path, stop: StopSignals) -> Iterator[None]:
    """A local Ray runtime (`start_ray`) for one training run that stops cleanly: Ray's Python logs go
    to `logs` (`ray_logs_to`), SIGINT and SIGTERM raise KeyboardInterrupt (`stop`, armed again once
    Ray is up), and on the way out, however it ends, Ray is shut down and anything left of its session
    is ended, so no `ray::` process outlives the run. A Ray someone else started is left running."""
    import ray

    from recoworld.studies.ray_cleanup import STOP_REQUESTED, end_own_sessions, stop_noted_during_init

    started = not ray.is_initialized()
    with ray_logs_to(logs), stop:
        try:
            with stop_noted_during_init():
                start_ray(num_env_runners)
            stop.arm()
            if STOP_REQUESTED.is_set():  # a SIGTERM that Ray's own handler took while ray.init ran
                stop.received = stop.received or signal.SIGTERM
                raise KeyboardInterrupt
            yield
        finally:
            if started:
                ray.shutdown()
                end_own_sessions()
