"""Simulated moments for what a log cannot give in closed form: how long sessions last.

Items per session come out of the whole within-session process (clicks, patience, the daily
time budget, satisfaction), which has no likelihood in closed form, and the click bias is not
identified by the case-control choice fit. So both are fitted by the simulated method of
moments: parametric users built from the calibrated profiles browse a feed until they leave,
for three sessions separated by gaps resampled from the log's (later sessions start with what
the earlier ones left: less of the day's time budget, fatigue, satisfaction), and the click
bias and a scale of the users' patience are chosen so that the simulated items-per-session
match the log's mean, median and 90th percentile (relative squared errors). Patience rather
than the time budget is the free scale because logged session sizes look geometric (a constant
hazard of leaving after each item), which is how patience ends a session, while a time budget
would cap them. The two are identified only jointly: a click renews the user's patience, so
session sizes depend on them mostly through the chance of a run of `patience` skips, and the
objective has a ridge along which the bias and the patience scale trade off
(tests/test_calibration.py checks that the fit reproduces the session sizes, not the two
numbers one by one). A log records no exposures, so the feed is the one the choice fit assumes
(`fit_choice`: alternatives drawn uniformly): slates of items drawn uniformly from the catalog.
Under it the fitted choice model alone carries popularity; a popularity-weighted feed would
count it twice. The validity report exposes users the same way.

The sessions simulated at the fitted parameters are kept (`MomentFit.sessions`): how the
calibrated users' sessions end (their satisfaction, and whether they clicked at all) is what
`fit_sessions.visit_returns` needs to turn the log's return rates into the simulator's.

Every evaluation reuses one seed (common random numbers), so the objective is a deterministic
function of the parameters. A coarse scan of the bias picks a start, and a derivative-free
optimizer (Nelder-Mead, written here in numpy; no scipy dependency) refines it within the
evaluation budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.observation import MINUTES_PER_DAY
from recoworld.population import UserProfile
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams

MOMENTS = ("mean", "median", "p90")
_SESSIONS = 3  # sessions per simulated user when the log's gaps are given
_BIAS_SCAN = (-7.0, -5.5, -4.0, -3.0, -2.0, -1.0, 0.0)


@dataclass(frozen=True)
class SimulatedSessions:
    """One simulated session per user: its clicks and the user's satisfaction when it ended."""

    clicks: np.ndarray  # (B,)
    satisfaction: np.ndarray  # (B,)

    @property
    def sizes(self) -> np.ndarray:
        """Clicks of the sessions a log would record: those with at least one click."""
        return self.clicks[self.clicks > 0]


@dataclass(frozen=True)
class MomentFit:
    bias: float
    patience_scale: float
    objective: float
    evaluations: int
    observed: dict[str, float]
    simulated: dict[str, float]
    sessions: SimulatedSessions  # simulated at the fitted parameters


def scale_patience(patience: int, scale: float) -> int:
    """A profile's patience times `scale`, as the whole number of items it counts (at least 1)."""
    return max(1, round(patience * scale))


def session_moments(sizes: np.ndarray) -> np.ndarray:
    """(mean, median, 90th percentile) of items per session."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if not len(sizes):
        return np.zeros(len(MOMENTS))
    return np.array([sizes.mean(), np.median(sizes), np.quantile(sizes, 0.9)])


def simulate_sessions(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], bias: float, patience_scale: float,
    seed: int, gaps: np.ndarray | None = None, max_turns: int = 40,
) -> SimulatedSessions:
    """Sessions of each user on a feed of uniformly drawn items (the module docstring says why).

    Without `gaps`, each user's first session. With `gaps` (days between a log's sessions), each
    user's first `_SESSIONS` sessions, the next one starting a gap resampled from `gaps` after
    the last ended: later sessions carry what the earlier ones left (less of the day's time
    budget, fatigue, satisfaction), as the log's later sessions do.
    """
    choice = world.choice.model_copy(update={"bias": bias})
    users = ParametricUsers(catalog, choice, world.dynamics, world.returns)
    scaled = [p.model_copy(update={"patience": scale_patience(p.patience, patience_scale)}) for p in profiles]
    rng = np.random.default_rng(seed)
    b, k = len(scaled), world.slate_size
    everyone = np.arange(b)
    users.reset(scaled)
    streams = UserStreams.spawn(rng, b)  # the users' own draws; `rng` draws the feed and the gaps
    now = np.zeros(b)
    clicks, satisfaction = [], []
    for session in range(1 if gaps is None else _SESSIONS):
        if session:
            users.end_sessions(everyone, now, streams)
            now = now + rng.choice(gaps, b)
        users.start_sessions(everyone, now, streams)
        session_clicks = np.zeros(b)
        active = np.ones(b, dtype=bool)
        for _ in range(max_turns):
            slates = np.argpartition(rng.random((b, len(catalog))), k - 1, axis=1)[:, :k]
            fb = users.review(slates, streams)
            session_clicks += np.where(active, (fb.reactions >= 1).sum(axis=1), 0)
            now = now + np.where(active, fb.dwell_min.sum(axis=1), 0.0) / MINUTES_PER_DAY
            active &= ~fb.left
            if not active.any():
                break
        clicks.append(session_clicks)
        satisfaction.append(users.satisfaction.copy())
    return SimulatedSessions(np.concatenate(clicks), np.concatenate(satisfaction))


def consuming_share(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], bias: float, patience_scale: float,
    seed: int, activity: np.ndarray, gaps: np.ndarray | None = None,
) -> np.ndarray:
    """Share of simulated first sessions with a click when every user's activity offset is `activity[j]`.

    The share rises with a user's click propensity, so it is looked up per user (interpolated in
    their activity offset) when turning logged-session rates into visit rates.
    """
    return np.array([
        (simulate_sessions(catalog, world, [p.model_copy(update={"activity": float(a)}) for p in profiles], bias,
                           patience_scale, seed, gaps).clicks > 0).mean()
        for a in activity])


def fit_session_moments(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], observed_sizes: np.ndarray,
    seed: int, budget: int = 60, on_eval: Callable[[int, float], None] | None = None,
    gaps: np.ndarray | None = None,
) -> MomentFit:
    """Fit (click bias, patience scale) to the observed items per session (`gaps`: see `simulate_sessions`)."""
    target = session_moments(observed_sizes)

    def objective(theta: np.ndarray) -> float:
        sim = session_moments(simulate_sessions(catalog, world, profiles, float(theta[0]), float(np.exp(theta[1])),
                                                seed, gaps).sizes)
        return float((((sim - target) / np.maximum(target, 1.0)) ** 2).sum())

    # Session size is not monotone in the bias (likelier clicks also hold attention longer, so the
    # time budget ends sessions sooner), so a coarse scan of the bias picks the start of the simplex.
    scan = [np.array([b, 0.0]) for b in _BIAS_SCAN]
    values = []
    for i, x in enumerate(scan):
        values.append(objective(x))
        if on_eval is not None:
            on_eval(i + 1, min(values))
    x0 = scan[int(np.argmin(values))]
    best, value, used = nelder_mead(
        objective, x0, np.array([0.5, 0.5]), max(budget - len(scan), 3), lower=np.array([-10.0, -3.0]),
        upper=np.array([6.0, 3.0]), on_eval=None if on_eval is None else lambda n, v: on_eval(n + len(scan), v))
    if value > min(values):
        best, value = x0, min(values)
    used += len(scan)
    sessions = simulate_sessions(catalog, world, profiles, float(best[0]), float(np.exp(best[1])), seed, gaps)
    sim = session_moments(sessions.sizes)
    return MomentFit(float(best[0]), float(np.exp(best[1])), value, used,
                     dict(zip(MOMENTS, map(float, target))), dict(zip(MOMENTS, map(float, sim))), sessions)


def nelder_mead(
    f: Callable[[np.ndarray], float], x0: np.ndarray, step: np.ndarray, budget: int,
    lower: np.ndarray, upper: np.ndarray, tol: float = 1e-6,
    on_eval: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, float, int]:
    """Minimize `f` within `budget` evaluations (box-clipped); returns (best x, best value, evaluations).

    Standard coefficients (reflect 1, expand 2, contract 0.5, shrink 0.5); deterministic.
    """
    evals = 0
    best_seen = np.inf

    def call(x: np.ndarray) -> float:
        nonlocal evals, best_seen
        evals += 1
        value = f(np.clip(x, lower, upper))
        best_seen = min(best_seen, value)
        if on_eval is not None:
            on_eval(evals, best_seen)
        return value

    simplex = [np.clip(x0, lower, upper)] + [np.clip(x0 + np.eye(len(x0))[i] * step[i], lower, upper)
                                             for i in range(len(x0))]
    values = [call(x) for x in simplex]
    while evals < budget:
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tol:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = np.clip(centroid + (centroid - simplex[-1]), lower, upper)
        fr = call(reflected)
        if fr < values[0]:
            expanded = np.clip(centroid + 2.0 * (centroid - simplex[-1]), lower, upper)
            fe = call(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = call(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                for i in range(1, len(simplex)):
                    simplex[i] = simplex[0] + 0.5 * (simplex[i] - simplex[0])
                    values[i] = call(simplex[i])
    i = int(np.argmin(values))
    return np.clip(simplex[i], lower, upper), float(values[i]), evals
