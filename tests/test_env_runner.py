"""`BatchedEnvRunner` (recoworld/rl/env_runner.py): the episode chunks RLlib's own env runner samples, bit for bit,
built once per sample from the batched steps."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.conftest import require
from tests.test_connectors import config

#: sample sizes (env steps) of consecutive `sample` calls over 6 users: short ones end on a step where some
#: episode just ended or just restarted, long ones hold whole episodes (at most 40 turns)
SIZES = (30, 6, 1, 200, 7, 120, 13)


def run(runner_cls: Any, network: str, users: int = 6) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """The chunks of each `sample` call of a runner built from the streamlined config, and its metrics after each."""
    from recoworld.rl.connectors import streamline
    from recoworld.rl.training_env import build_ppo_config

    ppo_config = streamline(build_ppo_config(config(network))).env_runners(num_envs_per_env_runner=users)
    runner = runner_cls(config=ppo_config)
    try:
        samples, metrics = [], []
        for size in SIZES:
            samples.append(runner.sample(num_timesteps=size, random_actions=False))
            metrics.append(runner.get_metrics())
        return samples, metrics
    finally:
        runner.stop()


def same_leaves(got: Any, want: Any) -> bool:
    """Same nested structure; array and numpy scalar leaves of the same dtype and values (NaN where NaN: the infos
    have some), other leaves equal."""
    import tree

    flat_g, flat_w = tree.flatten(got), tree.flatten(want)
    def same(g: Any, w: Any) -> bool:
        if isinstance(w, np.ndarray | np.generic):
            return g.dtype == w.dtype and np.array_equal(g, w, equal_nan=w.dtype.kind == "f")
        return bool(g == w)

    return len(flat_g) == len(flat_w) and all(type(g) is type(w) and same(g, w)
                                              for g, w in zip(flat_g, flat_w, strict=True))


def same_buffer(got: Any, want: Any) -> bool:
    """Same items (lookback included), lookback, numpy'd or not, and space."""
    return (got.lookback, got.finalized, got.space) == (want.lookback, want.finalized, want.space) and same_leaves(
        got.data, want.data)


@pytest.mark.slow
@pytest.mark.parametrize("network", ["shared_scorer", "mlp"])
def test_batched_runner_samples_rllibs_episodes(ray_session: ModuleType, network: str) -> None:
    require("ray.rllib")
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from recoworld.rl.env_runner import BatchedEnvRunner

    want, want_metrics = run(SingleAgentEnvRunner, network)
    got, got_metrics = run(BatchedEnvRunner, network)
    ids: dict[str, str] = {}  # RLlib's episode id -> ours: chunks of one episode share it in both
    kinds: set[str] = set()
    for got_chunks, want_chunks in zip(got, want, strict=True):
        assert len(got_chunks) == len(want_chunks)
        for g, w in zip(got_chunks, want_chunks, strict=True):
            assert ids.setdefault(w.id_, g.id_) == g.id_
            assert (g.is_terminated, g.is_truncated, g.t_started, g.t, len(g), g.is_numpy) == (
                w.is_terminated, w.is_truncated, w.t_started, w.t, len(w), w.is_numpy)
            assert type(g.is_terminated) is type(w.is_terminated)
            for name in ("observations", "actions", "rewards", "infos"):
                assert same_buffer(getattr(g, name), getattr(w, name)), name
            assert list(g.extra_model_outputs) == list(w.extra_model_outputs)
            for key, buffer in w.extra_model_outputs.items():  # logits, log-probabilities, weights' number
                assert same_buffer(g.extra_model_outputs[key], buffer), key
            assert g.custom_data == w.custom_data
            assert same_leaves(g._last_added_observation, w._last_added_observation)
            assert same_leaves(g._last_added_infos, w._last_added_infos)
            assert (g._start_time is None, g._last_step_time is None) == (w._start_time is None,
                                                                        w._last_step_time is None)
            kinds |= {name for name, flag in (("terminated", w.is_terminated), ("truncated", w.is_truncated),
                                              ("cut", not w.is_done), ("continued", w.t_started > 0),
                                              ("first", w.t_started == 0)) if flag}
    assert len(set(ids.values())) == len(ids)
    # terminated, truncated (max_steps) and cut chunks, first chunks and continued ones
    assert kinds == {"terminated", "truncated", "cut", "continued", "first"}
    for g, w in zip(got_metrics, want_metrics, strict=True):
        for key in ("num_env_steps_sampled_lifetime", "num_episodes_lifetime", "num_env_steps_sampled",
                    "num_episodes", "episode_len_mean", "episode_return_mean", "episode_len_max"):
            assert (key in g) == (key in w), key
            if key in w:  # RLlib's reduced stats
                assert np.array_equal(g[key].peek(), w[key].peek(), equal_nan=True), key


def test_batched_runner_names_the_pipeline_it_needs(ray_session: ModuleType) -> None:
    require("ray.rllib")
    from recoworld.rl.env_runner import BatchedEnvRunner
    from recoworld.rl.training_env import build_ppo_config

    with pytest.raises(ValueError, match=r"needs `streamline`'s env-to-module pipeline"):
        BatchedEnvRunner(config=build_ppo_config(config("shared_scorer")))


@pytest.mark.slow
def test_training_with_the_batched_runner_learns_what_rllibs_runner_learns(ray_session: ModuleType) -> None:
    require("ray.rllib")
    import torch

    from recoworld.rl.connectors import streamline
    from recoworld.rl.env_runner import BatchedEnvRunner, batched_sampling
    from recoworld.rl.training_env import build_ppo_config

    runs = {}
    for batched in (False, True):
        ppo_config = streamline(build_ppo_config(config("shared_scorer")))
        algo = (batched_sampling(ppo_config) if batched else ppo_config).build_algo()
        try:
            assert (type(algo.env_runner) is BatchedEnvRunner) == batched
            curve = []
            for _ in range(2):
                result = algo.train()
                learner = result["learners"]["default_policy"]
                curve.append((result["num_env_steps_sampled_lifetime"], float(learner["policy_loss"]),
                              float(learner["vf_loss"]), float(learner["entropy"])))
            runs[batched] = curve, {k: v.clone() for k, v in algo.get_module().state_dict().items()}
        finally:
            algo.stop()
    assert runs[True][0] == runs[False][0]
    assert all(torch.equal(w, runs[False][1][k]) for k, w in runs[True][1].items())
