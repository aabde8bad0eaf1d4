"""Simulated moments for what a log cannot give in closed form: the click level and how long sessions last.

**Exposure, and why the click level is assumed.** A log of consumptions (MovieLens ratings, a
purchase log) records what users took, never what they were shown, so it does not identify
how many shown items a user passes over per consumption: a session of 5 items is 5 clicks out
of 10 impressions or out of 200. A fit that leaves the click bias free lets the session sizes
decide it, and on a log with long sessions it settles where users click most of what they see
(60-79% on MovieLens-100K), which no feed log shows. So the world assumes its exposure
explicitly: users see slates of items drawn uniformly from the catalog (the exposure the choice
fit assumes, `fit_choice`; a popularity-weighted feed would count popularity twice) and click a
share `ctr` of what they reach, a value inside the band the default world is held to (clicks
per impression 0.02-0.10: MIND news impressions about 4%, short-video logs under 10%;
docs/results.md "Realism"). The click bias is *solved* for that CTR (`solve_bias`), not fitted.

**Consumption per visit.** Given the click level, how many items a visit consumes is the whole
within-session process (clicks, patience, the day's time budget, satisfaction), which has no
likelihood in closed form. Two scales are fitted by the simulated method of moments so that
the simulated items per session match the log's mean, median and 90th percentile (relative
squared errors): the users' patience (a constant hazard of leaving after each unengaging item,
renewed by a click: geometric-looking sizes) and their daily time budget (which caps a binge:
at a few percent CTR every consumption costs some twenty skipped items besides its own
minutes, so the default half-hour budget alone would cap sessions near ten items). Users keep
their own patience, budget and activity offset, scaled together, so session sizes mix
geometric runs of different lengths: the heavy tail of a log's session sizes comes from that
heterogeneity. The CTR moves a little with the scales (longer sessions, more fatigue), so
the bias is fitted with them in one objective that holds the simulated CTR at the assumed one.

Simulated users browse a feed until they leave, for three sessions separated by gaps resampled
from the log's (later sessions start with what the earlier ones left: less of the day's time
budget, fatigue, satisfaction). The sessions at the fitted parameters are kept
(`MomentFit.sessions`): how they end (satisfaction, whether a visit consumed at all) is what
`fit_sessions.visit_returns` needs, and the utilities of the clicked items are what the like
threshold is solved on (`calibrated._like_threshold`).

Every evaluation reuses one seed (common random numbers), so the objective is a deterministic
function of the parameters. A coarse grid picks the start and a derivative-free optimizer
(scipy's bounded Nelder-Mead) refines it within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, minimize

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.observation import MINUTES_PER_DAY
from recoworld.population import UserProfile
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams

MOMENTS = ("mean", "median", "p90")
_SESSIONS = 3  # sessions per simulated user when the log's gaps are given
_MAX_TURNS = 400  # a guard: at a few percent CTR a long session needs a few hundred slates
_GRID = [(p, t) for p in (-0.7, 0.3, 1.3) for t in (0.0, 1.0, 2.0)]  # log (patience, budget) scales of the start
_LOWER, _UPPER = np.array([-15.0, -3.0, -2.0]), np.array([10.0, 3.0, 4.0])  # bias, log patience, log budget
_CTR_WEIGHT = 4.0  # a CTR 10% off the assumed one costs as much as a session moment 20% off
_BIAS_STEPS = 4


@dataclass(frozen=True)
class SimulatedSessions:
    """Simulated sessions: clicks, impressions and the user's satisfaction when each ended."""

    clicks: np.ndarray  # (S,)
    satisfaction: np.ndarray  # (S,)
    impressions: np.ndarray  # (S,) items the user reached
    click_utility: np.ndarray  # (C,) click utility of every clicked item, as the choice model computed it

    @property
    def sizes(self) -> np.ndarray:
        """Clicks of the sessions a log would record: those with at least one click."""
        return self.clicks[self.clicks > 0]

    @property
    def ctr(self) -> float:
        return float(self.clicks.sum() / max(self.impressions.sum(), 1))


@dataclass(frozen=True)
class MomentFit:
    bias: float
    patience_scale: float
    budget_scale: float
    ctr: float  # simulated clicks per impression at the fit (the assumed one, up to simulation noise)
    objective: float
    evaluations: int
    observed: dict[str, float]
    simulated: dict[str, float]
    sessions: SimulatedSessions  # simulated at the fitted parameters


class _RecordingChoice(ChoiceModel):
    """The choice model, keeping the last slate's utilities (the like threshold is solved on them)."""

    last_utility: np.ndarray | None = None

    def engagement(self, click: np.ndarray, utility: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self.last_utility = np.asarray(utility)
        return super().engagement(click, utility, noise)


def scale_patience(patience: int, scale: float) -> int:
    """A profile's patience times `scale`, as the whole number of items it counts (at least 1)."""
    return max(1, round(patience * scale))


def scale_budget(minutes: float, scale: float) -> float:
    """A profile's daily minutes times `scale` (at least one minute)."""
    return max(1.0, float(minutes) * scale)


def scaled_profiles(profiles: list[UserProfile], patience_scale: float, budget_scale: float) -> list[UserProfile]:
    return [p.model_copy(update={"patience": scale_patience(p.patience, patience_scale),
                                 "time_budget_min": scale_budget(p.time_budget_min, budget_scale)})
            for p in profiles]


def session_moments(sizes: np.ndarray) -> np.ndarray:
    """(mean, median, 90th percentile) of items per session."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if not len(sizes):
        return np.zeros(len(MOMENTS))
    return np.array([sizes.mean(), np.median(sizes), np.quantile(sizes, 0.9)])


def simulate_sessions(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], bias: float, patience_scale: float,
    seed: int, gaps: np.ndarray | None = None, max_turns: int = _MAX_TURNS, budget_scale: float = 1.0,
) -> SimulatedSessions:
    """Sessions of each user on a feed of uniformly drawn items (the module docstring says why).

    Without `gaps`, each user's first session. With `gaps` (days between a log's sessions), each
    user's first `_SESSIONS` sessions, the next one starting a gap resampled from `gaps` after
    the last ended: later sessions carry what the earlier ones left (less of the day's time
    budget, fatigue, satisfaction), as the log's later sessions do.
    """
    recorder = _RecordingChoice(world.choice.model_copy(update={"bias": bias}))
    users = ParametricUsers(catalog, None, world.dynamics, world.returns, choice_model=recorder)
    scaled = scaled_profiles(profiles, patience_scale, budget_scale)
    rng = np.random.default_rng(seed)
    b, k = len(scaled), world.slate_size
    everyone = np.arange(b)
    users.reset(scaled)
    streams = UserStreams.spawn(rng, b)  # the users' own draws; `rng` draws the feed and the gaps
    now = np.zeros(b)
    clicks, satisfaction, impressions, utility = [], [], [], []
    for session in range(1 if gaps is None else _SESSIONS):
        if session and gaps is not None:  # sessions after the first come only with gaps
            users.end_sessions(everyone, now, streams)
            now = now + rng.choice(gaps, b)
        users.start_sessions(everyone, now, streams)
        session_clicks, session_seen = np.zeros(b), np.zeros(b)
        active = everyone
        for _ in range(max_turns):
            slates = np.argpartition(rng.random((len(active), len(catalog))), k - 1, axis=1)[:, :k]
            fb = users.review(slates, streams, active)
            clicked = fb.reactions >= 1
            session_clicks[active] += clicked.sum(axis=1)
            session_seen[active] += (fb.reactions >= 0).sum(axis=1)
            if recorder.last_utility is None:
                raise RuntimeError("the users' review made no choice: the recording choice model saw no utilities")
            utility.append(recorder.last_utility[clicked])
            now[active] += fb.dwell_min.sum(axis=1) / MINUTES_PER_DAY
            active = active[~fb.left]
            if not len(active):
                break
        clicks.append(session_clicks)
        impressions.append(session_seen)
        satisfaction.append(users.satisfaction.copy())
    return SimulatedSessions(np.concatenate(clicks), np.concatenate(satisfaction), np.concatenate(impressions),
                             np.concatenate(utility))


def consuming_share(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], bias: float, patience_scale: float,
    seed: int, activity: np.ndarray, gaps: np.ndarray | None = None, budget_scale: float = 1.0,
) -> np.ndarray:
    """Share of simulated first sessions with a click when every user's activity offset is `activity[j]`.

    The share rises with a user's click propensity, so it is looked up per user (interpolated in
    their activity offset) when turning logged-session rates into visit rates.
    """
    return np.array([
        (simulate_sessions(catalog, world, [p.model_copy(update={"activity": float(a)}) for p in profiles], bias,
                           patience_scale, seed, gaps, budget_scale=budget_scale).clicks > 0).mean()
        for a in activity])


def solve_bias(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], ctr: float, patience_scale: float,
    budget_scale: float, seed: int, gaps: np.ndarray | None = None, bias: float | None = None,
    steps: int = _BIAS_STEPS,
) -> tuple[float, float]:
    """(click bias, simulated CTR): the bias at which the simulated users click `ctr` of what they reach.

    Fixed-point steps on the logit scale, b <- b + logit(ctr) - logit(simulated CTR): exact for a
    constant shift of every utility when clicks are rare, and a contraction otherwise.
    """
    b = world.choice.bias if bias is None else bias
    got = ctr
    for _ in range(steps):
        got = simulate_sessions(catalog, world, profiles, b, patience_scale, seed, gaps,
                                budget_scale=budget_scale).ctr
        got = min(max(got, 1e-6), 1 - 1e-6)
        step = _logit(ctr) - _logit(got)
        b = float(np.clip(b + step, -15.0, 10.0))
        if abs(step) < 0.01:
            break
    return b, got


def fit_session_moments(
    catalog: Catalog, world: WorldConfig, profiles: list[UserProfile], observed_sizes: np.ndarray,
    seed: int, budget: int = 60, on_eval: Callable[[int, float], None] | None = None,
    gaps: np.ndarray | None = None, ctr: float = 0.045,
) -> MomentFit:
    """Click bias, patience scale and budget scale: session sizes matched at the assumed `ctr` (module docstring).

    One objective over the three: the relative squared errors of the session-size moments plus
    `_CTR_WEIGHT` times the squared relative error of the simulated CTR. The CTR term pins the
    bias (which barely moves the sizes' shape at a fixed CTR), the sizes pin the two scales.
    `budget` counts objective evaluations; the bias solve of the start adds a few simulations.
    """
    target = session_moments(observed_sizes)
    used = 0
    best_value = np.inf

    def objective(theta: np.ndarray) -> float:
        nonlocal used, best_value
        sessions = simulate_sessions(catalog, world, profiles, float(theta[0]), math.exp(theta[1]), seed, gaps,
                                     budget_scale=math.exp(theta[2]))
        value = _misfit(sessions, target, ctr)
        used += 1
        best_value = min(best_value, value)
        if on_eval is not None:
            on_eval(used, best_value)
        return value

    bias, _ = solve_bias(catalog, world, profiles, ctr, 1.0, 1.0, seed, gaps)
    values = [objective(np.array([bias, *x])) for x in _GRID]
    x0 = np.array([bias, *_GRID[int(np.argmin(values))]])
    bias, _ = solve_bias(catalog, world, profiles, ctr, math.exp(x0[1]), math.exp(x0[2]), seed, gaps, bias, 2)
    x0[0] = bias
    best, _, _ = nelder_mead(objective, x0, np.array([0.3, 0.4, 0.4]), max(budget - len(_GRID), 4),
                                 _LOWER, _UPPER)
    sessions = simulate_sessions(catalog, world, profiles, float(best[0]), math.exp(best[1]), seed, gaps,
                                 budget_scale=math.exp(best[2]))
    sim = session_moments(sessions.sizes)
    return MomentFit(float(best[0]), math.exp(best[1]), math.exp(best[2]), sessions.ctr,
                     float((((sim - target) / np.maximum(target, 1.0)) ** 2).sum()), used,
                     dict(zip(MOMENTS, map(float, target))), dict(zip(MOMENTS, map(float, sim))), sessions)


def _misfit(sessions: SimulatedSessions, target: np.ndarray, ctr: float) -> float:
    sim = session_moments(sessions.sizes)
    sizes = float((((sim - target) / np.maximum(target, 1.0)) ** 2).sum())
    return sizes + _CTR_WEIGHT * ((sessions.ctr - ctr) / ctr) ** 2


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def nelder_mead(
    f: Callable[[np.ndarray], float], x0: np.ndarray, step: np.ndarray, budget: int,
    lower: np.ndarray, upper: np.ndarray, tol: float = 1e-6,
    on_eval: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, float, int]:
    """Minimize `f` within `budget` evaluations in the box; returns (best x, best value, evaluations).

    scipy's Nelder-Mead (standard coefficients, points clipped to the box) from the simplex of
    `x0` and one `step` along each axis. It stops when the simplex's values spread by less than
    `tol` whatever its size (`xatol` off): with common random numbers the objective is flat in
    places, and the budget, never exceeded, is the real stop.
    """
    evals = 0
    best_seen = np.inf

    def call(x: np.ndarray) -> float:
        nonlocal evals, best_seen
        evals += 1
        value = f(x)
        best_seen = min(best_seen, value)
        if on_eval is not None:
            on_eval(evals, best_seen)
        return value

    simplex = np.clip(np.vstack([x0, x0 + np.diag(step)]), lower, upper)
    res = minimize(call, simplex[0], method="Nelder-Mead", bounds=Bounds(lower, upper),
                   options={"initial_simplex": simplex, "maxfev": budget, "xatol": np.inf, "fatol": tol})
    return np.asarray(res.x), float(res.fun), evals
