"""Metrics over trajectories: engagement, retention, diversity, novelty, instruction following.

Inputs are the two tables a simulation writes: `trajectories` (one row per user x turn x
slate position) and `episodes` (one row per user x recommender). Every metric is a plain
function so studies and notebooks can reuse them on any subset of rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.mindset import EXIT_REASONS, Intent
from recoworld.simulators.instructions import intent_topics, wants_quality
from recoworld.stats import mean_ci


def intent_match(intent: Intent | dict[str, Any], catalog: Catalog, items: np.ndarray) -> np.ndarray:
    """Which items honour a structured intent (see `recoworld.simulators.instructions.intent_topics`)."""
    intent = intent if isinstance(intent, Intent) else Intent.model_validate(intent)
    match = intent_topics(intent, catalog)[catalog.topic[items]]
    if wants_quality(intent):
        match = match & (catalog.quality[items] >= catalog.median_quality)
    return match


def summarize(trajectories: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per recommender with the headline metrics (and 95% CI half-widths)."""
    rows = []
    for name, traj in trajectories.groupby("recommender", sort=False):
        eps = episodes[episodes["recommender"] == name]
        reviewed = traj[traj["reaction"] >= 0]
        turns = traj.drop_duplicates(["user_id", "step"])
        sessions = turns.groupby(["user_id", "session"]).size()
        with_intent = turns[turns["intent_match"].notna()]
        retention, retention_ci = mean_ci(eps["retention"])
        rows.append(
            {
                "recommender": name,
                "users": len(eps),
                "ctr": float((reviewed["reaction"] >= 1).mean()) if len(reviewed) else float("nan"),
                "like_rate": float((reviewed["reaction"] >= 2).mean()) if len(reviewed) else float("nan"),
                "dwell_min_per_user": float(traj["dwell_min"].sum() / max(len(eps), 1)),
                "session_length": float(sessions.mean()) if len(sessions) else float("nan"),
                "sessions_per_user": float(eps["sessions"].mean()),
                "mean_return_gap": float(turns["return_gap_days"].mean()),
                "retention": retention,
                "retention_ci": retention_ci,
                "churn_rate": float(eps["churned"].mean()),
                "instruction_rate": float(turns["instruction"].notna().mean()),
                "instruction_following": float((with_intent["intent_match"] >= 0.5).mean())
                if len(with_intent)
                else float("nan"),
                "instruction_satisfiable": float(with_intent["instruction_satisfiable"].astype(float).mean())
                if len(with_intent) and "instruction_satisfiable" in with_intent
                else float("nan"),
                # Instruction following measured two more ways: embedding similarity of the slate to the
                # instruction's text, and an LLM judge's score (`recoworld.evaluation.judge`; nan unless judged).
                "instruction_similarity": _mean_of(with_intent, "instruction_similarity"),
                "instruction_judge": _mean_of(with_intent, "instruction_judge"),
                "diversity": float(turns["slate_diversity"].mean()),
                "novelty": float(traj["self_information"].mean()),
                "return_per_user": float(eps["total_reward"].mean()),
                "llm_fallback_rate": float(turns["llm_fallback"].mean()) if "llm_fallback" in turns else 0.0,
                # Turns the recommender decided by its fallback (the oracle without a mindset: greedy's choice).
                "fallback_turns": int(eps["fallback_turns"].sum()) if "fallback_turns" in eps else 0,
                # Richer reactions: explicit "not interested" per reviewed item, why sessions ended, the interview.
                "dislike_rate": float(reviewed["disliked"].astype(bool).mean())
                if len(reviewed) and "disliked" in reviewed else float("nan"),
                **exit_reason_shares(turns),
                "interview_score": _mean_of(turns, "interview_score"),
            }
        )
    return pd.DataFrame(rows)


def exit_reason_shares(turns: pd.DataFrame) -> dict[str, float]:
    """`exit_<reason>`: the share of the exits with a stated reason that gave each reason (nan without any)."""
    reasons = turns["exit_reason"].dropna() if "exit_reason" in turns else pd.Series([], dtype=object)
    return {f"exit_{r}": float((reasons == r).mean()) if len(reasons) else float("nan") for r in EXIT_REASONS}


def _mean_of(turns: pd.DataFrame, column: str) -> float:
    """Mean of a column over its non-null values; nan when it is missing or all null."""
    if column not in turns:
        return float("nan")
    values = pd.to_numeric(turns[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else float("nan")


def daily_activity(trajectories: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """Share of each recommender's users active on each day of the horizon."""
    out = {}
    for name, traj in trajectories.groupby("recommender", sort=False):
        users = traj["user_id"].nunique()
        active = traj.drop_duplicates(["user_id", "day"])["day"].value_counts()
        out[name] = [active.get(d, 0) / max(users, 1) for d in range(horizon_days)]
    return pd.DataFrame(out, index=pd.RangeIndex(horizon_days, name="day"))
