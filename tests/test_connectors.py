"""`EpisodesToTrainBatch` (recoworld.rl.connectors.py): PPO's train batch as RLlib's default learner
pipeline builds it, bit for bit, from the same sampled episodes."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.conftest import require

if TYPE_CHECKING:
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

#: Episodes of at most 40 turns over 4 users: 200 env steps give first chunks, continued chunks (with a
#: lookback) and terminated episodes.
WORLD = {"slate_size": 2, "n_candidates": 6, "history_len": 5, "horizon_days": 2, "max_steps": 40,
         "catalog": {"n_items": 300, "seed": 1}}


def config(network: str) -> Any:  # a TrainConfig
    from recoworld.rl.train_config import TrainConfig

    return TrainConfig.load(None, seed=5, num_envs_per_env_runner=4, world=WORLD,
                            ppo={"train_batch_size": 200, "minibatch_size": 50, "hidden": [16], "network": network,
                                 "gamma": 0.8, "lambda_": 0.9})


def sample(ppo_config: Any) -> tuple[list[SingleAgentEpisode], dict[str, Any]]:
    """Two samples of one env runner built from `ppo_config` (its seed seeds torch's sampling): the second's
    episode chunks, and the runner's spaces."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    runner = SingleAgentEnvRunner(config=ppo_config)
    try:
        runner.sample(num_timesteps=30, random_actions=False)
        return runner.sample(num_timesteps=200, random_actions=False), runner.get_spaces()
    finally:
        runner.stop()


def same_arrays(a: Any, b: Any) -> bool:
    import tree

    flat_a, flat_b = tree.flatten(a), tree.flatten(b)
    return len(flat_a) == len(flat_b) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(flat_a, flat_b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("network", ["shared_scorer", "mlp"])
def test_streamlined_sampling_gives_the_default_pipelines_episodes(ray_session: ModuleType, network: str) -> None:
    require("ray.rllib")
    from recoworld.rl.connectors import streamline
    from recoworld.rl.training_env import build_ppo_config

    expected, _ = sample(build_ppo_config(config(network)))
    got, _ = sample(streamline(build_ppo_config(config(network))))
    assert len(got) == len(expected) > 4
    for g, e in zip(got, expected, strict=True):
        assert (g.is_terminated, g.is_truncated, g.t_started, len(g)) == (e.is_terminated, e.is_truncated,
                                                                         e.t_started, len(e))
        assert same_arrays(g.observations.data, e.observations.data)
        assert same_arrays(g.actions.data, e.actions.data) and same_arrays(g.rewards.data, e.rewards.data)
        assert sorted(g.extra_model_outputs) == sorted(e.extra_model_outputs)
        for key in e.extra_model_outputs:  # the policy's logits and log-probabilities
            assert same_arrays(g.extra_model_outputs[key].data, e.extra_model_outputs[key].data), key


@pytest.mark.slow
@pytest.mark.parametrize("network", ["shared_scorer", "mlp"])
def test_train_batch_is_the_default_pipelines_bit_for_bit(ray_session: ModuleType, network: str) -> None:
    require("ray.rllib")
    import torch

    from recoworld.rl.connectors import EpisodesToTrainBatch, LastObservationsToBatch, streamline
    from recoworld.rl.training_env import build_ppo_config

    default_config = build_ppo_config(config(network))
    episodes, spaces = sample(default_config)
    # the batch covers every kind of chunk: terminated, truncated (max_steps), cut mid-episode, and continued
    # from an earlier sample
    assert any(e.is_terminated for e in episodes) and any(e.is_truncated for e in episodes)
    assert any(not e.is_done for e in episodes)
    assert any(e.t_started > 0 for e in episodes)

    learner = default_config.build_learner(spaces=spaces)
    # RLlib's pipeline appends a bootstrap step to the episodes it reads, so it gets its own copy
    expected = learner._learner_connector(rl_module=learner.module, batch={}, episodes=copy.deepcopy(episodes),
                                          shared_data={})["default_policy"]
    built = EpisodesToTrainBatch(gamma=0.8, lambda_=0.9)(rl_module=learner.module, batch={},
                                                          episodes=episodes)["default_policy"]
    assert list(built) == list(expected)
    rows = sum(len(e) + 1 for e in episodes)
    for column, want in expected.items():
        got = built[column]
        if isinstance(want, dict):  # the observation's parts
            assert list(got) == list(want), column
            pairs = [(got[k], want[k]) for k in want]
        else:
            pairs = [(got, want)]
        for g, w in pairs:
            assert g.dtype == w.dtype and g.shape == w.shape and len(g) == rows, column
            assert torch.equal(g, w), column
    assert not built["loss_mask"].all() and np.isfinite(built["advantages"].numpy()).all()

    # `streamline` makes it the learner's whole pipeline: no RLlib piece left to walk the episodes again
    streamlined = streamline(build_ppo_config(config(network)))
    assert [type(c) for c in streamlined.build_learner(spaces=spaces)._learner_connector.connectors] == [
        EpisodesToTrainBatch]
    assert [type(c) for c in streamlined.build_env_to_module_connector(spaces=spaces).connectors] == [
        LastObservationsToBatch]
    assert [type(c).__name__ for c in streamlined.build_module_to_env_connector(spaces=spaces).connectors] == [
        "GetActions", "TensorToNumpy"]


def test_episodes_to_train_batch_names_what_it_cannot_take() -> None:
    require("ray.rllib")
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from recoworld.rl.connectors import EpisodesToTrainBatch, LastObservationsToBatch

    piece = EpisodesToTrainBatch(gamma=0.9, lambda_=0.95)
    episode = SingleAgentEpisode(observations=[0, 1], actions=[1], rewards=[1.0], len_lookback_buffer=0)
    with pytest.raises(ValueError, match="numpy'd episodes"):
        piece(rl_module=None, batch={}, episodes=[episode])
    with pytest.raises(ValueError, match=r"whole train batch, but it got columns \['obs'\]"):
        piece(rl_module=None, batch={"obs": []}, episodes=[episode.to_numpy()])
    with pytest.raises(TypeError, match="single-agent episodes, got dict"):
        piece(rl_module=None, batch={}, episodes=[{}])
    with pytest.raises(TypeError, match="LastObservationsToBatch takes single-agent episodes, got dict"):
        LastObservationsToBatch()(rl_module=None, batch={}, episodes=[{}])
