"""RecoWorld: a simulation environment for agentic recommender systems.

Importing the package registers `RecoWorld-v0` with Gymnasium.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

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

try:  # one version, pyproject.toml's, read from the installed distribution's metadata
    __version__ = _distribution_version("recoworld")
except PackageNotFoundError:  # a source tree put on sys.path without installing it: no metadata to read
    __version__ = "0+unknown"

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
