"""Generic CSV, TSV, JSONL and Parquet logs and catalogs.

A folder holds `interactions.<ext>` and optionally `items.<ext>` and `users.<ext>`
(ext: csv, tsv, jsonl, parquet); a single file is read as the interaction log.
Columns are found by name: the canonical names of `recoworld.data.dataset`, common
aliases (`userId`, `movieId`, `ts`, `categories`, ...), or an explicit `columns`
mapping {canonical name: your column}. Lists (genres, feature vectors) may be real
lists (JSONL, Parquet) or `|`-separated strings (CSV).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from recoworld.data.dataset import Dataset
from recoworld.errors import CatalogFormatError, ConfigError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
ALIASES: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "userId", "user", "uid", "customer_id"),
    "item_id": ("item_id", "itemId", "movieId", "movie_id", "item", "iid", "product_id"),
    "rating": ("rating", "score", "stars"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date"),
    "title": ("title", "name", "item_name"),
    "genres": ("genres", "genre", "categories", "category", "tags", "topic"),
    "year": ("year", "release_year"),
    "description": ("description", "overview", "summary", "text"),
    "creator": ("creator", "director", "artist", "author", "channel", "brand"),
    "duration_min": ("duration_min",),
    "features": ("features", "embedding", "multimodal"),
}
_TABLE_COLUMNS = {
    "interactions": ("user_id", "item_id", "rating", "timestamp"),
    "items": ("item_id", "title", "genres", "year", "description", "creator", "duration_min", "features"),
}


def read_table(path: str | Path) -> pd.DataFrame:
    """One table from CSV, TSV, JSONL or Parquet, chosen by the file suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t")
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if suffix == ".parquet":
            return pq.read_table(path).to_pandas()
    except (ValueError, pd.errors.ParserError) as err:
        raise CatalogFormatError(f"{path}: could not parse as {suffix[1:]}: {err}") from None
    raise CatalogFormatError(f"{path}: unsupported suffix {suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}")


def find_table(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise CatalogFormatError(f"{folder}: several {stem} tables ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def is_generic(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in TABLE_SUFFIXES) or (
        path.is_dir() and find_table(path, "interactions") is not None
    )


def load_generic(path: str | Path, columns: dict[str, str] | None = None) -> Dataset:
    """A folder with `interactions.*` (+ `items.*`, `users.*`), or a single interaction file."""
    path = Path(path)
    item_path: Path | None = None
    user_path: Path | None = None
    if path.is_file():
        inter_path = path
    else:
        found = find_table(path, "interactions")
        if found is None:
            raise CatalogFormatError(
                f"{path}: no interactions table; expected interactions.<{'|'.join(s[1:] for s in TABLE_SUFFIXES)}>"
            )
        inter_path = found
        item_path, user_path = find_table(path, "items"), find_table(path, "users")
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(ALIASES))
    if unknown:
        raise ConfigError(f"columns: unknown target(s) {unknown}; known: {', '.join(ALIASES)}")
    inter = _canonical(read_table(inter_path), "interactions", columns, inter_path)
    items = _canonical(read_table(item_path), "items", columns, item_path) if item_path else None
    users = None
    if user_path is not None:
        users = read_table(user_path)
        users = users.rename(columns={_pick(users, "user_id", columns, user_path): "user_id"})
    name = path.stem if path.is_file() else path.name
    return Dataset.from_frames(name, inter, items, users, source=str(path))


def _pick(frame: pd.DataFrame, target: str, columns: dict[str, str], path: Path) -> str:
    if target in columns:
        if columns[target] not in frame.columns:
            raise ConfigError(
                f"columns[{target!r}] = {columns[target]!r} is not a column of {path}; "
                f"it has {', '.join(map(str, frame.columns))}"
            )
        return columns[target]
    found = next((a for a in ALIASES[target] if a in frame.columns), None)
    if found is None:
        raise CatalogFormatError(
            f"{path}: no {target!r} column (looked for {', '.join(ALIASES[target])}); "
            f"map yours with columns={{'{target}': '<name>'}}"
        )
    return found


def _canonical(frame: pd.DataFrame, table: str, columns: dict[str, str], path: Path) -> pd.DataFrame:
    """Keep the known columns, renamed to canonical names; only the ids are required."""
    keep = {}
    for target in _TABLE_COLUMNS[table]:
        required = target in ("user_id", "item_id") and (table == "interactions" or target == "item_id")
        if required or target in columns or any(a in frame.columns for a in ALIASES[target]):
            keep[_pick(frame, target, columns, path)] = target
    return frame[list(keep)].rename(columns=keep)
