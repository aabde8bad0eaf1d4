"""A realistic reference log, in MovieLens-100K format, made by a model that is *not* RecoWorld's user.

Calibration and validity checks need a log with the structure of real ones, and a log the
simulator generated itself would share the simulator's assumptions (the circularity issue 12
is about). So this module draws from an independent, deliberately simple generative process:

1. **Items.** Each item has 1-3 genres (the first drawn from a skewed genre prevalence, so
   Drama and Comedy are common and Film-Noir is rare), a latent quality q ~ N(0, 1), and a
   Zipf exposure weight w = rank^(-zipf_exponent) * exp(0.3 q) over a random rank order:
   a few blockbusters, a long tail.
2. **Users.** Each user has a taste over 2-4 genres (a Dirichlet(0.7) mix, genres drawn by
   prevalence), a conformity c ~ LogNormal(0, 0.4) that scales how much they follow the
   crowd, an activity level n ~ LogNormal(log(mean_activity), 0.9) clipped to
   [min_per_user, n_items / 3] interactions, and a session size ~ Geometric with mean 1 + LogNormal(log 3, 0.5).
3. **Choice.** Within a session the user picks unseen items without replacement (Gumbel
   top-k) with log-weight c * log w + taste_strength * affinity + 0.4 q, where affinity is
   the taste mass on the item's genres (each genre counting 1 / its number of genres).
4. **Drift.** Taste moves linearly over the user's history toward a mix that gives 25% of its
   mass to one new genre: mild interest drift.
5. **Time.** A user starts at a uniform time in the first 60% of a 215-day window (the span
   of MovieLens-100K). Items within a session are 1-5 minutes apart; sessions are separated
   by a heavy-tailed gap: with probability 0.75 LogNormal(median 1 day * user pace, sigma 1),
   else (Pareto(1.2) + 1) * 2 days * user pace, with user pace ~ LogNormal(0, 0.7).
6. **Churn.** Once a user has `min_per_user` interactions, every session end is a churn with
   the user's hazard h ~ Beta(1, 25), so some users stop well before their activity level.
7. **Ratings** (1-5): round(3.4 + 0.7 q + 2 (affinity - 0.3) + N(0, 0.8)), clipped.
8. **Trends** (`trend_strength` > 0; off by default, so the default log stays as it was). A
   share `back_catalog` of the items is old and draws a steady attention; every other item is
   released at a uniform time over the window, cannot be chosen before it, and its attention
   rises over about two days and decays with its own time constant tau ~ LogNormal(log
   `lifecycle_days` (30 by default), 0.5): lifecycle(age) = (1 - exp(-age / 2 days)) exp(-age / tau),
   floored at 2%. The
   log-weight gains trend_strength * c * log(lifecycle / back-catalog level), so new releases
   draw the crowd and fade, and on a global time split the recently popular items predict the
   future better than the all-time popular ones, as on MovieLens. Shorter lifecycles and a stronger
   trend (e.g. trend_strength=2, lifecycle_days=10, back_catalog=0.1) make the log recency-dominated:
   the recently popular items are the best predictor of the future, as on MovieLens' global split.

None of RecoWorld's choice, dynamics or return-gap code is used. The seed fixes everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recoworld.data.movielens import ML100K_GENRES
from recoworld.data.sample import T0, user_line, write_item_files

_GENRES = ML100K_GENRES[1:]
#: Relative prevalence of each genre in `_GENRES` order, shaped after MovieLens-100K's genre counts.
_PREVALENCE = np.array([251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27], float)
_WINDOW_DAYS = 215.0


def write_reference_log(
    path: str | Path,
    n_users: int = 943,
    n_items: int = 1682,
    mean_activity: float = 125.0,
    seed: int = 0,
    *,
    zipf_exponent: float = 1.0,
    taste_strength: float = 8.0,
    min_per_user: int = 20,
    trend_strength: float = 0.0,
    back_catalog: float = 0.3,
    lifecycle_days: float = 30.0,
) -> Path:
    """Write u.data, u.item, u.genre and u.user into `path` (created) and return it.

    The defaults give a MovieLens-100K-sized log (943 users, 1682 items, about 100k ratings).
    """
    if n_items < 2 or n_users < 1 or min_per_user < 1:
        raise ValueError(f"need n_items >= 2, n_users >= 1, min_per_user >= 1; got {n_items}, {n_users}, "
                         f"{min_per_user}")
    if trend_strength < 0 or not 0 <= back_catalog <= 1 or not lifecycle_days > 0:
        raise ValueError(f"need trend_strength >= 0, back_catalog in [0, 1] and lifecycle_days > 0; got "
                         f"{trend_strength}, {back_catalog}, {lifecycle_days}")
    rng = np.random.default_rng(seed)
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    prevalence = _PREVALENCE / _PREVALENCE.sum()
    n_genres = len(_GENRES)

    item_genres = [_draw_genres(rng, prevalence, int(rng.integers(1, 4))) for _ in range(n_items)]
    membership = np.zeros((n_items, n_genres))
    for i, gs in enumerate(item_genres):
        membership[i, gs] = 1.0 / len(gs)
    quality = rng.normal(0.0, 1.0, n_items)
    rank = rng.permutation(n_items) + 1.0
    log_exposure = -zipf_exponent * np.log(rank) + 0.3 * quality
    write_item_files(root, item_genres, rng.integers(1930, 1998, n_items), rng)
    lifecycle = _Lifecycles(rng, n_items, back_catalog, lifecycle_days) if trend_strength > 0 else None

    cap = max(min_per_user, n_items // 3)
    rows: list[str] = []
    users: list[str] = []
    for u in range(n_users):
        favourites = _draw_genres(rng, prevalence, int(rng.integers(2, 5)))
        taste0 = np.zeros(n_genres)
        taste0[favourites] = rng.dirichlet(np.full(len(favourites), 0.7))
        taste1 = 0.75 * taste0
        taste1[_draw_genres(rng, prevalence, 1)] += 0.25
        conformity = rng.lognormal(0.0, 0.4)
        target = int(np.clip(round(rng.lognormal(np.log(mean_activity), 0.9)), min_per_user, cap))
        session_mean = rng.lognormal(np.log(3.0), 0.5)
        pace = rng.lognormal(0.0, 0.7)
        hazard = rng.beta(1.0, 25.0)
        t = T0 + rng.uniform(0.0, 0.6 * _WINDOW_DAYS) * 86400.0
        seen = np.zeros(n_items, dtype=bool)
        done = 0
        while done < target:
            size = min(int(rng.geometric(1.0 / (1.0 + session_mean))), target - done)
            progress = done / target
            affinity = membership @ ((1.0 - progress) * taste0 + progress * taste1)
            logits = conformity * log_exposure + taste_strength * affinity + 0.4 * quality
            if lifecycle is not None:
                logits = logits + trend_strength * conformity * lifecycle.log_attention((t - T0) / 86400.0)
            keys = np.where(seen, -np.inf, logits + rng.gumbel(size=n_items))
            picked = np.argsort(-keys)[:size]
            seen[picked] = True
            times = t + np.cumsum(rng.uniform(60.0, 300.0, size))
            ratings = np.clip(np.rint(3.4 + 0.7 * quality[picked] + 2.0 * (affinity[picked] - 0.3)
                                      + rng.normal(0.0, 0.8, size)), 1, 5).astype(int)
            rows.extend(f"{u + 1}\t{i + 1}\t{r}\t{int(s)}\n" for i, r, s in zip(picked, ratings, times))
            done += size
            if done >= min_per_user and rng.random() < hazard:
                break
            t = times[-1] + _gap_days(rng, pace) * 86400.0
        users.append(user_line(u, rng))
    (root / "u.data").write_text("".join(rows), encoding="latin-1")
    (root / "u.user").write_text("".join(users), encoding="latin-1")
    return root


class _Lifecycles:
    """Release days and attention decay of every item (step 8 of the module docstring)."""

    _RISE_DAYS, _FLOOR = 2.0, 0.02

    def __init__(self, rng: np.random.Generator, n_items: int, back_catalog: float, lifecycle_days: float) -> None:
        self.old = rng.random(n_items) < back_catalog
        self.release = np.where(self.old, -np.inf, rng.uniform(0.0, _WINDOW_DAYS, n_items))
        self.tau = rng.lognormal(np.log(lifecycle_days), 0.5, n_items)
        self.old_level = np.log(0.3)

    def log_attention(self, day: float) -> np.ndarray:
        """Log attention relative to the back catalog's; -inf before release (the item cannot be chosen)."""
        age = day - self.release
        with np.errstate(invalid="ignore", over="ignore"):
            level = (1.0 - np.exp(-age / self._RISE_DAYS)) * np.exp(-age / self.tau)
        out = np.log(np.maximum(np.nan_to_num(level, nan=0.0), self._FLOOR)) - self.old_level
        out[self.old] = 0.0
        out[age < 0] = -np.inf
        return out


def _draw_genres(rng: np.random.Generator, prevalence: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(len(prevalence), size=k, replace=False, p=prevalence)


def _gap_days(rng: np.random.Generator, pace: float) -> float:
    """A heavy-tailed inter-session gap: mostly about a day, sometimes weeks."""
    if rng.random() < 0.75:
        return pace * rng.lognormal(0.0, 1.0)
    return pace * 2.0 * (rng.pareto(1.2) + 1.0)
