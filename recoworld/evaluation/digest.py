"""The sums and counts every headline metric is a ratio of, so metrics add up over shards.

A study's trajectories can be far larger than memory, and a notebook's fit in a frame. Both get
their figures from one reduction: each frame (or shard) becomes a `Digest`, per-group sums and
counts, users active per day, users who left for good per day and the exits' table
(`recoworld.evaluation.exits.exit_table`), and digests of disjoint users add up. `summarize` and
`daily_activity` (`recoworld.evaluation.metrics`) are a digest of one frame keyed by recommender;
a study's report keys it by recommender, arm and segment and feeds it one shard at a time; the
HTML report (`recoworld.evaluation.html_report`) keys it by recommender and segment and feeds it
one shard or agent file at a time. So they can never disagree, up to the order in which
floating-point sums are added.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd

from recoworld.evaluation.exits import (
    Quote,
    exit_counts_of,
    exit_overview_of,
    exit_quotes_of,
    exit_shares,
    exit_table,
    merge_exit_tables,
    turn_keys,
)
from recoworld.mindset import EXIT_REASONS
from recoworld.stats import mean_ci

#: Per-turn columns averaged over their non-null values, by the name of their sum and count.
TURN_MEANS = {"gap": "return_gap_days", "diversity": "slate_diversity", "fallback": "llm_fallback",
              "interview": "interview_score"}
#: The same over the turns with an instruction's intent.
INTENT_MEANS = {"satisfiable": "instruction_satisfiable", "similarity": "instruction_similarity",
                "judge": "instruction_judge"}
#: The columns of a trajectory table a digest reads.
COLUMNS = [
    "recommender", "arm", "shard", "user_id", "segment", "session", "day", "step", "time_days", "left",
    "return_gap_days", "churned", "exit_reason", "exit_text", "interview_score", "interview", "instruction",
    "intent_match", "instruction_satisfiable", "instruction_similarity", "instruction_judge", "slate_diversity",
    "llm_fallback", "reaction", "disliked", "dwell_min", "self_information",
]

#: Trajectories: one frame, or a study's shards one frame at a time (each shard's users are its own).
TrajectorySource: TypeAlias = pd.DataFrame | Iterable[pd.DataFrame]


def _valued(values: pd.Series) -> pd.Series:
    """Numbers, with what is not one as NaN; booleans count as 0 and 1."""
    return pd.to_numeric(values.astype(float) if values.dtype == bool else values, errors="coerce")


def _sums(traj: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One frame's sums and counts per group of `keys`."""
    reaction = traj["reaction"]
    reviewed = reaction >= 0
    rows = pd.DataFrame({
        **{k: traj[k] for k in keys},
        "reviewed": reviewed, "clicked": reaction >= 1, "liked": reaction >= 2,
        "disliked": reviewed & traj["disliked"].astype(bool), "dwell": traj["dwell_min"].astype(float).fillna(0.0),
        "novelty": traj["self_information"].fillna(0.0), "novelty_n": traj["self_information"].notna(),
    })
    by_turn = turn_keys(traj)
    turns = traj.drop_duplicates(by_turn)
    intent = turns["intent_match"].notna()
    cols: dict[str, pd.Series] = {k: turns[k] for k in keys}
    cols["turns"] = pd.Series(1, index=turns.index)
    cols["sessions"] = ~turns.duplicated([*by_turn[:-1], "session"])
    cols["instructed"] = turns["instruction"].notna()
    cols["intent_n"], cols["followed"] = intent, intent & (turns["intent_match"] >= 0.5)
    for name, column in TURN_MEANS.items():
        values = _valued(turns[column])
        cols[name], cols[f"{name}_n"] = values.fillna(0.0), values.notna()
    for name, column in INTENT_MEANS.items():
        values = _valued(turns[column]).where(intent)
        cols[name], cols[f"{name}_n"] = values.fillna(0.0), values.notna()
    reason = turns["exit_reason"]
    cols["exit_n"] = reason.notna()
    for r in EXIT_REASONS:
        cols[f"exit_{r}"] = reason == r
    per_row = rows.groupby(keys, sort=False).sum()
    return per_row.join(pd.DataFrame(cols).groupby(keys, sort=False).sum(), how="outer", sort=False)


def _labelled(traj: pd.DataFrame, label: Sequence[str]) -> pd.Series:
    out = traj[label[0]].astype(str)
    for column in label[1:]:
        out = out + "/" + traj[column].astype(str)
    return out


def _daily(traj: pd.DataFrame, label: Sequence[str]) -> pd.DataFrame:
    """One frame's users per label (`day` -1) and its users active on each day."""
    active = pd.DataFrame({"label": _labelled(traj, label), "user_id": traj["user_id"],
                           "day": traj["day"]}).drop_duplicates()
    users = active.drop_duplicates(["label", "user_id"]).assign(day=-1)
    return pd.concat([users, active]).groupby(["label", "day"], sort=False).size().rename("users").reset_index()


def _churned(traj: pd.DataFrame, label: Sequence[str]) -> pd.DataFrame:
    """One frame's users per label who left for good, by the day they did (`time_days` rounded down: churned by
    the end of day d is churned on a day <= d)."""
    rows = traj.loc[traj["churned"].astype(bool)]
    gone = pd.DataFrame({"label": _labelled(rows, label), "user_id": rows["user_id"],
                         "day": np.floor(rows["time_days"].to_numpy(np.float64)).astype(np.int64)})
    gone = gone.drop_duplicates(["label", "user_id"])
    return gone.groupby(["label", "day"], sort=False).size().rename("users").reset_index()


@dataclass(frozen=True)
class Digest:
    """What the metrics need of trajectories, added up over frames: `sums` per group of `keys`, `daily` users
    per label and day, `churned` users per label and the day they left for good, `exits` per label, reason and
    sentence (`recoworld.evaluation.exits.exit_table`).

    A label is the `label` columns joined by "/" (a study's "greedy/with"): what a retention curve or an
    exit table is drawn for."""

    sums: pd.DataFrame
    daily: pd.Series
    churned: pd.Series
    exits: pd.DataFrame

    @classmethod
    def of(cls, trajectories: TrajectorySource, keys: Sequence[str] = ("recommender",),
           label: Sequence[str] = ("recommender",)) -> Digest:
        """Each frame reduced as it is read, then the reductions added up in order (a frame is one shard)."""
        shards = [trajectories] if isinstance(trajectories, pd.DataFrame) else trajectories
        sums, daily, churned, left = [], [], [], []
        for traj in shards:
            sums.append(_sums(traj, list(keys)))
            daily.append(_daily(traj, label))
            churned.append(_churned(traj, label))
            left.append(exit_table(traj.assign(recommender=_labelled(traj, label))))
        return cls(
            pd.concat(sums).groupby(level=list(keys)).sum(),  # sorted: looked up by key
            pd.concat(daily).groupby(["label", "day"], sort=False)["users"].sum(),
            pd.concat(churned).groupby(["label", "day"], sort=False)["users"].sum(),
            merge_exit_tables(left),
        )

    def labels(self) -> list[str]:
        """Every label, in order of appearance."""
        return list(dict.fromkeys(self.daily.index.get_level_values("label")))

    def users(self, label: str) -> int:
        """How many users a label has."""
        return int(self.daily.get((label, -1), 0))

    def summary(self, episodes: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per value of the first key (`names`, default every label in order of appearance: a digest
        labelled by its first key) with `headline`'s metrics, from the sums of its groups and its episodes."""
        sums = self.sums.groupby(level=0).sum()
        return pd.DataFrame([
            {"recommender": name, **headline(sums.loc[name], episodes[episodes["recommender"] == name])}
            for name in (self.labels() if names is None else names)
        ])

    def daily_activity(self, horizon_days: int) -> pd.DataFrame:
        """Share of each label's users active on each day of the horizon."""
        out = {}
        for label in self.labels():
            per_day, users = self.daily[label], max(self.users(label), 1)
            out[label] = [per_day.get(d, 0) / users for d in range(horizon_days)]
        return pd.DataFrame(out, index=pd.RangeIndex(horizon_days, name="day"))

    def not_churned(self, horizon_days: int) -> pd.DataFrame:
        """Share of each label's users who have not left for good by the end of each day of the horizon."""
        out = {}
        for label in self.labels():
            users = max(self.users(label), 1)
            gone = np.cumsum([int(self.churned.get((label, d), 0)) for d in range(horizon_days)])
            out[label] = [1.0 - float(n) / users for n in gone.tolist()]
        return pd.DataFrame(out, index=pd.RangeIndex(horizon_days, name="day"))

    def why_left(self) -> pd.DataFrame:
        """Per label: its ended sessions, those after which the user never came back, and each exit reason's
        share of them, for the reasons any user gave."""
        names = self.labels()
        counts = exit_counts_of(self.exits, names)
        shares = exit_shares(counts)[[r for r in counts.columns if counts[r].sum() > 0]]
        overview = exit_overview_of(self.exits, names)[["exits", "left_for_good"]]
        return pd.concat([overview, shares], axis=1).reset_index()

    def quotes(self, per_reason: int = 3) -> dict[str, dict[str, list[Quote]]]:
        """`recoworld.evaluation.exits.exit_quotes` of the labelled trajectories."""
        return exit_quotes_of(self.exits, per_reason)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def headline(s: pd.Series, eps: pd.DataFrame) -> dict[str, float]:
    """The headline metrics of one group, from its sums `s` and its episodes (one row per user), with 95% CI
    half-widths (`recoworld.evaluation.metrics.summarize` lists them)."""
    retention, retention_ci = mean_ci(eps["retention"])
    return {
        "users": len(eps),
        "ctr": _ratio(s["clicked"], s["reviewed"]),
        "like_rate": _ratio(s["liked"], s["reviewed"]),
        "dwell_min_per_user": float(s["dwell"] / max(len(eps), 1)),
        "session_length": _ratio(s["turns"], s["sessions"]),
        "sessions_per_user": float(eps["sessions"].mean()),
        "mean_return_gap": _ratio(s["gap"], s["gap_n"]),
        "retention": retention,
        "retention_ci": retention_ci,
        "churn_rate": float(eps["churned"].mean()),
        "instruction_rate": _ratio(s["instructed"], s["turns"]),
        # followed: the share of turns with an intent whose slate honoured it (intent_match >= 0.5)
        "instruction_following": _ratio(s["followed"], s["intent_n"]),
        "instruction_satisfiable": _ratio(s["satisfiable"], s["satisfiable_n"]),
        # Instruction following measured two more ways: embedding similarity of the slate to the
        # instruction's text, and an LLM judge's score (`recoworld.evaluation.judge`; nan unless judged).
        "instruction_similarity": _ratio(s["similarity"], s["similarity_n"]),
        "instruction_judge": _ratio(s["judge"], s["judge_n"]),
        "diversity": _ratio(s["diversity"], s["diversity_n"]),
        "novelty": _ratio(s["novelty"], s["novelty_n"]),
        "return_per_user": float(eps["total_reward"].mean()),
        "llm_fallback_rate": _ratio(s["fallback"], s["fallback_n"]),
        # Turns the recommender decided by its fallback (the oracle without a mindset: greedy's choice).
        "fallback_turns": int(eps["fallback_turns"].sum()) if "fallback_turns" in eps else 0,
        # Richer reactions: explicit "not interested" per reviewed item, why sessions ended, the interview.
        "dislike_rate": _ratio(s["disliked"], s["reviewed"]),
        **{f"exit_{r}": _ratio(s[f"exit_{r}"], s["exit_n"]) for r in EXIT_REASONS},
        "interview_score": _ratio(s["interview"], s["interview_n"]),
    }
