"""The metrics a scenario reports: one value per user, then the mean and its 95% CI over users.

Every metric is a per-user number, so its confidence interval (`mean_ci`, normal
approximation) is over the scenario's users. A user for whom a metric is undefined (no
turn after the interest shift, no instruction) is left out of that metric's mean, and
`n` says how many users it covers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recoworld.bench.scenarios import Scenario
from recoworld.stats import mean_ci

#: What each metric means (the leaderboard's legend).
METRICS: dict[str, str] = {
    "retention": "share of the horizon's days on which the user had a session",
    "churn_rate": "share of users who left for good",
    "sessions_per_user": "sessions per user",
    "ctr": "the user's share of reviewed items clicked (mean over users)",
    "dwell_min_per_user": "minutes of dwell per user",
    "returned_after_first": "share of users who came back after their first session",
    "first_session_ctr": "share of items clicked in the first session",
    "first_session_turns": "slates seen in the first session",
    "retention_after_shift": "share of the days from the interest shift on with a session",
    "ctr_before_shift": "share of reviewed items clicked before the interest shift",
    "ctr_after_shift": "share of reviewed items clicked from the interest shift on (users still active)",
    "instruction_rate": "share of the user's turns with an instruction",
    "instruction_following": "share of turns under an instruction whose slate honours it (>= half the slate)",
    "target_new_item_clicks": "clicks on the creator's new items per user of the target segment",
    "retention_lift": "retention with the creator's items minus without, same user (paired)",
    "llm_fallback_rate": "share of turns the chat model could not decide (parametric fallback)",
}


def _by_user(frame: pd.DataFrame, users: pd.Index, fn: Callable[[pd.DataFrame], float]) -> pd.Series:
    """`fn` of each user's rows, NaN for users without rows."""
    if frame.empty:
        return pd.Series(np.nan, index=users)
    values = {uid: fn(group) for uid, group in frame.groupby("user_id", sort=False)}
    return pd.Series(values, dtype=np.float64).reindex(users)


def _click_rate(rows: pd.DataFrame) -> float:
    reviewed = rows[rows["reaction"] >= 0]
    return float((reviewed["reaction"] >= 1).mean()) if len(reviewed) else float("nan")


def user_values(scenario: Scenario, traj: pd.DataFrame, eps: pd.DataFrame, metric: str) -> pd.Series:
    """`metric` for each user of one recommender's run of `scenario` (index: user id)."""
    if scenario.kind == "creator":  # paired metrics look at both arms; the rest at the arm with the creator
        if metric == "retention_lift":
            with_, without = (eps[eps["arm"] == arm].set_index("user_id")["retention"] for arm in ("with", "without"))
            return (with_ - without.reindex(with_.index)).astype(np.float64)
        if metric == "target_new_item_clicks":
            target = scenario.creator.target_segment if scenario.creator else None
            rows = eps[(eps["arm"] == "with") & (eps["segment"] == target)]
            return rows.set_index("user_id")["new_items_clicked"].astype(np.float64)
        traj, eps = traj[traj["arm"] == "with"], eps[eps["arm"] == "with"]
    users = pd.Index(eps["user_id"])
    turns = traj.drop_duplicates(["user_id", "step"])
    first = traj[traj["session"] == 1]
    shift = scenario.interest_shift.day if scenario.interest_shift is not None else math.nan
    horizon = float(scenario.world_config().horizon_days)
    ep = eps.set_index("user_id")
    if metric == "retention":
        return ep["retention"].astype(np.float64)
    if metric == "churn_rate":
        return ep["churned"].astype(np.float64)
    if metric == "sessions_per_user":
        return ep["sessions"].astype(np.float64)
    if metric == "returned_after_first":
        return (ep["sessions"] >= 2).astype(np.float64)
    if metric == "ctr":
        return _by_user(traj, users, _click_rate)
    if metric == "dwell_min_per_user":
        return _by_user(traj, users, lambda r: float(r["dwell_min"].sum())).fillna(0.0)
    if metric == "first_session_ctr":
        return _by_user(first, users, _click_rate)
    if metric == "first_session_turns":
        return _by_user(turns[turns["session"] == 1], users, lambda r: float(len(r))).fillna(0.0)
    if metric in ("retention_after_shift", "ctr_before_shift", "ctr_after_shift"):
        if math.isnan(shift):
            raise ValueError(f"metric {metric} needs a scenario with an interest shift")
        after = traj[traj["time_days"] >= shift]
        if metric == "ctr_after_shift":
            return _by_user(after, users, _click_rate)
        if metric == "ctr_before_shift":
            return _by_user(traj[traj["time_days"] < shift], users, _click_rate)
        days = max(math.ceil(horizon) - math.ceil(shift), 1)
        return _by_user(after, users, lambda r: r["day"].nunique() / days).fillna(0.0)
    if metric == "instruction_rate":
        return _by_user(turns, users, lambda r: float(r["instruction"].notna().mean()))
    if metric == "instruction_following":
        under = turns[turns["intent_match"].notna()]
        return _by_user(under, users, lambda r: float((r["intent_match"] >= 0.5).mean()))
    if metric == "llm_fallback_rate":
        if "llm_fallback" not in turns:
            return pd.Series(0.0, index=users)
        return _by_user(turns, users, lambda r: float(r["llm_fallback"].astype(float).mean()))
    raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")


def scenario_metrics(scenario: Scenario, traj: pd.DataFrame, eps: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """{recommender: {metric: {"mean", "ci95", "n"}}} for the scenario's metrics, recommenders in run order."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(eps["recommender"]):
        t, e = traj[traj["recommender"] == name], eps[eps["recommender"] == name]
        out[str(name)] = {}
        for metric in scenario.metrics:
            values = user_values(scenario, t, e, metric).to_numpy(dtype=np.float64)
            mean, half = mean_ci(values)
            out[str(name)][metric] = {"mean": _finite(mean), "ci95": _finite(half),
                                      "n": int(np.isfinite(values).sum())}
    return out


def _finite(x: float) -> float | None:
    """JSON has no NaN: an undefined value is null."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)
