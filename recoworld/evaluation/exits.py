"""Why users left: exit reasons counted per recommender, and the users' own words as quotes.

Every session a simulated user ends carries, on the turn they left, a structured reason
(`exit_reason`, one of `recoworld.mindset.ExitKind`), a sentence in their own words (`exit_text`)
and an end-of-session interview (`interview_score` 1-5, `interview`). These are what a
recommender did to its users in their own terms, so the report counts them per recommender and
quotes them. Everything here is a pure function of a trajectory table (`recoworld.evaluation.trajectory`),
so tests and notebooks get the same numbers as the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
import pandas as pd

from recoworld.mindset import ExitKind

#: The reason given to an exit whose `exit_reason` is null (a writer that did not record one).
UNSTATED = "unstated"
#: Every column of `exit_counts`, in the order of `ExitKind`.
REASONS: tuple[str, ...] = (*get_args(ExitKind), UNSTATED)
#: What each reason means, as `recoworld.mindset.ExitReason` defines it, for readers of the report.
MEANING: dict[str, str] = {
    "bored": "patience ran out: too many dull items in a row",
    "irrelevant": "satisfaction collapsed: nothing matched the user's interests",
    "repetitive": "the reviewed items were mostly near-duplicates of what the user had seen",
    "out_of_time": "the day's time budget ran out",
    "satisfied": "the user had enough, content (LLM users)",
    "other": "an LLM user's exit without a stated reason",
    UNSTATED: "the trajectories hold no reason for this exit",
}
#: The columns of one exit (see `exits`).
EXIT_COLUMNS = ("recommender", "user_id", "session", "step", "time_days", "exit_reason", "exit_text",
                "interview_score", "interview", "churned")


@dataclass(frozen=True)
class Quote:
    """One sentence users said when leaving, how many exits said it, and the first user who did."""

    reason: str
    text: str
    count: int
    user_id: str
    session: int
    interview_score: int | None
    interview: str | None


def exits(trajectories: pd.DataFrame) -> pd.DataFrame:
    """One row per session a user ended (`left`), in the trajectories' order, with `EXIT_COLUMNS`.

    A trajectory repeats its turn columns on every slate position, so turns are told apart by
    (recommender, arm, shard, user, step); a null `exit_reason` becomes `UNSTATED`."""
    keys = [c for c in ("recommender", "arm", "shard", "user_id", "step") if c in trajectories]
    turns = trajectories.drop_duplicates(keys)
    left = turns.loc[turns["left"].astype(bool), list(EXIT_COLUMNS)].reset_index(drop=True)
    return left.assign(exit_reason=left["exit_reason"].fillna(UNSTATED).astype(str))


def exit_counts(trajectories: pd.DataFrame, recommenders: list[str] | None = None) -> pd.DataFrame:
    """Exits per recommender (rows) and reason (columns, `REASONS`).

    Rows are `recommenders` when given, else every recommender in the trajectories in order of
    appearance; one whose users never left has a row of zeros rather than no row, so a comparison
    across recommenders never drops the one that kept its users."""
    names = recommenders if recommenders is not None else list(dict.fromkeys(trajectories["recommender"]))
    left = exits(trajectories)
    counts = pd.crosstab(left["recommender"], left["exit_reason"]) if len(left) else pd.DataFrame()
    counts = counts.reindex(index=names, columns=list(REASONS), fill_value=0).fillna(0).astype(np.int64)
    counts.index.name, counts.columns.name = "recommender", "exit_reason"
    return counts


def exit_overview(trajectories: pd.DataFrame, recommenders: list[str] | None = None) -> pd.DataFrame:
    """Per recommender (rows as in `exit_counts`): `exits` (sessions users ended), `left_for_good` (exits
    after which the user never came back) and `interview_mean` (the mean end-of-session interview score,
    1-5; NaN without interviews)."""
    names = recommenders if recommenders is not None else list(dict.fromkeys(trajectories["recommender"]))
    g = exits(trajectories).groupby("recommender", sort=False)
    out = pd.DataFrame({"exits": g.size(), "left_for_good": g["churned"].sum(),
                        "interview_mean": g["interview_score"].mean()})
    out = out.reindex(names)
    out[["exits", "left_for_good"]] = out[["exits", "left_for_good"]].fillna(0).astype(np.int64)
    out.index.name = "recommender"
    return out


def exit_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Each reason's share of a recommender's exits (rows sum to 1); NaN for a recommender without exits,
    whose shares are not zero but undefined."""
    total = counts.sum(axis=1)
    return counts.div(total.where(total > 0), axis=0)


def interview_means(trajectories: pd.DataFrame) -> pd.DataFrame:
    """The mean interview score (1-5) per recommender (rows) and reason (columns) of the exits that had an
    interview; NaN where none did."""
    left = exits(trajectories).dropna(subset=["interview_score"])
    if left.empty:
        return pd.DataFrame(index=pd.Index([], name="recommender"), columns=list(REASONS), dtype=float)
    means = left.groupby(["recommender", "exit_reason"], sort=False)["interview_score"].mean().unstack()
    return means.reindex(columns=list(REASONS)).astype(float)


def exit_quotes(trajectories: pd.DataFrame, per_reason: int = 3) -> dict[str, dict[str, list[Quote]]]:
    """Per recommender and reason (most frequent reason first), up to `per_reason` distinct sentences users
    said when leaving, most said first (ties: first said first), each with its first speaker's session and
    interview, so a reader can open that journey. Exits without words are counted, not quoted."""
    left = exits(trajectories)
    left = left[left["exit_text"].notna() & (left["exit_text"].astype(str).str.strip() != "")]
    out: dict[str, dict[str, list[Quote]]] = {}
    for rec, frame in left.groupby("recommender", sort=False):
        quotes: dict[str, list[Quote]] = {}
        for reason in _most_first(frame["exit_reason"]).index:
            said = frame[frame["exit_reason"] == reason]
            texts = said["exit_text"].astype(str).str.strip()
            picked = []
            for text, count in _most_first(texts).head(per_reason).items():
                first = said[texts == text].iloc[0]
                score = first["interview_score"]
                words = first["interview"]
                picked.append(Quote(str(reason), str(text), int(count), str(first["user_id"]), int(first["session"]),
                                    None if pd.isna(score) else int(score),
                                    words if isinstance(words, str) and words else None))
            quotes[str(reason)] = picked
        out[str(rec)] = quotes
    return out


def _most_first(values: pd.Series) -> pd.Series:
    """How often each value occurs, most frequent first and ties in order of first appearance (so the page
    is the same on every run)."""
    return values.groupby(values, sort=False).size().sort_values(ascending=False, kind="stable")
