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
_TEXT_KEYS = ["recommender", "exit_reason", "text"]
#: What `exit_table` keeps of the first exit that said a sentence.
_FIRST = ("user_id", "session", "interview_score", "interview")


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


def turn_keys(trajectories: pd.DataFrame) -> list[str]:
    """What tells a turn apart: a trajectory repeats its turn columns on every slate position, and the same user
    plays every recommender and arm (and in a study, user ids are unique per shard only)."""
    return [c for c in ("recommender", "arm", "shard", "user_id", "step") if c in trajectories]


def exits(trajectories: pd.DataFrame) -> pd.DataFrame:
    """One row per session a user ended (`left`), in the trajectories' order, with `EXIT_COLUMNS`.

    A trajectory repeats its turn columns on every slate position, so turns are told apart by
    (recommender, arm, shard, user, step); a null `exit_reason` becomes `UNSTATED`."""
    turns = trajectories.drop_duplicates(turn_keys(trajectories))
    left = turns.loc[turns["left"].astype(bool), list(EXIT_COLUMNS)].reset_index(drop=True)
    return left.assign(exit_reason=left["exit_reason"].fillna(UNSTATED).astype(str))


def exit_table(trajectories: pd.DataFrame) -> pd.DataFrame:
    """The exits counted per recommender, reason and sentence (stripped; "" without words), in order of first
    appearance: `n` exits, `churned` (never came back), the interview scores' `interview_sum` and `interview_n`,
    and the first exit that said it (`user_id`, `session`, `interview_score`, `interview`). Every figure below
    reads this table, and the tables of disjoint users add up (`merge_exit_tables`): a study counts its exits
    one shard at a time."""
    left = exits(trajectories)
    text = left["exit_text"]
    left = left.assign(text=text.astype(str).str.strip().where(text.notna(), ""),
                       scored=left["interview_score"].notna(), score=left["interview_score"].fillna(0))
    g = left.groupby(_TEXT_KEYS, sort=False)
    counts = g.agg(n=("user_id", "size"), churned=("churned", "sum"), interview_sum=("score", "sum"),
                   interview_n=("scored", "sum"))
    return counts.join(left.drop_duplicates(_TEXT_KEYS).set_index(_TEXT_KEYS)[list(_FIRST)]).reset_index()


def merge_exit_tables(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """`exit_table`s of disjoint users as one, in their order (the first exit that said a sentence stays first)."""
    merged = pd.concat(tables, ignore_index=True)
    sums = merged.groupby(_TEXT_KEYS, sort=False)[["n", "churned", "interview_sum", "interview_n"]].sum()
    return sums.join(merged.drop_duplicates(_TEXT_KEYS).set_index(_TEXT_KEYS)[list(_FIRST)]).reset_index()


def exit_counts_of(table: pd.DataFrame, recommenders: list[str]) -> pd.DataFrame:
    """`exit_counts` of an `exit_table`."""
    counts = table.groupby(["recommender", "exit_reason"], sort=False)["n"].sum().unstack(fill_value=0)
    counts = counts.reindex(index=recommenders, columns=list(REASONS), fill_value=0).fillna(0).astype(np.int64)
    counts.index.name, counts.columns.name = "recommender", "exit_reason"
    return counts


def exit_counts(trajectories: pd.DataFrame, recommenders: list[str] | None = None) -> pd.DataFrame:
    """Exits per recommender (rows) and reason (columns, `REASONS`).

    Rows are `recommenders` when given, else every recommender in the trajectories in order of
    appearance; one whose users never left has a row of zeros rather than no row, so a comparison
    across recommenders never drops the one that kept its users."""
    names = recommenders if recommenders is not None else list(dict.fromkeys(trajectories["recommender"]))
    return exit_counts_of(exit_table(trajectories), names)


def exit_overview_of(table: pd.DataFrame, recommenders: list[str]) -> pd.DataFrame:
    """`exit_overview` of an `exit_table`."""
    g = table.groupby("recommender", sort=False)
    scored = g["interview_n"].sum()
    out = pd.DataFrame({"exits": g["n"].sum(), "left_for_good": g["churned"].sum(),
                        "interview_mean": g["interview_sum"].sum() / scored.where(scored > 0)})
    out = out.reindex(recommenders)
    out[["exits", "left_for_good"]] = out[["exits", "left_for_good"]].fillna(0).astype(np.int64)
    out["interview_mean"] = out["interview_mean"].astype(float)
    out.index.name = "recommender"
    return out


def exit_overview(trajectories: pd.DataFrame, recommenders: list[str] | None = None) -> pd.DataFrame:
    """Per recommender (rows as in `exit_counts`): `exits` (sessions users ended), `left_for_good` (exits
    after which the user never came back) and `interview_mean` (the mean end-of-session interview score,
    1-5; NaN without interviews)."""
    names = recommenders if recommenders is not None else list(dict.fromkeys(trajectories["recommender"]))
    return exit_overview_of(exit_table(trajectories), names)


def exit_shares(counts: pd.DataFrame) -> pd.DataFrame:
    """Each reason's share of a recommender's exits (rows sum to 1); NaN for a recommender without exits,
    whose shares are not zero but undefined."""
    total = counts.sum(axis=1)
    return counts.div(total.where(total > 0), axis=0)


def interview_means_of(table: pd.DataFrame) -> pd.DataFrame:
    """`interview_means` of an `exit_table`."""
    table = table[table["interview_n"] > 0]
    if table.empty:
        return pd.DataFrame(index=pd.Index([], name="recommender"), columns=list(REASONS), dtype=float)
    g = table.groupby(["recommender", "exit_reason"], sort=False)
    means = (g["interview_sum"].sum() / g["interview_n"].sum()).unstack()
    return means.reindex(columns=list(REASONS)).astype(float)


def interview_means(trajectories: pd.DataFrame) -> pd.DataFrame:
    """The mean interview score (1-5) per recommender (rows) and reason (columns) of the exits that had an
    interview; NaN where none did."""
    return interview_means_of(exit_table(trajectories))


def exit_quotes_of(table: pd.DataFrame, per_reason: int = 3) -> dict[str, dict[str, list[Quote]]]:
    """`exit_quotes` of an `exit_table`."""
    said = table[table["text"] != ""]
    out: dict[str, dict[str, list[Quote]]] = {}
    for rec, frame in said.groupby("recommender", sort=False):
        quotes: dict[str, list[Quote]] = {}
        reasons = frame.groupby("exit_reason", sort=False)["n"].sum().sort_values(ascending=False, kind="stable")
        for reason in reasons.index:
            texts = frame[frame["exit_reason"] == reason].sort_values("n", ascending=False, kind="stable")
            quotes[str(reason)] = [
                Quote(str(reason), str(q.text), int(q.n), str(q.user_id), int(q.session),
                      None if pd.isna(q.interview_score) else int(q.interview_score),
                      q.interview if isinstance(q.interview, str) and q.interview else None)
                for q in texts.head(per_reason).itertuples(index=False)
            ]
        out[str(rec)] = quotes
    return out


def exit_quotes(trajectories: pd.DataFrame, per_reason: int = 3) -> dict[str, dict[str, list[Quote]]]:
    """Per recommender and reason (most frequent reason first), up to `per_reason` distinct sentences users
    said when leaving, most said first (ties: first said first), each with its first speaker's session and
    interview, so a reader can open that journey. Exits without words are counted, not quoted."""
    return exit_quotes_of(exit_table(trajectories), per_reason)
