"""Items and what is known of them: the catalog, its taxonomy, embeddings, semantic IDs and feature layout."""

from recoworld.catalog.catalog import Catalog, Item, cached_catalog, generate_catalog, slate_diversity, unit_rows
from recoworld.catalog.features import (
    SCALAR_FEATURES,
    FeatureLayout,
    embedding_part,
    popularity_feature,
    scalar_feature,
)

__all__ = [
    "SCALAR_FEATURES",
    "Catalog",
    "FeatureLayout",
    "Item",
    "cached_catalog",
    "embedding_part",
    "generate_catalog",
    "popularity_feature",
    "scalar_feature",
    "slate_diversity",
    "unit_rows",
]
