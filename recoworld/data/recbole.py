"""RecBole atomic files: `<name>.inter`, `<name>.item`, `<name>.user` in one folder.

Each file is tab-separated with a `field:type` header (`user_id:token`,
`rating:float`, `genre:token_seq`, ...). `token_seq` values are space-separated, and
`float_seq` values become feature vectors. RecBole names fields per dataset, so the
loader maps the usual names (`movie_title`, `release_year`, `genre`, `class`, ...) onto
RecoWorld's columns and keeps the rest of a `.user` file as demographic attributes.
See https://recbole.io/docs/user_guide/data/atomic_files.html.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from recoworld.data.dataset import Dataset
from recoworld.errors import CatalogFormatError

_TYPES = ("token", "token_seq", "float", "float_seq")
# RecoWorld column <- the RecBole field names that mean it, most common first.
_INTER_FIELDS = {"user_id": ("user_id",), "item_id": ("item_id",), "rating": ("rating", "score", "label"),
                 "timestamp": ("timestamp", "time")}
_ITEM_FIELDS = {"item_id": ("item_id",), "title": ("movie_title", "title", "item_name", "name"),
                "genres": ("genre", "genres", "categories", "category", "class"),
                "year": ("release_year", "year"), "description": ("description", "overview", "plot"),
                "creator": ("creator", "director", "artist", "author", "brand"),
                "duration_min": ("duration_min",), "features": ("features", "feature", "embedding")}


def is_recbole(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*.inter"))


def load_recbole(path: str | Path, name: str | None = None) -> Dataset:
    """Load `<name>.inter` (+ `.item`, `.user` when present). `name` defaults to the only `.inter` file."""
    root = Path(path)
    inters = sorted(root.glob("*.inter")) if root.is_dir() else []
    if name is None:
        if len(inters) != 1:
            found = ", ".join(p.name for p in inters) or "none"
            raise CatalogFormatError(f"{root}: expected exactly one .inter file (found {found}); pass name=")
        name = inters[0].stem
    inter = _read_atomic(root / f"{name}.inter")
    items = _read_atomic(root / f"{name}.item") if (root / f"{name}.item").is_file() else None
    users = _read_atomic(root / f"{name}.user") if (root / f"{name}.user").is_file() else None
    inter = _rename(inter, _INTER_FIELDS, root / f"{name}.inter")
    if items is not None:
        items = _rename(items, _ITEM_FIELDS, root / f"{name}.item")
    return Dataset.from_frames(name, inter, items, users, source=str(root))


def _read_atomic(path: Path) -> pd.DataFrame:
    """A frame whose columns are the field names; sequences are parsed into lists."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
    fields, types = [], []
    for col in header:
        field, _, kind = col.rpartition(":")
        if not field or kind not in _TYPES:
            raise CatalogFormatError(
                f"{path}: header field {col!r} must look like name:type with type one of {', '.join(_TYPES)}"
            )
        fields.append(field)
        types.append(kind)
    frame = pd.read_csv(path, sep="\t", header=0, names=fields, dtype=str, keep_default_na=False,
                        quoting=csv.QUOTE_NONE, encoding="utf-8", encoding_errors="replace")
    for field, kind in zip(fields, types):
        if kind == "float":
            frame[field] = pd.to_numeric(frame[field].replace("", np.nan), errors="coerce")
        elif kind == "float_seq":
            frame[field] = [[float(x) for x in v.split()] for v in frame[field]]
        elif kind == "token_seq" and field not in _ITEM_FIELDS["title"] + _ITEM_FIELDS["description"]:
            frame[field] = [v.split() for v in frame[field]]
    return frame


def _rename(frame: pd.DataFrame, fields: dict[str, tuple[str, ...]], path: Path) -> pd.DataFrame:
    mapping = {}
    for target, names in fields.items():
        found = next((n for n in names if n in frame.columns), None)
        if found is not None:
            mapping[found] = target
    missing = [t for t in ("user_id", "item_id") if t in fields and t not in mapping.values()]
    if missing:
        raise CatalogFormatError(f"{path}: no {' or '.join(missing)} field; header has {', '.join(frame.columns)}")
    return frame[list(mapping)].rename(columns=mapping)
