"""RecoWorld: a simulation environment for agentic recommender systems.

Importing the package registers `RecoWorld-v0` with Gymnasium.
"""

from recoworld.catalog import Catalog, Item, generate_catalog
from recoworld.config import (
    CatalogConfig,
    ChoiceConfig,
    DynamicsConfig,
    RetrievalConfig,
    ReturnConfig,
    RewardConfig,
    WorldConfig,
)
from recoworld.envs import RecoWorldEnv, RecoWorldVectorEnv, register_envs
from recoworld.errors import (
    CatalogFormatError,
    ConfigError,
    InvalidActionError,
    RecoWorldError,
    ResetNeeded,
)
from recoworld.mindset import Instruction, Intent, Mindset, Reaction, ReactionType
from recoworld.population import PopulationSpec, Segment, UserProfile, sample_population

__version__ = "0.1.0"

register_envs()

__all__ = [
    "Catalog",
    "CatalogConfig",
    "CatalogFormatError",
    "ChoiceConfig",
    "ConfigError",
    "DynamicsConfig",
    "Instruction",
    "Intent",
    "InvalidActionError",
    "Item",
    "Mindset",
    "PopulationSpec",
    "Reaction",
    "ReactionType",
    "RecoWorldEnv",
    "RecoWorldError",
    "RecoWorldVectorEnv",
    "ResetNeeded",
    "RetrievalConfig",
    "ReturnConfig",
    "RewardConfig",
    "Segment",
    "UserProfile",
    "WorldConfig",
    "generate_catalog",
    "sample_population",
]
