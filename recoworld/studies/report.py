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
reads them one shard at a time (`StudyResult.trajectory_shards`, only `recoworld.evaluation.digest.COLUMNS`)
and reduces each to a `Digest`, the sums and counts every figure is a ratio of, keyed by recommender, arm
and segment (a shard's users are nobody else's, so the digests of shards add up). `summarize` is the same
reduction of one frame, so the report's figures are `summarize`'s on the segment's rows, up to the order of
floating-point sums (tests/test_study_streaming.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.evaluation.axes import value_axis, zoom_note
from recoworld.evaluation.digest import Digest, TrajectorySource, headline
from recoworld.evaluation.report import plot_retention
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


KEYS = ("recommender", "arm", "segment")
#: What a study's retention curves and exit tables are drawn for: "greedy/with".
LABEL = ("recommender", "arm")


def segment_summary(trajectories: TrajectorySource | Digest, episodes: pd.DataFrame,
                    target: str | None = None) -> pd.DataFrame:
    """One row per recommender x arm x segment (and an `all` row per recommender x arm)."""
    digest = trajectories if isinstance(trajectories, Digest) else Digest.of(trajectories, KEYS, LABEL)
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
                    **headline(s, e),
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
    digest = Digest.of(trajectories, KEYS, LABEL)
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
