"""MovieLens 100K and 1M, read from a directory the user downloaded from grouplens.org.

The data may not be redistributed, so RecoWorld ships none of it: download
https://grouplens.org/datasets/movielens/100k/ (`ml-100k.zip`) or
https://grouplens.org/datasets/movielens/1m/ (`ml-1m.zip`), unzip, and pass the folder.

- 100K: `u.data` (tab: user, item, rating, timestamp), `u.item` (`|`: id, title, release
  date, video date, IMDb URL, 19 genre flags), `u.user` (`|`: id, age, gender, occupation, zip).
- 1M: `ratings.dat`, `movies.dat` (genres `|`-joined), `users.dat` (age and occupation as
  codes), all `::`-separated.

Both are latin-1 encoded.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from recoworld.data.dataset import Dataset, to_seconds
from recoworld.errors import CatalogFormatError

#: Genre flag columns of `u.item`, in file order (what `u.genre` lists).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: `users.dat` age codes of MovieLens 1M.
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
#: `users.dat` occupation codes of MovieLens 1M.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)


def is_movielens(path: Path) -> bool:
    return (path / "u.data").is_file() or (path / "ratings.dat").is_file()


def load_movielens(path: str | Path) -> Dataset:
    """MovieLens 100K or 1M from its unzipped folder; the version is told by the file names."""
    root = Path(path)
    if (root / "u.data").is_file():
        return _load_100k(root)
    if (root / "ratings.dat").is_file():
        return _load_1m(root)
    raise CatalogFormatError(
        f"{root} is not a MovieLens folder: expected u.data (100K) or ratings.dat (1M). "
        "Download it from https://grouplens.org/datasets/movielens/ and unzip it."
    )


def _read(path: Path, sep: str, names: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise CatalogFormatError(f"MovieLens file missing: {path}")
    text = path.read_bytes().decode("latin-1")
    if len(sep) > 1:  # pandas' C parser takes one-character separators only; '::' never occurs in a field
        text = text.replace(sep, "\t")
        sep = "\t"
    expected = f"expected {len(names)} {sep!r}-separated fields ({', '.join(names)})"
    try:  # no `names`: given them, pandas would take a longer first line's extra fields as an index
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=None, quoting=csv.QUOTE_NONE, dtype=str,
                            keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise CatalogFormatError(f"{path} has no rows") from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(err))
        where = f"line {found[1]} has {found[2]} fields, " if found else f"{err}; "
        raise CatalogFormatError(f"{path}: {where}{expected}") from None
    if frame.empty:
        raise CatalogFormatError(f"{path} has no rows")
    if frame.shape[1] != len(names):
        raise CatalogFormatError(f"{path}: line 1 has {frame.shape[1]} fields, {expected}")
    frame.columns = names
    if frame[names[-1]].eq("").all() and len(names) > 2:
        raise CatalogFormatError(
            f"{path}: expected {len(names)} {sep!r}-separated fields per line ({', '.join(names)})"
        )
    return frame


def _ratings(path: Path, sep: str) -> pd.DataFrame:
    frame = _read(path, sep, ["user_id", "item_id", "rating", "timestamp"])
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    if frame["timestamp"].isna().any():
        row = int(np.flatnonzero(frame["timestamp"].isna().to_numpy())[0])
        raise CatalogFormatError(f"{path}: line {row + 1} has a non-numeric timestamp")
    frame["timestamp"] = to_seconds(frame["timestamp"], f" in {path}")  # a row of this file is a line
    return frame


def _load_100k(root: Path) -> Dataset:
    genres = list(ML100K_GENRES)
    if (root / "u.genre").is_file():
        listed = _read(root / "u.genre", "|", ["name", "index"])
        genres = [g for g in listed["name"] if g]
    items = _read(root / "u.item", "|", ["item_id", "title", "release_date", "video_date", "url", *genres])
    flags = items[genres].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy() > 0
    items["genres"] = [[g for g, on in zip(genres, row) if on and g != "unknown"] for row in flags]
    items["year"] = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce").dt.year
    users = None
    if (root / "u.user").is_file():
        users = _read(root / "u.user", "|", ["user_id", "age", "gender", "occupation", "zip_code"])
    return Dataset.from_frames("ml-100k", _ratings(root / "u.data", "\t"),
                               items[["item_id", "title", "genres", "year"]], users, source=str(root))


def _load_1m(root: Path) -> Dataset:
    items = _read(root / "movies.dat", "::", ["item_id", "title", "genres"])
    users = None
    if (root / "users.dat").is_file():
        users = _read(root / "users.dat", "::", ["user_id", "gender", "age", "occupation", "zip_code"])
        age = pd.to_numeric(users["age"], errors="coerce")
        users["age"] = [ML1M_AGES.get(int(a), str(a)) if a == a else "" for a in age]
        occ = pd.to_numeric(users["occupation"], errors="coerce")
        users["occupation"] = [
            ML1M_OCCUPATIONS[int(o)] if o == o and 0 <= o < len(ML1M_OCCUPATIONS) else "" for o in occ
        ]
    return Dataset.from_frames("ml-1m", _ratings(root / "ratings.dat", "::"), items, users, source=str(root))
