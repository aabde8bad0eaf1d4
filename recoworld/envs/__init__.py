"""Environment registry. Every id here is registered on `import recoworld`."""

from __future__ import annotations

import gymnasium as gym

from recoworld.envs.population_env import PopulationParallelEnv, PopulationWorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv

ENV_IDS = ("RecoWorld-v0",)


def register_envs() -> None:
    if "RecoWorld-v0" not in gym.registry:
        gym.register(
            id="RecoWorld-v0",
            entry_point="recoworld.envs.recoworld_env:RecoWorldEnv",
            disable_env_checker=False,
        )


__all__ = ["ENV_IDS", "PopulationParallelEnv", "PopulationWorldConfig", "RecoWorldEnv", "register_envs"]
