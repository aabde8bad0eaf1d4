"""Numbers that would mislead are flagged where they are printed: summary values outside the realism bands get a
warning naming the value, the band and its source; a cell that is not a number says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from recoworld.calibration.agreement import MEASURES
from recoworld.calibration.agreement import table as agreement_table
from recoworld.calibration.ranking import table as ranking_table
from recoworld.cli import app
from recoworld.validity.bands import BANDS, band_warnings
from tests.scripts import load_script

#: The real-log bench on the old README's sample log (issue 29): 30 days, nothing flagged then.
MEASURED = pd.DataFrame({"recommender": ["random", "greedy"], "ctr": [0.001, 0.05],
                         "sessions_per_user": [144.0, 12.0], "retention": [0.985, 0.3]})


def test_values_outside_their_bands_are_named_with_the_band_and_its_source() -> None:
    lines = band_warnings(MEASURED, 30.0, where="real-log: ")
    assert lines == [
        f"real-log: CTR 0.001 (random) outside the realism band 0.02-0.1 (click rate / impression: "
        f"{BANDS['click rate / impression'].source})",
        f"real-log: sessions per user per day 4.8 (random) outside the realism band 0.1-2 (sessions / user / day: "
        f"{BANDS['sessions / user / day'].source})",
        f"real-log: retention 0.985 (random) outside the realism band 0.1-0.6 (retention (days active): "
        f"{BANDS['retention (days active)'].source})",
    ]


def test_a_short_horizon_is_held_only_to_the_ctr_band() -> None:
    # Over 2 days, retention is mostly day 0's session: a month's stickiness says nothing about it.
    lines = band_warnings(MEASURED, 2.0)
    assert len(lines) == 1 and lines[0].startswith("CTR 0.001 (random)")
    assert band_warnings(MEASURED.assign(ctr=np.nan), 2.0) == []  # no reviewed item: no evidence either way


def test_simulate_warns_of_a_ctr_outside_its_band(tmp_path: Path) -> None:
    (tmp_path / "world.yaml").write_text("choice: {bias: -12.0}\n")  # almost no click
    res = CliRunner().invoke(app, ["simulate", "--config", str(tmp_path / "world.yaml"), "--users", "3", "--days",
                                   "1", "--agents", "random", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    ctr = pd.read_csv(tmp_path / "run" / "summary.csv")["ctr"].iloc[0]
    warning = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: CTR {ctr:.3g} (random) outside the realism band 0.02-0.1 (click rate / "
                       f"impression: {BANDS['click rate / impression'].source})"], res.output


def test_one_user_runs_say_why_their_intervals_are_missing(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "--users", "1", "--days", "1", "--agents", "random",
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "± 95% CI -: a 95% CI needs 2+ users" in res.output
    res = CliRunner().invoke(app, ["bench", "--scenarios", "retention-30d", "--agents", "random", "--users", "1",
                                   "--days", "1", "--out", str(tmp_path / "bench")])
    assert res.exit_code == 0, res.output
    leaderboard = (tmp_path / "bench" / "leaderboard.md").read_text()
    assert ("_No ± on churn_rate, ctr, dwell_min_per_user, retention, sessions_per_user: one user had the metric, "
            "and a 95% CI needs 2+ users._") in leaderboard
    assert "No ± on" in res.output


def test_a_rank_correlation_without_an_order_reads_n_a_and_says_why() -> None:
    rows = []
    for metric, llm, sur in (("retention", [1.0, 1.0, 1.0, 1.0], [0.9, 0.8, 0.7, 0.6]),
                             ("ctr", [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])):
        tied = metric == "retention"
        for i, name in enumerate(["a", "b", "c", "d"]):
            rows.append({"metric": metric, "recommender": name, "llm": llm[i], "surrogate": sur[i],
                         "llm_rank": 2.5 if tied else 4 - i, "surrogate_rank": i + 1 if tied else 4 - i,
                         "spearman_rho": np.nan if tied else 1.0, "rho_ci_low": np.nan if tied else 0.8,
                         "rho_ci_high": np.nan if tied else 1.0})
    text = ranking_table(pd.DataFrame(rows))
    assert "nan" not in text
    assert "retention: rho n/a: every recommender has the same value under the LLM users" in text
    assert "ctr: " not in text.split("\n", 3)[-1]  # ctr has an order: no note for it


def test_an_agreement_measure_that_is_not_a_number_reads_n_a_and_says_why() -> None:
    report = pd.DataFrame([{"model": model, "measure": m, "value": np.nan if m == "return_gap_ks" and model == "neural"
                            else 0.5, "ci_low": 0.4, "ci_high": 0.6} for model in ("distilled", "neural")
                           for m in MEASURES])
    text = agreement_table(report)
    assert "nan" not in text and "n/a" in text
    assert "n/a: return_gap_ks: needs return gaps on both sides" in text


def test_the_stylized_facts_script_reads_the_one_definition_of_the_bands() -> None:
    module = load_script("experiments/stylized_facts.py", "stylized_facts_bands")
    assert module.BANDS is BANDS
