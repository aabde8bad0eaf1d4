"""A study's report: metrics per recommender, arm and segment, the creator's effect, tables and plots.

The headline metrics come from `recoworld.evaluation.metrics.summarize` applied to each segment's
rows; the creator metrics are added on top:

| column                  | meaning                                                           |
|-------------------------|-------------------------------------------------------------------|
| `reach`                 | share of the segment's users who reviewed at least one new item   |
| `new_item_clicks_per_user` | clicks on the creator's items per user                          |
| `new_item_ctr`          | clicks per reviewed new item                                      |

With LLM users the table also shows `llm_fallback_rate`: the share of turns the model
could not decide, played by the parametric user instead.

A study's trajectories can be far larger than memory, so the report never holds them whole: it
reads them one shard at a time (`StudyResult.trajectory_shards`, only `COLUMNS`) and reduces each
to a `Digest`, the sums and counts every figure is a ratio of, keyed by recommender, arm and
segment (a shard's users are nobody else's, so the digests of shards add up). A single frame is
one shard. The figures equal `recoworld.evaluation.metrics.summarize`, `daily_activity` and
`recoworld.evaluation.exits` on the whole frame (tests/test_study_report.py), up to the order of
floating-point sums.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.evaluation.axes import value_axis, zoom_note
from recoworld.evaluation.exits import REASONS, Quote, exit_shares, exits
from recoworld.evaluation.report import plot_retention
from recoworld.mindset import EXIT_REASONS
from recoworld.stats import mean_ci
from recoworld.storage import write_atomic

ALL = "all"
#: Columns of the per-segment table in the markdown report.
SHOWN = (
    "recommender",
    "arm",
    "segment",
    "users",
    "reach",
    "new_item_ctr",
    "ctr",
    "like_rate",
    "dwell_min_per_user",
    "sessions_per_user",
    "retention",
    "retention_ci",
    "churn_rate",
    "return_per_user",
)
#: Metrics whose with-minus-without difference is the creator's effect.
EFFECTS = (
    "reach",
    "new_item_clicks_per_user",
    "ctr",
    "dwell_min_per_user",
    "sessions_per_user",
    "retention",
    "churn_rate",
    "return_per_user",
)


#: The trajectory columns the report reads (a study's shards are read with only these).
COLUMNS = [
    "recommender", "arm", "shard", "user_id", "segment", "session", "day", "step", "time_days", "left",
    "return_gap_days", "churned", "exit_reason", "exit_text", "interview_score", "interview", "instruction",
    "intent_match", "instruction_satisfiable", "instruction_similarity", "instruction_judge", "slate_diversity",
    "llm_fallback", "reaction", "disliked", "dwell_min", "self_information",
]
KEYS = ["recommender", "arm", "segment"]
#: Per-turn columns averaged over their non-null values, as `summarize` does, by the name of their sum and count.
TURN_MEANS = {"gap": "return_gap_days", "diversity": "slate_diversity", "fallback": "llm_fallback",
              "interview": "interview_score"}
#: The same over the turns with an instruction's intent.
INTENT_MEANS = {"satisfiable": "instruction_satisfiable", "similarity": "instruction_similarity",
                "judge": "instruction_judge"}

#: A study's trajectories: one frame, or its shards one frame at a time.
TrajectorySource: TypeAlias = pd.DataFrame | Iterable[pd.DataFrame]


def _valued(values: pd.Series) -> pd.Series:
    """Numbers, with what is not one as NaN (`summarize`'s `_mean_of`); booleans count as 0 and 1."""
    return pd.to_numeric(values.astype(float) if values.dtype == bool else values, errors="coerce")


def _sums(traj: pd.DataFrame) -> pd.DataFrame:
    """One shard's sums and counts per recommender x arm x segment (see the module docstring)."""
    reaction = traj["reaction"]
    reviewed = reaction >= 0
    rows = pd.DataFrame({
        **{k: traj[k] for k in KEYS},
        "reviewed": reviewed, "clicked": reaction >= 1, "liked": reaction >= 2,
        "disliked": reviewed & traj["disliked"].astype(bool), "dwell": traj["dwell_min"].astype(float).fillna(0.0),
        "novelty": traj["self_information"].fillna(0.0), "novelty_n": traj["self_information"].notna(),
    })
    turns = traj.drop_duplicates(["recommender", "arm", "user_id", "step"])
    intent = turns["intent_match"].notna()
    cols: dict[str, pd.Series] = {k: turns[k] for k in KEYS}
    cols["turns"] = pd.Series(1, index=turns.index)
    cols["sessions"] = ~turns.duplicated(["recommender", "arm", "user_id", "session"])
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
    per_row = rows.groupby(KEYS, sort=False).sum()
    return per_row.join(pd.DataFrame(cols).groupby(KEYS, sort=False).sum(), how="outer", sort=False)


def _daily(traj: pd.DataFrame) -> pd.DataFrame:
    """One shard's users per recommender/arm label (`day` -1) and its users active on each day."""
    label = traj["recommender"] + "/" + traj["arm"]
    active = pd.DataFrame({"label": label, "user_id": traj["user_id"], "day": traj["day"]}).drop_duplicates()
    users = active.drop_duplicates(["label", "user_id"]).assign(day=-1)
    return pd.concat([users, active]).groupby(["label", "day"], sort=False).size().rename("users").reset_index()


def _exit_digest(traj: pd.DataFrame) -> pd.DataFrame:
    """One shard's ended sessions (`recoworld.evaluation.exits.exits`, per recommender/arm label) counted per
    label, reason and sentence (stripped; "" without words), with the first exit that said it."""
    left = exits(traj.assign(recommender=traj["recommender"] + "/" + traj["arm"]))
    text = left["exit_text"]
    left = left.assign(text=text.astype(str).str.strip().where(text.notna(), ""))
    keys = ["recommender", "exit_reason", "text"]
    counts = left.groupby(keys, sort=False).agg(n=("user_id", "size"), churned=("churned", "sum"))
    firsts = left.drop_duplicates(keys).set_index(keys)[["user_id", "session", "interview_score", "interview"]]
    return counts.join(firsts).reset_index()


@dataclass(frozen=True)
class Digest:
    """What the report needs of a study's trajectories, summed over its shards: `sums` per recommender x arm x
    segment, `daily` users per label and day, `exits` per label, reason and sentence."""

    sums: pd.DataFrame
    daily: pd.DataFrame
    exits: pd.DataFrame

    @classmethod
    def of(cls, trajectories: TrajectorySource) -> Digest:
        """Each shard reduced as it is read (a frame is one shard), then the reductions added up in shard order."""
        shards = [trajectories] if isinstance(trajectories, pd.DataFrame) else trajectories
        sums, daily, left = [], [], []
        for traj in shards:
            sums.append(_sums(traj))
            daily.append(_daily(traj))
            left.append(_exit_digest(traj))
        merged = pd.concat(left, ignore_index=True)
        keys = ["recommender", "exit_reason", "text"]
        counts = merged.groupby(keys, sort=False)[["n", "churned"]].sum()
        firsts = merged.drop_duplicates(keys).set_index(keys)[["user_id", "session", "interview_score", "interview"]]
        return cls(
            pd.concat(sums).groupby(level=KEYS).sum(),  # sorted: looked up by key
            pd.concat(daily).groupby(["label", "day"], sort=False)["users"].sum(),
            counts.join(firsts).reset_index(),
        )

    def labels(self) -> list[str]:
        """Every recommender/arm, in order of appearance."""
        return list(dict.fromkeys(self.daily.index.get_level_values("label")))

    def daily_activity(self, horizon_days: int) -> pd.DataFrame:
        """`recoworld.evaluation.metrics.daily_activity` of the labelled trajectories."""
        out = {}
        for label in self.labels():
            per_day = self.daily[label]
            users = max(int(per_day.get(-1, 0)), 1)
            out[label] = [per_day.get(d, 0) / users for d in range(horizon_days)]
        return pd.DataFrame(out, index=pd.RangeIndex(horizon_days, name="day"))

    def why_left(self) -> pd.DataFrame:
        """Per recommender/arm label: its ended sessions, those after which the user never came back, and each
        exit reason's share of them (`recoworld.evaluation.exits`), for the reasons any user gave."""
        names = self.labels()
        counts = self.exits.groupby(["recommender", "exit_reason"], sort=False)["n"].sum().unstack(fill_value=0)
        counts = counts.reindex(index=names, columns=list(REASONS), fill_value=0).fillna(0).astype(np.int64)
        counts.index.name, counts.columns.name = "recommender", "exit_reason"
        by_label = self.exits.groupby("recommender", sort=False)
        overview = pd.DataFrame({"exits": by_label["n"].sum(), "left_for_good": by_label["churned"].sum()})
        overview = overview.reindex(names).fillna(0).astype(np.int64)
        overview.index.name = "recommender"
        shares = exit_shares(counts)[[r for r in counts.columns if counts[r].sum() > 0]]
        return pd.concat([overview, shares], axis=1).reset_index()

    def quotes(self, per_reason: int = 3) -> dict[str, dict[str, list[Quote]]]:
        """`recoworld.evaluation.exits.exit_quotes` of the labelled trajectories."""
        said = self.exits[self.exits["text"] != ""]
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


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _headline(s: pd.Series, eps: pd.DataFrame) -> dict[str, float]:
    """`recoworld.evaluation.metrics.summarize`'s row (less `recommender`) from a group's sums and episodes."""
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
        "instruction_following": _ratio(s["followed"], s["intent_n"]),
        "instruction_satisfiable": _ratio(s["satisfiable"], s["satisfiable_n"]),
        "instruction_similarity": _ratio(s["similarity"], s["similarity_n"]),
        "instruction_judge": _ratio(s["judge"], s["judge_n"]),
        "diversity": _ratio(s["diversity"], s["diversity_n"]),
        "novelty": _ratio(s["novelty"], s["novelty_n"]),
        "return_per_user": float(eps["total_reward"].mean()),
        "llm_fallback_rate": _ratio(s["fallback"], s["fallback_n"]),
        "fallback_turns": int(eps["fallback_turns"].sum()) if "fallback_turns" in eps else 0,
        "dislike_rate": _ratio(s["disliked"], s["reviewed"]),
        **{f"exit_{r}": _ratio(s[f"exit_{r}"], s["exit_n"]) for r in EXIT_REASONS},
        "interview_score": _ratio(s["interview"], s["interview_n"]),
    }


def segment_summary(trajectories: TrajectorySource | Digest, episodes: pd.DataFrame,
                    target: str | None = None) -> pd.DataFrame:
    """One row per recommender x arm x segment (and an `all` row per recommender x arm)."""
    digest = trajectories if isinstance(trajectories, Digest) else Digest.of(trajectories)
    rows = []
    for (rec, arm), eps in episodes.groupby(["recommender", "arm"], sort=False):
        sums = digest.sums.loc[(rec, arm)]
        parts = [(ALL, sums.sum(), eps)] + [(seg, sums.loc[seg], e) for seg, e in eps.groupby("segment", sort=True)]
        for segment, s, e in parts:
            seen, clicked = e["new_items_seen"].sum(), e["new_items_clicked"].sum()
            rows.append(
                {
                    "recommender": rec,
                    "arm": arm,
                    "segment": segment,
                    "target": segment == target,
                    **_headline(s, e),
                    "reach": float((e["new_items_seen"] > 0).mean()),
                    "new_item_clicks_per_user": float(e["new_items_clicked"].mean()),
                    "new_item_ctr": float(clicked / seen) if seen else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def creator_effects(summary: pd.DataFrame) -> pd.DataFrame:
    """With minus without the new content, per recommender and segment (empty without a creator)."""
    if not {"with", "without"} <= set(summary["arm"]):
        return pd.DataFrame()
    idx = ["recommender", "segment", "target"]
    with_ = summary[summary["arm"] == "with"].set_index(idx)[list(EFFECTS)]
    without = summary[summary["arm"] == "without"].set_index(idx)[list(EFFECTS)]
    return (with_ - without).add_prefix("delta_").reset_index()


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float | np.floating):
            return "-" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def plot_segments(summary: pd.DataFrame, path: Path) -> Path:
    """Retention (95% CI) and reach per segment, one bar per recommender x arm, each named whole in the legend.

    Each axis is zoomed to its data (`recoworld.evaluation.axes`) and says so in its label: arms whose
    retention differs by 0.02 look equal on a 0-1 axis."""
    segs = summary[summary["segment"] != ALL]
    segments = list(dict.fromkeys(segs["segment"]))
    groups = list(dict.fromkeys(zip(segs["recommender"], segs["arm"])))
    x = np.arange(len(segments))
    width = 0.8 / max(len(groups), 1)
    fig, (ax_ret, ax_reach) = plt.subplots(1, 2, figsize=(13, 4.5))
    for j, (rec, arm) in enumerate(groups):
        g = segs[(segs["recommender"] == rec) & (segs["arm"] == arm)].set_index("segment").reindex(segments)
        offset = x - 0.4 + width * (j + 0.5)
        ax_ret.bar(offset, g["retention"], width, yerr=g["retention_ci"].fillna(0), capsize=3, label=f"{rec}/{arm}")
        ax_reach.bar(offset, g["reach"], width, label=f"{rec}/{arm}")
    ci = segs["retention_ci"].fillna(0)
    axes = (
        (ax_ret, "Retention per segment (95% CI)", "share of days active",
         value_axis(segs["retention"] - ci, segs["retention"] + ci)),
        (ax_reach, "Reach of the new content", "share of users who saw a new item",
         value_axis(segs["reach"], segs["reach"])),
    )
    for ax, title, ylabel, axis in axes:
        ax.set_xticks(x, segments)
        ax.set_ylim(axis.bottom, axis.top)
        ax.set_title(title)
        ax.set_ylabel(ylabel + (f"\n({zoom_note(axis)})" if axis.zoomed else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    trajectories: TrajectorySource,
    episodes: pd.DataFrame,
    out: str | Path,
    *,
    title: str,
    horizon_days: float,
    target: str | None = None,
    notes: list[str] | None = None,
    llm_users: bool = False,
    catalog: Catalog | None = None,
) -> tuple[Path, pd.DataFrame]:
    """Write `summary.csv`, `effects.csv`, two plots and `report.md` under `out`; returns the report and summary.

    `trajectories`: a frame, or a study's shards one at a time (`StudyResult.trajectory_shards(COLUMNS)`), read
    once and reduced as they come (`Digest`): memory holds one shard, never the study.

    `llm_users` adds the LLM fallback rate to the per-segment table (it is always in `summary.csv`).
    `catalog`, the items the study played (the creator's included: `StudySetup.catalog`), is written as
    `catalog.parquet`, from which the HTML report (`recoworld report`) shows titles and topics instead of
    item ids: a study's manifest names no catalog it could rebuild."""
    out = Path(out)
    if catalog is not None:
        catalog.to_parquet(out / "catalog.parquet")
    digest = Digest.of(trajectories)
    summary = segment_summary(digest, episodes, target)
    effects = creator_effects(summary)
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    if not effects.empty:
        write_atomic(out / "effects.csv", effects.to_csv(index=False))
    overall = summary[summary["segment"] == ALL].assign(recommender=lambda s: s["recommender"] + "/" + s["arm"])
    daily = digest.daily_activity(math.ceil(horizon_days))
    plot_retention(overall, daily, out / "retention.png")
    plot_segments(summary, out / "segments.png")
    lines = [f"# {title}", "", *(notes or [])]
    if llm_users:
        fell, turns = int(digest.sums["fallback"].sum()), int(digest.sums["turns"].sum())
        lines.append(
            f"- LLM fallbacks: {fell} of {turns} turns ({fell / max(turns, 1):.1%}) fell back to "
            "the parametric user"
        )
    lines.append("")
    shown = [*SHOWN, "llm_fallback_rate"] if llm_users else list(SHOWN)
    lines += ["## Per segment", "", markdown_table(summary[shown]), ""]
    if not effects.empty:
        lines += [
            f"## Effect of the new content (with − without){f', target segment: {target}' if target else ''}",
            "",
            markdown_table(effects),
            "",
        ]
    said = [f"- {rec}, {reason}: \u201c{q[0].text}\u201d ({q[0].count} exits)"
            for rec, per in digest.quotes(per_reason=1).items() for reason, q in per.items()]
    lines += ["## Why users left", "",
              "Exit reasons as shares of each recommender's ended sessions; the words said most for each reason "
              "follow (the HTML report, `report.html`, has them all, with the users' journeys).", "",
              markdown_table(digest.why_left(), digits=2), "", *said, ""]
    lines += ["## Plots", "", "![retention](retention.png)", "", "![segments](segments.png)", ""]
    path = out / "report.md"
    write_atomic(path, "\n".join(lines))
    return path, summary
