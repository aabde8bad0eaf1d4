"""The report's charts and panels, read as text: zoomed axes, whole legend names, why users left, the reward's
session-end term, a study's titles and the bench's quadrant legend (the browser checks are in
test_report_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recoworld.bench.report import QUADRANT_NOTE, quadrant_figure
from recoworld.catalog import Catalog
from recoworld.config import RewardConfig, WorldConfig
from recoworld.envs.observation import engagement_reward
from recoworld.evaluation.axes import value_axis, zoom_note
from recoworld.evaluation.exits import exit_table
from recoworld.evaluation.html_report import (
    bar_chart,
    journey_data,
    line_chart,
    load_run,
    why_left_html,
    write_report,
)
from recoworld.evaluation.simulation import SimulationConfig, SimulationResult, simulate
from recoworld.studies.report import write_report as write_study_report

WORLD = {"slate_size": 3, "n_candidates": 12, "horizon_days": 3, "catalog": {"n_items": 600, "seed": 3}}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> tuple[Path, SimulationResult]:
    out = tmp_path_factory.mktemp("run")
    cfg = SimulationConfig(n_users=4, agents=["greedy", "diverse"], seed=4, world=WorldConfig(**WORLD))
    return out, simulate(cfg, catalog=catalog, out=out)


def test_the_value_axis_zooms_only_when_the_data_sit_far_above_zero() -> None:
    close = value_axis([0.40, 0.41], [0.42, 0.43])
    assert close.zoomed and 0.3 < close.bottom <= 0.40 and close.top >= 0.43
    assert (close.top - close.bottom) / close.step <= 6 and zoom_note(close).startswith(f"axis from {close.bottom:.2f}")
    spread = value_axis([0.05, 0.2], [0.1, 0.3])
    assert not spread.zoomed and spread.bottom == 0 and spread.top >= 0.3 and zoom_note(spread) == ""
    assert value_axis([float("nan")], [float("nan")]) == value_axis([], [])  # no data: a plain 0-1 axis


def test_retention_bars_differing_by_two_hundredths_look_different() -> None:
    svg = bar_chart(["a", "b"], [0.40, 0.42], [0.005, 0.005], "Retention", "share of days active")
    bottom = float(re.search(r'data-axis-bottom="([\d.]+)"', svg).group(1))
    top = float(re.search(r'data-axis-top="([\d.]+)"', svg).group(1))
    assert bottom > 0.3 and top < 0.5
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights[1] - heights[0] > 0.1 * heights[1]  # on a 0-1 axis the bars would be within 5% of each other
    assert f">{zoom_note(value_axis([0.395, 0.415], [0.405, 0.425]))}</text>" in svg and 'class="break"' in svg
    assert ">0.400</text>" in svg and ">0.420</text>" in svg  # each bar carries its value
    plain = bar_chart(["a", "b"], [0.1, 0.4], [0.02, 0.02], "Retention", "share")
    assert 'data-axis-bottom="0"' in plain and "zoom-note" not in plain and 'class="break"' not in plain


def test_legends_and_bar_names_are_never_cut() -> None:
    names = ["diverse / with", "diverse / without", "a-recommender-with-a-long-name / with"]
    lines = line_chart({n: [0.5, 0.4] for n in names}, "Daily active users", "day", "share")
    assert re.findall(r'class="tick legend-name">([^<]*)</text>', lines) == names
    width = int(re.search(r'width="(\d+)"', lines).group(1))
    assert width > 0.62 * 10.5 * len(names[-1]) + 350  # the chart widened to hold the longest name
    bars = bar_chart(names, [0.3, 0.31, 0.32], [0.01] * 3, "Retention", "share")
    assert re.findall(r'class="tick name"[^>]*>([^<]*)</text>', bars) == names
    assert "rotate(-45" in bars  # names wider than a bar are slanted, not cut


def test_journey_turns_carry_the_exit_and_split_the_reward(run: tuple[Path, SimulationResult]) -> None:
    path, result = run
    data = journey_data(load_run(path))
    assert data["session_end_known"] is True
    traj = result.trajectories
    checked = 0
    for rec in data["recommenders"]:
        for user in data["users"][rec]:
            rows = traj[(traj["recommender"] == rec) & (traj["user_id"] == user["id"])]
            for t in user["turns"]:
                slots = rows[(rows["session"] == t[0]) & (rows["turn"] == t[1])]
                first = slots.iloc[0]
                held = [None if pd.isna(first[c]) else first[c]
                        for c in ("exit_reason", "exit_text", "interview_score", "interview")]
                if not t[5]:
                    assert t[15] is None and held == [None] * 4
                    continue
                assert t[15][:4] == held
                # what is left once the session-end term is taken out is what the slate earned
                end = t[15][4]
                earned = engagement_reward(RewardConfig(), slots["reaction"].to_numpy(), slots["dwell_min"].to_numpy())
                assert t[3] - end == pytest.approx(float(earned), abs=2e-3)
                assert (end == RewardConfig().churn_penalty) == bool(t[7])
                checked += 1
    assert checked > 0


def test_the_panel_keeps_a_recommender_whose_users_never_left(run: tuple[Path, SimulationResult]) -> None:
    _, result = run
    traj = result.trajectories
    kept = traj[~traj["left"]].assign(recommender="keeper")  # the same turns, none of them an exit
    page = why_left_html(exit_table(pd.concat([traj, kept])), ["greedy", "diverse", "keeper"],
                         {"greedy": set(), "diverse": set()})
    row = re.search(r'<tr data-rec="keeper"><th>keeper</th><td>0</td><td>0</td><td>–</td>(.*?)</tr>', page)
    assert row and "no exits" in row.group(1) and 'data-count="0">–' in row.group(1)
    card = re.search(r'<div class="exit-quotes" data-rec="keeper">(.*?)</div>', page)
    assert card and "No user ended a session." in card.group(1)
    assert 'class="journey-link"' not in page  # no linked journeys: none is embedded
    assert "No user ended a session in this run." in why_left_html(exit_table(kept), ["keeper"], {})


def test_a_study_folder_shows_titles_and_whole_arm_names(run: tuple[Path, SimulationResult], catalog: Catalog,
                                                         tmp_path: Path) -> None:
    _, result = run
    arms = [("without", result), ("with", result)]
    traj = pd.concat([r.trajectories.assign(arm=a, shard=0) for a, r in arms], ignore_index=True)
    eps = pd.concat([r.episodes.assign(arm=a, new_items_seen=0, new_items_clicked=0) for a, r in arms],
                    ignore_index=True)
    traj.to_parquet(tmp_path / "trajectories.parquet")
    eps.to_parquet(tmp_path / "episodes.parquet")
    (tmp_path / "manifest.json").write_text('{"study": "s", "fingerprint": "f", "n_shards": 1, "shards": {}}')
    assert "items shown by id" in load_run(tmp_path).catalog_note  # what a study's manifest alone gives

    report, _ = write_study_report(traj, eps, tmp_path, title="s", horizon_days=3, catalog=catalog)
    # the Markdown report says why users left, per recommender and arm, in their words
    text = report.read_text()
    why = text[text.index("## Why users left"):text.index("## Plots")]
    turns = traj.drop_duplicates(["recommender", "arm", "user_id", "step"])
    left = turns[turns["left"]]
    for (rec, arm), exits in left.groupby(["recommender", "arm"]):
        assert f"| {rec}/{arm} | {len(exits)} | {int(exits['churned'].sum())} |" in why
    assert any(f"\u201c{words}\u201d" in why for words in left["exit_text"])
    study = load_run(tmp_path)
    assert study.catalog_note == "catalog.parquet of the run"
    data = journey_data(study)
    assert data["recommenders"] == ["greedy / without", "diverse / without", "greedy / with", "diverse / with"]
    assert all(data["items"][i][0] == str(catalog.titles[int(i)]) for i in data["items"])
    assert data["session_end_known"] is False  # a study's manifest has no world config: the page says so instead
    page = write_report(tmp_path).read_text()
    legend = re.findall(r'class="tick legend-name">([^<]*)</text>', page)
    assert legend.count("diverse / without") == 2 and legend.count("diverse / with") == 2  # both line charts


def test_the_quadrant_plot_has_a_legend_and_says_what_its_lines_are() -> None:
    def m(x: float) -> dict[str, float]:
        return {"mean": x, "ci95": 0.01}

    data = {"agents": ["random", "greedy", "mine"],
            "offline": {"metric": "ndcg@10", "seed": 0, "agents": {"random": {"ndcg@10": m(0.01)},
                                                                  "greedy": {"ndcg@10": m(0.05)},
                                                                  "mine": {"not_ranked": "no offline act"}}},
            "scenarios": {"s": {"version": 1, "metrics_order": ["retention"],
                                "metrics": {a: {"retention": m(v)} for a, v in
                                            (("random", 0.3), ("greedy", 0.4), ("mine", 0.35))}}}}
    fig = quadrant_figure(data)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["mean offline accuracy", "mean retention", "random", "greedy"]
    notes = [t.get_text() for t in fig.texts]
    assert QUADRANT_NOTE in notes and any("mine (no offline act)" in n for n in notes)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("mean")}
    assert np.allclose(lines["mean offline accuracy"].get_xdata(), 0.03)
    assert np.allclose(lines["mean retention"].get_ydata(), 0.35)


def test_simulates_retention_plot_zooms_to_close_recommenders() -> None:
    from recoworld.evaluation.report import retention_figure

    summary = pd.DataFrame({"recommender": ["a", "b"], "retention": [0.40, 0.42], "retention_ci": [0.005, np.nan]})
    daily = pd.DataFrame({"a": [1.0, 0.5], "b": [1.0, 0.6]})
    fig = retention_figure(summary, daily)
    bottom, top = fig.axes[0].get_ylim()
    assert 0.3 < bottom < 0.395 and 0.42 <= top < 0.5  # b has no CI (one user): its bar alone
    assert "zoomed" in fig.axes[0].get_ylabel()
    spread = retention_figure(summary.assign(retention=[0.1, 0.4]), daily)
    assert spread.axes[0].get_ylim()[0] == 0 and "zoomed" not in spread.axes[0].get_ylabel()
