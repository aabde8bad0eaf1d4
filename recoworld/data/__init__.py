"""Real-data loaders: datasets become a Catalog, a Population and interaction logs.

`load_dataset` reads MovieLens 100K/1M, RecBole atomic files and generic CSV/TSV/JSONL/Parquet
into one tabular `Dataset`; `prepare_world` splits it in time and builds the catalog and the
simulated users from the train part. No dataset ships with RecoWorld: download MovieLens
from https://grouplens.org/datasets/movielens/ and pass its folder.
"""

from recoworld.data.dataset import Dataset
from recoworld.data.items import RepresentationConfig, build_catalog
from recoworld.data.load import detect_format, load_dataset
from recoworld.data.split import Split, temporal_split
from recoworld.data.users import build_profiles
from recoworld.data.world import DataConfig, RealWorld, prepare_world

__all__ = [
    "DataConfig",
    "Dataset",
    "RealWorld",
    "RepresentationConfig",
    "Split",
    "build_catalog",
    "build_profiles",
    "detect_format",
    "load_dataset",
    "prepare_world",
    "temporal_split",
]
