"""`load_dataset(path)`: one entry point that tells the format from the files it finds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from recoworld.data.dataset import Dataset
from recoworld.data.generic import TABLE_SUFFIXES, is_generic, load_generic
from recoworld.data.movielens import is_movielens, load_movielens
from recoworld.data.recbole import is_recbole, load_recbole
from recoworld.errors import CatalogFormatError, ConfigError

DataFormat = Literal["auto", "movielens", "recbole", "generic"]


def detect_format(path: Path) -> DataFormat:
    """MovieLens (u.data / ratings.dat), RecBole (*.inter) or generic (interactions.<csv|tsv|jsonl|parquet>)."""
    if path.is_dir() and is_movielens(path):
        return "movielens"
    if is_recbole(path):
        return "recbole"
    if is_generic(path):
        return "generic"
    listing = ", ".join(sorted(p.name for p in path.iterdir())[:10]) if path.is_dir() else path.name
    raise CatalogFormatError(
        f"cannot tell the data format of {path} ({listing or 'empty'}). Expected a MovieLens folder "
        "(u.data or ratings.dat), RecBole atomic files (*.inter), or interactions.<"
        + "|".join(s[1:] for s in TABLE_SUFFIXES) + "> (+ items.*, users.*)"
    )


def load_dataset(path: str | Path, format: DataFormat = "auto", columns: dict[str, str] | None = None) -> Dataset:
    """Load a real dataset; `columns` maps canonical names to yours for the generic format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    fmt = detect_format(path) if format == "auto" else format
    if columns and fmt != "generic":
        raise ConfigError(f"columns= applies to the generic format only, but {path} is read as {fmt}")
    if fmt == "movielens":
        return load_movielens(path)
    if fmt == "recbole":
        return load_recbole(path)
    if fmt == "generic":
        return load_generic(path, columns)
    raise ConfigError(f"format must be one of auto, movielens, recbole, generic; got {format!r}")
