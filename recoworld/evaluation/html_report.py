"""`recoworld report RUN_DIR`: one self-contained HTML file about a run, opened from disk.

No network, no CDN: the CSS and JS are inline, the charts are SVG written here, and the
journey explorer's data is one JSON block in the page. The page holds

- the summary table (`metrics.summarize`) with 95% CIs;
- retention per recommender (bars with CIs, on an axis zoomed to the data when that shows
  differences a 0-1 axis hides, and says so), the share of users active on each day and the
  share not yet churned on each day;
- per-segment retention and CTR;
- why users left (`recoworld.evaluation.exits`): per recommender the ended sessions by exit
  reason (share and count), those after which the user never came back, the mean interview
  score, and the users' own words per reason, each linked to a journey that said them;
- a user journey explorer: pick a recommender and a user and see the timeline of sessions
  and gaps, every slate with its items (title and topic name when the catalog can be
  rebuilt, else item ids), reactions, dwell and instructions, where the user left with
  the reason, their words and the interview, the reward's session-end term apart from
  what the slate earned, the recommender's traces (ToolRec's tool calls) and, for runs
  made with `expose_mindset`, the satisfaction and fatigue curves.
  `report.html#rec=NAME&user=ID[&session=N]` selects a journey and scrolls to it.

It reads a `simulate` folder (`trajectories/<agent>.parquet`, each bench scenario's folder)
or a study folder (`trajectories.parquet`; recommenders are shown per arm). At most
`max_users` users per recommender go into the explorer (the page says so); the tables and
charts use every user.

A study's trajectories can be far larger than memory, so the page never holds them: it reads
one part at a time (`Part`: an agent's file, or the row groups of one shard of a study, found
from the footer's statistics of `shard`) with only the columns its figures need, and reduces
each to a `recoworld.evaluation.digest.Digest` keyed by recommender and segment (the summary,
the per-segment CTR, users active and users not churned per day, the exits' table). Then it
reads the rows of the explorer's users alone, filtered a record batch at a time. What it holds
is that digest, the episodes (one row per user and recommender run) and the explorer's rows;
the page is the one the whole frame gives (tests/test_report_streaming.py).

Script errors are recorded into the DOM (`<body data-js-errors>`, `#js-errors`), so a headless
browser can check the page.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recoworld.catalog import Catalog
from recoworld.config import RewardConfig
from recoworld.envs.observation import return_reward
from recoworld.errors import RecoWorldError
from recoworld.evaluation.axes import value_axis, zoom_note
from recoworld.evaluation.digest import COLUMNS, Digest
from recoworld.evaluation.exits import (
    MEANING,
    REASONS,
    UNSTATED,
    exit_counts_of,
    exit_overview_of,
    exit_quotes_of,
    exit_shares,
    interview_means_of,
)
from recoworld.stats import mean_ci

#: users per recommender embedded in the journey explorer
MAX_USERS = 100
REPORT = "report.html"
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD")


class ReportError(RecoWorldError):
    """The folder cannot be reported on (no trajectories, unreadable files)."""


#: What the page reads of every trajectory row besides the digest's columns (`recoworld.evaluation.digest.COLUMNS`):
#: the items (checked against the catalog), their topics (named when no catalog is had) and the mindset (whether
#: to draw its curves); and `turn_reward` where a folder has no episodes (they are rebuilt).
SCAN_COLUMNS = ("item", "topic", "satisfaction")
#: What the journey explorer shows of its users' rows.
JOURNEY_COLUMNS = ("recommender", "arm", "user_id", "segment", "session", "turn", "step", "position", "time_days",
                   "turn_reward", "instruction", "left", "return_gap_days", "churned", "intent_match", "agent_trace",
                   "exit_reason", "exit_text", "interview_score", "interview", "item", "topic", "reaction",
                   "dwell_min", "satisfaction", "fatigue")
#: What the page reads of the episodes (one row per user and recommender run).
EPISODE_COLUMNS = ("recommender", "arm", "user_id", "segment", "retention", "sessions", "churned", "total_reward",
                   "fallback_turns", "days_active")


@dataclass(frozen=True)
class Part:
    """Trajectory rows of whole users, read as one frame: a file (an agent's, in a `simulate` folder) or the row
    groups of whole shards of a study's `trajectories.parquet` (a shard's users are nobody else's)."""

    path: Path
    row_groups: tuple[int, ...]
    rows: int

    def read(self, columns: Sequence[str]) -> pd.DataFrame:
        """The part's rows, with only those of `columns` the file has."""
        try:
            file = pq.ParquetFile(self.path)
            return file.read_row_groups(list(self.row_groups), columns=_present(file, columns)).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as err:
            raise ReportError(f"cannot read trajectories: {err}") from None

    def rows_of(self, users: Collection[str], columns: Sequence[str]) -> pd.DataFrame:
        """The rows of `users` only, filtered one record batch at a time: the part is never whole in memory."""
        try:
            file = pq.ParquetFile(self.path)
            wanted = pa.array(sorted(users), pa.string())
            batches = [batch.filter(pc.is_in(batch.column("user_id"), value_set=wanted))
                       for batch in file.iter_batches(row_groups=list(self.row_groups),
                                                      columns=_present(file, columns))]
            return pa.Table.from_batches(batches).to_pandas()
        except (OSError, ValueError, pa.ArrowException) as err:
            raise ReportError(f"cannot read trajectories: {err}") from None


def _present(file: pq.ParquetFile, columns: Sequence[str]) -> list[str]:
    return [c for c in dict.fromkeys(columns) if c in file.schema_arrow.names]


def _parts(path: Path) -> list[Part]:
    """A trajectory file cut into parts of whole users: one per run of row groups that holds whole shards, read
    from the footer's statistics of `shard` (a study writes each shard as row groups of its own, in shard order);
    the whole file when it has no shards (a `simulate` agent's file) or does not say which row group holds which."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ReportError(f"cannot read trajectories: {err}") from None
    whole = [Part(path, tuple(range(meta.num_row_groups)), meta.num_rows)] if meta.num_row_groups else []
    if meta.num_row_groups < 2:
        return whole
    first = meta.row_group(0)
    shard = next((j for j in range(first.num_columns) if first.column(j).path_in_schema == "shard"), None)
    if shard is None:
        return whole
    groups: list[list[int]] = []
    low = top = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(shard).statistics
        if stats is None or not stats.has_min_max or (low is not None and stats.min < low):
            return whole  # no statistics, or not in shard order: a shard could span parts
        if top is not None and stats.min <= top:
            groups[-1].append(g)  # a shard that began in the group before
        else:
            groups.append([g])
        low, top = stats.min, stats.max if top is None else max(top, stats.max)
    return [Part(path, tuple(g), sum(meta.row_group(i).num_rows for i in g)) for g in groups]


@dataclass
class RunData:
    """What the page shows of a run, gathered one part of its trajectories at a time (`load_run`): no more than
    the digest (sums per recommender and segment, users active and users gone per day, the exits' table), the
    episodes, and every row of the journey explorer's users, at most `max_users` per recommender."""

    path: Path
    digest: Digest
    recommenders: list[str]  # in the page's order: the manifest's agents first, then as they appear
    journeys: pd.DataFrame  # the explorer's users' rows, in the trajectories' order
    episodes: pd.DataFrame
    manifest: dict[str, Any]
    horizon_days: int
    catalog: Catalog | None
    catalog_note: str
    mindset: bool  # the run exposed the mindset (satisfaction and fatigue)
    topics: int  # topic indices seen: 1 + the largest
    max_users: int


# ---------------------------------------------------------------------------------------------- loading


def _read(paths: list[Path], what: str, columns: Sequence[str]) -> pd.DataFrame:
    try:
        frames = []
        for p in paths:
            file = pq.ParquetFile(p)
            frames.append(file.read(_present(file, columns)).to_pandas())
    except Exception as err:  # any unreadable file is one line naming it
        raise ReportError(f"cannot read {what}: {err}") from None
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _world_config(manifest: dict[str, Any]) -> dict[str, Any]:
    identity = manifest.get("identity") or {}
    config = identity.get("config") or manifest.get("spec") or {}
    return config.get("world") or {} if isinstance(config, dict) else {}


def load_catalog(path: Path, manifest: dict[str, Any], catalog: str | Path | None = None) -> tuple[Catalog | None, str]:
    """The run's catalog, for titles and topic names: `catalog` if given, else the one its inputs or
    config name (a synthetic catalog is rebuilt from its config and checked against the manifest's
    fingerprint). None (with why) when it cannot be had cheaply: then the page shows item ids. A
    `catalog` asked for by name that cannot be read is a `ReportError`: a report without what was asked
    for, and a success status, would hide it in a sentence of the page."""
    from recoworld.evaluation.run_folder import catalog_fingerprint

    if catalog is not None:
        try:
            return Catalog.from_parquet(catalog), f"catalog {catalog}"
        except (OSError, ValueError, RecoWorldError) as err:
            raise ReportError(f"--catalog {catalog}: not loaded ({err})") from None
    inputs = manifest.get("inputs") or {}
    expected = (manifest.get("identity") or {}).get("catalog")
    try:
        if (path / "catalog.parquet").is_file():
            return Catalog.from_parquet(path / "catalog.parquet"), "catalog.parquet of the run"
        if "catalog" in inputs:
            return Catalog.from_parquet(inputs["catalog"]), f"catalog {inputs['catalog']}"
        calibrated = inputs.get("calibrated")
        if calibrated and (Path(calibrated) / "catalog.parquet").is_file():
            return Catalog.from_parquet(Path(calibrated) / "catalog.parquet"), f"catalog of {calibrated}"
        world = _world_config(manifest)
        source = f" (the run's inputs: {', '.join(sorted(inputs))})" if inputs else ""
        if "catalog" not in world:
            return None, f"items shown by id: no manifest names the catalog{source}; give --catalog"
        from recoworld.catalog import cached_catalog
        from recoworld.config import CatalogConfig

        cat = cached_catalog(CatalogConfig.model_validate(world["catalog"]))
        if (expected and catalog_fingerprint(cat) != expected) or (not expected and inputs):
            return None, f"items shown by id: the catalog is not the config's synthetic one{source}; give --catalog"
        return cat, "Titles and topics: the catalog rebuilt from the run's config"
    except (OSError, ValueError, RecoWorldError) as err:
        return None, f"items shown by id: catalog not loaded ({err})"


def load_run(path: str | Path, catalog: str | Path | None = None, max_users: int = MAX_USERS) -> RunData:
    """What the page needs of a run folder, its trajectories read one part at a time (`Part`: an agent's file,
    or a study's shard) with only the columns the digest needs, then the rows of the explorer's users (the first
    `max_users` of each recommender) alone; a folder without trajectories is a `ReportError`."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    files = sorted((path / "trajectories").glob("*.parquet")) if (path / "trajectories").is_dir() else []
    if not files and (path / "trajectories.parquet").is_file():
        files = [path / "trajectories.parquet"]
    if not files:
        raise ReportError(f"{path} has no trajectories: expected trajectories/<agent>.parquet "
                          "(recoworld simulate --out, a bench scenario) or trajectories.parquet (a study)")
    parts = [part for file in files for part in _parts(file)]
    if not sum(part.rows for part in parts):
        raise ReportError(f"{path}: its trajectories hold no rows")
    manifest = _manifest(path)
    order = list(((manifest.get("identity") or {}).get("config") or {}).get("agents") or [])
    if (path / "episodes").is_dir() and any((path / "episodes").glob("*.parquet")):
        eps = _read(sorted((path / "episodes").glob("*.parquet")), "episodes", EPISODE_COLUMNS)
    elif (path / "episodes.parquet").is_file():
        eps = _read([path / "episodes.parquet"], "episodes", EPISODE_COLUMNS)
    else:
        eps = pd.DataFrame()
    scan = _Scan(parts, max_users, _has_arms(parts), rebuild_episodes=eps.empty)
    digest = Digest.of(scan.frames(), keys=("recommender", "segment"))
    if eps.empty:
        eps = scan.episodes()
    if scan.arms and "arm" in eps:
        eps = eps.assign(recommender=eps["recommender"] + " / " + eps["arm"])
    rank = {n: i for i, n in enumerate(order)}
    names = sorted(digest.labels(), key=lambda n: rank.get(n, len(rank)))
    world = _world_config(manifest)
    horizon = world.get("horizon_days") or scan.max_time
    cat, note = load_catalog(path, manifest, catalog)
    if cat is not None and scan.max_item >= len(cat):
        if catalog is not None:
            raise ReportError(f"--catalog {catalog}: {len(cat)} items, but the run shows item "
                              f"{scan.max_item}; give the catalog the run played on")
        cat, note = None, "items shown by id: the catalog is smaller than the items shown"
    return RunData(path, digest, names, scan.journeys(), eps, manifest, max(1, math.ceil(horizon)), cat, note,
                   scan.mindset, scan.max_topic + 1, max_users)


def _has_arms(parts: list[Part]) -> bool:
    """Whether a row names an arm other than `baseline` (a study's): then each recommender and arm is a row of
    its own, "greedy / with". Reads the `arm` column alone, a part at a time."""
    for part in parts:
        arms = part.read(["arm"])
        if "arm" not in arms:
            return False
        if set(arms["arm"].dropna()) - {"baseline"}:
            return True
    return False


class _Scan:
    """One pass over a run's trajectory parts for `Digest.of` (`frames`), which keeps on the way what the page
    needs beyond the digest: the largest item, topic and time, whether the mindset was exposed, each
    recommender's first `max_users` users and the part that holds them, and (for a folder without episodes)
    each part's per-user rows."""

    def __init__(self, parts: list[Part], max_users: int, arms: bool, rebuild_episodes: bool) -> None:
        self.parts, self.max_users, self.arms, self.rebuild = parts, max_users, arms, rebuild_episodes
        self.max_item, self.max_topic, self.max_time, self.mindset = -1, -1, 0.0, False
        self.chosen: dict[str, dict[str, int]] = {}  # recommender -> the explorer's users -> their part
        self._episodes: list[pd.DataFrame] = []

    def frames(self) -> Iterator[pd.DataFrame]:
        """Each part's rows, with only the digest's and `SCAN_COLUMNS`, labelled by recommender (and arm)."""
        columns = [*COLUMNS, *SCAN_COLUMNS, *(("turn_reward",) if self.rebuild else ())]
        for i, part in enumerate(self.parts):
            if not part.rows:
                continue
            traj = part.read(columns)
            self.max_item = max(self.max_item, int(traj["item"].max()))
            self.max_topic = max(self.max_topic, int(traj["topic"].max()))
            self.max_time = max(self.max_time, float(traj["time_days"].max()))
            self.mindset = self.mindset or ("satisfaction" in traj and bool(traj["satisfaction"].notna().any()))
            if self.rebuild:
                self._episodes.append(_episode_rows(traj))
            traj = _label_arms(traj) if self.arms else traj
            for rec, users in traj.groupby("recommender", sort=False)["user_id"]:
                chosen = self.chosen.setdefault(rec, {})
                if len(chosen) < self.max_users:
                    for user in users.unique():
                        if len(chosen) >= self.max_users:
                            break
                        chosen.setdefault(user, i)
            yield traj

    def episodes(self) -> pd.DataFrame:
        """The rebuilt episodes, their retention over the horizon the trajectories reached."""
        eps = pd.concat(self._episodes, ignore_index=True)
        eps["retention"] = eps["days_active"] / max(1, math.ceil(self.max_time))
        return eps

    def journeys(self) -> pd.DataFrame:
        """Every row of the explorer's users, read from the parts that hold them, in the trajectories' order."""
        frames = []
        for i, part in enumerate(self.parts):
            wanted = {user for chosen in self.chosen.values() for user, at in chosen.items() if at == i}
            if not wanted:
                continue
            rows = part.rows_of(wanted, JOURNEY_COLUMNS)
            rows = _label_arms(rows) if self.arms else rows
            keep = [user in self.chosen.get(rec, {}) for rec, user in zip(rows["recommender"], rows["user_id"])]
            frames.append(rows[keep])
        return pd.concat(frames, ignore_index=True)


def _label_arms(traj: pd.DataFrame) -> pd.DataFrame:
    """In a study, one recommender plays several arms: each (recommender, arm) is a row of its own."""
    return traj.assign(recommender=traj["recommender"] + " / " + traj["arm"])


def _episode_rows(traj: pd.DataFrame) -> pd.DataFrame:
    """Per-user rows rebuilt from a part of the trajectories when a folder has no episodes file (their
    `retention` is set once the horizon the trajectories reached is known)."""
    turns = traj.drop_duplicates(["recommender", "user_id", "step"])
    g = turns.groupby(["recommender", "user_id"], sort=False)
    return g.agg(segment=("segment", "first"), total_reward=("turn_reward", "sum"), churned=("churned", "any"),
                 sessions=("session", "max"), days_active=("day", "nunique"), turns=("step", "max")).reset_index()


# ---------------------------------------------------------------------------------------------- SVG charts


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _text_width(text: str, size: float = 10.5) -> float:
    """A generous width in pixels of a label (DejaVu Sans averages 0.6 em a character): the charts are laid out
    here, before any browser measures them, and a label must never be cut to fit."""
    return 0.62 * size * len(text)


def bar_chart(names: list[str], values: list[float], ci: list[float], title: str, ylabel: str) -> str:
    """Bars with 95% CIs on an axis zoomed to the data (`recoworld.evaluation.axes`): retention that differs
    by 0.02 around 0.4 must look different. A zoomed axis says so beside its label and breaks at its foot;
    each bar carries its value, and names are written whole (slanted when wider than a bar)."""
    err = [c if c == c else 0.0 for c in ci]
    axis = value_axis([v - c for v, c in zip(values, err)], [v + c for v, c in zip(values, err)])
    span = axis.top - axis.bottom
    left, top = 62, 28
    w = max(460, left + 12 + 64 * len(names))
    pw, ph = w - left - 12, 176
    bw = pw / max(len(names), 1)
    longest = max((_text_width(n) for n in names), default=0.0)
    slant = longest > bw * 0.95
    bottom = 20 + (longest * 0.72 + 8 if slant else 14)
    h = int(top + ph + bottom)
    digits = axis.decimals()

    def y(v: float) -> float:
        return top + ph - (min(max(v, axis.bottom), axis.top) - axis.bottom) / span * ph

    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'data-axis-bottom="{axis.bottom:g}" data-axis-top="{axis.top:g}">',
             f'<text x="{w / 2}" y="16" class="title">{_esc(title)}</text>']
    for t in axis.ticks():
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y(t) + 3:.1f}" class="tick" text-anchor="end">{t:.{digits}f}</text>')
    if axis.zoomed:  # the axis' foot is broken: the bars do not start at zero
        foot = top + ph
        parts.append(f'<path d="M{left - 6} {foot - 2}l12 -5M{left - 6} {foot + 3}l12 -5" class="break"/>')
    for i, (name, v, c) in enumerate(zip(names, values, err)):
        if v != v:
            continue
        x, yv = left + i * bw + bw * 0.15, y(v)
        cx = x + bw * 0.35
        parts.append(f'<rect x="{x:.1f}" y="{yv:.1f}" width="{bw * 0.7:.1f}" height="{top + ph - yv:.1f}" '
                     f'fill="{_color(i)}"><title>{_esc(name)}: {v:.3f} ± {c:.3f}</title></rect>')
        if c > 0:
            y0, y1 = y(v - c), y(v + c)
            parts.append(f'<path d="M{cx - 5:.1f} {y0:.1f}H{cx + 5:.1f}M{cx:.1f} {y0:.1f}V{y1:.1f}'
                         f'M{cx - 5:.1f} {y1:.1f}H{cx + 5:.1f}" class="err"/>')
        parts.append(f'<text x="{cx + 7:.1f}" y="{yv - 3:.1f}" class="tick value">{v:.3f}</text>')
        ty = top + ph + 14
        turn = f' transform="rotate(-45 {cx:.1f} {ty})"' if slant else ""
        parts.append(f'<text x="{cx:.1f}" y="{ty}" class="tick name" text-anchor="{"end" if slant else "middle"}"'
                     f'{turn}>{_esc(name)}</text>')
    mid = top + ph / 2
    parts.append(f'<text x="12" y="{mid}" class="tick" transform="rotate(-90 12 {mid})" '
                 f'text-anchor="middle">{_esc(ylabel)}</text>')
    if axis.zoomed:
        parts.append(f'<text x="25" y="{mid}" class="tick zoom-note" transform="rotate(-90 25 {mid})" '
                     f'text-anchor="middle">{_esc(zoom_note(axis))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(series: dict[str, list[float]], title: str, xlabel: str, ylabel: str) -> str:
    """Lines of shares (0-1) by day, with a legend that names every series whole: the chart widens for long
    names ("diverse / without") instead of cutting them into another series' name."""
    legend = max(110.0, max((_text_width(n) for n in series), default=0.0) + 34)
    w, h, left, bottom, top = int(350 + legend), 260, 48, 40, 28
    pw, ph = w - left - legend, h - bottom - top
    n = max((len(v) for v in series.values()), default=1)
    xmax = max(n - 1, 1)
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">',
             f'<text x="{w / 2}" y="16" class="title">{_esc(title)}</text>']
    for t in np.linspace(0, 1, 5):
        y = top + ph - t * ph
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{y + 3:.1f}" class="tick" text-anchor="end">{t:.2f}</text>')
    for d in range(0, n, max(1, n // 6)):
        x = left + d / xmax * pw
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 14}" class="tick" text-anchor="middle">{d}</text>')
    for i, (name, values) in enumerate(series.items()):
        pts = " ".join(f"{left + d / xmax * pw:.1f},{top + ph - min(max(v, 0), 1) * ph:.1f}"
                       for d, v in enumerate(values))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{_color(i)}" stroke-width="2">'
                     f'<title>{_esc(name)}</title></polyline>')
        ly = top + 10 + i * 16
        parts.append(f'<rect x="{left + pw + 10}" y="{ly - 8}" width="10" height="10" fill="{_color(i)}"/>'
                     f'<text x="{left + pw + 24}" y="{ly + 1}" class="tick legend-name">{_esc(name)}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{h - 6}" class="tick" text-anchor="middle">{_esc(xlabel)}</text>'
                 f'<text x="12" y="{top + ph / 2}" class="tick" transform="rotate(-90 12 {top + ph / 2})" '
                 f'text-anchor="middle">{_esc(ylabel)}</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- tables

SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("users", "users", "{:.0f}"),
    ("ctr", "CTR", "{:.3f}"),
    ("dwell_min_per_user", "dwell min/user", "{:.1f}"),
    ("session_length", "turns/session", "{:.2f}"),
    ("sessions_per_user", "sessions/user", "{:.1f}"),
    ("mean_return_gap", "return gap (d)", "{:.2f}"),
    ("churn_rate", "churn", "{:.2f}"),
    ("instruction_rate", "instr. rate", "{:.3f}"),
    ("instruction_following", "instr. follow", "{:.2f}"),
    ("diversity", "diversity", "{:.3f}"),
    ("novelty", "novelty (bits)", "{:.2f}"),
    ("return_per_user", "return/user", "{:.1f}"),
)


def _fmt(value: Any, fmt: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def summary_html(summary: pd.DataFrame, episodes: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for _, h, _ in SUMMARY_COLUMNS)
    rows = []
    best = summary["retention"].max()
    for _, r in summary.iterrows():
        eps = episodes[episodes["recommender"] == r["recommender"]] if "recommender" in episodes else episodes
        ret, ret_ci = mean_ci(eps["total_reward"]) if "total_reward" in eps else (float("nan"), float("nan"))
        cells = "".join(f"<td>{_fmt(r[c], f)}</td>" for c, _, f in SUMMARY_COLUMNS if c != "return_per_user")
        cls = ' class="best"' if r["retention"] == best else ""
        rows.append(f"<tr{cls}><th>{_esc(r['recommender'])}</th>"
                    f"<td>{_fmt(r['retention'], '{:.3f}')} ± {_fmt(r['retention_ci'], '{:.3f}')}</td>{cells}"
                    f"<td>{_fmt(ret, '{:.1f}')} ± {_fmt(ret_ci, '{:.1f}')}</td></tr>")
    return (f'<table class="data"><thead><tr><th>recommender</th><th>retention ± 95% CI</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def segments_html(digest: Digest, episodes: pd.DataFrame, recs: list[str]) -> str:
    """Retention (± 95% CI) and CTR per segment (rows) and recommender (columns), from a digest keyed by
    recommender and segment."""
    segs = sorted(episodes["segment"].dropna().unique()) if "segment" in episodes else []
    seen = digest.sums[["clicked", "reviewed"]]
    ctr = (seen["clicked"] / seen["reviewed"].where(seen["reviewed"] > 0)).dropna()
    head = "".join(f"<th>{_esc(r)}</th>" for r in recs)
    rows = []
    for seg in segs:
        cells = []
        for rec in recs:
            e = episodes[(episodes["recommender"] == rec) & (episodes["segment"] == seg)]
            m, c = mean_ci(e["retention"]) if len(e) else (float("nan"), float("nan"))
            cells.append(f"<td>{_fmt(m, '{:.3f}')} ± {_fmt(c, '{:.3f}')}<br><small>CTR "
                         f"{_fmt(float(ctr.get((rec, seg), float('nan'))), '{:.3f}')} · {len(e)} users</small></td>")
        rows.append(f"<tr><th>{_esc(seg)}</th>{''.join(cells)}</tr>")
    return (f'<table class="data seg"><thead><tr><th>segment</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


# ---------------------------------------------------------------------------------------------- why users left

#: One colour per exit reason, the same in the table, its bars and the journeys.
REASON_COLORS = {"bored": "#8172B3", "irrelevant": "#C44E52", "repetitive": "#DD8452", "out_of_time": "#4C72B0",
                 "satisfied": "#55A868", "other": "#937860", UNSTATED: "#8C8C8C"}


def journey_link(rec: str, user: str, session: int | None = None) -> str:
    """The page's own address of one journey (`#rec=...&user=...&session=...`), which selects and scrolls to it."""
    parts = [f"rec={quote(rec, safe='')}", f"user={quote(user, safe='')}"]
    if session is not None:
        parts.append(f"session={session}")
    return "#" + "&".join(parts)


def _share(share: float) -> str:
    """A share in whole percent, where one exit in 300 reads "<1%" rather than a 0% that hides it."""
    if share != share:
        return "–"
    return "<1%" if 0 < share < 0.005 else f"{share * 100:.0f}%"


def _mix_bar(counts: pd.Series, reasons: list[str]) -> str:
    """A recommender's exits as one 100% bar, a segment per reason."""
    total = int(counts.sum())
    if not total:
        return '<span class="note">no exits</span>'
    w, x, parts = 180.0, 0.0, ['<svg class="mix" width="180" height="12" viewBox="0 0 180 12" role="img">']
    for reason in reasons:
        part = w * int(counts[reason]) / total
        if part > 0:
            parts.append(f'<rect x="{x:.1f}" width="{part:.1f}" height="12" fill="{REASON_COLORS[reason]}">'
                         f"<title>{_esc(reason)}: {int(counts[reason])} of {total}</title></rect>")
            x += part
    return "".join(parts) + "</svg>"


def why_left_html(exits: pd.DataFrame, recommenders: list[str], embedded: dict[str, set[str]]) -> str:
    """The "why users left" panel of an `exit_table` (`recoworld.evaluation.exits`): per recommender the exits by
    reason (share and count, the largest share of each reason across recommenders marked), the share who left
    for good and the mean interview, then the users' own words per reason, each linked to a journey that said
    them when the explorer holds it."""
    counts = exit_counts_of(exits, recommenders)
    shares = exit_shares(counts)
    overview = exit_overview_of(exits, recommenders)
    means = interview_means_of(exits).reindex(index=recommenders)
    reasons = [r for r in REASONS if counts[r].sum() > 0]
    if not reasons:
        return '<p class="note" id="why-left-empty">No user ended a session in this run.</p>'
    head = "".join(f'<th><i class="swatch" style="background:{REASON_COLORS[r]}"></i>{_esc(r)}</th>'
                   for r in reasons)
    top = {r: shares[r].max() for r in reasons}
    rows = []
    for rec in recommenders:
        o = overview.loc[rec]
        cells = []
        for r in reasons:
            share, n = shares.at[rec, r], int(counts.at[rec, r])
            mark = ' class="most"' if share == share and share == top[r] and len(recommenders) > 1 else ""
            cells.append(f'<td{mark} data-reason="{_esc(r)}" data-count="{n}">{_share(share)} '
                         f"<small>({n})</small></td>")
        rows.append(f'<tr data-rec="{_esc(rec)}"><th>{_esc(rec)}</th><td>{int(o["exits"])}</td>'
                    f'<td>{int(o["left_for_good"])}</td><td>{_fmt(o["interview_mean"], "{:.2f}")}</td>'
                    f"<td>{_mix_bar(counts.loc[rec], reasons)}</td>{''.join(cells)}</tr>")
    table = (f'<table class="data exits"><thead><tr><th>recommender</th><th>sessions ended</th>'
             f"<th>left for good</th><th>interview (1-5)</th><th>mix</th>{head}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    meaning = "".join(f"<li><b>{_esc(r)}</b>: {_esc(MEANING[r])}</li>" for r in reasons)
    quotes = exit_quotes_of(exits)
    cards = []
    for rec in recommenders:
        said = quotes.get(rec, {})
        if not said:
            body = '<p class="note">No user left a session with words.</p>' if overview.at[rec, "exits"] else \
                '<p class="note">No user ended a session.</p>'
        else:
            items = []
            for reason, picked in said.items():
                n = int(counts.at[rec, reason])
                mean = means.at[rec, reason] if rec in means.index else float("nan")
                lines = []
                for q in picked:
                    if q.user_id in embedded.get(rec, set()):
                        who = (f'<a class="journey-link" href="{_esc(journey_link(rec, q.user_id, q.session))}">'
                               f"{_esc(q.user_id)}, session {q.session}</a>")
                    else:
                        who = f"{_esc(q.user_id)}, session {q.session}"
                    interview = "" if q.interview_score is None and q.interview is None else (
                        f' · interview {q.interview_score if q.interview_score is not None else "–"}/5'
                        + (f' <q class="interview">{_esc(q.interview)}</q>' if q.interview else ""))
                    lines.append(f'<li><q class="exit-text">{_esc(q.text)}</q> <small>×{q.count}</small> '
                                 f'<span class="who">— {who}{interview}</span></li>')
                items.append(f'<li class="reason" data-reason="{_esc(reason)}"><span class="exit-reason" '
                             f'style="border-color:{REASON_COLORS[reason]}">{_esc(reason)}</span> {n} exit'
                             f'{"" if n == 1 else "s"}, {_share(shares.at[rec, reason])}, '
                             f'mean interview {_fmt(mean, "{:.1f}")}<ul>{"".join(lines)}</ul></li>')
            body = f'<ul class="reasons">{"".join(items)}</ul>'
        cards.append(f'<div class="exit-quotes" data-rec="{_esc(rec)}"><h3>{_esc(rec)}</h3>{body}</div>')
    return (f'{table}<ul class="meaning note">{meaning}</ul>'
            f'<div class="quote-cards">{"".join(cards)}</div>')


# ---------------------------------------------------------------------------------------------- explorer data


def _num(v: Any, digits: int = 3) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else round(f, digits)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _int(v: Any) -> int | None:
    f = _num(v)
    return None if f is None else int(f)


def reward_config(manifest: dict[str, Any]) -> RewardConfig | None:
    """The run's reward weights, from its manifest's world config; None when the manifest has none (a study's)
    or it does not validate, since a guess at the weights would misstate the session-end term."""
    world = _world_config(manifest)
    if not world:
        return None
    try:
        return RewardConfig.model_validate(world.get("reward") or {})
    except ValueError:
        return None


def session_end_terms(turns: pd.DataFrame, reward: RewardConfig) -> list[float | None]:
    """Per turn row, the session-end term of its reward (`recoworld.envs.observation.return_reward`): the
    return bonus for its gap, or the churn penalty; None on turns the user did not leave."""
    left = turns["left"].astype(bool).to_numpy()
    gap = np.where(turns["churned"].astype(bool).to_numpy(), np.inf,
                   turns["return_gap_days"].to_numpy(np.float64, na_value=np.nan))
    terms = np.where(np.isnan(gap), 0.0, return_reward(reward, gap))  # no gap and no churn: nothing was added
    return [_num(t) if lft else None for t, lft in zip(terms.tolist(), left)]


def journey_data(run: RunData, max_users: int | None = None) -> dict[str, Any]:
    """The explorer's data: per recommender, up to `max_users` users (default and at most: the run's, those
    `load_run` kept), each a list of turns.

    A turn is `[session, turn, time_days, reward, instruction, left, gap, churned, intent_match,
    trace, items, reactions, dwell (tenths of a minute), satisfaction, fatigue, exit]`; `reactions`
    is one character per slot (`u` unseen, else the reaction code); `items` maps item ids to
    `[title, topic index]` and `topics` lists topic names. `exit`, on the turn a user left (null on
    the others, which keeps the page small), is `[exit_reason, exit_text, interview_score,
    interview, session_end]`: `session_end` is the part of `reward` the env added because the
    session ended (the return bonus, or the churn penalty), since without it a turn of ten skips
    would show a reward of 7 and nobody would know why; it is null when the run names no world
    config (`session_end_known` is then false and the page only says the reward includes it).
    """
    if max_users is None:
        max_users = run.max_users
    elif max_users > run.max_users:
        raise ValueError(f"max_users {max_users}: the run was loaded with the first {run.max_users} users of each "
                         "recommender; give load_run max_users")
    traj, mindset = run.journeys, run.mindset
    eps = run.episodes.set_index(["recommender", "user_id"]) if len(run.episodes) else None
    out: dict[str, Any] = {"recommenders": [], "users": {}, "shown": {}, "total": {}}
    used: set[int] = set()
    reward = reward_config(run.manifest)
    for rec in run.recommenders:
        frame = traj[traj["recommender"] == rec]
        keep = list(dict.fromkeys(frame["user_id"]))[:max_users]
        frame = frame[frame["user_id"].isin(set(keep))].sort_values(["user_id", "step", "position"], kind="stable")
        # one row per turn: where each (user, step) starts in the slot rows
        key = frame["user_id"].astype(str).to_numpy() + "\x1f" + frame["step"].astype(str).to_numpy()
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        bounds = np.r_[starts, len(frame)]
        items = frame["item"].to_numpy(np.int64)
        used.update(np.unique(items).tolist())
        reactions = frame["reaction"].to_numpy(np.int64)
        dwell = np.rint(frame["dwell_min"].to_numpy(np.float64) * 10).astype(np.int64)
        first = frame.iloc[starts]
        cols = {c: first[c].tolist() for c in ("user_id", "segment", "session", "turn", "time_days", "turn_reward",
                                               "instruction", "left", "return_gap_days", "churned", "intent_match",
                                               "agent_trace", "exit_reason", "exit_text", "interview_score",
                                               "interview")}
        ends = session_end_terms(first, reward) if reward is not None else [None] * len(starts)
        sat = first["satisfaction"].tolist() if mindset else [None] * len(starts)
        fat = first["fatigue"].tolist() if mindset else [None] * len(starts)
        users: list[dict[str, Any]] = []
        for k in range(len(starts)):
            a, b = bounds[k], bounds[k + 1]
            uid = cols["user_id"][k]
            if not users or users[-1]["id"] != uid:
                stats = {}
                if eps is not None and (rec, uid) in eps.index:
                    row = eps.loc[(rec, uid)]
                    row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
                    stats = {c: _num(row[c]) for c in ("retention", "sessions", "total_reward", "days_active")
                             if c in row}
                users.append({"id": uid, "segment": str(cols["segment"][k]), "stats": stats, "turns": []})
            trace, instruction = cols["agent_trace"][k], cols["instruction"][k]
            users[-1]["turns"].append([
                int(cols["session"][k]), int(cols["turn"][k]), _num(cols["time_days"][k], 4),
                _num(cols["turn_reward"][k]), instruction if isinstance(instruction, str) else None,
                int(bool(cols["left"][k])), _num(cols["return_gap_days"][k]), int(bool(cols["churned"][k])),
                _num(cols["intent_match"][k], 2), json.loads(trace) if isinstance(trace, str) else None,
                items[a:b].tolist(), "".join("u" if r < 0 else str(r) for r in reactions[a:b]),
                dwell[a:b].tolist(), _num(sat[k]), _num(fat[k]),
                [_text(cols["exit_reason"][k]), _text(cols["exit_text"][k]), _int(cols["interview_score"][k]),
                 _text(cols["interview"][k]), ends[k]] if cols["left"][k] else None,
            ])
        out["recommenders"].append(rec)
        out["users"][rec] = users
        out["shown"][rec], out["total"][rec] = len(keep), run.digest.users(rec)
    cat = run.catalog
    if cat is not None:
        out["topics"] = list(cat.topic_names)
        out["items"] = {str(i): [str(cat.titles[i]), int(cat.topic[i])] for i in sorted(used)}
    else:
        topics = traj.drop_duplicates("item").set_index("item")["topic"]
        out["topics"] = [f"topic {k}" for k in range(run.topics)]
        out["items"] = {str(i): [f"item {i}", int(topics.get(i, 0))] for i in sorted(used)}
    out["mindset"] = bool(mindset)
    out["session_end_known"] = reward is not None
    out["reason_colors"] = REASON_COLORS
    out["horizon"] = run.horizon_days
    out["max_users"] = max_users
    return out


def _json_for_script(data: Any) -> str:
    """JSON safe inside <script>: no `<`, so neither `</script>` nor `<!--` can end or open anything."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


# ---------------------------------------------------------------------------------------------- page


def build_report(run: RunData, max_users: int | None = None) -> str:
    """The page (see the module docstring): tables and charts from the run's digest and episodes, the explorer
    from its users' rows."""
    digest, eps, names = run.digest, run.episodes, run.recommenders
    summary = digest.summary(eps, names)
    charts = [
        bar_chart(names, summary["retention"].tolist(), summary["retention_ci"].tolist(),
                  "Retention per recommender (95% CI)", "share of days active"),
        line_chart({str(k): v.tolist() for k, v in digest.daily_activity(run.horizon_days)[names].items()},
                   "Daily active users", "day", "share of users active"),
        line_chart({str(k): v.tolist() for k, v in digest.not_churned(run.horizon_days)[names].items()},
                   "Users not churned", "day", "share of users"),
    ]
    data = journey_data(run, max_users)
    max_users = data["max_users"]
    embedded = {r: {u["id"] for u in data["users"][r]} for r in data["recommenders"]}
    why_left = why_left_html(digest.exits, data["recommenders"], embedded)
    capped = [f"{_esc(r)}: {data['shown'][r]} of {data['total'][r]}" for r in data["recommenders"]
              if data["shown"][r] < data["total"][r]]
    cap_note = (f"The explorer holds at most {max_users} users per recommender ({'; '.join(capped)}); "
                "tables and charts use every user." if capped else
                f"The explorer holds every user (at most {max_users} per recommender are embedded).")
    config = _world_config(run.manifest)
    facts = [f"{eps['user_id'].nunique()} users", f"{len(names)} recommenders", f"{run.horizon_days} days"]
    if config:
        facts.append(f"slate {config.get('slate_size')}, {config.get('n_candidates')} candidates, "
                     f"{config.get('user_backend', 'parametric')} users")
    ident = run.manifest.get("identity") or {}
    if ident.get("recoworld"):
        facts.append(f"RecoWorld {_esc(ident['recoworld'])}")
    if run.manifest.get("fingerprint"):
        facts.append(f"run {_esc(run.manifest['fingerprint'])}")
    mindset_note = ("Mindset curves: satisfaction and fatigue after each turn (the run exposed the mindset)."
                    if data["mindset"] else "No mindset curves: the run was made without "
                    "<code>expose_mindset</code> (set <code>expose_mindset: true</code> in the world config).")
    return _PAGE.format(
        title=_esc(f"RecoWorld report: {run.path.name}"),
        heading=_esc(run.path.name or str(run.path)),
        facts=" · ".join(facts),
        summary=summary_html(summary, eps),
        charts="".join(charts),
        segments=segments_html(digest, eps, names),
        why_left=why_left,
        cap_note=cap_note,
        catalog_note=_esc(run.catalog_note),
        mindset_note=mindset_note,
        css=_CSS,
        js=_JS,
        hook=_HOOK,
        data=_json_for_script(data),
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, *, max_users: int = MAX_USERS,
                 catalog: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default `run_dir/report.html`); returns its path."""
    from recoworld.storage import write_atomic

    run = load_run(run_dir, catalog, max_users)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    write_atomic(path, build_report(run))
    return path


_HOOK = """
window.__jsErrors = [];
function __recordError(msg) {
  window.__jsErrors.push(String(msg));
  var n = String(window.__jsErrors.length);
  document.documentElement.setAttribute('data-js-errors', n);
  if (document.body) {
    document.body.setAttribute('data-js-errors', n);
    var pre = document.getElementById('js-errors');
    if (pre) { pre.textContent = window.__jsErrors.join('\\n'); pre.hidden = false; }
  }
}
window.onerror = function (msg, src, line, col) { __recordError(msg + ' (line ' + line + ':' + col + ')'); };
window.addEventListener('unhandledrejection', function (e) { __recordError('unhandled rejection: ' + e.reason); });
(function () {
  var original = console.error;
  console.error = function () {
    __recordError('console.error: ' + Array.prototype.join.call(arguments, ' '));
    if (original) original.apply(console, arguments);
  };
})();
"""

_CSS = """
:root { --fg: #1f2430; --muted: #6b7280; --line: #e5e7eb; --bg: #fafafa; --accent: #4C72B0; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0; background: var(--bg); }
header { background: #1f2430; color: #fff; padding: 14px 24px; }
header h1 { margin: 0; font-size: 20px; } header p { margin: 4px 0 0; color: #c9ced8; }
main { padding: 8px 24px 40px; max-width: 1400px; }
h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.note { color: var(--muted); font-size: 12.5px; margin: 4px 0; }
table.data { border-collapse: collapse; background: #fff; font-size: 13px; }
table.data th, table.data td { border: 1px solid var(--line); padding: 4px 8px; text-align: right; }
table.data thead th { background: #f1f3f6; } table.data tbody th { text-align: left; }
table.data tr.best { background: #eef7ee; } table.seg td small { color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
svg.chart { background: #fff; border: 1px solid var(--line); }
svg .title { font-size: 13px; font-weight: 600; text-anchor: middle; } svg .tick { font-size: 10.5px; fill: #444; }
svg .grid { stroke: #eee; } svg .err { stroke: #222; stroke-width: 1.3; fill: none; }
.controls { display: flex; gap: 16px; align-items: center; margin: 8px 0; flex-wrap: wrap; }
.controls select { font-size: 14px; padding: 2px 4px; max-width: 320px; }
#user-facts { margin: 6px 0; } #user-facts b { margin-right: 10px; }
#timeline svg, #mindset svg { background: #fff; border: 1px solid var(--line); }
.session { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; padding: 8px 12px; }
.session h3 { margin: 0 0 6px; font-size: 14px; } .session h3 .gap { color: var(--muted); font-weight: normal; }
.turn { border-top: 1px dashed var(--line); padding: 6px 0; }
.turn-head { font-size: 12.5px; color: var(--muted); }
.instruction { background: #fff6d6; border-left: 3px solid #e0b100; padding: 2px 6px; margin: 3px 0;
               font-style: italic; }
.slate { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 4px; margin-top: 4px; }
.item { border: 1px solid var(--line); border-radius: 4px; padding: 3px 6px; font-size: 12px; background: #fcfcfd; }
.item .t { font-weight: 600; display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.item .topic { color: var(--muted); }
.r-u { opacity: .45; } .r-0 { } .r-1 { background: #e8f0fb; border-color: #9cb6e0; }
.r-2 { background: #e6f5e9; border-color: #86c596; } .r-3 { background: #f6e8fb; border-color: #c28ad8; }
.left { color: #b42318; font-weight: 600; margin-top: 4px; } .churn { color: #fff; background: #b42318;
        padding: 1px 6px; border-radius: 3px; }
details.trace pre { background: #f6f8fa; padding: 6px; overflow-x: auto; font-size: 11.5px; max-height: 300px; }
.exits td.most { background: #fff1e0; font-weight: 600; } .exits small { color: var(--muted); }
i.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle; }
ul.meaning { margin: 4px 0 8px; padding-left: 18px; columns: 2; }
.quote-cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 10px; }
.exit-quotes { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
.exit-quotes h3 { margin: 2px 0 4px; font-size: 14px; } ul.reasons { padding-left: 0; list-style: none; margin: 0; }
ul.reasons > li { margin: 6px 0; } ul.reasons ul { margin: 2px 0; padding-left: 16px; }
.exit-reason { border-left: 4px solid #888; padding: 0 5px; font-weight: 600; background: #f4f4f6; }
q.exit-text { font-style: italic; } q.interview { color: var(--muted); font-style: italic; }
.why { margin: 2px 0 0 0; } .interview-line { color: var(--muted); font-size: 12.5px; }
.end-term { color: #7a4d00; } svg .break { stroke: #444; stroke-width: 1.3; fill: none; }
svg .zoom-note { fill: #b45309; } svg .value { font-size: 9.5px; fill: #222; }
#timeline text.tl-gap { font-size: 9.5px; fill: #888; }
#js-errors { color: #b42318; background: #fff0f0; padding: 6px; }
.legend span { margin-right: 10px; font-size: 12px; } .legend i { display: inline-block; width: 11px; height: 11px;
  border: 1px solid #aaa; vertical-align: middle; margin-right: 3px; }
"""

_JS = r"""
(function () {
  var DATA = JSON.parse(document.getElementById('journey-data').textContent);
  var REACTIONS = {u: 'unseen', '0': 'skip', '1': 'click', '2': 'like', '3': 'share'};
  var SVGNS = 'http://www.w3.org/2000/svg';
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v, d) { return (v === null || v === undefined) ? '–' : Number(v).toFixed(d); }
  var recSel = document.getElementById('rec-select'), userSel = document.getElementById('user-select');

  function fillUsers() {
    var users = DATA.users[recSel.value] || [];
    userSel.innerHTML = '';
    users.forEach(function (u, i) {
      var last = u.turns[u.turns.length - 1];
      var label = u.id + ' (' + u.segment + ', ' + (last ? last[0] : 0) + ' sessions' +
                  (last && last[7] ? ', churned' : '') + ')';
      userSel.appendChild(el('option', {value: String(i)}, label));
    });
    var total = DATA.total[recSel.value], shown = DATA.shown[recSel.value];
    document.getElementById('user-count').textContent =
      shown < total ? (shown + ' of ' + total + ' users') : (total + ' users');
  }

  function sessionsOf(user) {
    var sessions = [];
    user.turns.forEach(function (t) {
      var s = sessions[sessions.length - 1];
      if (!s || s.n !== t[0]) { s = {n: t[0], turns: []}; sessions.push(s); }
      s.turns.push(t);
    });
    sessions.forEach(function (s) {
      s.start = s.turns[0][2]; s.end = s.turns[s.turns.length - 1][2];
      var last = s.turns[s.turns.length - 1];
      s.left = !!last[5]; s.gap = last[6]; s.churned = !!last[7]; s.reason = last[15] && last[15][0];
    });
    return sessions;
  }

  function timeline(sessions) {
    var box = document.getElementById('timeline'); box.innerHTML = '';
    var W = 1100, H = 74, L = 30, R = 20, horizon = Math.max(DATA.horizon, 1);
    var x = function (d) { return L + Math.min(d, horizon) / horizon * (W - L - R); };
    var s = svg('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, 'class': 'timeline'});
    s.appendChild(svg('line', {x1: L, x2: W - R, y1: 40, y2: 40, stroke: '#ccc'}));
    for (var d = 0; d <= horizon; d += Math.max(1, Math.round(horizon / 15))) {
      s.appendChild(svg('line', {x1: x(d), x2: x(d), y1: 36, y2: 44, stroke: '#bbb'}));
      s.appendChild(svg('text', {x: x(d), y: 60, 'font-size': 10, 'text-anchor': 'middle', fill: '#555'}, 'd' + d));
    }
    box.appendChild(s);  // in the page first, so the gap labels can be measured
    // Gap labels sit between sessions, in the first of two rows where they clear the previous label; one that
    // fits in neither is left out (the gap stays in the session's tooltip and heading).
    var rows = [28, 17], rowEnd = [-Infinity, -Infinity];
    sessions.forEach(function (se, i) {
      if (se.gap !== null && se.gap !== undefined && i + 1 < sessions.length) {
        var gx = (x(se.end) + x(sessions[i + 1].start)) / 2;
        var label = svg('text', {x: gx.toFixed(1), y: rows[0], 'text-anchor': 'middle', 'class': 'tl-gap'},
                        fmt(se.gap, 1) + 'd');
        s.appendChild(label);
        var half = label.getComputedTextLength() / 2, row = -1;
        for (var r = 0; r < rows.length && row < 0; r++) if (gx - half >= rowEnd[r] + 3) row = r;
        if (row < 0) { s.removeChild(label); }
        else {
          label.setAttribute('y', rows[row]); label.setAttribute('data-width', (2 * half).toFixed(1));
          rowEnd[row] = gx + half;
        }
      }
      var rect = svg('rect', {x: x(se.start) - 3, y: 32, width: Math.max(x(se.end) - x(se.start), 0) + 6, height: 16,
                              rx: 3, fill: '#4C72B0', 'class': 'tl-session', 'data-session': se.n, cursor: 'pointer'});
      rect.appendChild(svg('title', {},
                           'session ' + se.n + ': day ' + fmt(se.start, 2) + ', ' + se.turns.length + ' turns' +
                           (se.reason ? ', left: ' + se.reason : '') +
                           (se.gap !== null && se.gap !== undefined ? ', away ' + fmt(se.gap, 2) + ' days' : '')));
      rect.addEventListener('click', function () {
        var target = document.getElementById('session-' + se.n);
        if (target) target.scrollIntoView({behavior: 'smooth'});
      });
      s.appendChild(rect);
      if (se.churned) {
        s.appendChild(svg('text', {x: x(se.end) + 6, y: 45, 'font-size': 13, fill: '#b42318'}, '✖ churned'));
      }
    });
  }

  function mindset(user) {
    var box = document.getElementById('mindset'); box.innerHTML = '';
    if (!DATA.mindset) return;
    var W = 1100, H = 150, L = 40, R = 110, T = 12, B = 24, horizon = Math.max(DATA.horizon, 1);
    var s = svg('svg', {width: W, height: H, viewBox: '0 0 ' + W + ' ' + H});
    var x = function (d) { return L + Math.min(d, horizon) / horizon * (W - L - R); };
    var y = function (v) { return T + (1 - Math.max(0, Math.min(1, v))) * (H - T - B); };
    [0, 0.5, 1].forEach(function (v) {
      s.appendChild(svg('line', {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#eee'}));
      s.appendChild(svg('text', {x: L - 4, y: y(v) + 3, 'font-size': 10, 'text-anchor': 'end'}, v));
    });
    [[13, 'satisfaction', '#55A868'], [14, 'fatigue', '#C44E52']].forEach(function (c, k) {
      var pts = user.turns.filter(function (t) { return t[c[0]] !== null; })
        .map(function (t) { return x(t[2]).toFixed(1) + ',' + y(t[c[0]]).toFixed(1); });
      s.appendChild(svg('polyline', {points: pts.join(' '), fill: 'none', stroke: c[2], 'stroke-width': 1.8,
                                     'class': 'mindset-' + c[1]}));
      s.appendChild(svg('text', {x: W - R + 10, y: T + 12 + 16 * k, 'font-size': 11, fill: c[2]}, c[1]));
    });
    s.appendChild(svg('text', {x: (W - R + L) / 2, y: H - 4, 'font-size': 10, 'text-anchor': 'middle'}, 'day'));
    box.appendChild(s);
  }

  // The reward of a turn that ends a session holds the env's session-end term (the return bonus for the gap,
  // or the churn penalty): shown apart, so ten skips with "reward 7.35" explain themselves.
  function endTerm(t) {
    var span = el('span', {'class': 'end-term', title: 'at session end the env adds return_bonus × exp(−gap / ' +
                           'return_tau_days) when the user will come back, or churn_penalty when they never do'});
    var end = t[15][4];
    if (end === null) {
      span.textContent = DATA.session_end_known ? '' : ' (includes the session-end return term)';
    } else {
      span.textContent = ' = ' + fmt(t[3] - end, 2) + ' from the slate ' + (end < 0 ? '− ' : '+ ') +
        fmt(Math.abs(end), 2) + (t[7] ? ' churn penalty' : ' return bonus') + ' (session end)';
    }
    return span;
  }

  function slate(t) {
    var grid = el('div', {'class': 'slate'});
    t[10].forEach(function (item, j) {
      var info = DATA.items[String(item)] || ['item ' + item, null];
      var r = t[11].charAt(j);
      var card = el('div', {'class': 'item r-' + r, title: 'item ' + item});
      card.appendChild(el('span', {'class': 't'}, (j + 1) + '. ' + info[0]));
      var topic = info[1] === null ? '' : (DATA.topics[info[1]] || ('topic ' + info[1]));
      card.appendChild(el('span', {'class': 'topic'}, topic));
      var dwell = r !== 'u' && t[12][j] ? ' · ' + fmt(t[12][j] / 10, 1) + ' min' : '';
      card.appendChild(el('span', {}, ' · ' + REACTIONS[r] + dwell));
      grid.appendChild(card);
    });
    return grid;
  }

  function render() {
    var user = (DATA.users[recSel.value] || [])[Number(userSel.value)];
    var facts = document.getElementById('user-facts'), list = document.getElementById('sessions');
    facts.innerHTML = ''; list.innerHTML = '';
    if (!user) { facts.textContent = 'no user'; return; }
    var sessions = sessionsOf(user), st = user.stats || {};
    [['user', user.id], ['segment', user.segment], ['sessions', sessions.length], ['turns', user.turns.length],
     ['retention', fmt(st.retention, 3)], ['return', fmt(st.total_reward, 1)]].forEach(function (p) {
      facts.appendChild(el('b', {}, p[0] + ': ' + p[1]));
    });
    timeline(sessions); mindset(user);
    sessions.forEach(function (se) {
      var box = el('section', {'class': 'session', id: 'session-' + se.n, 'data-session': se.n});
      var h = el('h3', {}, 'Session ' + se.n + ' · day ' + fmt(se.start, 2) + ' · ' + se.turns.length + ' turn' +
                           (se.turns.length === 1 ? '' : 's') + ' ');
      var hasGap = se.gap !== null && se.gap !== undefined;
      var after = se.churned ? 'then left for good'
        : (hasGap ? 'then away ' + fmt(se.gap, 2) + ' days' : (se.left ? 'then left' : 'horizon reached'));
      h.appendChild(el('span', {'class': 'gap'}, '— ' + after + (se.reason ? ' (' + se.reason + ')' : '')));
      box.appendChild(h);
      se.turns.forEach(function (t) {
        var turn = el('div', {'class': 'turn', 'data-turn': t[1]});
        var head = el('div', {'class': 'turn-head'}, 'turn ' + t[1] + ' · t=' + fmt(t[2], 3) + 'd · reward ' +
                      fmt(t[3], 2));
        if (t[5]) head.appendChild(endTerm(t));
        var more = '';
        if (t[8] !== null) more += ' · intent match ' + fmt(t[8], 2);
        if (DATA.mindset && t[13] !== null) more += ' · satisfaction ' + fmt(t[13], 2) + ' · fatigue ' + fmt(t[14], 2);
        head.appendChild(document.createTextNode(more));
        turn.appendChild(head);
        if (t[4]) turn.appendChild(el('div', {'class': 'instruction'}, '“' + t[4] + '”'));
        turn.appendChild(slate(t));
        if (t[9]) {
          var d = el('details', {'class': 'trace'});
          d.appendChild(el('summary', {}, 'recommender trace'));
          d.appendChild(el('pre', {}, JSON.stringify(t[9], null, 2)));
          turn.appendChild(d);
        }
        if (t[5]) {
          var back = t[6] === null ? '.' : '; next visit ' + fmt(t[6], 2) + ' days later' +
                     (t[2] + t[6] > DATA.horizon ? ', after the horizon.' : '.');
          var text = t[7] ? 'The user left here and never came back.' : 'The user left here' + back;
          var left = el('div', {'class': 'left'}, text);
          if (t[7]) left.appendChild(el('span', {'class': 'churn'}, 'churned'));
          turn.appendChild(left);
          var ex = t[15];
          if (ex[0] || ex[1]) {
            var why = el('div', {'class': 'why'});
            if (ex[0]) {
              why.appendChild(el('span', {'class': 'exit-reason', style: 'border-color:' +
                                          (DATA.reason_colors[ex[0]] || '#888')}, ex[0]));
              why.appendChild(document.createTextNode(' '));
            }
            if (ex[1]) why.appendChild(el('q', {'class': 'exit-text'}, ex[1]));
            turn.appendChild(why);
          }
          if (ex[2] !== null || ex[3]) {
            var iv = el('div', {'class': 'interview-line'}, 'Interview: ' + (ex[2] !== null ? ex[2] + '/5 ' : ''));
            if (ex[3]) iv.appendChild(el('q', {'class': 'interview'}, ex[3]));
            turn.appendChild(iv);
          }
        }
        box.appendChild(turn);
      });
      list.appendChild(box);
    });
    document.body.setAttribute('data-explorer-rec', recSel.value);
    document.body.setAttribute('data-explorer-user', user.id);
    document.body.setAttribute('data-explorer-sessions', String(sessions.length));
  }

  DATA.recommenders.forEach(function (r) { recSel.appendChild(el('option', {value: r}, r)); });
  recSel.addEventListener('change', function () { fillUsers(); render(); });
  userSel.addEventListener('change', render);
  // `report.html#rec=NAME&user=ID[&session=N]` opens that journey and scrolls to it (to that session when
  // given); the quotes of "why users left" link here, so the hash is read again whenever it changes.
  function wantedJourney() {
    var wanted = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var i = kv.indexOf('=');
      if (i > 0) wanted[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    });
    return wanted;
  }
  function openJourney(wanted) {
    if (wanted.rec && DATA.users[wanted.rec]) recSel.value = wanted.rec;
    fillUsers();
    var found = false;
    if (wanted.user) {
      (DATA.users[recSel.value] || []).forEach(function (u, i) {
        if (u.id === wanted.user) { userSel.value = String(i); found = true; }
      });
      if (!found) document.getElementById('user-count').textContent += ' · user ' + wanted.user +
        ' is not among the users embedded in this page';
    }
    render();
    var target = (found && wanted.session && document.getElementById('session-' + wanted.session)) ||
                 document.getElementById('journeys');
    target.scrollIntoView({block: 'start'});
    document.body.setAttribute('data-scrolled-to', target.id);
    document.body.setAttribute('data-scroll-y', String(Math.round(window.scrollY)));
  }
  var first = wantedJourney();
  if (first.rec || first.user) { openJourney(first); } else { fillUsers(); render(); }
  window.addEventListener('hashchange', function () {
    var wanted = wantedJourney();
    if (wanted.rec || wanted.user) openJourney(wanted);
  });
  // a link to the journey already in the address changes no hash: open it all the same
  Array.prototype.forEach.call(document.querySelectorAll('a.journey-link'), function (a) {
    a.addEventListener('click', function (e) {
      if (a.getAttribute('href') === location.hash) { e.preventDefault(); openJourney(wantedJourney()); }
    });
  });
  document.body.setAttribute('data-explorer-ready', '1');
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en" data-js-errors="0">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<script>{hook}</script>
<style>{css}</style>
</head>
<body data-js-errors="0">
<header><h1>RecoWorld report: {heading}</h1><p>{facts}</p></header>
<main>
<pre id="js-errors" hidden></pre>
<h2>Summary</h2>
<p class="note">Retention: share of the horizon's days a user was active, mean over users with its 95% CI
(normal approximation); return/user likewise. The best retention is highlighted.</p>
{summary}
<h2>Retention and daily activity</h2>
<div class="charts">{charts}</div>
<h2>Per segment</h2>
<p class="note">Retention ± 95% CI per population segment; CTR over the items each segment saw.</p>
{segments}
<h2 id="why-left">Why users left</h2>
<p class="note">Each time a user ended a session they gave a reason (<code>exit_reason</code>), said why in their
own words (<code>exit_text</code>) and answered an end-of-session interview (a score from 1, fed up, to 5,
delighted, and a sentence). Shares are of each recommender's ended sessions (a session still open at the horizon
is not an exit); the largest share of each reason across recommenders is marked. Under the table, the words users
said most per reason; a linked name opens that journey at that session.</p>
<div id="why-left-panel">{why_left}</div>
<h2 id="journeys">User journeys</h2>
<p class="note">{cap_note} {catalog_note}. {mindset_note}</p>
<div class="controls">
<label>recommender <select id="rec-select"></select></label>
<label>user <select id="user-select"></select></label>
<span id="user-count" class="note"></span>
<span class="legend"><span><i class="r-u"></i>unseen</span><span><i style="background:#fcfcfd"></i>skip</span>
<span><i style="background:#e8f0fb"></i>click</span><span><i style="background:#e6f5e9"></i>like</span>
<span><i style="background:#f6e8fb"></i>share</span></span>
</div>
<div id="user-facts"></div>
<div id="timeline"></div>
<div id="mindset"></div>
<div id="sessions"></div>
</main>
<script type="application/json" id="journey-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""
