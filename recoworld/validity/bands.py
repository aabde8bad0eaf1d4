"""The realism bands: the range real platforms document for each stylized fact, with its source.

One definition, read by `experiments/stylized_facts.py` (the default world's facts against them) and by
the summaries of `recoworld simulate`, `bench` and `study`, which warn when a headline value falls
outside its band (`band_warnings`): a CTR of 0.001 or 144 sessions per user in a month is a world
worth a second look before its numbers are reported. Where a band is sourced and where it is an
assumption is said in its `source`, and in the docstrings of `recoworld/config.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Band:
    """A documented range for one fact; `source` says where it comes from (or that it is an assumption).

    `min_days`: the shortest horizon the band speaks for. Retention over a 2-day run is mostly day 0's
    session, so a band of a month's stickiness says nothing about it."""

    low: float
    high: float
    source: str
    min_days: float = 0.0

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g}-{self.high:g}"


#: fact -> band. Keep in step with the docstrings of ChoiceConfig, DynamicsConfig and ReturnConfig.
BANDS: dict[str, Band] = {
    "click rate / impression": Band(0.02, 0.10, "MIND news impressions: about 4% clicked; short-video logs < 10%"),
    "likes / click": Band(0.02, 0.25, "assumption: like/view ratios of a few percent on video platforms"),
    "item Gini": Band(0.60, 0.90, "public logs 0.6-0.9, e.g. MovieLens-100K about 0.63"),
    "top 1% share": Band(0.05, 0.35, "assumption: what a Gini of 0.6-0.9 implies"),
    "top 10% share": Band(0.30, 0.70, "assumption: what a Gini of 0.6-0.9 implies"),
    "session items (median)": Band(2.0, 40.0, "assumption: a few to tens of positive interactions per visit"),
    "session turns (mean)": Band(1.0, 10.0, "assumption: a few pages per visit (Agent4Rec caps a visit at 5)"),
    "gap median (days)": Band(0.2, 3.0, "assumption: below the mean, as in any right-skewed gap distribution"),
    "gap mean (days)": Band(2.0, 5.0, "KuaiSim baselines: return time 3.48-3.57 days (REFERENCE.md)"),
    "gap p90 (days)": Band(3.0, 15.0, "assumption: heavy tail (lognormal/Pareto-like gaps)"),
    "gap p99 (days)": Band(7.0, 30.0, "heavy-tailed gaps, p99 of weeks; the 30-day horizon caps it"),
    "return day 1": Band(0.20, 0.70, "assumption: next-day return of consumer apps"),
    "return day 7": Band(0.10, 0.50, "assumption: 7th-day return of consumer apps"),
    "retention (days active)": Band(0.10, 0.60, "assumption: DAU/MAU-like stickiness; KuaiSim's 0.57-0.61 differs",
                                    min_days=7.0),
    "churn (30 days)": Band(0.05, 0.50, "assumption: a minority leaves for good within a month"),
    "sessions / user / day": Band(0.10, 2.0, "assumption: retention's 0.1-0.6 share of days active times one to "
                                  "three visits on an active day", min_days=7.0),
}

#: Personalization lift: the relevance ranker's over random's, both on the same users and candidates.
LIFT_BANDS: dict[str, Band] = {
    "CTR lift (taste / random)": Band(1.5, 4.0, "YouTube: personalized recommendations about 2x the CTR of the "
                                      "most-viewed page (Davidson et al., RecSys 2010)"),
    "retention ratio (taste / random)": Band(1.0, math.inf, "personalization lowers churn (Gomez-Uribe & Hunt, "
                                             "ACM TMIS 2015, Netflix)"),
    "CTR lift (taste / popular)": Band(1.5, 4.0, "the comparison Davidson et al. made: about 2x the CTR of the "
                                       "most-viewed page; what bounds the choice model's popularity weight"),
}

#: Summary column -> (its name in a warning, the fact whose band it is held to). Sessions per user are
#: divided by the horizon's days first, so one band speaks for every horizon.
SUMMARY_BANDS: dict[str, tuple[str, str]] = {
    "ctr": ("CTR", "click rate / impression"),
    "sessions_per_user": ("sessions per user per day", "sessions / user / day"),
    "retention": ("retention", "retention (days active)"),
}


def band_warnings(summary: pd.DataFrame, horizon_days: float, where: str = "") -> list[str]:
    """One line per summary column (`SUMMARY_BANDS`) with values outside its band: the values, the
    recommenders (`summary["recommender"]`), the band and its source. `where` prefixes the line (a
    bench scenario's name). A value that is not a number (no reviewed item) is no evidence either way."""
    lines = []
    for column, (label, fact) in SUMMARY_BANDS.items():
        band = BANDS[fact]
        if column not in summary or horizon_days < band.min_days:
            continue
        values = summary[column].astype(float) / (horizon_days if column == "sessions_per_user" else 1.0)
        out = [(str(name), v) for name, v in zip(summary["recommender"], values) if not math.isnan(v)
               and not band.holds(v)]
        if out:
            shown = ", ".join(f"{v:.3g} ({name})" for name, v in out)
            lines.append(f"{where}{label} {shown} outside the realism band {band.describe()} "
                         f"({fact}: {band.source})")
    return lines

