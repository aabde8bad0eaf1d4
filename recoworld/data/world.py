"""From a dataset on disk to what a study runs on: catalog, simulated users and a time split.

    world = prepare_world(DataConfig(path="ml-100k", representation={"embedding": "tfidf"}))
    simulate(config, catalog=world.catalog, profiles=world.profiles)

The catalog and the profiles are built from the *train* part of the split only, so the
held-out interactions stay unseen until the fidelity report scores them. The default split
is one global time cutoff, so nothing fitted reads an interaction later than any held-out one
(`recoworld.data.split` explains why `per_user` leaks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from recoworld.catalog import Catalog
from recoworld.config import StrictModel
from recoworld.data.dataset import Dataset
from recoworld.data.items import RepresentationConfig, build_catalog
from recoworld.data.load import DataFormat, load_dataset
from recoworld.data.split import Split, SplitMode, temporal_split
from recoworld.data.users import build_profiles
from recoworld.population import UserProfile


class DataConfig(StrictModel):
    """A real dataset and how to turn it into a world."""

    path: Path
    format: DataFormat = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="generic format: canonical -> your column")
    split: SplitMode = Field("global", description="global: one time cutoff (nothing fitted sees the future); "
                             "per_user: each user's latest interactions, leaks later interactions of other users")
    test_fraction: float = Field(0.2, gt=0, lt=1)
    min_train: int = Field(5, ge=1, description="per_user split only: users need this many train interactions")
    n_topics: int = Field(5, ge=1, description="favourite genres kept per user profile")
    representation: RepresentationConfig = RepresentationConfig()
    seed: int = Field(0, ge=0, description="seed of the traits the data cannot tell (patience, time budget)")


@dataclass
class RealWorld:
    dataset: Dataset
    split: Split
    catalog: Catalog
    profiles: list[UserProfile]

    def describe(self) -> str:
        return (f"{self.dataset!r}; {self.split.describe()}; catalog of {len(self.catalog)} items, "
                f"{self.catalog.n_topics} topics, {self.catalog.metadata['embedding']} embeddings "
                f"(d={self.catalog.embedding_dim}); {len(self.profiles)} simulated users")


def prepare_world(config: DataConfig, dataset: Dataset | None = None) -> RealWorld:
    """Split, catalog and users for `config`; `dataset` skips loading when the caller already has it."""
    if dataset is None:
        dataset = load_dataset(config.path, config.format, config.columns or None)
    split = temporal_split(dataset.interactions, config.test_fraction, config.split, config.min_train)
    catalog = build_catalog(dataset, split.train, config.representation)
    rng = np.random.default_rng(config.seed)
    profiles = build_profiles(dataset, catalog, split.train, rng, n_topics=config.n_topics)
    return RealWorld(dataset, split, catalog, profiles)
