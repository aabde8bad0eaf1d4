"""Sessions, return gaps, return propensity and churn from a log's timestamps.

- **Sessions.** A user's interactions form one session until the next one is more than
  `gap_minutes` (default `SESSION_GAP_MINUTES` = 30, the web-analytics convention; Catledge &
  Pitkow 1995 measured 25.5 min) later. The validity report cuts sessions at the same constant.
- **Gaps** between a session's last and the next session's first interaction, in days, are
  Gamma(shape k, rate k * r_u) with a shared shape and a per-user return rate r_u (the model
  of `ReturnGapModel` at neutral satisfaction). The shape is fitted by the *conditional*
  likelihood given each user's total gap time, under which a user's gap shares are
  Dirichlet(k, ..., k): it is free of the per-user rates, so it avoids the incidental-
  parameter bias of plugging in per-user means. Newton on k, standard error from the
  observed information.
- **Per-user return rates** are the conjugate posterior means, r_u | gaps ~ Gamma(a0 + k n_u,
  a0 / m0 + k S_u) with the pooled rate m0 as prior mean and a0 = 2 pseudo-gaps, so users
  with one or two gaps are shrunk toward the population.
- **Churn.** A user whose time from the last interaction to the end of the log exceeds the
  99th percentile of their own gap distribution (Wilson-Hilferty approximation) is counted
  as churned; each session end after the user's first `churn_after` interactions is a churn
  trial, so p = churned users / those session ends (the geometric maximum likelihood), with a
  binomial standard error. `churn_after` is the log's inclusion floor (the fewest interactions
  any user has: MovieLens keeps only users with at least 20 ratings), before which no user of
  the log can have left.
- **From logged sessions to visits** (`visit_returns`). The simulator's users visit, and a
  visit may end without a consumption; a log records only sessions with one. With a share
  pi of visits that consume (from sessions simulated at the calibrated parameters), a logged
  gap spans 1 / pi visit gaps on average, so the visit rate is the logged rate / pi (per user:
  pi rises with the user's activity offset, `moments.consuming_share`), and the
  per-visit churn p_v solves 1 - p = pi (1 - p_v) / (1 - (1 - p_v)(1 - pi)) (no churn before
  the next logged session). The return rate also moves with end-of-session satisfaction s
  (`ReturnConfig`); the satisfaction reference is set so that the mean gap over the simulated
  s is the fitted one, E[exp(-effect (s - ref))] = 1, and the churn bias so that the mean
  churn probability over s is p_v. Retention keeps responding to how a session went, around
  the level the log shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import digamma, polygamma

from recoworld.config import ReturnConfig

SECONDS_PER_DAY = 86400.0
#: Inactivity, in minutes, after which the next interaction starts a new session (calibration and validity).
SESSION_GAP_MINUTES = 30.0
_PRIOR_GAPS = 2.0
_Z99 = 2.3263


@dataclass(frozen=True)
class SessionFit:
    sessions: pd.DataFrame  # one row per session: user_id, start, end (seconds), size (interactions)
    gap_shape: float
    gap_shape_se: float
    user_rates: pd.Series  # returns per day, indexed by user_id
    pooled_rate: float
    churn_probability: float
    churn_probability_se: float
    n_gaps: int
    gap_loglik: float  # conditional log-likelihood per gap at the fitted shape


@dataclass(frozen=True)
class VisitReturns:
    """The return model of visits that reproduces a log's session returns (module docstring)."""

    clicked_share: float  # pi: share of visits with at least one consumption
    satisfaction_reference: float
    churn_per_visit: float
    churn_bias: float


def visit_returns(satisfaction: np.ndarray, clicked: np.ndarray, churn_per_session: float,
                  returns: ReturnConfig) -> VisitReturns:
    """`satisfaction` and `clicked` (B,): how simulated visits ended; `churn_per_session` from the log."""
    s = np.asarray(satisfaction, dtype=np.float64)
    pi = max(float(np.mean(clicked)), 1.0 / len(s))
    effect = returns.satisfaction_effect
    reference = -math.log(float(np.mean(np.exp(-effect * s)))) / effect if effect > 0 else float(s.mean())
    p = churn_per_session
    p_visit = 1.0 - (1.0 - p) / (1.0 - p * (1.0 - pi))
    lo, hi = -50.0, 50.0  # mean churn probability rises with the bias: bisection
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(returns.churn_satisfaction * s - mid))) < p_visit:
            lo = mid
        else:
            hi = mid
    return VisitReturns(pi, float(np.clip(reference, 0.0, 1.0)), p_visit, 0.5 * (lo + hi))


def sessionize(interactions: pd.DataFrame, gap_minutes: float = SESSION_GAP_MINUTES) -> pd.DataFrame:
    """One row per session (user_id, start, end, size), sessions cut at gaps over `gap_minutes`."""
    log = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    t = log["timestamp"].to_numpy(np.float64)
    same_user = log["user_id"].to_numpy()[1:] == log["user_id"].to_numpy()[:-1]
    new = np.concatenate([[True], ~same_user | (np.diff(t) > gap_minutes * 60.0)])
    sid = np.cumsum(new) - 1
    return (pd.DataFrame({"user_id": log["user_id"].to_numpy(), "session": sid, "t": t})
            .groupby("session").agg(user_id=("user_id", "first"), start=("t", "min"), end=("t", "max"),
                                    size=("t", "size")).reset_index(drop=True))


def fit_sessions(
    interactions: pd.DataFrame, gap_minutes: float = SESSION_GAP_MINUTES, iterations: int = 50,
    churn_after: int = 0,
) -> SessionFit:
    """Fit the gap shape, per-user return rates and the churn probability (see the module docstring)."""
    sessions = sessionize(interactions, gap_minutes)
    nxt = sessions.groupby("user_id")["start"].shift(-1)
    gaps = pd.DataFrame({"user_id": sessions["user_id"], "gap": (nxt - sessions["end"]) / SECONDS_PER_DAY}).dropna()
    gaps = gaps[gaps["gap"] > 0]
    if gaps.empty:
        raise ValueError("no user returns after a session, so return gaps cannot be fitted")
    per_user = gaps.groupby("user_id")["gap"].agg(["size", "sum"])
    shape, shape_se, loglik = _dirichlet_shape(gaps, per_user, iterations)
    pooled = float(per_user["size"].sum() / per_user["sum"].sum())
    users = pd.Index(sessions["user_id"].unique())
    n = per_user["size"].reindex(users, fill_value=0).to_numpy(np.float64)
    total = per_user["sum"].reindex(users, fill_value=0.0).to_numpy(np.float64)
    rates = (_PRIOR_GAPS + shape * n) / (_PRIOR_GAPS / pooled + shape * total)
    last = sessions.groupby("user_id")["end"].max().reindex(users).to_numpy()
    idle_days = (sessions["end"].max() - last) / SECONDS_PER_DAY
    churned = idle_days > _gamma_q99(shape, rates)
    ends = int((sessions.groupby("user_id")["size"].cumsum() >= churn_after).sum())
    p = float(churned.sum() / ends)
    return SessionFit(sessions, shape, shape_se, pd.Series(rates, index=users), pooled, p,
                      math.sqrt(max(p * (1 - p), 1e-12) / ends), len(gaps), loglik)


def _dirichlet_shape(gaps: pd.DataFrame, per_user: pd.DataFrame, iterations: int) -> tuple[float, float, float]:
    """Conditional MLE of the Gamma shape from within-user gap shares: (k, standard error, loglik per gap)."""
    multi = per_user[per_user["size"] >= 2]
    if multi.empty:
        raise ValueError("no user has two or more return gaps, so the gap shape cannot be fitted")
    g = gaps[gaps["user_id"].isin(multi.index)]
    log_share = float(np.log(g["gap"].to_numpy() / multi["sum"].reindex(g["user_id"]).to_numpy()).sum())
    n = multi["size"].to_numpy(np.float64)

    def loglik(k: float) -> float:
        return float(sum(math.lgamma(x * k) - x * math.lgamma(k) for x in n) + (k - 1) * log_share)

    k = 1.0
    for _ in range(iterations):
        grad = float((n * (digamma(n * k) - digamma(k))).sum()) + log_share
        hess = float((n**2 * polygamma(1, n * k) - n * polygamma(1, k)).sum())
        new = k - grad / hess if hess < 0 else k * 2.0
        new = min(max(new, k / 4.0, 1e-3), k * 4.0)
        if abs(new - k) < 1e-10 * k:
            k = new
            break
        k = new
    info = -float((n**2 * polygamma(1, n * k) - n * polygamma(1, k)).sum())
    return k, 1.0 / math.sqrt(max(info, 1e-12)), loglik(k) / len(g)


def _gamma_q99(shape: float, rates: np.ndarray) -> np.ndarray:
    """99th percentile of Gamma(shape, rate = shape * rates) by Wilson-Hilferty's cube-root normal approximation."""
    c = 1.0 / (9.0 * shape)
    return (1.0 - c + _Z99 * math.sqrt(c)) ** 3 / rates
