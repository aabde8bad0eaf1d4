"""Train/test splits in time.

Two protocols, both by timestamp (ties broken by file order, so a split is deterministic):

- `global` (default): one cutoff time at the (1 - test_fraction) quantile of all
  timestamps; everything after it is test. Everything fitted (item factors, popularity,
  quality, profiles, calibration) reads only interactions up to the cutoff, which is the
  position a deployed model is in. Test users without train history are cold-start users:
  the fidelity report counts them and scores them apart (`recoworld.evaluation.fidelity`).
- `per_user`: each user's last `test_fraction` of interactions (at least one, rounded up)
  are held out, for users with at least `min_train + 1` interactions. It leaks the future:
  other users' later interactions stay in train, so item factors, popularity and profiles
  are fitted on interactions that happen after a test user's held-out ones (Ji et al., "A
  Critical Study on Data Leakage in Recommender System Offline Evaluation", ACM TOIS 2023,
  measure how this inflates and reorders results). On a MovieLens-sized log about half of
  the train rows come after a test user's first held-out interaction. Kept for comparison
  with leave-last-out numbers in the literature; `Split.leakage` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from recoworld.errors import ConfigError

SplitMode = Literal["per_user", "global"]


@dataclass(frozen=True)
class Leakage:
    """How much of the train part comes from the test part's future (all 0 for a global split).

    - `train_rows_after_cutoff`: train rows strictly later than the earliest test interaction
      (the effective cutoff; for a global split no row can be), and their share of train;
    - `mean_future_share`: per test user, the share of train rows strictly later than that
      user's first held-out interaction, averaged over test users (what a model fitted on
      train knows of that user's future);
    - `test_items_seen_later`: share of test interactions whose item has a train interaction
      by another user strictly later (the item's future popularity and factors are known).
    """

    train_rows_after_cutoff: int
    share_after_cutoff: float
    mean_future_share: float
    test_items_seen_later: float

    @property
    def leaks(self) -> bool:
        return self.train_rows_after_cutoff > 0

    def describe(self) -> str:
        if not self.leaks:
            return "no train interaction is later than a test interaction"
        return (f"LEAKS the future: {self.train_rows_after_cutoff} train rows ({self.share_after_cutoff:.0%}) are "
                f"later than the first test interaction; {self.mean_future_share:.0%} of train rows come after a "
                f"test user's first held-out one (mean over test users); {self.test_items_seen_later:.0%} of test "
                "interactions are on items other users interact with later in train")


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    mode: SplitMode
    cutoff: float | None  # the global cutoff timestamp (seconds), None for per-user splits

    def leakage(self) -> Leakage:
        """Measure how much of train is in the test part's future (see `Leakage`)."""
        train_ts = np.sort(self.train["timestamp"].to_numpy(np.float64))
        test_ts = self.test["timestamp"].to_numpy(np.float64)
        n_train = len(train_ts)
        if not n_train or not len(test_ts):
            return Leakage(0, 0.0, 0.0, 0.0)
        after = int(n_train - np.searchsorted(train_ts, test_ts.min(), "right"))
        first = self.test.groupby("user_id")["timestamp"].min().to_numpy(np.float64)
        future = (n_train - np.searchsorted(train_ts, first, "right")) / n_train
        # Per item, the latest train time of its two latest users, so "another user" is one lookup.
        latest = (self.train.groupby(["item_id", "user_id"], sort=False)["timestamp"].max().rename("t")
                  .reset_index().sort_values("t", ascending=False, kind="stable"))
        top = latest.groupby("item_id", sort=False).nth(0).set_index("item_id")
        second = latest.groupby("item_id", sort=False).nth(1).set_index("item_id")["t"]
        item = self.test["item_id"]
        top_user = top["user_id"].reindex(item).to_numpy()
        top_t = top["t"].reindex(item).to_numpy(np.float64)
        second_t = second.reindex(item).to_numpy(np.float64)
        other_t = np.where(top_user == self.test["user_id"].to_numpy(), second_t, top_t)
        seen_later = np.nan_to_num(other_t, nan=-np.inf) > test_ts
        return Leakage(after, after / n_train, float(future.mean()), float(seen_later.mean()))

    def describe(self) -> str:
        users = self.test["user_id"].nunique()
        how = (f"global cutoff at t={self.cutoff:.0f}" if self.cutoff is not None
               else "each user's latest interactions held out")
        return (f"{len(self.train)} train / {len(self.test)} test interactions ({users} test users; {how}; "
                f"{self.leakage().describe()})")


def temporal_split(
    interactions: pd.DataFrame, test_fraction: float = 0.2, mode: SplitMode = "global", min_train: int = 1
) -> Split:
    """Split an interaction table (as `Dataset.interactions`) into train and test by time.

    `min_train` applies to `per_user` only: a global split keeps every user, and a test user
    without train history is a cold-start user.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if min_train < 1:
        raise ConfigError(f"min_train must be >= 1, got {min_train}")
    ordered = interactions.sort_values("timestamp", kind="stable")
    if mode == "global":
        cutoff = float(np.quantile(ordered["timestamp"].to_numpy(), 1 - test_fraction))
        is_test = ordered["timestamp"].to_numpy() > cutoff
        if not is_test.any():
            raise ConfigError(
                f"global split: no interaction is later than the {1 - test_fraction:.0%} time quantile "
                "(all timestamps equal?); use mode='per_user'"
            )
        return Split(ordered[~is_test].reset_index(drop=True), ordered[is_test].reset_index(drop=True), mode, cutoff)
    if mode != "per_user":
        raise ConfigError(f"split mode must be 'per_user' or 'global', got {mode!r}")
    rank = ordered.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()  # 0 = latest
    count = ordered.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    n_test = np.ceil(count * test_fraction).astype(np.int64)
    is_test = (rank < n_test) & (count - n_test >= min_train)
    if not is_test.any():
        raise ConfigError(f"per-user split: no user has more than min_train={min_train} interactions")
    return Split(ordered[~is_test].reset_index(drop=True), ordered[is_test].reset_index(drop=True), mode, None)
