"""`recoworld report`: one self-contained HTML file, checked in a real headless Chromium.

The browser is Debian's `chromium`, driven through its command line only (`--dump-dom`,
`--screenshot`). `.ci/run` installs it; without it the browser tests skip locally and fail
under CI=true.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import IN_CI
from typer.testing import CliRunner

from recoworld.agents.baselines import GreedyRelevanceRecommender
from recoworld.catalog import Catalog
from recoworld.cli import app
from recoworld.config import WorldConfig
from recoworld.evaluation.exits import exit_counts
from recoworld.evaluation.html_report import journey_data, load_run, write_report
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.evaluation.trajectory import MINDSET_COLUMNS, SCHEMA

WORLD = {"slate_size": 3, "n_candidates": 12, "horizon_days": 4, "expose_mindset": True,
         "catalog": {"n_items": 600, "seed": 3}}


class TracedGreedy(GreedyRelevanceRecommender):
    """Greedy, with a ToolRec-like trace of each decision (what the report shows under a slate)."""

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        slate = super().act(observation, info)
        self.last_trace = {"tool_calls": [{"name": "search_items", "arguments": {"topic": "cooking"}}],
                           "reasoning": "the user <b>likes</b> cooking </script>"}
        return slate


def _agent(name: str, catalog: Catalog, k: int, seed: int | None) -> Any:
    return TracedGreedy(k, seed) if name == "traced" else GreedyRelevanceRecommender(k, seed)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = SimulationConfig(n_users=5, agents=["greedy", "traced"], seed=2, world=WorldConfig(**WORLD))
    simulate(cfg, catalog=catalog, out=out, build_agent=_agent)
    return out


@pytest.fixture(scope="module")
def crowded_dir(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Path:
    """Users with about twenty sessions in 40 days: their timeline has gaps a few pixels apart."""
    out = tmp_path_factory.mktemp("crowded")
    world = WorldConfig(**{**WORLD, "horizon_days": 40, "expose_mindset": False})
    simulate(SimulationConfig(n_users=4, agents=["greedy"], seed=1, world=world), catalog=catalog, out=out)
    return out


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if IN_CI:
            pytest.fail("CI installs Debian's chromium (.ci/run), but no chromium is on PATH")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _browser(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--virtual-time-budget=5000", f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def _body(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom)
    assert tag, dom[:500]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


def _dom(exe: str, tmp: Path, url: str) -> tuple[str, dict[str, str]]:
    """The page's DOM after its script ran, and its body's attributes; the script must have raised nothing."""
    done = _browser(exe, tmp, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    dom, body = done.stdout, _body(done.stdout)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert body.get("data-js-errors") == "0", errors.group(1) if errors else dom[:2000]
    return dom, body


def _turns(run_dir: Path) -> pd.DataFrame:
    """One row per turn of every recommender of a `simulate` folder."""
    frames = [pd.read_parquet(p) for p in sorted((run_dir / "trajectories").glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True).drop_duplicates(["recommender", "user_id", "step"])


def test_trajectories_carry_the_mindset_only_when_exposed(run_dir: Path, catalog: Catalog) -> None:
    frame = pd.read_parquet(run_dir / "trajectories" / "greedy.parquet")
    assert list(frame.columns) == [*SCHEMA.names, *(c.name for c in MINDSET_COLUMNS)]
    assert frame["satisfaction"].notna().all() and frame["fatigue"].between(0, 10).all()
    plain = simulate(SimulationConfig(n_users=2, agents=["greedy"], world=WorldConfig(**{**WORLD,
                                                                                         "expose_mindset": False})),
                     catalog=catalog)
    assert list(plain.trajectories.columns) == SCHEMA.names


def test_report_is_self_contained_and_holds_the_journeys(run_dir: Path, tmp_path: Path) -> None:
    path = write_report(run_dir, tmp_path / "r.html", max_users=3)
    page = path.read_text()
    # nothing is fetched: no external scripts, styles, images or URLs other than the SVG namespace
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=", page)
    assert set(re.findall(r"https?://[^\s\"'<)]+", page)) <= {"http://www.w3.org/2000/svg"}
    blob = re.search(r'<script type="application/json" id="journey-data">(.*?)</script>', page, re.S)
    assert blob and "</script" not in blob.group(1)
    data = json.loads(blob.group(1))
    assert data["recommenders"] == ["greedy", "traced"] and data["mindset"] is True
    assert data["shown"] == {"greedy": 3, "traced": 3} and data["total"] == {"greedy": 5, "traced": 5}
    assert "at most 3 users per recommender" in page
    run = load_run(run_dir)
    assert run.catalog is not None, run.catalog_note  # rebuilt from the manifest's config: titles, topic names
    item = next(iter(data["items"]))
    assert data["items"][item][0] == str(run.catalog.titles[int(item)])
    traced = [t[9] for u in data["users"]["traced"] for t in u["turns"]]
    assert all(t["tool_calls"][0]["name"] == "search_items" for t in traced)
    assert all(t[9] is None for u in data["users"]["greedy"] for t in u["turns"])
    # the summary and segment tables and the three charts
    assert page.count("<svg class=\"chart\"") == 3 and "retention ± 95% CI" in page and "Per segment" in page
    assert journey_data(run, 10)["shown"] == {"greedy": 5, "traced": 5}


def test_report_cli_and_its_bad_inputs(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.html").is_file() and str(tmp_path / "x.html") in result.output.replace("\n", "")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        result = CliRunner().invoke(app, ["report", str(bad)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "has no trajectories" in CliRunner().invoke(app, ["report", str(tmp_path / "empty")]).output


def test_report_renders_in_chromium_without_errors(run_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    path = write_report(run_dir, tmp_path / "report.html")
    frame = pd.read_parquet(run_dir / "trajectories" / "greedy.parquet")
    first = frame["user_id"].iloc[0]
    sessions = frame.loc[frame["user_id"] == first, "session"].nunique()

    done = _browser(exe, tmp_path, "--dump-dom", path.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom, body = done.stdout, _body(done.stdout)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.S)
    assert body.get("data-js-errors") == "0", errors.group(1) if errors else dom[:2000]
    assert body.get("data-explorer-ready") == "1"
    # the default (first) user's journey, built by the page's script: one section per session
    assert body.get("data-explorer-rec") == "greedy" and body.get("data-explorer-user") == first
    assert len(re.findall(r'<section class="session"', dom)) == sessions == int(body["data-explorer-sessions"])
    assert len(re.findall(r'class="tl-session"', dom)) == sessions
    assert 'class="mindset-satisfaction"' in dom and 'class="mindset-fatigue"' in dom
    assert re.search(r'<option value="traced"', dom)

    # another user, chosen through the URL: the trace is shown under its slates (escaped, not parsed)
    traced = pd.read_parquet(run_dir / "trajectories" / "traced.parquet")
    other = traced["user_id"].unique()[2]
    done = _browser(exe, tmp_path, "--dump-dom", f"{path.as_uri()}#rec=traced&user={other}")
    body = _body(done.stdout)
    assert body.get("data-js-errors") == "0" and body.get("data-explorer-user") == other
    assert int(body["data-explorer-sessions"]) == traced.loc[traced["user_id"] == other, "session"].nunique()
    assert body.get("data-scrolled-to") == "journeys" and int(body["data-scroll-y"]) > 0
    assert "recommender trace" in done.stdout and "search_items" in done.stdout
    assert "&lt;b&gt;likes&lt;/b&gt;" in done.stdout

    shot = tmp_path / "report.png"
    done = _browser(exe, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", path.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_bench_writes_a_report_per_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "--scenarios", "cold-start", "--agents", "random", "--users", "4",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / "cold-start" / "report.html").read_text()
    assert "report.html" in result.output and 'id="journey-data"' in page  # the command names its report
    assert "Titles and topics: the catalog rebuilt" in page  # the scenario's synthetic catalog, fingerprint-checked


def test_why_users_left_panel_counts_reasons_and_quotes_the_users(run_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    path = write_report(run_dir, tmp_path / "report.html")
    dom, body = _dom(exe, tmp_path, path.as_uri())
    assert "data-scrolled-to" not in body  # without a journey in the address the page stays at its top
    panel = re.search(r'<h2 id="why-left">Why users left</h2>(.*?)<h2 id="journeys"', dom, re.S)
    assert panel, "no why-users-left panel"
    text = panel.group(1)
    turns = _turns(run_dir)
    left = turns[turns["left"]]
    assert len(left) and left["exit_text"].notna().all()
    # a row per recommender, each reason counted as the trajectories hold it
    counts = exit_counts(turns)
    for rec in ("greedy", "traced"):
        row = re.search(rf'<tr data-rec="{rec}">(.*?)</tr>', text, re.S)
        assert row, rec
        cells = dict(re.findall(r'data-reason="(\w+)" data-count="(\d+)"', row.group(1)))
        assert cells == {r: str(n) for r, n in counts.loc[rec].items() if counts[r].sum()}
        assert row.group(1).startswith(f"<th>{rec}</th><td>{int((left['recommender'] == rec).sum())}</td>")
    # the users' own words render as quotes, every quote is words a user said, and every reason is quoted
    quoted = {html.unescape(q) for q in re.findall(r'<q class="exit-text">(.*?)</q>', text)}
    assert quoted and quoted <= set(left["exit_text"])
    assert set(left["exit_text"]) <= quoted  # parametric users: one sentence per reason
    interviews = {html.unescape(q) for q in re.findall(r'<q class="interview">(.*?)</q>', text)}
    assert interviews and interviews <= set(left["interview"].dropna())


def test_a_quote_opens_its_journey_where_the_user_left(run_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    path = write_report(run_dir, tmp_path / "report.html")
    page = path.read_text()
    links = re.findall(r'<a class="journey-link" href="(#rec=traced&amp;user=[^"]+)">', page)
    assert links
    link = html.unescape(links[-1])
    wanted = dict(kv.split("=", 1) for kv in link[1:].split("&"))
    dom, body = _dom(exe, tmp_path, path.as_uri() + link)
    # the link selects the journey and scrolls the page to the session where those words were said
    assert body.get("data-explorer-rec") == "traced" and body.get("data-explorer-user") == wanted["user"]
    assert body.get("data-scrolled-to") == f"session-{wanted['session']}" and int(body["data-scroll-y"]) > 1000
    turns = _turns(run_dir)
    exit_ = turns[(turns["recommender"] == "traced") & (turns["user_id"] == wanted["user"])
                  & (turns["session"] == int(wanted["session"])) & turns["left"]].iloc[0]
    section = re.search(rf'<section class="session" id="session-{wanted["session"]}"(.*?)</section>', dom, re.S)
    assert section
    where = section.group(1)
    # where the user left: the reason, their words and the interview, as the trajectories hold them
    assert f'{exit_["exit_reason"]}</span>' in where and f"({exit_['exit_reason']})" in where
    assert f'<q class="exit-text">{html.escape(exit_["exit_text"], quote=False)}</q>' in where
    assert f"Interview: {int(exit_['interview_score'])}/5" in where
    assert f'<q class="interview">{html.escape(exit_["interview"], quote=False)}</q>' in where
    # its reward shows the session-end term apart from what the slate earned
    term = "churn penalty" if exit_["churned"] else "return bonus"
    assert f"{term} (session end)" in where
    assert f"reward {exit_['turn_reward']:.2f}" in where


def test_timeline_gap_labels_do_not_overlap(crowded_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    path = write_report(crowded_dir, tmp_path / "report.html")
    turns = _turns(crowded_dir)
    # the user whose gaps lie closest together on the 1,100-pixel timeline
    def closest(f: pd.DataFrame) -> float:
        s = f.groupby("session")["time_days"].agg(["first", "last"])
        mids = (s["last"].to_numpy()[:-1] + s["first"].to_numpy()[1:]) / 2
        return float(np.diff(mids).min()) if len(mids) > 1 else np.inf
    user = min(turns["user_id"].unique(), key=lambda u: closest(turns[turns["user_id"] == u]))
    dom, body = _dom(exe, tmp_path, f"{path.as_uri()}#rec=greedy&user={user}")
    assert body.get("data-explorer-user") == user
    labels = [(float(x), float(y), float(w)) for x, y, w in
              re.findall(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="middle" class="tl-gap" data-width="([\d.]+)"',
                         dom)]
    assert len(labels) >= 5 and min(w for _, _, w in labels) > 0
    # in one row the labels would collide: two neighbours are closer than their half-widths
    xs = sorted(labels)
    assert any(b[0] - a[0] < (a[2] + b[2]) / 2 for a, b in pairwise(xs))
    # as laid out, no two labels of a row overlap
    for row in {y for _, y, _ in labels}:
        placed = sorted((x, w) for x, y, w in labels if y == row)
        for (xa, wa), (xb, wb) in pairwise(placed):
            assert xa + wa / 2 <= xb - wb / 2, (row, xa, wa, xb, wb)
