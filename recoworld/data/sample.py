"""A small made-up rating log written in MovieLens-100K format, to try `--data` without downloading.

MovieLens may not be redistributed, so tests and demos write their own: users have a few
favourite genres, pick films by genre affinity and a popularity term, and rate them by
affinity plus the film's hidden quality. The genre signal is what the fidelity report
should recover; nothing else about the files is special.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recoworld.data.movielens import ML100K_GENRES

_WORDS = ("Silent", "River", "Last", "Night", "Golden", "City", "Broken", "Star", "Winter", "Dream", "Iron",
          "Shadow", "Lost", "Garden", "Red", "Empire", "Little", "Storm", "Secret", "Road", "Paper", "Moon")
_OCCUPATIONS = ("student", "engineer", "educator", "writer", "programmer", "artist", "doctor", "retired", "other")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
T0 = 874_724_710  # 1997-09-20, when MovieLens 100K starts


def write_item_files(root: Path, item_genres: list[np.ndarray], years: np.ndarray, rng: np.random.Generator) -> None:
    """u.item (made-up titles, genre flags; `item_genres` index `ML100K_GENRES[1:]`) and u.genre."""
    n_genres = len(ML100K_GENRES) - 1
    with (root / "u.item").open("w", encoding="latin-1") as fh:
        for i, genres in enumerate(item_genres):
            title = f"{_WORDS[rng.integers(len(_WORDS))]} {_WORDS[rng.integers(len(_WORDS))]} {i}"
            flags = ["0"] * (n_genres + 1)
            for g in genres:
                flags[g + 1] = "1"
            date = f"01-{_MONTHS[rng.integers(12)]}-{years[i]}"
            fh.write(f"{i + 1}|{title} ({years[i]})|{date}||http://example.org/{i + 1}|{'|'.join(flags)}\n")
    (root / "u.genre").write_text("".join(f"{g}|{j}\n" for j, g in enumerate(ML100K_GENRES)) + "\n",
                                  encoding="latin-1")


def user_line(u: int, rng: np.random.Generator) -> str:
    """One made-up u.user line for user index `u` (id u + 1)."""
    gender = "MF"[rng.integers(2)]
    return (f"{u + 1}|{rng.integers(16, 70)}|{gender}|{_OCCUPATIONS[rng.integers(len(_OCCUPATIONS))]}|"
            f"{rng.integers(10000, 99999)}\n")


def write_movielens_100k(path: str | Path, n_users: int = 60, n_items: int = 150, seed: int = 0) -> Path:
    """Write u.data, u.item, u.user and u.genre into `path` (created) and return it."""
    rng = np.random.default_rng(seed)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    genres = ML100K_GENRES[1:]  # "unknown" is never set
    n_genres = len(genres)

    item_genres = [rng.choice(n_genres, size=rng.integers(1, 4), replace=False) for _ in range(n_items)]
    quality = rng.normal(0.0, 1.0, n_items)
    exposure = rng.normal(0.0, 1.0, n_items)
    years = rng.integers(1930, 1998, n_items)
    write_item_files(root, item_genres, years, rng)

    membership = np.zeros((n_items, n_genres))
    for i, gs in enumerate(item_genres):
        membership[i, gs] = 1.0 / len(gs)
    rows, users = [], []
    for u in range(n_users):
        taste = np.zeros(n_genres)
        taste[rng.choice(n_genres, size=3, replace=False)] = rng.dirichlet(np.full(3, 2.0))
        affinity = membership @ taste
        affinity = (affinity - affinity.mean()) / max(float(affinity.std()), 1e-9)
        logits = 1.6 * affinity + 0.7 * exposure
        p = np.exp(logits - logits.max())
        n_rated = min(int(rng.integers(20, 45)), n_items // 2)
        picked = rng.choice(n_items, size=n_rated, replace=False, p=p / p.sum())
        start = T0 + int(rng.integers(0, 150 * 86400))
        times = start + np.sort(rng.integers(0, 60 * 86400, n_rated))
        for item, t in zip(picked, times):
            rating = int(np.clip(np.rint(3.2 + 0.8 * affinity[item] + 0.6 * quality[item] + rng.normal(0, 0.7)), 1, 5))
            rows.append(f"{u + 1}\t{item + 1}\t{rating}\t{t}\n")
        users.append(user_line(u, rng))
    (root / "u.data").write_text("".join(rows), encoding="latin-1")
    (root / "u.user").write_text("".join(users), encoding="latin-1")
    return root
