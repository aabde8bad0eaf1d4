"""The population world as an RLlib `MultiAgentEnv` (needs the `rllib` extra).

A thin adapter over `PopulationParallelEnv`: the same world, the same agents
(`user_0`, ...), the per-agent spaces as the plural dicts RLlib's new API stack reads,
and `"__all__"` once no user is left. Map every agent to one policy to train a single
shared recommender, or map segments or slots to several policies:

    config.environment(PopulationMultiAgentEnv, env_config={"n_users": 8, "world": {...}})
    config.multi_agent(policies={"shared"}, policy_mapping_fn=lambda agent_id, episode, **kw: "shared")
    config.env_runners(env_to_module_connector=lambda env, spaces=None, device=None:
                       FlattenObservations(multi_agent=True))

`env_config` holds the keyword arguments of `PopulationParallelEnv`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from recoworld.envs.population_env import PopulationParallelEnv


class PopulationMultiAgentEnv(MultiAgentEnv):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.world = PopulationParallelEnv(**dict(config or {}))
        self.possible_agents = list(self.world.possible_agents)
        self.agents = []
        self.observation_spaces = {a: self.world.observation_space(a) for a in self.world.possible_agents}
        self.action_spaces = {a: self.world.action_space(a) for a in self.world.possible_agents}

    # RLlib types agent ids as any Hashable; this env's are the world's str ids (`user_0`, ...), which RLlib
    # hands back as they came. Its `step`, a dict per agent, also differs from gymnasium's `Env.step`, its base.
    def reset(  # type: ignore[override]
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, infos = self.world.reset(seed=seed, options=options)
        self.agents = list(self.world.agents)
        return obs, infos

    def step(self, action_dict: dict[str, np.ndarray]) -> tuple[  # type: ignore[override]
        dict[str, Any], dict[str, float], dict[str, bool], dict[str, bool], dict[str, Any]
    ]:
        obs, rewards, terminateds, truncateds, infos = self.world.step(action_dict)
        self.agents = list(self.world.agents)
        over = not self.agents
        truncateds["__all__"] = over and all(truncateds.values())
        terminateds["__all__"] = over and not truncateds["__all__"]
        return obs, rewards, terminateds, truncateds, infos
