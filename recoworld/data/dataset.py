"""The one tabular shape every loader produces: interactions, items and users.

Loaders differ only in how they parse their files; they all end in `Dataset.from_frames`,
which coerces ids to strings, timestamps to integer seconds and genres to lists, and
checks that every interaction names a known item. Everything downstream (split,
catalog, population, fidelity) reads this one shape.

| table          | columns                                                                           |
|----------------|-----------------------------------------------------------------------------------|
| `interactions` | `user_id` str, `item_id` str, `rating` float (NaN when implicit), `timestamp` int s |
| `items`        | `item_id` str, `title` str, `genres` list[str], `year` float (NaN unknown),        |
|                | `description` str, optional `creator` str, `duration_min` float, `features` list   |
| `users`        | `user_id` str plus one str column per demographic attribute (may be empty)        |
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recoworld.errors import CatalogFormatError

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_GENRE_SPLIT = re.compile(r"\s*[|,;]\s*")

#: Optional item columns that loaders may fill and the catalog builder understands.
OPTIONAL_ITEM_COLUMNS = ("creator", "duration_min", "features")
#: Share of the rating scale above which an explicit rating counts as positive (4 and 5 of 1..5).
POSITIVE_RATING_QUANTILE = 0.75


def positive_ratings(rating: np.ndarray, rating_scale: tuple[float, float] | None) -> np.ndarray:
    """1.0 where an explicit rating is positive, 0.0 where it is not, NaN where the log cannot tell.

    A log cannot tell for unrated rows, nor anywhere in an implicit log (no scale, or 0/1
    ratings, which mark clicks among impressions, not a judgement of what was consumed). One
    rule serves the validity report's positive rate and the like threshold calibration fits.
    """
    rating = np.asarray(rating, dtype=np.float64)
    if rating_scale is None or rating_scale == (0.0, 1.0):
        return np.full(len(rating), np.nan)
    lo, hi = rating_scale
    return np.where(np.isnan(rating), np.nan, rating >= lo + POSITIVE_RATING_QUANTILE * (hi - lo))


@dataclass(frozen=True)
class Dataset:
    """A real dataset in RecoWorld's tabular shape (see the module docstring)."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    rating_scale: tuple[float, float] | None  # (min, max) of explicit ratings, None when implicit
    has_timestamps: bool = True  # False: the log had none and `timestamp` is file order
    duplicates: int = 0  # exact duplicate rows dropped (same user, item, rating and timestamp)

    @classmethod
    def from_frames(
        cls,
        name: str,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        source: str = "",
    ) -> Dataset:
        """Normalise loader output. `source` names the files in error messages."""
        where = f" in {source}" if source else ""
        inter, duplicates = _interactions(interactions, where)
        item_table = _items(items, inter, where)
        user_table = _users(users, inter, where)
        known = pd.Index(item_table["item_id"])
        unknown = ~inter["item_id"].isin(known)
        if unknown.any():
            bad = inter.loc[unknown, "item_id"].unique()
            raise CatalogFormatError(
                f"{int(unknown.sum())} interactions{where} name items missing from the item table, "
                f"e.g. item_id {', '.join(map(repr, bad[:5]))}"
            )
        ratings = inter["rating"].dropna()
        scale = (float(ratings.min()), float(ratings.max())) if len(ratings) else None
        return cls(name, inter, item_table, user_table, scale, "timestamp" in interactions.columns, duplicates)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    def __repr__(self) -> str:
        dropped = f", {self.duplicates} exact duplicate rows dropped" if self.duplicates else ""
        return (f"Dataset({self.name!r}: {len(self.interactions)} interactions{dropped}, {self.n_users} users, "
                f"{len(self.items)} items, ratings {self.rating_scale or 'implicit'})")


def _require(frame: pd.DataFrame, columns: Iterable[str], table: str, where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CatalogFormatError(
            f"{table} table{where} lacks column(s) {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, frame.columns))}"
        )


def _ids(series: pd.Series, column: str, table: str, where: str) -> pd.Series:
    if series.isna().any():
        row = int(np.flatnonzero(series.isna().to_numpy())[0])
        raise CatalogFormatError(f"{table} table{where}: column {column!r} is empty at row {row}")
    # Integers read as floats (1.0) must still match the same id written as "1" elsewhere.
    if pd.api.types.is_float_dtype(series) and (series == series.round()).all():
        series = series.astype(np.int64)
    return series.astype(str).str.strip()


#: Unix seconds a log's timestamp may take: 1970 to 2100. Outside, it is no time a log was written at
#: (a sign error, milliseconds read as seconds), and one such row stretches every gap and half-life fitted.
TIMESTAMP_RANGE = (0, 4_102_444_800)


def to_seconds(series: pd.Series, where: str = "") -> pd.Series:
    """Unix seconds from integer/float epochs or date strings; names the first bad value and its row."""
    if pd.api.types.is_numeric_dtype(series):
        if series.isna().any():
            raise CatalogFormatError(f"interactions{where}: column 'timestamp' has empty values")
        seconds = series
    else:
        parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
        if parsed.isna().any():
            bad = series[parsed.isna()].iloc[0]
            raise CatalogFormatError(f"interactions{where}: 'timestamp' value {bad!r} is neither a number nor a date")
        seconds = pd.Series((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1), index=series.index)
    lo, hi = TIMESTAMP_RANGE
    outside = ~seconds.between(lo, hi, inclusive="left").to_numpy()
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise CatalogFormatError(
            f"interactions{where}: 'timestamp' value {series.iloc[row]!r} at row {row + 1} is no time a log was "
            f"written at (Unix seconds from {lo} to {hi}, 1970 to 2100; milliseconds divide by 1000)")
    return seconds.astype(np.int64)


def _interactions(frame: pd.DataFrame, where: str) -> tuple[pd.DataFrame, int]:
    """The interactions, and how many exact duplicate rows were dropped from them."""
    _require(frame, ("user_id", "item_id"), "interactions", where)
    if frame.empty:
        raise CatalogFormatError(f"interactions table{where} is empty")
    out = pd.DataFrame({
        "user_id": _ids(frame["user_id"], "user_id", "interactions", where),
        "item_id": _ids(frame["item_id"], "item_id", "interactions", where),
    })
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        bad = rating.isna() & frame["rating"].notna()
        if bad.any():
            raise CatalogFormatError(
                f"interactions{where}: 'rating' value {frame['rating'][bad].iloc[0]!r} is not a number"
            )
        out["rating"] = rating.astype(np.float64)
    else:
        out["rating"] = np.nan
    if "timestamp" in frame.columns:
        out["timestamp"] = to_seconds(frame["timestamp"], where)
        # The same user, item, rating and second twice is one event logged twice (a file appended to itself),
        # which would count its clicks twice; a log without timestamps cannot tell a repeat from a copy.
        copies = out.duplicated()
        out = out[~copies]
    else:  # file order is the only order there is; keep it so a split is still "in time"
        out["timestamp"], copies = np.arange(len(out)), np.zeros(len(out), dtype=bool)
    return out.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True), int(copies.sum())


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def parse_genres(value: Any) -> list[str]:
    """Genres from a list, an array or a string separated by |, comma or semicolon."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(g).strip() for g in value if str(g).strip()]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [g for g in _GENRE_SPLIT.split(str(value).strip()) if g]


def _items(frame: pd.DataFrame | None, inter: pd.DataFrame, where: str) -> pd.DataFrame:
    if frame is None:  # a bare log: items are known only by id
        frame = pd.DataFrame({"item_id": inter["item_id"].unique()})
    _require(frame, ("item_id",), "items", where)
    ids = _ids(frame["item_id"], "item_id", "items", where)
    if ids.duplicated().any():
        raise CatalogFormatError(f"items table{where}: item_id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    titles = frame["title"].map(_text).str.strip() if "title" in frame.columns else pd.Series("", index=ids.index)
    titles = titles.where(titles != "", "item " + ids)
    genres = frame["genres"].map(parse_genres) if "genres" in frame.columns else pd.Series([[]] * len(frame))
    year = (pd.to_numeric(frame["year"], errors="coerce") if "year" in frame.columns
            else pd.Series(np.nan, index=frame.index))
    from_title = pd.to_numeric(titles.str.extract(_YEAR_IN_TITLE, expand=False), errors="coerce")
    out = pd.DataFrame({
        "item_id": ids.to_numpy(),
        "title": titles.to_numpy(),
        "genres": [list(g) for g in genres],
        "year": year.fillna(from_title).astype(np.float64).to_numpy(),
        "description": frame["description"].map(_text).to_numpy() if "description" in frame.columns else "",
    })
    for col in OPTIONAL_ITEM_COLUMNS:
        if col in frame.columns:
            out[col] = frame[col].to_numpy()
    if "duration_min" in out.columns:
        dur = pd.to_numeric(out["duration_min"], errors="coerce")
        if (dur.isna() | (dur <= 0)).any():
            bad = out["duration_min"][dur.isna() | (dur <= 0)].iloc[0]
            raise CatalogFormatError(f"items{where}: 'duration_min' must be a positive number, got {bad!r}")
        out["duration_min"] = dur.astype(np.float64)
    return out


def _users(frame: pd.DataFrame | None, inter: pd.DataFrame, where: str) -> pd.DataFrame:
    if frame is None:
        return pd.DataFrame({"user_id": inter["user_id"].unique()})
    _require(frame, ("user_id",), "users", where)
    out = frame.copy()
    out["user_id"] = _ids(frame["user_id"], "user_id", "users", where)
    for col in out.columns.drop("user_id"):
        out[col] = out[col].map(_text)
    return out.drop_duplicates("user_id").reset_index(drop=True)
