"""The population world as an RLlib MultiAgentEnv: API contract and a short real PPO run."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require

ENV_CONFIG = {
    "n_users": 4,
    "world": {"slate_size": 3, "n_candidates": 12, "history_len": 4, "horizon_days": 2,
              "catalog": {"n_items": 300, "embedding_dim": 8, "seed": 1}},
}


def test_multiagent_env_contract() -> None:
    require("ray.rllib")
    from recoworld.rl.multi_agent import PopulationMultiAgentEnv

    env = PopulationMultiAgentEnv(ENV_CONFIG)
    assert env.possible_agents == [f"user_{i}" for i in range(4)]
    assert set(env.observation_spaces) == set(env.action_spaces) == set(env.possible_agents)
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.agents) == set(env.possible_agents)
    for agent, o in obs.items():
        assert env.observation_spaces[agent].contains(o), agent
    rng = np.random.default_rng(0)
    done_agents: set[str] = set()
    for _ in range(2000):
        acting = list(env.agents)
        obs, rewards, terms, truncs, _ = env.step(
            {a: rng.choice(12, 3, replace=False) for a in acting}
        )
        assert set(obs) == set(rewards) == set(acting)
        assert "__all__" in terms and "__all__" in truncs
        finished = {a for a in acting if terms[a] or truncs[a]}
        assert not finished & set(env.agents)
        done_agents |= finished
        if terms["__all__"] or truncs["__all__"]:
            break
    else:
        pytest.fail("the population episode never ended")
    assert done_agents == set(env.possible_agents)
    assert env.agents == []


@pytest.mark.slow
def test_ppo_trains_one_shared_policy(ray_session) -> None:
    require("ray.rllib")
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import FlattenObservations

    from recoworld.rl.multi_agent import PopulationMultiAgentEnv

    config = (
        PPOConfig()
        .environment(PopulationMultiAgentEnv, env_config=ENV_CONFIG)
        .multi_agent(policies={"recommender"}, policy_mapping_fn=lambda agent_id, episode, **kw: "recommender")
        .env_runners(
            num_env_runners=0,
            rollout_fragment_length=100,
            env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations(multi_agent=True),
        )
        .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [32]})
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        # Three iterations (600 steps): the longest user's episode can take ~280 steps, and a slot
        # shows up in the metrics once one of its episodes has ended.
        results = [algo.train() for _ in range(3)]
    finally:
        algo.stop()
    last = results[-1]
    assert last["num_env_steps_sampled_lifetime"] >= 200
    learner = last["learners"]["recommender"]
    assert np.isfinite(learner["policy_loss"])
    # Every user slot was served by the one shared policy.
    assert set(last["env_runners"]["agent_steps"]) == {f"user_{i}" for i in range(4)}
