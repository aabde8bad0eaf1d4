"""Human-facing output of a simulation: the terminal table and the retention plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from rich.table import Table

from recoworld.evaluation.axes import value_axis, zoom_note

#: (column, header, format) of the summary table, in display order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ctr", "CTR", "{:.3f}"),
    ("session_length", "turns/session", "{:.2f}"),
    ("sessions_per_user", "sessions/user", "{:.1f}"),
    ("mean_return_gap", "return gap (d)", "{:.2f}"),
    ("retention", "retention", "{:.3f}"),
    ("retention_ci", "± 95% CI", "{:.3f}"),
    ("churn_rate", "churn", "{:.2f}"),
    ("instruction_rate", "instr. rate", "{:.3f}"),
    ("instruction_following", "instr. follow", "{:.2f}"),
    ("diversity", "diversity", "{:.3f}"),
    ("novelty", "novelty (bits)", "{:.2f}"),
)


#: Why a summary cell can be "-" (not a number), by column; a column not named here: no turn it is defined on.
UNDEFINED: dict[str, str] = {
    "retention_ci": "a 95% CI needs 2+ users",
    "ctr": "no item reviewed",
    "instruction_following": "no turn under an instruction",
}


def undefined_note(summary: pd.DataFrame) -> str:
    """The table's caption when a cell is "-": which columns, and why (`UNDEFINED`); empty when none is."""
    reasons = {header: UNDEFINED.get(col, "no turn it is defined on") for col, header, _ in COLUMNS
               if col in summary and summary[col].isna().any()}
    return "; ".join(f"{header} -: {why}" for header, why in reasons.items())


def summary_table(summary: pd.DataFrame, title: str = "RecoWorld simulation") -> Table:
    """The terminal table of `COLUMNS`, the best retention in green; a "-" cell is explained in the caption."""
    table = Table(title=title, caption=undefined_note(summary) or None)
    table.add_column("recommender", style="bold")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    best = summary["retention"].max()
    for _, row in summary.iterrows():
        cells = []
        for col, _, fmt in COLUMNS:
            cells.append("-" if pd.isna(row[col]) else fmt.format(row[col]))
        style = "green" if row["retention"] == best else None
        table.add_row(str(row["recommender"]), *cells, style=style)
    return table


def retention_figure(summary: pd.DataFrame, daily: pd.DataFrame) -> Figure:
    """Left: retention per recommender with 95% CIs, on an axis zoomed to the data when their differences are
    small next to their level (the axis says so). Right: share of users active per day."""
    fig, (ax_bar, ax_day) = plt.subplots(1, 2, figsize=(12, 4.5))
    ci = summary["retention_ci"].fillna(0)
    axis = value_axis(summary["retention"] - ci, summary["retention"] + ci)
    ax_bar.bar(summary["recommender"], summary["retention"], yerr=ci, capsize=4, color="#4C72B0")
    ax_bar.set_ylabel("retention (share of days active)" + (f"\n({zoom_note(axis)})" if axis.zoomed else ""))
    ax_bar.set_title("Retention per recommender (95% CI)")
    ax_bar.set_ylim(axis.bottom, axis.top)
    for name in daily.columns:
        ax_day.plot(daily.index, daily[name], label=name)
    ax_day.set_xlabel("day")
    ax_day.set_ylabel("share of users active")
    ax_day.set_title("Daily active users")
    ax_day.set_ylim(0, 1)
    ax_day.legend()
    fig.tight_layout()
    return fig


def plot_retention(summary: pd.DataFrame, daily: pd.DataFrame, path: str | Path) -> Path:
    """`retention_figure`, written to `path` (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = retention_figure(summary, daily)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
