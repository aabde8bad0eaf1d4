"""Fitted vs log: does the calibrated world reproduce what it was fitted to?

A calibration can converge and still describe another world: a moment objective stuck near 1,
a like threshold fitted on one utility distribution and applied to another, a click level no
log identifies. So `calibrate` ends by simulating its own users and setting the numbers it was
fitted to next to the log's, each with a tolerance stated here, and warns about every miss.

**The simulation.** Every calibrated user lives the train period's span as the log observed
them: from their first train interaction (day 0) to the end of the train window (the global
cutoff, or the last train timestamp for a per-user split). They meet the exposure calibration
assumes (`moments`): slates of items drawn uniformly from the catalog, reviewed by the
calibrated world's own `ParametricUsers` (its choice, dynamics and return models), sessions
ended by the users and followed by the return model's gaps, or churn. What the log would have
recorded of it (the consumptions, with their times and likes) is then measured by the same
code as the log: sessions cut at the calibration's gap, one like = one positive rating.

**The rows** (log vs simulated; `ok` is whether the simulated value is within the tolerance):

| row                          | statistic                                   | tolerance                     |
|------------------------------|---------------------------------------------|-------------------------------|
| positive rate                | share of consumptions rated positive (liked)| +-0.05 absolute               |
| activity (items per user)    | mean consumptions per user in the window    | +-20% relative                |
| session size median          | items per session, median                   | +-max(1 item, 25%)            |
| session size p90             | items per session, 90th percentile          | +-max(2 items, 25%)           |
| gap median (days)            | days between sessions, median               | +-35% relative                |
| gap p90 (days)               | days between sessions, 90th percentile      | +-35% relative                |
| items per consuming visit    | mean items per logged session               | +-20% relative                |
| CTR (clicks per impression)  | simulated only: the log has no impressions  | the assumed band              |

The tolerances are what a study would notice, not what a fit happens to reach: a positive rate
5 points off changes what "liked" means; 20-25% on activity and session size is about the
spread between seeds of a few hundred users' sessions; gaps are heavy-tailed (their medians
move by 20-30% between halves of a log), hence 35%. The log has no CTR, so that row checks the
simulated CTR against the band the world assumes (`CalibrationConfig.ctr_band`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, sessionize
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.observation import MINUTES_PER_DAY
from recoworld.population import UserProfile
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams

_MAX_TURNS = 400  # turns of one session: a guard only; sessions end by patience, time or satisfaction first


@dataclass(frozen=True)
class Tolerance:
    """How far a simulated statistic may be from the log's: `max(absolute, relative * |log|)`, or a band."""

    absolute: float = 0.0
    relative: float = 0.0
    band: tuple[float, float] | None = None

    def describe(self) -> str:
        if self.band is not None:
            return f"in [{self.band[0]:g}, {self.band[1]:g}]"
        parts = ([f"{self.absolute:g}"] if self.absolute else []) + ([f"{self.relative:.0%}"] if self.relative else [])
        return "+-" + (f"max({', '.join(parts)})" if len(parts) > 1 else parts[0])

    def ok(self, log: float | None, simulated: float) -> bool:
        if not np.isfinite(simulated):
            return False
        if self.band is not None:
            return self.band[0] <= simulated <= self.band[1]
        if log is None or not np.isfinite(log):
            return True
        return abs(simulated - log) <= max(self.absolute, self.relative * abs(log))


#: Row -> tolerance (module docstring). CTR's band is filled in from the calibration's config.
TOLERANCES: dict[str, Tolerance] = {
    "positive rate": Tolerance(absolute=0.05),
    "activity (items per user)": Tolerance(relative=0.20),
    "session size median": Tolerance(absolute=1.0, relative=0.25),
    "session size p90": Tolerance(absolute=2.0, relative=0.25),
    "gap median (days)": Tolerance(relative=0.35),
    "gap p90 (days)": Tolerance(relative=0.35),
    "items per consuming visit": Tolerance(relative=0.20),
}
CTR_ROW = "CTR (clicks per impression)"


@dataclass(frozen=True)
class SimulatedLog:
    """What a log would record of simulated users, plus what only a simulation knows."""

    consumptions: pd.DataFrame  # user_id, timestamp (seconds from the user's day 0), positive (0/1)
    impressions: int  # items the users reached on their slates
    visits: int  # sessions, with or without a consumption

    @property
    def ctr(self) -> float:
        return len(self.consumptions) / max(self.impressions, 1)


def simulate_log(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], window_days: np.ndarray, seed: int,
) -> SimulatedLog:
    """Each user (row of `profiles`) lives `window_days[row]` days under uniform exposure (module docstring).

    All users step in lockstep, one turn each per iteration, each on their own clock; a user
    whose next session would start after their window, or who churns, is done.
    """
    users = ParametricUsers(catalog, world.choice, world.dynamics, world.returns)
    b, k, n = len(profiles), world.slate_size, len(catalog)
    rng = np.random.default_rng(seed)
    streams = UserStreams.spawn(rng, b)  # the users' own draws; `rng` draws the feed
    users.reset(profiles)
    window = np.asarray(window_days, dtype=np.float64)
    now = np.zeros(b)
    alive = window > 0
    turns = np.zeros(b, dtype=np.int64)
    users.start_sessions(np.flatnonzero(alive), now[alive], streams)
    rows_out, times_out, liked_out = [], [], []
    impressions = visits = 0
    while alive.any():
        rows = np.flatnonzero(alive)
        slates = np.argpartition(rng.random((len(rows), n)), k - 1, axis=1)[:, :k] if k < n else \
            np.tile(np.arange(n), (len(rows), 1))
        fb = users.review(slates, streams, rows)
        reactions = fb.reactions
        impressions += int((reactions >= 0).sum())
        at = now[rows][:, None] + np.cumsum(fb.dwell_min, axis=1) / MINUTES_PER_DAY
        clicked = reactions >= 1
        r, _ = np.nonzero(clicked)
        rows_out.append(rows[r])
        times_out.append(at[clicked])
        liked_out.append(reactions[clicked] >= 2)
        now[rows] = at[:, -1]
        turns[rows] += 1
        leaving = rows[fb.left | (turns[rows] >= _MAX_TURNS)]
        if not len(leaving):
            continue
        visits += len(leaving)
        turns[leaving] = 0
        gaps = users.end_sessions(leaving, now[leaving], streams)
        nxt = now[leaving] + gaps
        back = np.isfinite(nxt) & (nxt < window[leaving])
        alive[leaving[~back]] = False
        if back.any():
            now[leaving[back]] = nxt[back]
            users.start_sessions(leaving[back], nxt[back], streams)
    user = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    time = np.concatenate(times_out) if times_out else np.zeros(0)
    keep = time < window[user]  # the last turn may run past the window's end
    ids = np.array([p.user_id for p in profiles], dtype=object)
    frame = pd.DataFrame({"user_id": ids[user[keep]], "timestamp": time[keep] * SECONDS_PER_DAY,
                          "positive": np.concatenate(liked_out)[keep].astype(np.float64) if liked_out else []})
    return SimulatedLog(frame, impressions, visits)


def log_statistics(consumptions: pd.DataFrame, users: int, gap_minutes: float) -> dict[str, float]:
    """The fit check's statistics of a log (user_id, timestamp seconds, positive 0/1/NaN) of `users` users."""
    stats = {"positive rate": float(np.nanmean(consumptions["positive"])) if consumptions["positive"].notna().any()
             else float("nan"),
             "activity (items per user)": len(consumptions) / max(users, 1)}
    if not len(consumptions):
        return stats | {name: float("nan") for name in TOLERANCES if name not in stats}
    sessions = sessionize(consumptions, gap_minutes)
    sizes = sessions["size"].to_numpy(np.float64)
    nxt = sessions.groupby("user_id")["start"].shift(-1)
    gaps = ((nxt - sessions["end"]) / SECONDS_PER_DAY).dropna().to_numpy()
    gq = np.quantile(gaps, [0.5, 0.9]) if len(gaps) else np.full(2, np.nan)
    return stats | {"session size median": float(np.median(sizes)),
                    "session size p90": float(np.quantile(sizes, 0.9)),
                    "gap median (days)": float(gq[0]), "gap p90 (days)": float(gq[1]),
                    "items per consuming visit": float(sizes.mean())}


def fit_check(log: dict[str, float], simulated: SimulatedLog, simulated_stats: dict[str, float],
              ctr_band: tuple[float, float]) -> dict[str, dict[str, object]]:
    """Row -> {log, simulated, tolerance, ok}: the `fit_check` of calibration.json."""
    out: dict[str, dict[str, object]] = {}
    for name, tol in TOLERANCES.items():
        lv, sv = log.get(name, float("nan")), simulated_stats.get(name, float("nan"))
        if not np.isfinite(lv):  # e.g. no ratings: nothing to check against
            out[name] = {"log": None, "simulated": _num(sv), "tolerance": "not in this log", "ok": None}
            continue
        out[name] = {"log": float(lv), "simulated": _num(sv), "tolerance": tol.describe(), "ok": tol.ok(lv, sv)}
    band = Tolerance(band=ctr_band)
    out[CTR_ROW] = {"log": None, "simulated": float(simulated.ctr), "tolerance": band.describe(),
                    "ok": band.ok(None, simulated.ctr)}
    return out


def fit_warnings(check: dict[str, dict[str, object]]) -> list[str]:
    """One sentence per row that misses its tolerance."""
    out = []
    for name, row in check.items():
        if row["ok"] is False:
            log = "" if row["log"] is None else f" (log {_fmt(row['log'])})"
            out.append(f"fit check: {name} simulated {_fmt(row['simulated'])}{log} is outside {row['tolerance']}")
    return out


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _fmt(x: object) -> str:
    return "n/a" if x is None else f"{float(x):.3g}"  # type: ignore[arg-type]
