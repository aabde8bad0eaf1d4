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
from recoworld.evaluation.digest import Digest
from recoworld.mindset import Intent
from recoworld.simulators.instructions import intent_topics, wants_quality


def intent_match(intent: Intent | dict[str, Any], catalog: Catalog, items: np.ndarray) -> np.ndarray:
    """Which items honour a structured intent (see `recoworld.simulators.instructions.intent_topics`)."""
    intent = intent if isinstance(intent, Intent) else Intent.model_validate(intent)
    match = intent_topics(intent, catalog)[catalog.topic[items]]
    if wants_quality(intent):
        match = match & (catalog.quality[items] >= catalog.median_quality)
    return match


def summarize(trajectories: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per recommender with the headline metrics (and 95% CI half-widths), in order of appearance.

    Each is a ratio of sums over the trajectories (`recoworld.evaluation.digest`, which a study's report adds
    up shard by shard) or a mean over the episodes: `ctr`, `like_rate` and `dislike_rate` per reviewed item;
    `dwell_min_per_user`; `session_length` in turns; `mean_return_gap`, `diversity`, `llm_fallback_rate`,
    `interview_score` and `instruction_rate` over turns; `instruction_following`, `_satisfiable`,
    `_similarity` and `_judge` over the turns with an intent; `novelty` over items; `exit_<reason>` over the
    exits with a stated reason; `retention`, `churn_rate`, `sessions_per_user` and `return_per_user` per user."""
    return Digest.of(trajectories).summary(episodes)


def daily_activity(trajectories: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """Share of each recommender's users active on each day of the horizon."""
    return Digest.of(trajectories).daily_activity(horizon_days)
