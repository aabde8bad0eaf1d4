"""RLlib's default PPO connector pipelines rebuilt as a few array operations per batch, not per-episode,
per-item walks through `tree` structures; the same data in and out, bit for bit.

Why: with 1,024 users per env runner one PPO iteration of 16,384 env steps gets about 1,100 episode chunks,
and RLlib's default pipelines spend their time walking them one by one:

- learner: `AddOneTsToEpisodesAndTruncate`, `AddObservationsFromEpisodesToBatch`,
  `AddColumnsFromEpisodesToTrainBatch`, `BatchIndividualItems`, `NumpyToTensor`, then
  `GeneralAdvantageEstimation`: 0.36 s of a 2.4 s iteration (experiments/bench_rllib.py's split on 2 busy
  CPUs), a third of the learner's time. `EpisodesToTrainBatch` slices each episode's numpy buffers,
  concatenates them once, runs the value head once and calls RLlib's own `compute_value_targets`: 0.09 s.
  It leaves the episodes untouched, where the default pipeline appended its bootstrap step to them, so the
  learner's `num_env_steps_trained` counts sampled steps only (the default also counted one phantom step
  per episode chunk).
- env to module, every step: each episode's last observation added item by item, then batched:
  `LastObservationsToBatch` stacks them at once.
- module to env, every step: `UnBatchToIndividualItems`, `NormalizeAndClipActions` (a no-op for the
  slate's `MultiDiscrete` action that deep-copied every action) and `ListifyDataForVectorEnv`; RLlib's env
  runner indexes the batched arrays per user itself, so `streamline` keeps only `GetActions` and
  `TensorToNumpy`.

The train batch (rows, order, dtypes, values, advantages) and the sampled episodes (observations, actions,
log-probabilities, rewards) equal the default pipelines' bit for bit (tests/test_connectors.py), so PPO
learns exactly what it learned before. `streamline(config)` installs all three; recoworld/rl/training.py
builds every PPO run with it. Single-agent only (the multi-agent adapter keeps RLlib's defaults).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import tree  # dm-tree, which RLlib uses for nested observations
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.module_to_env import GetActions, TensorToNumpy
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
from ray.rllib.utils.torch_utils import convert_to_torch_tensor

if TYPE_CHECKING:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer


def _rows(buffer: InfiniteLookbackBuffer, bootstrap: Any | None) -> Any:
    """The buffer's items inside the episode (its lookback dropped), then the extra step RLlib's
    `add_one_ts_to_episodes_and_truncate` appends: `bootstrap`, or the last item where None. Appended as
    that function appends, so the dtype promotes exactly as it does there."""
    def rows(data: np.ndarray) -> np.ndarray:
        extra = data[-1] if bootstrap is None else bootstrap
        return np.concatenate([data[buffer.lookback:], np.asarray(extra)[np.newaxis]], axis=0)

    return tree.map_structure(rows, buffer.data)


def _obs(episode: SingleAgentEpisode) -> Any:
    """All of the episode's L + 1 observations: the last one is the bootstrap row's."""
    lookback = episode.observations.lookback
    return tree.map_structure(lambda data: data[lookback:], episode.observations.data)


def _stack(items: list[Any]) -> Any:
    """One batch (a structure of arrays for dict observations) from one item per episode."""
    return tree.map_structure(lambda *arrays: np.stack(arrays, axis=0), *items)


def _concat(parts: list[Any]) -> Any:
    """One array per column (a structure of them for dict observations) from the episodes' parts."""
    return tree.map_structure(lambda *arrays: np.concatenate(arrays, axis=0), *parts)


class EpisodesToTrainBatch(ConnectorV2):
    """Learner connector: the whole PPO train batch, advantages included, from single-agent episodes.

    Per episode chunk of L steps it emits L + 1 rows, as RLlib's default pipeline does: the L steps, then
    the bootstrap row (the last observation, the last action and model outputs repeated, reward 0,
    `loss_mask` False) whose value bootstraps a chunk that did not terminate. Columns: `loss_mask`,
    `terminateds`, `truncateds`, `obs`, `actions`, `rewards`, every extra model output, `advantages`
    (standardized) and `value_targets`, as torch tensors of the default's dtypes."""

    def __init__(self, input_observation_space: Any = None, input_action_space: Any = None, *,
                 gamma: float, lambda_: float, **kwargs: Any) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma, self.lambda_ = gamma, lambda_

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any) -> Any:
        if batch:
            raise ValueError(f"EpisodesToTrainBatch builds the whole train batch, but it got columns {sorted(batch)}")
        for episode in episodes:
            if not isinstance(episode, SingleAgentEpisode):
                raise TypeError(f"EpisodesToTrainBatch takes single-agent episodes, got {type(episode).__name__}")
            if not episode.is_numpy:
                raise ValueError("EpisodesToTrainBatch needs numpy'd episodes (the env runner's "
                                 "`episodes_to_numpy`, on by default)")
        lens = [len(e) for e in episodes]
        columns: dict[str, Any] = {}
        columns[Columns.LOSS_MASK] = np.concatenate([np.arange(n + 1) < n for n in lens])
        ends = np.cumsum([n + 1 for n in lens]) - 2  # each chunk's last real step
        for column, flag in ((Columns.TERMINATEDS, [e.is_terminated for e in episodes]),
                             # a chunk that did not terminate bootstraps (RLlib marks it truncated)
                             (Columns.TRUNCATEDS, [e.is_truncated or not e.is_done for e in episodes])):
            columns[column] = np.zeros(len(columns[Columns.LOSS_MASK]), dtype=bool)
            columns[column][ends] = flag
        columns[Columns.OBS] = _concat([_obs(e) for e in episodes])
        columns[Columns.ACTIONS] = _concat([_rows(e.actions, None) for e in episodes])
        columns[Columns.REWARDS] = _concat([_rows(e.rewards, 0.0) for e in episodes])
        for key in episodes[0].extra_model_outputs:
            if key not in (Columns.STATE_IN, Columns.STATE_OUT):
                columns[key] = _concat([_rows(e.extra_model_outputs[key], None) for e in episodes])
        tensors = convert_to_torch_tensor(columns)
        module = rl_module[DEFAULT_MODULE_ID]
        with torch.no_grad():
            values = module.compute_values(tensors).numpy()
        targets = compute_value_targets(values=values, rewards=tensors[Columns.REWARDS].numpy(),
                                        terminateds=tensors[Columns.TERMINATEDS].numpy(),
                                        truncateds=tensors[Columns.TRUNCATEDS].numpy(),
                                        gamma=self.gamma, lambda_=self.lambda_)
        advantages = targets - values
        advantages = (advantages - advantages.mean()) / max(1e-4, advantages.std())
        tensors[Postprocessing.ADVANTAGES] = convert_to_torch_tensor(advantages)
        tensors[Postprocessing.VALUE_TARGETS] = convert_to_torch_tensor(targets)
        return {DEFAULT_MODULE_ID: tensors}


class LastObservationsToBatch(ConnectorV2):
    """Env-to-module connector: the forward pass's batch, every ongoing episode's last observation in the env
    runner's order, as torch tensors (RLlib's `AddObservationsFromEpisodesToBatch`, `BatchIndividualItems` and
    `NumpyToTensor` for a stateless single-agent module, in one stack)."""

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any) -> Any:
        for episode in episodes:
            if not isinstance(episode, SingleAgentEpisode):
                raise TypeError(f"LastObservationsToBatch takes single-agent episodes, got {type(episode).__name__}")
        batch[Columns.OBS] = convert_to_torch_tensor(_stack([e.get_observations(-1) for e in episodes]))
        return batch


def module_to_env_pieces(env: Any = None, spaces: Any = None) -> list[ConnectorV2]:
    """RLlib's own action sampling and tensor-to-numpy pieces, nothing after them: the env runner steps the
    vector env with the batched actions and reads each user's row of the model outputs itself."""
    return [GetActions(), TensorToNumpy()]


def env_to_module_pieces(env: Any = None, spaces: Any = None, device: Any = None) -> list[ConnectorV2]:
    """`LastObservationsToBatch`, the whole env-to-module pipeline (its tensors stay on the CPU, where the env
    runners' modules are)."""
    return [LastObservationsToBatch()]


def streamline(config: PPOConfig) -> PPOConfig:
    """`config` with the pipelines above in place of RLlib's defaults (see the module docstring); returns `config`.

    For RecoWorld's single-agent envs with a stateless module and a discrete (slate) action, which RLlib's
    unsquash and clip leave as they are."""
    return (config
            .learners(learner_connector=partial(EpisodesToTrainBatch, gamma=config.gamma, lambda_=config.lambda_),
                      add_default_connectors_to_learner_pipeline=False)
            .env_runners(env_to_module_connector=env_to_module_pieces, module_to_env_connector=module_to_env_pieces,
                         add_default_connectors_to_env_to_module_pipeline=False,
                         add_default_connectors_to_module_to_env_pipeline=False))
