"""Human-facing output of a validation: the terminal table, `validity.csv` and one figure per period.

Every output names its period: the out-of-sample column (the test period after the cutoff,
which nothing fitted has seen: the headline) and the in-sample column (the train period, which
calibration fitted). `validity.png` is the out-of-sample figure, `validity_in_sample.png` the
in-sample one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter
from rich.table import Table

from recoworld.validity.facts import Fact
from recoworld.validity.run import IN_SAMPLE, OUT_OF_SAMPLE, PERIODS, RANKING, Period, ValidityResult, headline

#: Distribution facts drawn as empirical CDFs: (fact, x label, log x axis).
_CDFS = (
    ("activity", "consumptions per user", True),
    ("session length", "consumptions per session", True),
    ("session gap", "days between sessions", True),
    ("interest drift", "topic Jaccard, consecutive sessions", False),
    ("distinctness", "intra- / inter-user distance", False),
)


def _fmt(x: object) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    value = float(x)  # type: ignore[arg-type]
    if value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}" if abs(value) >= 1000 or (value != 0 and abs(value) < 0.001) else f"{value:.3f}"


def describe_period(period: Period) -> str:
    """`out-of-sample (test period after the cutoff, never fitted; 30 days): real 148 of 200 users with consumptions;
    simulated: default 200`: who is actually compared on each side."""
    sims = ", ".join(f"{w} {n}" for w, n in period.simulated_users.items())
    return (f"{period.name} ({period.description}; {period.horizon_days:g} days): real {period.real_users} of "
            f"{period.compared} users with consumptions; simulated: {sims}")


def validity_table(result: ValidityResult, title: str = "Validity: simulated vs real users") -> Table:
    """One row per (fact, statistic): per period (out-of-sample first, then in-sample), the real
    value, then each world's value and distance (Δ).

    Within a period, the world closest to the log on a row is shown in green.
    """
    rows = result.rows
    worlds = list(dict.fromkeys(rows["world"]))
    periods = [p for p in PERIODS if p in result.periods]
    header = "; ".join(describe_period(result.periods[p]) for p in periods)
    table = Table(title=f"{title}, {len(result.users)} users drawn\n{header}")
    table.add_column("fact", style="bold")
    table.add_column("statistic")
    for p in periods:
        table.add_column(f"real\n{p}", justify="right")
        for w in worlds:
            table.add_column(f"{w}\n{p}", justify="right")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for (fact, stat, period), group in rows.groupby(["fact", "statistic", "period"], sort=False):
        out = cells.setdefault((str(fact), str(stat)), {})
        real = group["real"].iloc[0]
        note = next((n for n in group["note"] if isinstance(n, str)), None)
        real_cell = _fmt(real) if not pd.isna(real) else (note or "-")
        out[f"real|{period}"] = real_cell
        best = group["distance"].min()
        for _, r in group.iterrows():
            key = f"{r['world']}|{period}"
            if pd.isna(r["value"]):
                out[key] = r["note"] if isinstance(r["note"], str) and r["note"] != real_cell else "-"
                continue
            text = _fmt(r["value"]) if pd.isna(r["real"]) or pd.isna(r["distance"]) else (
                f"{_fmt(r['value'])} (Δ {_fmt(r['distance'])})")
            closest = len(worlds) > 1 and r["distance"] == best
            out[key] = f"[green]{text}[/green]" if closest else text
    for (fact, stat), out in cells.items():
        table.add_row(fact, stat, *(out.get(f"{src}|{p}", "") for p in periods for src in ["real", *worlds]))
    if len(worlds) > 1:
        parts = []
        for p in periods:
            head = headline(rows, p).pivot(index="fact", columns="world", values="distance").dropna(how="all")
            if not len(head):
                continue
            closest = head.idxmin(axis=1).value_counts()
            parts.append(f"{p}: " + ", ".join(f"{w} on {int(closest.get(w, 0))} of {len(head)} facts"
                                              for w in worlds))
        table.caption = "closest to the log on each fact's headline statistic, " + "; ".join(parts)
    return table


def _missing(ax: Axes, title: str, reason: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()


def _cdf(ax: Axes, facts: dict[str, dict[str, Fact]], fact: str, label: str, log_x: bool) -> None:
    samples = {src: sample for src, f in facts.items() if (sample := f[fact].sample) is not None}
    if not samples:
        _missing(ax, fact, facts["real"][fact].missing.get("*", "no data"))
        return
    for src, x in samples.items():
        x = np.sort(x)
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=src, lw=2 if src == "real" else 1.2)
    if log_x and all(np.any(x > 0) for x in samples.values()):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(fact)
    ax.set_xlabel(label)
    ax.set_ylabel("CDF")


def plot_validity(result: ValidityResult, path: str | Path, period: str = OUT_OF_SAMPLE) -> Path:
    """A 3x3 figure of one period (titled with it): ranking, positive rate, the Lorenz curve, five CDFs
    and the return curve."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = result.facts[period]
    fig, axes = plt.subplots(3, 3, figsize=(16, 13))
    ax = axes.ravel()

    rows = result.rows[result.rows["period"] == period]
    auc = rows[(rows["fact"] == RANKING) & rows["statistic"].str.startswith("AUC")]
    if len(auc):
        table = auc.pivot(index="world", columns="statistic", values="value").reindex(rows["world"].unique())
        table.plot.bar(ax=ax[0], rot=0)
        ax[0].axhline(0.5, color="grey", ls=":")
        ax[0].set_ylim(0, 1.2)
        ax[0].set_yticks(np.linspace(0, 1, 6))
        ax[0].legend(fontsize="small", ncol=2, loc="upper center")
        ax[0].set_xlabel("")
        ax[0].set_title("ranking fidelity: held-out AUC")
    else:
        _missing(ax[0], "ranking fidelity", "held-out items only: see the out-of-sample figure"
                 if period == IN_SAMPLE else "no world")

    rates = {src: f["positive rate"].stats for src, f in facts.items()}
    stats = list(dict.fromkeys(s for st in rates.values() for s in st))
    if stats:
        width = 0.8 / len(rates)
        for i, (src, st) in enumerate(rates.items()):
            ax[1].bar(np.arange(len(stats)) + i * width, [st.get(s, np.nan) for s in stats], width, label=src)
        ax[1].set_xticks(np.arange(len(stats)) + 0.4 - width / 2, stats)
        ax[1].set_title("positive rate" + ("" if "per impression" in rates["real"] else " (real: no impressions)"))
        ax[1].legend()
    else:
        _missing(ax[1], "positive rate", "not in any source")

    for src, f in facts.items():
        if f["popularity"].curve is not None:
            ax[2].plot(*f["popularity"].curve, label=src, lw=2 if src == "real" else 1.2)
    ax[2].plot([0, 1], [0, 1], color="grey", ls=":")
    ax[2].set_title("long tail: Lorenz curve of consumption")
    ax[2].set_xlabel("share of items (least consumed first)")
    ax[2].set_ylabel("share of consumption")
    ax[2].legend()

    for a, (fact, label, log_x) in zip(ax[3:8], _CDFS):
        _cdf(a, facts, fact, label, log_x)
    ax[3].legend()

    curves = {src: f["return curve"].curve for src, f in facts.items() if f["return curve"].curve is not None}
    if curves:
        for src, (x, y) in curves.items():
            ax[8].plot(x, y, label=src, lw=2 if src == "real" else 1.2)
        ax[8].set_ylim(0, 1)
        ax[8].set_title("return curve")
        ax[8].set_xlabel("days after the first consumption")
        ax[8].set_ylabel("share of users active that day")
    else:
        _missing(ax[8], "return curve", facts["real"]["return curve"].missing.get("*", "no data"))
    fig.suptitle(describe_period(result.periods[period]), fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_validity(result: ValidityResult, out: str | Path) -> tuple[Path, Path, Path]:
    """`validity.csv` (one row per period x fact x statistic x world), `validity.png` (out of sample)
    and `validity_in_sample.png` in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "validity.csv"
    result.rows.to_csv(csv, index=False)
    return (csv, plot_validity(result, out / "validity.png", OUT_OF_SAMPLE),
            plot_validity(result, out / "validity_in_sample.png", IN_SAMPLE))
