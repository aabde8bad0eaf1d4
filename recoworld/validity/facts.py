"""Stylized facts of one `ConsumptionLog`, and the distances between two sources' facts.

Every fact is a `Fact`: named statistics (medians, tails, shares), optionally the sample a
distribution distance compares (KS and Wasserstein-1) or a curve that is plotted and compared
pointwise. A source that lacks the signal a statistic needs records why, in `missing`, and
the report prints that reason instead of a number.

| fact               | what it measures                                                                 |
|--------------------|----------------------------------------------------------------------------------|
| positive rate      | consumptions per impression; share of consumptions rated positive                  |
| popularity         | Gini over every catalog item (unconsumed ones count as 0), top 1% / 10% share, Lorenz |
| activity           | consumptions per user within the horizon, of users observed for all of it          |
| session length     | consumptions per session                                                          |
| session gap        | days between the last consumption of a session and the first of the next         |
| return curve       | share of users active on day d after their first consumption (24-hour windows),   |
|                    | among users the source observed for more than d days                              |
| interest drift     | Jaccard overlap of the topic sets of consecutive sessions of a user               |
| distinctness       | per user: mean cosine distance between their consumed items, divided by the mean  |
|                    | distance between items of different users (< 1: users are distinguishable); the  |
|                    | mean of that ratio is the intra- over inter-user distance ratio                    |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.validity.events import ConsumptionLog

NOT_IN_LOG = "not in this log"
QUANTILES = (0.5, 0.9, 0.99)
#: Days of the return curve shown as statistics (those inside the horizon).
RETURN_DAYS = (1, 7, 30)
MAX_RETURN_DAY = 60


@dataclass(frozen=True)
class Fact:
    """What one source shows of one stylized fact."""

    stats: dict[str, float]
    sample: np.ndarray | None = None  # compared with KS and Wasserstein-1
    curve: tuple[np.ndarray, np.ndarray] | None = None  # (x, y), compared pointwise and plotted
    missing: dict[str, str] = field(default_factory=dict)  # statistic -> why this source cannot show it


# ---------------------------------------------------------------------- distances


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def wasserstein_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 between two samples: the area between their empirical CDFs (in the samples' unit)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid[:-1], "right") / len(a)
    cdf_b = np.searchsorted(b, grid[:-1], "right") / len(b)
    return float((np.abs(cdf_a - cdf_b) * np.diff(grid)).sum())


# ---------------------------------------------------------------------- building blocks


def _distribution(values: np.ndarray, unit: str = "") -> Fact:
    """Mean and the `QUANTILES` of a sample, kept for the distances."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return Fact({}, missing={"*": "no data in this source"})
    suffix = f" ({unit})" if unit else ""
    stats = {f"mean{suffix}": float(values.mean())}
    stats.update({f"p{round(q * 100)}{suffix}": float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))})
    return Fact(stats, sample=values)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when equal, (n - 1) / n when one entry has everything."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if total == 0:
        return float("nan")
    return float(2 * (np.arange(1, n + 1) * x).sum() / (n * total) - (n + 1) / n)


def top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of all consumption that goes to the top `fraction` of items (at least one item)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    return float(x[: max(1, math.ceil(fraction * len(x)))].sum() / x.sum())


def lorenz(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative share of items, least consumed first; cumulative share of consumption), from (0, 0)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    return np.linspace(0, 1, len(x) + 1), np.r_[0.0, np.cumsum(x) / x.sum()]


# ---------------------------------------------------------------------- facts


def positive_rate(log: ConsumptionLog, catalog: Catalog) -> Fact:
    stats, missing = {}, {}
    if log.impressions:
        stats["per impression"] = float(log.events["consumed"].mean())
    else:
        missing["per impression"] = f"{NOT_IN_LOG} (no impressions)"
    if log.ratings:
        stats["of consumptions"] = float(log.consumptions["positive"].mean())
    else:
        missing["of consumptions"] = f"{NOT_IN_LOG} (no ratings)"
    return Fact(stats, missing=missing)


def popularity(log: ConsumptionLog, catalog: Catalog) -> Fact:
    counts = np.bincount(log.consumptions["item"].to_numpy(), minlength=len(catalog))
    if not counts.sum():
        return Fact({}, missing={"*": "no consumption in this source"})
    stats = {"Gini": gini(counts), "top 1% share": top_share(counts, 0.01), "top 10% share": top_share(counts, 0.1)}
    return Fact(stats, curve=lorenz(counts))


def activity(log: ConsumptionLog, catalog: Catalog) -> Fact:
    # Only users observed for the whole horizon (within a day): a late joiner's short window is not low activity.
    full = log.window.index[log.window.to_numpy() >= log.horizon_days - 1]
    if not len(full):
        return Fact({}, missing={"*": "no user is observed for the whole horizon; lower --days"})
    return _distribution(log.consumptions.groupby("user").size().reindex(full, fill_value=0).to_numpy(), "items")


def session_length(log: ConsumptionLog, catalog: Catalog) -> Fact:
    return _distribution(log.sessions().groupby(["user", "session"]).size().to_numpy(), "items")


def session_gap(log: ConsumptionLog, catalog: Catalog) -> Fact:
    s = log.sessions()
    gaps = np.diff(s["time"].to_numpy())[np.diff(s["session"].to_numpy()) == 1]
    return _distribution(gaps, "days")


def return_curve(log: ConsumptionLog, catalog: Catalog) -> Fact:
    eaten = log.consumptions
    first = eaten.groupby("user")["time"].min()
    window = (log.window - first.reindex(log.window.index)).dropna()
    last_day = min(MAX_RETURN_DAY, math.ceil(window.max()) - 1) if len(window) else 0
    if last_day < 1:
        return Fact({}, missing={"*": "the horizon is shorter than two days"})
    day = np.floor(eaten["time"].to_numpy() - first.reindex(eaten["user"]).to_numpy()).astype(np.int64)
    active = pd.DataFrame({"user": eaten["user"].to_numpy(), "day": day}).drop_duplicates()
    active = active[(active["day"] >= 1) & (active["day"] <= last_day)]
    days = np.arange(1, last_day + 1)
    # Users observed for more than d days since their first consumption are the denominator of day d.
    observed = (window.to_numpy()[:, None] > days[None, :]).sum(axis=0)
    seen = active[window.reindex(active["user"]).to_numpy() > active["day"].to_numpy()]
    returned = np.bincount(seen["day"].to_numpy(), minlength=last_day + 1)[1:]
    share = np.where(observed > 0, returned / np.maximum(observed, 1), np.nan)
    stats = {f"day {d}": float(share[d - 1]) for d in RETURN_DAYS if d <= last_day}
    return Fact(stats, curve=(days.astype(np.float64), share))


def interest_drift(log: ConsumptionLog, catalog: Catalog) -> Fact:
    s = log.sessions()
    topics = pd.DataFrame({"user": s["user"].to_numpy(), "session": s["session"].to_numpy(),
                           "topic": catalog.topic[s["item"].to_numpy()]}).drop_duplicates()
    size = topics.groupby(["user", "session"]).size().rename("n").reset_index()
    pairs = size.merge(size.assign(session=size["session"] - 1), on=["user", "session"], suffixes=("", "_next"))
    shared = (topics.merge(topics.assign(session=topics["session"] - 1), on=["user", "session", "topic"])
              .groupby(["user", "session"]).size().rename("shared").reset_index())
    pairs = pairs.merge(shared, on=["user", "session"], how="left").fillna({"shared": 0})
    jaccard = pairs["shared"] / (pairs["n"] + pairs["n_next"] - pairs["shared"])
    return _distribution(jaccard.to_numpy(), "")


def distinctness(log: ConsumptionLog, catalog: Catalog) -> Fact:
    eaten = log.consumptions
    emb = catalog.embeddings[eaten["item"].to_numpy()].astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    users, user_row = np.unique(eaten["user"].to_numpy(), return_inverse=True)
    sums = np.zeros((len(users), emb.shape[1]))
    np.add.at(sums, user_row, emb)
    n = np.bincount(user_row).astype(np.float64)
    sq = (sums**2).sum(axis=1)
    # Mean cosine similarity over ordered pairs of distinct events: within a user, and across users.
    cross_pairs = n.sum() ** 2 - (n**2).sum()
    if cross_pairs == 0 or not (n >= 2).any():
        return Fact({}, missing={"*": "needs two users with two consumptions each"})
    inter = 1.0 - ((sums.sum(axis=0) ** 2).sum() - sq.sum()) / cross_pairs
    several = n >= 2
    intra = 1.0 - (sq[several] - n[several]) / (n[several] * (n[several] - 1))
    return _distribution(intra / inter, "")


#: The facts computed from events, in report order.
EVENT_FACTS: dict[str, Callable[[ConsumptionLog, Catalog], Fact]] = {
    "positive rate": positive_rate,
    "popularity": popularity,
    "activity": activity,
    "session length": session_length,
    "session gap": session_gap,
    "return curve": return_curve,
    "interest drift": interest_drift,
    "distinctness": distinctness,
}


def event_facts(log: ConsumptionLog, catalog: Catalog) -> dict[str, Fact]:
    """Every fact of `EVENT_FACTS` for one source."""
    return {name: compute(log, catalog) for name, compute in EVENT_FACTS.items()}


def compare(fact: str, real: Fact, world: Fact) -> list[dict[str, object]]:
    """CSV rows (without the world's name) comparing one world's fact with the real one.

    Statistics get the absolute difference as their distance; samples add KS and
    Wasserstein-1 rows, curves the mean absolute gap over their common points.
    """
    rows: list[dict[str, object]] = []
    for stat in dict.fromkeys([*real.stats, *world.stats, *real.missing, *world.missing]):
        if stat == "*":
            continue
        note = real.missing.get(stat) or real.missing.get("*") or world.missing.get(stat) or world.missing.get("*")
        r, w = real.stats.get(stat, np.nan), world.stats.get(stat, np.nan)
        rows.append({"fact": fact, "statistic": stat, "real": r, "value": w, "distance": abs(w - r), "note": note})
    if real.sample is not None and world.sample is not None:
        for stat, dist in (("KS", ks_distance), ("Wasserstein", wasserstein_distance)):
            d = dist(real.sample, world.sample)
            rows.append({"fact": fact, "statistic": stat, "real": np.nan, "value": d, "distance": d, "note": None})
    if real.curve is not None and world.curve is not None:
        x = np.intersect1d(real.curve[0], world.curve[0])
        gap = np.abs(np.interp(x, *real.curve) - np.interp(x, *world.curve))
        d = float(np.nanmean(gap)) if len(x) else np.nan
        rows.append({"fact": fact, "statistic": "curve mean |gap|", "real": np.nan, "value": d, "distance": d,
                     "note": None})
    if not rows:  # one side has nothing at all
        note = real.missing.get("*") or world.missing.get("*") or NOT_IN_LOG
        rows.append({"fact": fact, "statistic": "-", "real": np.nan, "value": np.nan, "distance": np.nan,
                     "note": note})
    return rows
