"""Train recommender policies with PPO (Ray RLlib, new API stack) on multi-turn retention rewards.

## Observation and action path
The env's `Dict` observation goes through `UserRelativeObservation` (recoworld/rl/features.py)
inside each env runner: candidates become a few user-relative features each (similarity to
engaged and to skipped history, repetition, instruction match, quality, duration, popularity,
availability, and similarity to the episode-long profiles of engaged and skipped items that
the wrapper keeps per user, `EpisodeProfile`). A generic MLP learns a useful ranking from that in minutes; from the raw
2,000-number `Dict` flattened by RLlib's `FlattenObservations` it would first have to learn
the user-item dot product. The slate action stays the env's `MultiDiscrete([C] * K)`: one
categorical per slot (RLlib's MultiCategorical), duplicates replaced by the env.

The network (`ppo.network`) is `SlateScorerRLModule` by default (recoworld/rl/rl_module.py):
one small MLP shared by all candidates outputs each candidate's logit for every slot, so the
policy learns one scoring rule instead of one per retrieval position. `mlp` uses RLlib's
default PPO MLP over the whole feature vector instead.

## Env runners: a native vector env
Each env runner samples `num_envs_per_env_runner` users (default 16) from one
`RecoWorldVectorEnv` (recoworld/envs/vector_env.py): one batched numpy step of the world
core for all of them, one batched `UserRelativeVectorObservation` call for their features,
and one forward pass of the policy. `make_training_env` is registered with RLlib and the
runners use `gym_env_vectorize_mode="vector_entry_point"`, so RLlib's vector creator passes
`num_envs` and gets the vector env (Gymnasium's NEXT_STEP autoreset, as RLlib expects).
Its dict-of-arrays info (with `_key` masks and the nested `episode_stats`) goes through
RLlib's `DictInfoToList` unchanged. `num_env_runners` such runners sample in parallel (0 =
one, in the driver); each runner's users have their own seeds (`DisjointRunnerSeeds`).
On configs/ppo_small.yaml this samples ~10x the env steps/s of one `RecoWorld-v0` per
runner (experiments/bench_rllib.py). Evaluation stays single-user: `simulate` runs the
policy, greedily, on `RecoWorld-v0` for the fixed evaluation users.

## Action masking
With `action_mask: true` (default) the wrapper adds a per-slot `action_mask` built from the
env's `candidate_mask` (0 = already consumed), and masked logits drop to RLlib's FLOAT_MIN:
`SlateScorerRLModule` does it itself; with `network: mlp` the module is RLlib's
`ActionMaskingTorchRLModule` (PPO only). Consumed candidates are then never sampled while
any other is available. `action_mask: false` trains on the features alone.

## Evaluation
Every `eval.every` iterations the policy plays the fixed evaluation users (greedy decode by
default, `eval.decode: sample` draws from its distribution), paired per user with the
baselines (`eval.baselines`, by default random and the strongest heuristics greedy, diverse and
instruct) and the `oracle` (`eval.oracle`): a reference that reads the hidden mindset, not a
recommender anyone could deploy, which measures headroom. The table reports each one's share
of the random-to-oracle gap. `experiments/train_ppo.py --seeds N` repeats training over seeds.

## Retention from reward alone (configs/ppo_retention.yaml: no teacher)
Retention is decided between sessions, by the satisfaction a session ends on: the return rate
grows as exp(4 x that satisfaction) and churn falls with it (`ReturnConfig`). The env's return
bonus carries that signal as one draw per session from a heavy-tailed gap; engagement does not
carry it at all (the oracle earns less engagement per user than random). `SatisfactionReward`
gives PPO the cause instead of the draw, as training-only terms on top of the env's reward:

- `satisfaction_reward` x (satisfaction after the turn - before it), every turn. Summed over a
  session that is (end - start) x the weight: the end-of-session satisfaction credited back to
  the turns that moved it (GFN4Retention's idea, dense). The start is the previous end recovered
  over the gap towards the initial level (time constant 0.5 days), nearly the same whatever the
  policy. It reads the simulator's hidden satisfaction, in the reward only; the policy's
  observation is unchanged (no mindset). A real platform could not read it; it could ask, and:
- `rating_reward` x (rating - 3) at each session end: the 1..5 end-of-session interview (the
  0.2-wide band of that satisfaction), a survey a platform can run.

Both are off by default (the env's reward and `make demo` are unchanged). configs/ppo_retention.yaml
pays `satisfaction_reward: 10` with the env's own reward off, discounts 0.8 per turn, and trains 40
iterations of 2,000 env steps at lr 1e-3 from scratch. Ablation (scratch runs of `train` with seed 0,
40 iterations, 300 evaluation users; paired with the same users' random 0.290, instruct 0.327, the
oracle 0.375; gap = share of random-to-oracle; ± = paired 95% CI, about ±0.021):

| training reward | gamma per turn | retention | - random | - instruct | gap |
|---|---|---|---|---|---|
| engagement only (dwell 0.1, click 0.5, like 1, share 2) | 0.8 | 0.302 | +0.012 | -0.025 | 15% |
| satisfaction 10 | 0.95 | 0.323 | +0.034 | -0.003 | 40% |
| satisfaction 10 + engagement (dwell 0.1, click 0.5, like 1, share 2) | 0.95 | 0.326 | +0.036 | -0.001 | 42% |
| satisfaction 10 | 0.99 | 0.299 | +0.009 | -0.028 | 10% |
| satisfaction 10 | 0.8 | 0.330 | +0.040 | +0.003 | 47% |
| satisfaction 10 | 0.5 | 0.328 | +0.038 | +0.001 | 45% |
| rating 2 (survey; no hidden state) | 0.95 | 0.328 | +0.039 | +0.002 | 46% |
| rating 2 (survey; no hidden state) | 0.8 | 0.302 | +0.012 | -0.025 | 15% |

What mattered: the reward's satisfaction (or rating) terms, 15% of the gap on engagement alone
against 47% with them at the same discount; and a discount that does not reach far past the
session (0.99, ~100 turns or several sessions, lost nearly everything: the terms of later sessions
are noise to this turn's slate). Which of the two satisfaction signals mattered less than
expected: the coarse survey rating did as well as the exact satisfaction at 0.95, and adding
engagement to the satisfaction terms changed nothing measurable. But the two need different
discounts: the rating arrives once, at the session's end, and at 0.8 (~5 turns) it no longer
reaches the turns that earned it (15%), while the per-turn satisfaction terms credit each turn
itself and do as well at 0.5 as at 0.95. Per-session discounting (gamma 1
inside a session, a discount at each session boundary) and a critic for the session's return (RLUR)
are not built: with the session's outcome already in its own turns' rewards, a short per-turn
discount stands in for them.

Where it stands (experiments/train_ppo.py --config configs/ppo_retention.yaml --seeds 3, at commit
6b45094, 500 evaluation users, 2 shared CPUs): retention 0.341 / 0.326 / 0.333 in seeds 0-2 (mean
0.333, 49% of the random-to-oracle gap; random 0.287, instruct 0.341, oracle 0.381), +0.046 ± 0.019
over random with each seed's paired CI above 0, but -0.008 ± 0.019 against instruct, the best
heuristic, in no seed above it. PPO from reward alone learns retention up to the level of the
best hand-written recommender, not past it; 105-149 s of training per seed.

With the teacher first (issue 28, part 3), PPO's own stage still adds nothing on this reward: the
config with `teacher: {rounds: 2, users: 150}`, seed 0, 300 evaluation users: 0.335 after the
teacher, 0.325 after 40 PPO iterations, final - iteration 0 = -0.011 ± 0.021 paired
(`paired/iteration_0` in curve.parquet, from `policy_users.parquet`).

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
±0.025 with 200. Where it stands: see the README's table ("Training a recommender with
RLlib"), from experiments/train_ppo.py --seeds 3.
Untried: a Plackett-Luce (top-K without replacement) action distribution, a per-session critic
target. The reward that follows retention without its noise is `SatisfactionReward` (above).

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from gymnasium.vector import VectorWrapper
from pydantic import Field, model_validator

from recoworld.agents import Recommender, make_recommender
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build, load_config, relative_to_file
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.envs.vector_env import RecoWorldVectorEnv
from recoworld.errors import ConfigError, RecoWorldError
from recoworld.evaluation.metrics import mean_ci
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.population import PopulationSpec
from recoworld.rl.features import UserRelativeObservation, UserRelativeVectorObservation
from recoworld.rl.policy import RLlibRecommender
from recoworld.rl.teacher import TeacherSettings, dagger
from recoworld.storage import write_parquet_atomic

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.algorithms.ppo import PPOConfig

#: Name under which `make_training_env` is registered with RLlib (`ray.tune.registry.register_env`).
ENV_NAME = "RecoWorld-v0-user-relative"
#: Name of the trained policy in evaluation tables.
POLICY = "ppo"
#: Name of the headroom reference that reads the hidden mindset (recoworld/agents/oracle.py).
ORACLE = "oracle"
#: The reference floor of the gap-closed share.
FLOOR = "random"
#: The curve's name for the policy at iteration 0 (right after the teacher): `paired/iteration_0` is the
#: policy's paired advantage over itself there, what PPO's own stage added.
STAGE_START = "iteration_0"


class PPOSettings(StrictModel):
    """PPO hyperparameters (RLlib names, per learner)."""

    lr: float = Field(3e-4, gt=0)
    gamma: float = Field(0.95, gt=0, le=1, description="discount per turn")
    lambda_: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    clip_param: float = Field(0.2, gt=0)
    entropy_coeff: float = Field(0.0, ge=0)
    vf_loss_coeff: float = Field(0.5, ge=0)
    vf_clip_param: float = Field(100.0, gt=0, description="returns are O(100), so clip loosely")
    train_batch_size: int = Field(4000, ge=32, description="env steps per iteration")
    minibatch_size: int = Field(256, ge=8)
    num_epochs: int = Field(10, ge=1)
    network: Literal["shared_scorer", "mlp"] = Field(
        "shared_scorer", description="SlateScorerRLModule, or RLlib's default MLP over all features"
    )
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    torch_threads: int = Field(
        1, ge=1, description="torch threads in this process; the nets are tiny, and on 2 busy CPUs more threads "
        "only contend (measured: 3 s vs 50+ s per iteration)"
    )


class EvalSettings(StrictModel):
    """The fixed, seeded evaluation population and the baselines the policy is compared with."""

    every: int = Field(5, ge=1, description="evaluate every N training iterations (and after the last)")
    n_users: int = Field(200, ge=2)
    seed: int = Field(12345, ge=0, description="seed of the evaluation users and their episodes")
    baselines: list[str] = Field(
        default_factory=lambda: ["random", "greedy", "diverse", "instruct"],
        description="recommenders the policy is compared with, paired per user; the strongest heuristics by default")
    oracle: bool = Field(
        True, description="also run the `oracle` reference (recoworld/agents/oracle.py), which reads the hidden "
        "mindset: not deployable, it only measures headroom; the table reports the share of the random-to-oracle "
        "gap each recommender closes (needs `random` among the baselines)")
    horizon_days: float | None = Field(None, gt=0, description="evaluate on another horizon than training")
    decode: Literal["greedy", "sample"] = Field(
        "greedy", description="how the policy picks slates in evaluation: the argmax of each slot, or draws "
        "from its own distribution (seeded per evaluation user, so still reproducible)")


class TrainConfig(StrictModel):
    """Everything `recoworld train` and experiments/train_ppo.py need: world, users, PPO, budget."""

    seed: int = Field(0, ge=0, description="seeds RLlib (env runners, torch) and nothing else")
    iterations: int = Field(20, ge=1, description="training budget in PPO iterations of `ppo.train_batch_size` env "
                            "steps, after the teacher's rounds (`teacher.rounds`, counted on their own)")
    max_minutes: float | None = Field(
        None, gt=0, description="safety stop only, never the budget: a run still going this many wall-clock "
        "minutes after it began (baselines, teacher, PPO and evaluations together) ends with an error "
        "(`TrainingTimeLimit`) that says how far it got. A run the clock ended would depend on the machine's "
        "speed, so it never passes for a finished one")
    num_env_runners: int = Field(0, ge=0, description="0 samples in the driver process")
    num_envs_per_env_runner: int = Field(
        16, ge=1, le=4096, description="users each env runner steps together in one `RecoWorldVectorEnv`; on "
        "configs/ppo_small.yaml 16 samples ~10x the env steps/s of 1 (experiments/bench_rllib.py) and a PPO "
        "iteration takes 0.8 s instead of 4.3 s, past which the learner dominates"
    )
    action_mask: bool = True
    day_reward: float = Field(
        0.0, ge=0, description="training only: add this to the reward whenever a user's next session opens on a "
        "new day (the unit of the retention metric, days active / horizon; see `NewDayReward`). The env's "
        "return bonus rewards any short gap, also a second session on the same day, which retention does not count")
    satisfaction_reward: float = Field(
        0.0, ge=0, description="training only: add this x the change in the user's satisfaction on every turn "
        "(`SatisfactionReward`), so a session's terms sum to this x (satisfaction it ends on - it began with), "
        "what the return rate follows. Satisfaction is the simulator's hidden state: the reward reads it, the "
        "policy never sees it; a platform would need a survey to measure it")
    rating_reward: float = Field(
        0.0, ge=0, description="training only: add this x (rating - 3) at each session's end, the 1..5 end-of-session "
        "interview (`info['interview_score']`), a survey a platform can run (`SatisfactionReward`)")
    calibrated: Path | None = Field(
        None, description="a `recoworld calibrate` folder: its world (under `world:`), catalog and users"
    )
    world: WorldConfig = WorldConfig()
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)
    ppo: PPOSettings = PPOSettings()
    teacher: TeacherSettings = Field(
        default_factory=TeacherSettings, description="DAgger from the oracle into the policy before PPO "
        "(recoworld/rl/teacher.py); off with rounds: 0")
    eval: EvalSettings = EvalSettings()

    @model_validator(mode="before")
    @classmethod
    def _calibrated_world(cls, data: Any) -> Any:
        from recoworld.calibration.inputs import with_calibrated_world

        return with_calibrated_world(data)

    @model_validator(mode="after")
    def _teacher_trains_the_shared_scorer(self) -> TrainConfig:
        if self.teacher.rounds and self.ppo.network != "shared_scorer":
            raise ValueError(f"teacher.rounds={self.teacher.rounds} needs ppo.network: shared_scorer (the teacher fits "
                             f"its per-candidate slot logits), got ppo.network: {self.ppo.network}")
        return self

    @model_validator(mode="after")
    def _batch_holds_every_user(self) -> TrainConfig:
        users = self.num_envs_per_env_runner * max(self.num_env_runners, 1)
        if users > self.ppo.train_batch_size:
            raise ValueError(
                f"num_envs_per_env_runner={self.num_envs_per_env_runner} x {max(self.num_env_runners, 1)} sampling "
                f"env runner(s) = {users} users, more than ppo.train_batch_size={self.ppo.train_batch_size} env "
                "steps per iteration: each user would take less than one step per iteration; lower "
                "num_envs_per_env_runner or raise ppo.train_batch_size"
            )
        return self

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> TrainConfig:
        """A config from an optional YAML file, with `overrides` (None = keep) merged on top.

        `calibrated:` in the file is relative to the file, like a study spec's."""
        return load_config(cls, path, "training config", relative_to_file("calibrated"), **overrides)

    def eval_world(self) -> WorldConfig:
        if self.eval.horizon_days is None:
            return self.world
        return build(WorldConfig, "evaluation world", self.world, horizon_days=self.eval.horizon_days)


# ---------------------------------------------------------------------------- env and algorithm


def make_training_env(env_config: dict[str, Any]) -> Any:
    """The env RLlib's env runners build, behind the user-relative features and action mask.

    With `num_envs` in `env_config` (RLlib's `vector_entry_point` creator adds it) this is a
    `RecoWorldVectorEnv` of that many users behind `UserRelativeVectorObservation`, the
    runners' env in `recoworld train`; without, one `RecoWorld-v0` user behind
    `UserRelativeObservation` (what RLlib's `sync` vectorization copies per sub-env).

    The rest of `env_config` is plain dicts (`world`, `population`, `action_mask`,
    `calibrated`) so it pickles to remote runners; each runner rebuilds the (cached, seeded)
    catalog itself, or loads the calibrated one once per process.
    """
    world = WorldConfig.model_validate(env_config["world"])
    if env_config.get("calibrated"):
        from recoworld.calibration.inputs import cached_calibration

        calibrated = cached_calibration(env_config["calibrated"])
        inputs: dict[str, Any] = {"catalog": calibrated.catalog, "population": calibrated.profiles}
    else:
        inputs = {"population": PopulationSpec.model_validate(env_config["population"])}
    mask = bool(env_config["action_mask"])
    day_reward = float(env_config.get("day_reward", 0.0))
    satisfaction = float(env_config.get("satisfaction_reward", 0.0))
    rating = float(env_config.get("rating_reward", 0.0))
    if "num_envs" in env_config:
        vector: Any = DisjointRunnerSeeds(RecoWorldVectorEnv(num_envs=int(env_config["num_envs"]), config=world,
                                                             **inputs))
        if day_reward:
            vector = NewDayReward(vector, day_reward)
        if satisfaction or rating:
            vector = SatisfactionReward(vector, satisfaction, rating)
        return UserRelativeVectorObservation(FinishedEpisodes(vector), action_mask=mask)
    for name in ("day_reward", "satisfaction_reward", "rating_reward"):
        if env_config.get(name):
            raise ConfigError(f"{name} is implemented for the vector env only (RLlib's vector_entry_point)")
    return UserRelativeObservation(RecoWorldEnv(world, **inputs), action_mask=mask)


class NewDayReward(VectorWrapper):
    """Add `weight` to a user's reward on the step after which their next session opens on a new
    day: the increment of `days_active`, so summed over an episode it is `weight` x (days active - 1),
    the retention metric up to scale. It arrives at the session's end, like the env's return bonus."""

    def __init__(self, env: Any, weight: float) -> None:
        super().__init__(env)
        self.weight = weight

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        world = self.env.unwrapped.world
        before = world.days_active.copy()
        restarting = self.env.unwrapped._autoreset.copy()  # these users start a new episode this step
        obs, reward, terminated, truncated, info = self.env.step(actions)
        gained = np.where(restarting, 0, world.days_active - before)
        return obs, reward + self.weight * gained, terminated, truncated, info


def satisfaction_of(users: Any, rows: np.ndarray) -> np.ndarray:
    """The hidden satisfaction of users `rows`: the parametric users' array, or any simulator's `mindset`."""
    state = getattr(users, "satisfaction", None)
    if isinstance(state, np.ndarray):
        return state[rows].astype(np.float64)
    return np.array([users.mindset(int(r)).satisfaction for r in np.asarray(rows).tolist()], dtype=np.float64)


class SessionEndSatisfaction:
    """Stands in for a world's users and notes each user's satisfaction as its session ends, before the next
    session's start recovers it towards the initial level; everything else goes to the users unchanged.

    Why: the world ends a session and opens the next in the same step, so after the step a returning user's
    satisfaction is already the new session's; the one the return gap was drawn from is only seen here."""

    def __init__(self, users: Any) -> None:
        self.users = users
        self.ended: dict[int, float] = {}  # row -> satisfaction its session ended on, since the last `take`

    def __getattr__(self, name: str) -> Any:
        if name == "users":  # not set yet (a copy being built): no endless lookup through itself
            raise AttributeError(name)
        return getattr(self.users, name)

    def end_sessions(self, rows: np.ndarray, now_days: np.ndarray, streams: Any) -> np.ndarray:
        self.ended.update(zip(np.asarray(rows).tolist(), satisfaction_of(self.users, rows).tolist()))
        return self.users.end_sessions(rows, now_days, streams)

    def take(self) -> dict[int, float]:
        ended, self.ended = self.ended, {}
        return ended


class SatisfactionReward(VectorWrapper):
    """Training reward terms that follow what brings a user back: the satisfaction a session ends on.

    In the user model the return rate grows as exp(4 x that satisfaction) and churn falls with it
    (`ReturnConfig`), but the return bonus the env pays is a draw from a heavy-tailed gap, once per
    session, whose noise drowns what PPO can learn. These terms carry the same signal without the draw:

    - `satisfaction` x (satisfaction after the turn - before it), on every turn: dense, and summed over a
      session it is `satisfaction` x (the satisfaction the session ends on - the one it began with), the
      end-of-session satisfaction credited back to the turns that moved it (GFN4Retention's idea). The start
      is the previous session's end recovered towards the initial level over the gap (half-life ~0.35 days),
      nearly the same for every policy. The simulator's hidden state, read by the reward only: the policy's
      observation never holds it.
    - `rating` x (rating - 3) when a session ends: the 1..5 end-of-session interview (five bands of that
      satisfaction for parametric users), a survey a real platform can run.
    """

    def __init__(self, env: Any, satisfaction: float, rating: float) -> None:
        super().__init__(env)
        self.satisfaction, self.rating = satisfaction, rating
        world = env.unwrapped.world
        self.probe = SessionEndSatisfaction(world.users)
        world.users = self.probe
        self._all = np.arange(self.num_envs)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        playing = ~self.env.unwrapped._autoreset  # the others only restart this step (reward 0)
        before = satisfaction_of(self.probe.users, self._all)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        after = satisfaction_of(self.probe.users, self._all)
        for row, ended_on in self.probe.take().items():
            after[row] = ended_on
        extra = self.satisfaction * np.where(playing, after - before, 0.0)
        if self.rating and "interview_score" in info:
            said = np.asarray(info["_interview_score"], dtype=bool) & playing
            said &= np.array([score is not None for score in info["interview_score"]])
            extra[said] += self.rating * (info["interview_score"][said].astype(np.float64) - 3.0)
        return obs, np.asarray(reward) + extra, terminated, truncated, info


class FinishedEpisodes(VectorWrapper):
    """Keep the training return and length of every episode that ends, for the driver to collect
    (`collect_finished_episodes`) and smooth over the last `RETURN_WINDOW` of them.

    Why not RLlib's `episode_return_mean`: how its metrics are reduced changed between Ray versions, and
    on Ray 2.60 it is neither the mean of one iteration's episodes nor of its documented 100-episode
    window, so a curve drawn from it would not say what it means. Here every finished episode is one
    number, in the order the runner finished them, so the smoothed curve is as reproducible as the run."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self.returns = np.zeros(self.num_envs)
        self.lengths = np.zeros(self.num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []  # (return, turns) of each episode ended since the last collection

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self.returns[:], self.lengths[:] = 0.0, 0  # episodes cut off by a reset never finished
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        playing = ~self.env.unwrapped._autoreset  # the others only restart this step (reward 0)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.returns[playing] += np.asarray(reward)[playing]
        self.lengths[playing] += 1
        for i in np.flatnonzero(playing & (np.asarray(terminated) | np.asarray(truncated))):
            self.finished.append((float(self.returns[i]), int(self.lengths[i])))
            self.returns[i], self.lengths[i] = 0.0, 0
        return obs, reward, terminated, truncated, info


class DisjointRunnerSeeds(VectorWrapper):
    """Give every env runner its own users: RLlib resets runner w's env with seed `seed + w`,
    and a vector env seeds user i with `seed + i`, so runner 1's users would be runner 0's
    shifted by one. With this wrapper user i of a reset with seed s gets `s * num_envs + i`."""

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seed = [int(seed) * self.num_envs + i for i in range(self.num_envs)]
        return self.env.reset(seed=seed, options=options)


def register_training_env() -> None:
    """Register `ENV_NAME` with RLlib; remote runners look it up in Ray's registry by name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_training_env)


def training_env_config(cfg: TrainConfig) -> dict[str, Any]:
    """The `env_config` of `make_training_env` for `cfg`: plain values that pickle to remote runners."""
    return {"world": cfg.world.model_dump(), "population": cfg.population.model_dump(),
            "action_mask": cfg.action_mask, "day_reward": cfg.day_reward,
            "satisfaction_reward": cfg.satisfaction_reward, "rating_reward": cfg.rating_reward,
            "calibrated": str(cfg.calibrated) if cfg.calibrated else None}


def build_ppo_config(cfg: TrainConfig) -> PPOConfig:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule

    from recoworld.rl.rl_module import SlateScorerRLModule

    register_training_env()
    p = cfg.ppo
    if p.network == "shared_scorer":
        spec = RLModuleSpec(module_class=SlateScorerRLModule, model_config={"hidden": p.hidden})
    else:
        # Separate value network: returns are O(100); a shared trunk lets the value loss drown the policy's.
        model = {"fcnet_hiddens": p.hidden, "fcnet_activation": "tanh", "head_fcnet_hiddens": [],
                 "vf_share_layers": False}
        spec = RLModuleSpec(module_class=ActionMaskingTorchRLModule if cfg.action_mask else None, model_config=model)
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=training_env_config(cfg))
        .env_runners(num_env_runners=cfg.num_env_runners, num_envs_per_env_runner=cfg.num_envs_per_env_runner,
                     gym_env_vectorize_mode="vector_entry_point")
        .learners(num_learners=0)
        .training(lr=p.lr, gamma=p.gamma, lambda_=p.lambda_, clip_param=p.clip_param,
                  entropy_coeff=p.entropy_coeff, vf_loss_coeff=p.vf_loss_coeff, vf_clip_param=p.vf_clip_param,
                  train_batch_size_per_learner=p.train_batch_size, minibatch_size=p.minibatch_size,
                  num_epochs=p.num_epochs)
        .rl_module(rl_module_spec=spec)
        .debugging(seed=cfg.seed)
    )


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


# ---------------------------------------------------------------------------- evaluation


def evaluate(cfg: TrainConfig, agents: dict[str, Callable[[Catalog, int, int | None], Recommender]],
             expose_mindset: bool = False, on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run `agents` on the fixed evaluation users; one row per (recommender, user).

    Every call draws the same users with the same episode seeds (common random numbers), so
    rounds and recommenders are compared on identical conditions. `expose_mindset` puts the
    hidden mindset in `info` (for the oracle); it changes no random draw, so the users and
    their episodes stay the same. `on_episode(recommender)` is called after each episode (`progress`).
    """
    return play(cfg, cfg.eval_world(), agents, cfg.eval.n_users, cfg.eval.seed, expose_mindset, on_episode)


def play(cfg: TrainConfig, world: WorldConfig, agents: dict[str, Callable[[Catalog, int, int | None], Recommender]],
         n_users: int, seed: int, expose_mindset: bool = False,
         on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run `agents` in `world` on `n_users` users of `cfg`'s population (or calibrated users)
    drawn with `seed`; one row per (recommender, user), `on_episode(recommender)` after each."""
    if expose_mindset:
        world = build(WorldConfig, "evaluation world", world, expose_mindset=True)
    sim = SimulationConfig(n_users=n_users, agents=list(agents), seed=seed, world=world, population=cfg.population)
    catalog, profiles = None, None
    if cfg.calibrated is not None:
        from recoworld.calibration.inputs import cached_calibration

        calibrated = cached_calibration(str(cfg.calibrated))
        catalog, profiles = calibrated.catalog, calibrated.profiles
    result = simulate(sim, catalog=catalog, profiles=profiles,
                      build_agent=lambda name, catalog, k, seed: agents[name](catalog, k, seed), on_episode=on_episode)
    return result.episodes


def baseline_agents(names: list[str]) -> dict[str, Callable[[Catalog, int, int | None], Recommender]]:
    return {name: (lambda catalog, k, seed, name=name: make_recommender(name, catalog, k, seed)) for name in names}


def evaluate_references(cfg: TrainConfig, on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The baselines and (with `eval.oracle`) the oracle on the evaluation users: fixed, so run once."""
    parts = [evaluate(cfg, baseline_agents(cfg.eval.baselines), on_episode=on_episode)] if cfg.eval.baselines else []
    if cfg.eval.oracle:
        parts.append(evaluate(cfg, baseline_agents([ORACLE]), expose_mindset=True, on_episode=on_episode))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def compare(episodes: pd.DataFrame, policy: str = POLICY) -> pd.DataFrame:
    """Retention per recommender with 95% CIs, the policy's paired advantage over each one, and
    the share of the random-to-oracle gap each closes.

    The paired difference is taken per user (same user, same episode seed), which removes
    the between-user variance that dominates the unpaired intervals. `gap_closed` is
    `(retention - random's) / (oracle's - random's)`: 0 = random, 1 = the oracle (NaN without
    both, or when the oracle is not above random).
    """
    rows = []
    mine = episodes[episodes["recommender"] == policy].set_index("user_id")["retention"]
    means = episodes.groupby("recommender")["retention"].mean()
    gap = means.get(ORACLE, np.nan) - means.get(FLOOR, np.nan)
    for name, eps in episodes.groupby("recommender", sort=False):
        retention, ci = mean_ci(eps["retention"])
        ret = eps.set_index("user_id")["retention"]
        diff, diff_ci = mean_ci((mine - ret).dropna()) if name != policy and len(mine) else (np.nan, np.nan)
        rows.append({"recommender": name, "users": len(eps), "retention": retention, "retention_ci": ci,
                     "sessions_per_user": float(eps["sessions"].mean()), "churn_rate": float(eps["churned"].mean()),
                     "return_per_user": float(eps["total_reward"].mean()),
                     f"{policy}_minus_this": diff, f"{policy}_minus_this_ci": diff_ci,
                     "gap_closed": (retention - means[FLOOR]) / gap if gap > 0 else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- training loop


def sampling_envs(algo: Algorithm) -> list[tuple[str, int]]:
    """(env class, users) of every env runner that samples: the driver's with
    `num_env_runners: 0`, else the remote ones."""
    remote = algo.config.num_env_runners > 0
    return algo.env_runner_group.foreach_env_runner(
        lambda runner: (type(runner.env.unwrapped).__name__, int(runner.num_envs)), local_env_runner=not remote
    )


#: Training episodes the logged return is the mean of: the last this many finished, whatever the iteration
#: (one iteration of configs/ppo_small.yaml finishes only 7-15, too few for a readable curve).
RETURN_WINDOW = 100


def collect_finished_episodes(algo: Algorithm) -> list[tuple[float, int]]:
    """(return, turns) of every training episode that ended since the last call, runner by runner in a
    fixed order (`FinishedEpisodes` of each sampling env runner)."""

    def take(runner: Any) -> list[tuple[float, int]]:
        env = runner.env
        while not isinstance(env, FinishedEpisodes):
            env = env.env
        finished, env.finished = env.finished, []
        return finished

    remote = algo.config.num_env_runners > 0
    return [ep for part in algo.env_runner_group.foreach_env_runner(take, local_env_runner=not remote) for ep in part]


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
    algo = Algorithm.from_checkpoint(str(start.resolve())) if start else build_ppo_config(cfg).build_algo()
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
                algo.get_module(), k, seed, sample=cfg.eval.decode == "sample")},
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

    # The env runners' modules are inference-only, so the student is a trainable copy of the learner's.
    runner = algo.get_module()
    student = RLModuleSpec(module_class=type(runner), observation_space=runner.observation_space,
                           action_space=runner.action_space, model_config=runner.model_config).build()
    student.set_state(algo.get_weights()[DEFAULT_MODULE_ID])
    played = count()

    def play_round(agents: dict[str, Callable[[Catalog, int, int | None], Recommender]], n_users: int,
                   seed: int) -> pd.DataFrame:
        round_ = next(played)
        who = "the oracle plays" if round_ == 0 else "the student plays"
        return play(cfg, cfg.world, agents, n_users, seed, expose_mindset=True, on_episode=progress(
            f"teacher round {round_} of {cfg.teacher.rounds}, {who}", n_users, log, check))

    rounds = dagger(student, cfg.teacher, cfg.seed, play_round, log)
    algo.learner_group.set_weights({DEFAULT_MODULE_ID: student.get_state()})
    algo.env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True,
                                       timeout_seconds=60.0)
    return rounds


def format_table(table: pd.DataFrame, policy: str = POLICY) -> str:
    """The final comparison as plain text: retention ± 95% CI, the policy's paired advantage, and
    the share of the random-to-oracle gap closed. The oracle row is labelled as the reference it is."""
    lines = [f"{'recommender':<12} {'users':>5} {'retention':>16} {'sessions':>9} {'churn':>6} "
             f"{policy + ' - this (paired)':>24} {'gap closed':>10}"]
    for _, r in table.iterrows():
        diff = "" if pd.isna(r[f"{policy}_minus_this"]) else \
            f"{r[f'{policy}_minus_this']:+.3f} ± {r[f'{policy}_minus_this_ci']:.3f}"
        closed = "" if pd.isna(r.get("gap_closed", np.nan)) else f"{r['gap_closed']:+.0%}"
        note = "  (reference: reads the hidden mindset, not deployable)" if r["recommender"] == ORACLE else ""
        lines.append(f"{r['recommender']:<12} {r['users']:>5d} {r['retention']:>8.3f} ± {r['retention_ci']:.3f} "
                     f"{r['sessions_per_user']:>9.2f} {r['churn_rate']:>6.2f} {diff:>24} {closed:>10}{note}")
    return "\n".join(lines)


#: Two-sided 95% Student t quantiles by degrees of freedom (the normal 1.96 past 30).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    """The 95% two-sided Student t quantile for `df` degrees of freedom (conservative between table rows)."""
    if df < 1:
        return float("nan")
    return _T95[min(k for k in _T95 if k >= df)] if df <= 30 else 1.96


def seed_summary(tables: dict[int, pd.DataFrame], policy: str = POLICY) -> pd.DataFrame:
    """Across training seeds: per recommender, the mean of the policy's final paired advantage
    with a 95% t interval over seeds, how many seeds have their own paired 95% CI above 0, and
    the mean share of the random-to-oracle gap closed (the policy's and the recommender's)."""
    rows = []
    names = [n for n in next(iter(tables.values()))["recommender"] if n != policy]
    for name in names:
        per_seed = [t.set_index("recommender").loc[name] for t in tables.values()]
        diffs = np.array([r[f"{policy}_minus_this"] for r in per_seed], dtype=float)
        above = sum(bool(r[f"{policy}_minus_this"] - r[f"{policy}_minus_this_ci"] > 0) for r in per_seed)
        half = t95(len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else np.nan
        rows.append({"recommender": name, "seeds": len(diffs), f"{policy}_minus_this": float(diffs.mean()),
                     f"{policy}_minus_this_ci": float(half), "seeds_ci_above_0": above,
                     "retention": float(np.mean([r["retention"] for r in per_seed])),
                     "gap_closed": float(np.mean([r.get("gap_closed", np.nan) for r in per_seed]))})
    mine = [t.set_index("recommender").loc[policy] for t in tables.values()]
    rows.insert(0, {"recommender": policy, "seeds": len(mine),
                    "retention": float(np.mean([r["retention"] for r in mine])),
                    "gap_closed": float(np.mean([r.get("gap_closed", np.nan) for r in mine]))})
    return pd.DataFrame(rows)


def format_seed_summary(summary: pd.DataFrame, policy: str = POLICY) -> str:
    """`seed_summary` as plain text."""
    lines = [f"{'recommender':<12} {'seeds':>5} {'retention':>9} {'gap closed':>10} "
             f"{policy + ' - this, mean over seeds':>31} {'seeds with paired CI > 0':>25}"]
    for _, r in summary.iterrows():
        diff = "" if pd.isna(r.get(f"{policy}_minus_this", np.nan)) else \
            f"{r[f'{policy}_minus_this']:+.3f} ± {r[f'{policy}_minus_this_ci']:.3f}"
        above = "" if pd.isna(r.get("seeds_ci_above_0", np.nan)) else \
            f"{int(r['seeds_ci_above_0'])} of {int(r['seeds'])}"
        closed = "" if pd.isna(r["gap_closed"]) else f"{r['gap_closed']:+.0%}"
        lines.append(f"{r['recommender']:<12} {int(r['seeds']):>5d} {r['retention']:>9.3f} {closed:>10} "
                     f"{diff:>31} {above:>25}")
    return "\n".join(lines)


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


def plot_learning_curve(curve: pd.DataFrame, path: Path) -> Path:
    """Left: mean training episode return. Right: evaluation retention (95% CI) vs the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ret, ax_eval) = plt.subplots(1, 2, figsize=(12, 4.5))
    if len(curve):
        ax_ret.plot(curve["env_steps"], curve["charts/episode_return_mean"])
        evals = curve.dropna(subset=[f"retention/{POLICY}"]) if f"retention/{POLICY}" in curve else curve.iloc[:0]
        for col in [c for c in curve.columns if c.startswith("retention/")]:
            name = col.split("/", 1)[1]
            ax_eval.errorbar(evals["env_steps"], evals[col], yerr=evals[f"retention_ci/{name}"].fillna(0),
                             label=name, capsize=3, marker="o" if name == POLICY else None,
                             linestyle="-" if name == POLICY else "--")
    ax_ret.set_xlabel("env steps")
    ax_ret.set_ylabel(f"mean return of the last {RETURN_WINDOW} finished training episodes")
    ax_ret.set_title("PPO training return")
    ax_eval.set_xlabel("env steps")
    ax_eval.set_ylabel("retention on the evaluation users")
    ax_eval.set_title("Evaluation retention (95% CI)")
    ax_eval.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
