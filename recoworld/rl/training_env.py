"""The env RLlib's env runners train on, its training-only reward wrappers, and the PPO config that
runs it (Ray RLlib, new API stack).

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
inside a session, a discount at each session boundary) is not built: with the session's outcome
already in its own turns' rewards, a short per-turn discount stands in for it.

A critic that knows the user (RLUR's critic, made asymmetric): with `critic_hidden_state: true`
(`HiddenStateForCritic`) the value head also reads each user's hidden satisfaction, its trend,
fatigue, appetite for novelty, and time and patience left, in training only; the policy head never
reads them and the deployed policy never has them. The reward's terms are changes of that hidden
satisfaction, so a critic blind to it leaves their spread in every advantage. It did not help
(seed 0, 500 evaluation users, the shipped config's references: random 0.287, instruct 0.341,
oracle 0.381; ± = paired 95% CI):

| change to configs/ppo_retention.yaml | iterations | retention | - instruct | gap |
|---|---|---|---|---|
| none (commit 6b45094) | 40 | 0.341 | +0.000 ± 0.017 | 57% |
| `critic_hidden_state: true` (commit 73aa778) | 40 | 0.330 | -0.011 ± 0.016 | 46% |
| an instruction shown only in the session it was given in (not kept) | 40 | 0.340 | -0.001 ± 0.016 | 56% |
| the same, and `critic_hidden_state: true` | 40 | 0.328 | -0.013 ± 0.017 | 43% |
| the same, and `critic_hidden_state: true` | 80 | 0.340 | -0.001 ± 0.017 | 56% |

The instruction rows: the observation's `instruction` keeps the episode's last instruction after its
session ends (on about a quarter of turns under random slates), while the world's retrieval and the
`instruct` baseline drop it then; hiding it from the features outside its session changed nothing
measurable (the user's interests keep part of an instruction's shift into later sessions, so a stale
instruction is not worthless either), and it would have changed every trained policy's input, so it
is not kept. With the critic retention did not rise, alone or with that change, at 40 or 80
iterations, so the advantages' noise is not what holds PPO back here. More likely it is what the
features show: imitating the oracle itself on them (the teacher, configs/ppo_small.yaml) closed
about 60% of the gap, not more.

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

"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorWrapper
from gymnasium.vector.utils import batch_space

from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.envs.vector_env import RecoWorldVectorEnv
from recoworld.errors import ConfigError
from recoworld.population import PopulationSpec
from recoworld.rl.features import FEATURE_SETS, UserRelativeObservation, UserRelativeVectorObservation
from recoworld.rl.train_config import TrainConfig

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig

#: Name under which `make_training_env` is registered with RLlib (`ray.tune.registry.register_env`).
ENV_NAME = "RecoWorld-v0-user-relative"
#: Training episodes the logged return is the mean of: the last this many finished, whatever the iteration
#: (one iteration of configs/ppo_small.yaml finishes only 7-15, too few for a readable curve).
RETURN_WINDOW = 100


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
    features = FEATURE_SETS[env_config.get("features", "episode")]
    day_reward = float(env_config.get("day_reward", 0.0))
    satisfaction = float(env_config.get("satisfaction_reward", 0.0))
    rating = float(env_config.get("rating_reward", 0.0))
    critic = bool(env_config.get("critic_hidden_state", False))
    if "num_envs" in env_config:
        vector: Any = DisjointRunnerSeeds(RecoWorldVectorEnv(num_envs=int(env_config["num_envs"]), config=world,
                                                             **inputs))
        if day_reward:
            vector = NewDayReward(vector, day_reward)
        if satisfaction or rating:
            vector = SatisfactionReward(vector, satisfaction, rating)
        shown = UserRelativeVectorObservation(FinishedEpisodes(vector), action_mask=mask, features=features)
        return HiddenStateForCritic(shown) if critic else shown
    for name in ("day_reward", "satisfaction_reward", "rating_reward", "critic_hidden_state"):
        if env_config.get(name):
            raise ConfigError(f"{name} is implemented for the vector env only (RLlib's vector_entry_point)")
    return UserRelativeObservation(RecoWorldEnv(world, **inputs), action_mask=mask, features=features)


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


#: What the critic reads of each user's hidden mindset (`hidden_state`), one column each, in [-1, 1]: the
#: satisfaction the reward's terms move and what moves it next (its short- minus long-term trend, fatigue, the
#: appetite for novelty) or ends the session (minutes left today / 60 and patience left / 20, squashed by tanh).
CRITIC_STATE = ("satisfaction", "satisfaction_trend", "fatigue", "novelty", "time_left", "patience_left")


def hidden_state(users: Any, rows: np.ndarray) -> np.ndarray:
    """(R, len(CRITIC_STATE)) float32: the `CRITIC_STATE` of users `rows`, from the parametric users' arrays,
    or any simulator's `mindset`."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(getattr(users, "satisfaction", None), np.ndarray):
        columns = [users.satisfaction[rows], users.sat_short[rows] - users.sat_long[rows],
                   np.minimum(users.fatigue[rows], 1.0), users.novelty[rows], users.time_left[rows],
                   users.patience_left[rows]]
    else:
        minds = [users.mindset(int(r)) for r in rows.tolist()]
        columns = [[getattr(m, name) for m in minds] for name in ("satisfaction", "satisfaction_trend", "fatigue",
                                                                  "novelty_propensity", "time_left_min",
                                                                  "patience_left")]
    state = np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1)
    state[:, 4] = np.tanh(state[:, 4] / 60.0)
    state[:, 5] = np.tanh(state[:, 5] / 20.0)
    return np.clip(state, -1.0, 1.0).astype(np.float32)


class HiddenStateForCritic(VectorWrapper):
    """Add `critic`, each user's `hidden_state`, to the policy's `Dict` observation, for the value head only.

    Why: the reward's terms are changes of the hidden satisfaction, and how much a state's next turns can still
    move it depends on where it stands (a satisfied user has little to gain, a fatigued one much to lose), which
    the observation does not show; a critic blind to it leaves that spread in every advantage. Reading it in
    training is the privilege the reward already takes (an asymmetric actor-critic): `SlateScorerRLModule`'s policy
    head never reads `critic`, and `RLlibRecommender` never builds it, so the deployed policy sees exactly the
    observation features."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        single = env.single_observation_space
        if not isinstance(single, spaces.Dict):
            raise ConfigError("critic_hidden_state needs action_mask: true (the policy's Dict observation)")
        box = spaces.Box(-1.0, 1.0, (len(CRITIC_STATE),), np.float32)
        self.single_observation_space = spaces.Dict({**single.spaces, "critic": box})
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._all = np.arange(self.num_envs)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        # VectorEnv.reset's stub takes one int; vector envs (and VectorWrapper.reset) take one seed per user.
        obs, info = self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]
        return self._with_state(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return self._with_state(obs), reward, terminated, truncated, info

    def _with_state(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**obs, "critic": hidden_state(self.env.unwrapped.world.users, self._all)}


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
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self.returns[:], self.lengths[:] = 0.0, 0  # episodes cut off by a reset never finished
        # VectorEnv.reset's stub takes one int; vector envs (and VectorWrapper.reset) take one seed per user.
        return self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]

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
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seed = [int(seed) * self.num_envs + i for i in range(self.num_envs)]
        # VectorEnv.reset's stub takes one int; vector envs (and VectorWrapper.reset) take one seed per user.
        return self.env.reset(seed=seed, options=options)  # type: ignore[arg-type]


def register_training_env() -> None:
    """Register `ENV_NAME` with RLlib; remote runners look it up in Ray's registry by name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_training_env)


def training_env_config(cfg: TrainConfig) -> dict[str, Any]:
    """The `env_config` of `make_training_env` for `cfg`: plain values that pickle to remote runners."""
    return {"world": cfg.world.model_dump(), "population": cfg.population.model_dump(),
            "action_mask": cfg.action_mask, "features": cfg.features, "day_reward": cfg.day_reward,
            "satisfaction_reward": cfg.satisfaction_reward, "rating_reward": cfg.rating_reward,
            "critic_hidden_state": cfg.critic_hidden_state,
            "calibrated": str(cfg.calibrated) if cfg.calibrated else None}


def build_ppo_config(cfg: TrainConfig) -> PPOConfig:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule

    from recoworld.rl.rl_module import SlateScorerRLModule

    register_training_env()
    p = cfg.ppo
    if p.network == "shared_scorer":
        spec = RLModuleSpec(module_class=SlateScorerRLModule,
                            model_config={"hidden": p.hidden, "distinct_slate": p.slate == "distinct"})
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
