"""One shape for real logs and simulated trajectories, so that every fact is computed once.

A `ConsumptionLog` holds one row per event of one source (a real log, or one simulated world):

| column     | meaning                                                                           |
|------------|-----------------------------------------------------------------------------------|
| `user`     | user id (str), the same ids in the real log and in every simulated world           |
| `item`     | row of the *reference* catalog (the real log's), so items are compared by identity |
| `time`     | days since the user's first event in this source                                   |
| `consumed` | the user took the item (a rating, a click); False for impressions left alone      |
| `positive` | 1.0 liked, 0.0 not liked, NaN where the source cannot tell                          |

and per user the length of the window in which the source could have seen them (`window`,
days, at most the simulated horizon), so that a return curve never counts a day nobody
observed and activity is compared on users observed for the whole horizon.

What a source can tell is explicit (`impressions`, `ratings`): facts that need a missing
signal say "not in this log" instead of inventing one. A real log has impressions only if its
ratings are all 0/1 with some zeros (an implicit log with its non-clicks); it has a positive
flag only with explicit ratings (positive: at least 3/4 of the way up the rating scale, i.e.
4 or 5 stars of 5). A RecoWorld trajectory has both: every shown item the user reached is an
impression, a click is a consumption and a like or share is positive.

Sessions are cut at `SESSION_GAP_MINUTES` (calibration's constant, 30 minutes) of inactivity
between consecutive consumptions. Both kinds of sources are cut the same way, on consumptions
only, because a real log has no record of visits without a consumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, SESSION_GAP_MINUTES
from recoworld.catalog import Catalog
from recoworld.data.dataset import positive_ratings
from recoworld.envs.observation import MINUTES_PER_DAY
from recoworld.errors import CatalogFormatError
from recoworld.mindset import ReactionType


@dataclass(frozen=True)
class ConsumptionLog:
    """The events of one source in the common shape (see the module docstring)."""

    name: str
    events: pd.DataFrame  # user, item, time, consumed, positive; sorted by user then time
    window: pd.Series  # user -> days in which this source observed the user
    horizon_days: float  # the longest window
    impressions: bool  # rows with consumed=False are real non-consumptions
    ratings: bool  # the positive flag is known

    @property
    def consumptions(self) -> pd.DataFrame:
        return self.events[self.events["consumed"].to_numpy()]

    def sessions(self) -> pd.DataFrame:
        """Consumptions with a per-user `session` number (0, 1, ...) cut at `SESSION_GAP_MINUTES`."""
        eaten = self.consumptions
        user = eaten["user"].to_numpy()
        gap = np.diff(eaten["time"].to_numpy(), prepend=-np.inf)
        new_user = np.r_[True, user[1:] != user[:-1]]
        starts = new_user | (gap * MINUTES_PER_DAY > SESSION_GAP_MINUTES)
        first = np.maximum.accumulate(np.where(new_user, np.arange(len(eaten)), 0))
        count = np.cumsum(starts)
        return eaten.assign(session=count - count[first])


def _catalog_rows(catalog: Catalog, item_ids: np.ndarray, source: str) -> np.ndarray:
    """Rows of `catalog` for item ids, so every source counts the same item as the same row."""
    rows = pd.Series(np.arange(len(catalog)), index=catalog.item_ids).reindex(item_ids)
    if rows.isna().any():
        raise CatalogFormatError(f"{source} names items missing from the catalog it is compared on, "
                                 f"e.g. {rows.index[rows.isna().to_numpy()][0]!r}")
    return rows.to_numpy(np.int64)


def _finish(
    name: str, frame: pd.DataFrame, window: pd.Series, horizon_days: float, impressions: bool, ratings: bool,
    per_user_origin: bool = True,
) -> ConsumptionLog:
    """Times relative to each user's first event (or kept, from a common origin); rows sorted by user,
    then time (stable)."""
    frame = frame.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
    if per_user_origin:
        frame["time"] = frame["time"] - frame.groupby("user")["time"].transform("min")
    return ConsumptionLog(name, frame, window.astype(np.float64), horizon_days, impressions, ratings)


def from_interactions(
    interactions: pd.DataFrame, catalog: Catalog, rating_scale: tuple[float, float] | None,
    horizon_days: float, name: str = "real", observed_until: float | None = None, start: float | None = None,
    users: Sequence[str] = (),
) -> ConsumptionLog:
    """A real log (`Dataset.interactions` columns) seen through each user's first `horizon_days`.

    Clipping every user to the simulated horizon compares like with like: a simulated user
    lives exactly that long, starting on day 0. `observed_until` (a timestamp, seconds) is
    when the source stopped observing: the end of the period the interactions come from (a
    split's cutoff, the log's end); by default the latest of `interactions`, which a subset
    of users can reach before the period ends.

    With `start` (a timestamp, seconds: a split's cutoff) every user is seen from that common
    origin instead: times count from `start`, the first `horizon_days` after it are kept, and
    every user of `users` is observed for the whole window, with or without events. That is
    the position of users simulated from the cutoff: all of them exist on day 0, and a real
    user who never comes back after the cutoff is a user with no consumption, not a missing one.
    """
    item = _catalog_rows(catalog, interactions["item_id"].to_numpy(), "the log")
    days = interactions["timestamp"].to_numpy(np.float64) / SECONDS_PER_DAY
    rating = interactions["rating"].to_numpy(np.float64)
    implicit_01 = rating_scale == (0.0, 1.0)
    explicit = None if implicit_01 else rating_scale
    positive = positive_ratings(rating, rating_scale)
    frame = pd.DataFrame({"user": interactions["user_id"].astype(str).to_numpy(), "item": item,
                          "time": days, "consumed": ~(implicit_01 & (rating == 0)),
                          "positive": positive.astype(np.float64)})
    latest = float(days.max()) if len(days) else -np.inf
    last = latest if observed_until is None else max(latest, observed_until / SECONDS_PER_DAY)
    impressions = implicit_01 and bool((frame["consumed"] == 0).any())
    if start is not None:
        origin = start / SECONDS_PER_DAY
        frame["time"] = frame["time"] - origin
        frame = frame[((frame["time"] >= 0) & (frame["time"] < horizon_days)).to_numpy()]
        ids = list(dict.fromkeys([*map(str, users), *frame["user"].unique()]))
        window = pd.Series(min(horizon_days, last - origin), index=pd.Index(ids, dtype=object), dtype=np.float64)
        return _finish(name, frame, window, horizon_days, impressions, ratings=explicit is not None,
                       per_user_origin=False)
    first = frame.groupby("user")["time"].transform("min")
    frame = frame[(frame["time"] - first).to_numpy() < horizon_days]
    window = (last - frame.groupby("user")["time"].min()).clip(upper=horizon_days)
    return _finish(name, frame, window, horizon_days, impressions, ratings=explicit is not None)


def from_trajectories(
    trajectories: pd.DataFrame, world_catalog: Catalog, reference: Catalog, horizon_days: float, name: str,
    users: Sequence[str] | None = None,
) -> ConsumptionLog:
    """RecoWorld trajectory rows (one per user x turn x slate position) as events on the reference catalog.

    `time_days` is the clock at the end of a turn; each slot's time steps back by the dwell
    of the slots after it, so the items of one turn keep their viewing order. Positions the
    user never reached (left mid-slate) are not impressions.

    By default each user is seen from their first event. With `users` (a simulation from a
    log's cutoff, in which users come back on different days or never), times are kept from the
    simulation's day 0, the common origin, and every user of `users` is observed for the whole
    horizon, with or without events: the simulated side of `from_interactions(start=...)`.
    """
    missing = {"user_id", "item", "reaction", "dwell_min", "time_days", "step"} - set(trajectories.columns)
    if missing:
        raise CatalogFormatError(f"trajectories lack column(s) {', '.join(sorted(missing))}")
    if trajectories.get("recommender", pd.Series(dtype=object)).nunique() > 1:
        raise CatalogFormatError("trajectories of several recommenders: pass one recommender's rows at a time")
    seen = trajectories[trajectories["reaction"].to_numpy() >= ReactionType.SKIP]
    dwell = seen["dwell_min"].to_numpy(np.float64)
    keys = [seen["user_id"], seen["step"]]
    after = seen.groupby(keys)["dwell_min"].transform("sum").to_numpy(np.float64) - (
        pd.Series(dwell, index=seen.index).groupby(keys).cumsum().to_numpy())
    item = _catalog_rows(reference, np.asarray(world_catalog.item_ids)[seen["item"].to_numpy()], f"world {name!r}")
    reaction = seen["reaction"].to_numpy()
    frame = pd.DataFrame({"user": seen["user_id"].astype(str).to_numpy(), "item": item,
                          "time": seen["time_days"].to_numpy(np.float64) - after / MINUTES_PER_DAY,
                          "consumed": reaction >= ReactionType.CLICK,
                          "positive": (reaction >= ReactionType.LIKE).astype(np.float64)})
    if users is not None:
        ids = list(dict.fromkeys([*map(str, users), *frame["user"].unique()]))
        window = pd.Series(horizon_days, index=pd.Index(ids, dtype=object), dtype=np.float64)
        return _finish(name, frame, window, horizon_days, impressions=True, ratings=True, per_user_origin=False)
    seen_users = frame["user"].unique()
    start = frame.groupby("user")["time"].min()
    window = pd.Series(horizon_days, index=seen_users) - start.reindex(seen_users)
    return _finish(name, frame, window, horizon_days, impressions=True, ratings=True)
