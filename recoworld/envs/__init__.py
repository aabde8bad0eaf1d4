"""The environments: the batched world core and its three views, registered on `import recoworld`.

- `RecoWorld-v0` (`RecoWorldEnv`): one user over many sessions (Gymnasium `Env`);
  `gym.make_vec("RecoWorld-v0", num_envs=B, vectorization_mode="vector_entry_point")`
  gives `RecoWorldVectorEnv`, B independent users in one batched step;
- `PopulationParallelEnv`: many users on one shared platform (PettingZoo `ParallelEnv`; PettingZoo envs
  are not Gymnasium envs, so it has no `gym.make` id: `PopulationParallelEnv(...)` or
  `recoworld.envs.population_env.parallel_env(...)` builds it).
"""

from __future__ import annotations

import gymnasium as gym

from recoworld.envs.population_env import PopulationParallelEnv, PopulationWorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.envs.vector_env import RecoWorldVectorEnv
from recoworld.envs.world import TurnInfo, World

ENV_IDS = ("RecoWorld-v0",)


def register_envs() -> None:
    if "RecoWorld-v0" not in gym.registry:
        gym.register(
            id="RecoWorld-v0",
            entry_point="recoworld.envs.recoworld_env:RecoWorldEnv",
            vector_entry_point="recoworld.envs.vector_env:RecoWorldVectorEnv",
            disable_env_checker=False,
        )


__all__ = ["ENV_IDS", "PopulationParallelEnv", "PopulationWorldConfig", "RecoWorldEnv", "RecoWorldVectorEnv",
           "TurnInfo", "World", "register_envs"]
