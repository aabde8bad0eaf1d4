"""The training config: `TrainConfig` (world, users, reward terms, budget) and its PPO and evaluation
settings, what `recoworld train` and experiments/train_ppo.py read from YAML.

Only configs: the env and algorithm they build are in recoworld/rl/training_env.py, the loop that
runs them in recoworld/rl/training.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from recoworld.config import StrictModel, WorldConfig, build, load_config, relative_to_file
from recoworld.population import PopulationSpec
from recoworld.rl.teacher import TeacherSettings


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
    slate: Literal["independent", "distinct"] = Field(
        "independent", description="how the shared scorer's slate is drawn in training: each slot on its own "
        "(RLlib's MultiCategorical; the env replaces repeats in retrieval order), or slot by slot without the "
        "candidates already in the slate (`DistinctSlate`, what evaluation decodes). shared_scorer only")
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
    features: Literal["episode", "session", "intent"] = Field(
        "episode", description="what the policy sees (recoworld/rl/features.py): `episode`, each candidate's relation "
        "to the history and the episode's engaged and skipped profiles; `session` adds repetition over the last 30 "
        "reviewed items, each candidate's nearest other candidate, this session's engaged profile, turns since the "
        "last engagement and how familiar the engaged and skipped items were; `intent` adds to `episode` what the "
        "instruct baseline acts on: each candidate's membership of the topics the session's last structured "
        "intent names (signed by its kind) and suggests, its quality when the intent asked for it, its cosine to "
        "the taste of the last 20 engaged items, and the instruct baseline's own score. A saved policy says which "
        "by its size")
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
    critic_hidden_state: bool = Field(
        False, description="training only: the value head also reads each user's hidden state (satisfaction, its "
        "trend, fatigue, novelty appetite, time and patience left; `HiddenStateForCritic`), the policy head never: "
        "an asymmetric actor-critic. Needs ppo.network: shared_scorer and action_mask: true")
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
    def _critic_state_needs_the_shared_scorer(self) -> TrainConfig:
        if self.critic_hidden_state and (self.ppo.network != "shared_scorer" or not self.action_mask):
            raise ValueError("critic_hidden_state: true needs ppo.network: shared_scorer and action_mask: true (the "
                             f"value head of SlateScorerRLModule reads it), got ppo.network: {self.ppo.network}, "
                             f"action_mask: {self.action_mask}")
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
