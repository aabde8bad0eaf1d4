"""Train/test splits in time.

Two protocols, both by timestamp (ties broken by file order, so a split is deterministic):

- `per_user` (default): each user's last `test_fraction` of interactions (at least one,
  rounded up) are held out, for users with at least `min_train + 1` interactions. Every
  test user has a train history to initialise a simulated user from, which is what the
  fidelity report needs. Other users' later interactions stay in train, the usual
  leave-last-out leakage; use `global` when that matters.
- `global`: one cutoff time at the (1 - test_fraction) quantile of all timestamps;
  everything after it is test. Test users without train history are cold and are
  skipped by the fidelity report (it says how many).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from recoworld.errors import ConfigError

SplitMode = Literal["per_user", "global"]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    mode: SplitMode
    cutoff: float | None  # the global cutoff timestamp (seconds), None for per-user splits

    def describe(self) -> str:
        users = self.test["user_id"].nunique()
        how = (f"global cutoff at t={self.cutoff:.0f}" if self.cutoff is not None
               else "each user's latest interactions held out")
        return f"{len(self.train)} train / {len(self.test)} test interactions ({users} test users; {how})"


def temporal_split(
    interactions: pd.DataFrame, test_fraction: float = 0.2, mode: SplitMode = "per_user", min_train: int = 1
) -> Split:
    """Split an interaction table (as `Dataset.interactions`) into train and test by time."""
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
