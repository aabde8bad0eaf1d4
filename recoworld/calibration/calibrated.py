"""`calibrate`: fit the parametric user to a real log, and write/read the calibrated world.

Only the train part of the data's time split is read for choices (the same split `fidelity`
uses), so held-out items stay unseen; see `_timing_log` for the one use of held-out times.
Within each user's train history, in time:

    [ context (first `context_fraction`) | fit | valid (last `valid_fraction`) ]

The choice logit is fitted on the `fit` choices with interests, popularity and novelty
computed from the context only (a next-choice model, not an in-sample one), and its
log-likelihood is reported on `fit` (train) and on `valid` (validation). The written world
then uses the same weights with catalog and profiles rebuilt from the whole train split.

With attention in time (`representation.popularity_half_life_days` a number or "fit"), the
popularity feature of a choice is instead the standardized log attention of each candidate at
the choice's own time, from every user's earlier interactions only (`attention_z`): the world
reads its catalog's popularity as the attention at the cutoff, so the weight is fitted on the
feature the world uses it as, and no choice sees other users' later interactions. "fit" picks
the half-life by the choice model's own validation log-likelihood (calibration.json's
`attention`); None keeps the all-time counts of the context catalog.

What is fitted, and how (every number lands in calibration.json with its uncertainty):

| parameter                                   | method                                                |
|---------------------------------------------|-------------------------------------------------------|
| choice relevance, quality, popularity,      | conditional logit MLE, observed vs sampled unobserved  |
| novelty_mismatch weights                    | items (`fit_choice`), SE from the inverse Hessian     |
| per-user popularity_affinity (conformity)   | per-user MAP, N(1, 0.5^2) prior (`fit_choice`)        |
| returns gap_shape                           | conditional Gamma MLE (`fit_sessions`), SE            |
| per-user return_propensity, base_rate       | conjugate posterior return rates (`fit_sessions`),    |
|                                             | per visit: over the share of visits that consume,     |
|                                             | simulated per activity offset (`moments`)             |
| returns churn_after                         | the log's inclusion floor: fewest interactions a user |
|                                             | has (no user of the log left before it)               |
| returns churn_bias, satisfaction_reference  | churn share of session ends (`fit_sessions`), SE;     |
|                                             | centred on the simulated end-of-session satisfaction  |
|                                             | (`fit_sessions.visit_returns`)                        |
| per-user activity                           | log of the user's mean session size over the median,  |
|                                             | shrunk by n / (n + 3) sessions: a click-logit offset  |
| popularity half-life (attention in time,     | the half-life of `CHOICE_HALF_LIFE_GRID` whose choice |
| `popularity_half_life_days="fit"`)          | fit scores best on the validation choices, the        |
|                                             | popularity read at each choice's own time; the world's |
|                                             | catalog then holds the attention at the cutoff with it |
| choice bias                                 | solved for the assumed CTR (`assumed_ctr`, in the     |
|                                             | 0.02-0.10 band): a log without impressions does not   |
|                                             | identify the click level (`moments`)                  |
| profiles' patience and time budget scales   | simulated moments of items per session (`moments`)    |
| choice like_threshold                       | 1-D MLE of P(positive rating | consumed) given the    |
|                                             | fitted utility (`fit_like_threshold`), SE, its        |
|                                             | estimating equation then solved on the simulated      |
|                                             | click utilities (`_like_threshold`); needs explicit   |
|                                             | ratings, else kept at its configured value            |

Then it checks itself: the calibrated users are simulated over their train windows under the
assumed exposure and the log's positive rate, activity, session sizes, gaps and items per
visit are set next to theirs, with the CTR against its band (`fit_check`, calibration.json's
`fit_check`, a warning per miss). The choice weights are also fitted on `folds` consecutive
time windows of train (`folds`, a warning per weight whose folds disagree beyond their SEs).
With a global split every fit reads only interactions up to the cutoff; a per-user split's
use of later timestamps is stated in calibration.json's `leakage`.

The share threshold keeps its configured offset above the like threshold (a log of ratings
has no shares), so likes and shares stay ordered as in the synthetic world.

Not identified by an interaction log and kept at their configured values: position and
fatigue weights (no slates, no order of exposure), satisfaction effects and dynamics (no
satisfaction signal), the share threshold's offset. calibration.json lists them as such.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, ValidationError

from recoworld.calibration.fit_check import TOLERANCES, fit_check, fit_warnings, log_statistics, simulate_log
from recoworld.calibration.fit_choice import (
    CHOICE_TERMS,
    ChoiceData,
    LogitFit,
    choice_data,
    fit_conformity,
    fit_like_threshold,
    fit_logit,
    mean_loglik,
    with_popularity,
)
from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, fit_sessions, visit_returns
from recoworld.calibration.moments import MomentFit, consuming_share, fit_session_moments, scale_budget, scale_patience
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.data.attention import CHOICE_HALF_LIFE_GRID, attention_z
from recoworld.data.dataset import Dataset, positive_ratings
from recoworld.data.items import RepresentationConfig, _popularity, build_catalog
from recoworld.data.load import load_dataset
from recoworld.data.users import build_profiles
from recoworld.data.world import DataConfig, RealWorld, prepare_world
from recoworld.errors import ConfigError
from recoworld.population import UserProfile
from recoworld.stats import Z95_ROUNDED, estimate
from recoworld.storage import write_atomic

FILES = ("world.yaml", "profiles.jsonl", "catalog.parquet", "calibration.json")
NOT_IDENTIFIED = ("choice.position", "choice.fatigue", "choice.share_threshold - like_threshold",
                  "returns.satisfaction_effect", "returns.churn_satisfaction", "dynamics.*")
_ACTIVITY_SHRINK = 3.0
_ACTIVITY_GRID = 7  # activity offsets at which the share of visits that consume is simulated
_MAX_PROPENSITY = 0.95
#: The fit check's row holding each session-size moment the moments fit targets: one tolerance for both.
_MOMENT_ROWS = {"mean": "items per consuming visit", "median": "session size median", "p90": "session size p90"}
#: The stages of `calibrate`, in order, as `on_stage` names them (the moments and folds stages add their sizes).
STAGES = ("loading and splitting the log", "fitting the choice model", "fitting sessions and return gaps",
          "fitting simulated moments", "fitting returns and activity", "fitting the choice model per fold",
          "checking the fit (simulating the calibrated users)")


class CalibrationConfig(StrictModel):
    """What `recoworld calibrate` fits, on which data."""

    data: DataConfig
    context_fraction: float = Field(0.6, gt=0, lt=1, description="first share of each train history: context")
    valid_fraction: float = Field(0.15, gt=0, lt=1, description="last share of each train history: validation")
    n_negatives: int = Field(4, ge=1, le=100, description="sampled unobserved items per observed choice")
    session_gap_minutes: float = Field(30.0, gt=0, description="a longer pause starts a new session")
    min_users: int = Field(10, ge=2, description="users with enough history needed to calibrate")
    min_interactions: int = Field(5, ge=3, description="train interactions a user needs to enter the fit")
    moment_users: int = Field(200, ge=10, description="simulated users per moment evaluation")
    moment_budget: int = Field(60, ge=5, description="evaluation budget of the moment optimizer")
    assumed_ctr: float = Field(0.045, gt=0, lt=1, description="clicks per impression the world assumes: a log "
                               "without impressions does not identify it (MIND news about 4%)")
    ctr_band: tuple[float, float] = Field((0.02, 0.10), description="documented clicks-per-impression band the fit "
                                          "check holds the calibrated world to (docs/results.md 'Realism')")
    folds: int = Field(3, ge=2, le=10, description="consecutive time windows of train whose choice weights are "
                       "fitted separately to test their stability")
    seed: int = Field(0, ge=0)


@dataclass
class CalibratedWorld:
    """A calibrated world: what `simulate`, `fidelity` and the validity report run on."""

    world: WorldConfig
    catalog: Catalog
    profiles: list[UserProfile]
    report: dict[str, Any] = field(default_factory=dict)


def calibrate(config: CalibrationConfig, on_eval: Callable[[int, float], None] | None = None,
              on_stage: Callable[[str], None] | None = None) -> CalibratedWorld:
    """Fit the parametric user to `config.data` (module docstring); `on_eval(n, best)` tracks the moments fit,
    `on_stage(name)` is called as each stage starts (`STAGES`: minutes of silence otherwise)."""
    stage = on_stage or (lambda _name: None)
    data = config.data
    stage(STAGES[0])
    dataset = load_dataset(data.path, data.format, data.columns or None)
    _check_log(dataset, config)
    requested = data.representation.popularity_half_life_days
    # With attention in time, the catalog is first built on all-time counts (its profiles' novelty traits
    # read them, as the context profiles of the choice fit do) and its popularity is then replaced by the
    # attention at the cutoff with the half-life the choice fit picks (`_attention_catalog`).
    real = prepare_world(data if requested is None else data.model_copy(update={
        "representation": data.representation.model_copy(update={"popularity_half_life_days": None})}), dataset)
    _check_train(real, config)
    train = real.split.train
    _check_no_test_time(real)
    row = pd.Series(np.arange(len(real.catalog)), index=real.catalog.item_ids)
    log = train.assign(item=row.reindex(train["item_id"].to_numpy()).to_numpy().astype(np.int64))
    log = log.sort_values(["timestamp"], kind="stable")
    attention = None if requested is None else _AttentionLog.of(log, len(real.catalog))
    half_lives = () if requested is None else CHOICE_HALF_LIFE_GRID if requested == "fit" else (float(requested),)
    rng = np.random.default_rng(config.seed)
    stage(STAGES[1])
    choices = _fit_choices(real.dataset, log, config, rng, attention, half_lives)
    logit, fit_rows, ids = choices.logit, choices.fit_rows, choices.ids
    if attention is not None and choices.half_life is not None:
        real = dataclasses.replace(real, catalog=_attention_catalog(real.catalog, attention, choices.half_life,
                                                                      data.representation))
    conformity = dict(zip(ids, fit_conformity(fit_rows, logit, len(ids))))

    stage(STAGES[2])
    timing = _timing_log(real)
    floor = int(timing.groupby("user_id").size().min())
    sessions = fit_sessions(timing, config.session_gap_minutes, churn_after=floor)
    world0 = _world(real.catalog, logit.weights, sessions.gap_shape)
    activity = _activity(sessions.sessions)
    profiles = [p.model_copy(update={"popularity_affinity": float(conformity.get(p.user_id, 1.0)),
                                     "activity": float(activity.get(p.user_id, 0.0))}) for p in real.profiles]

    pick = np.sort(rng.choice(len(profiles), min(config.moment_users, len(profiles)), replace=False))
    moment_profiles = [profiles[i] for i in pick]
    gaps = _gaps_days(sessions.sessions)
    stage(f"{STAGES[3]} ({config.moment_budget} evaluations on {len(moment_profiles)} users)")
    moments = fit_session_moments(real.catalog, world0, moment_profiles, sessions.sessions["size"].to_numpy(),
                                  config.seed, config.moment_budget, on_eval, gaps, config.assumed_ctr)
    stage(STAGES[4])
    p_churn = min(max(sessions.churn_probability, 1e-4), 1 - 1e-4)
    visits = visit_returns(moments.sessions.satisfaction, moments.sessions.clicks > 0, p_churn, world0.returns)
    user_activity = np.array([activity.get(u, 0.0) for u in sessions.user_rates.index])
    grid = np.linspace(user_activity.min(), user_activity.max(), _ACTIVITY_GRID)
    share = consuming_share(real.catalog, world0, moment_profiles, moments.bias, moments.patience_scale, config.seed,
                            grid, gaps, moments.budget_scale)
    per_user_share = np.interp(user_activity, grid, np.maximum(share, 1.0 / len(moment_profiles)))
    visit_rates = sessions.user_rates / per_user_share
    base_rate = float(np.quantile(visit_rates, 0.99)) * 0.5 / _MAX_PROPENSITY
    pooled = sessions.pooled_rate / visits.clicked_share
    profiles = [p.model_copy(update={
        "patience": scale_patience(p.patience, moments.patience_scale),
        "time_budget_min": scale_budget(p.time_budget_min, moments.budget_scale),
        "return_propensity": float(np.clip(0.5 * visit_rates.get(p.user_id, pooled) / base_rate, 0.01, 0.99)),
    }) for p in profiles]
    first = choices.first
    ratings = _ratings(log, ids)
    positive = positive_ratings(np.concatenate([r[first.at[u, "c"]: first.at[u, "v"]] for u, r in zip(ids, ratings)]),
                                real.dataset.rating_scale)
    train_positive = positive_ratings(np.concatenate(ratings), real.dataset.rating_scale)
    weights = np.array([logit.weights[t] for t in CHOICE_TERMS])
    like = _like_threshold(fit_rows, positive, weights, moments.bias,
                           np.array([activity.get(u, 0.0) for u in ids]), moments.sessions.click_utility,
                           train_positive)
    choice = {"bias": moments.bias}
    if like is not None:
        base = world0.choice
        choice |= {"like_threshold": like["value"],
                   "share_threshold": like["value"] + base.share_threshold - base.like_threshold}
    world = build(WorldConfig, "calibrated world", world0, choice=choice,
                  returns={"base_rate": base_rate, "satisfaction_reference": visits.satisfaction_reference,
                           "churn_bias": visits.churn_bias, "churn_after": floor})

    stage(f"{STAGES[5]} ({config.folds} time windows)")
    folds = _fold_weights(real.dataset, log, config, attention, choices.half_life)
    report = {
        "data": json.loads(config.data.model_dump_json()),
        "split": real.split.describe(),
        "leakage": _leakage(real),
        "exposure": {
            "assumption": "users see slates of items drawn uniformly from the catalog and click an assumed "
                          f"{config.assumed_ctr:g} of the items they reach (the log has no impressions, so it does "
                          "not identify the click level); the click bias is solved for that CTR and patience and "
                          "daily time budget are fitted to the log's session sizes",
            "assumed_ctr": config.assumed_ctr, "ctr_band": list(config.ctr_band),
            "simulated_ctr": moments.ctr,
        },
        "choice": {
            "choices": {"fit": len(fit_rows.user), "valid": len(choices.valid_rows.user),
                        "negatives_per_choice": config.n_negatives},
            "weights": {t: estimate(logit.weights[t], logit.std_errors[t]) for t in CHOICE_TERMS},
            "loglik_per_choice": {"train": logit.loglik, "valid": choices.valid_loglik, "null": logit.null_loglik},
            "feature_correlation": _feature_correlation(fit_rows),
        },
        "attention": _attention_report(requested, choices),
        "folds": folds,
        "conformity": _spread(np.array(list(conformity.values()))),
        "activity": _spread(np.array(list(activity.values()))),
        "sessions": {
            "gap_minutes": config.session_gap_minutes, "sessions": len(sessions.sessions), "gaps": sessions.n_gaps,
            "gap_shape": estimate(sessions.gap_shape, sessions.gap_shape_se),
            "gap_loglik_per_gap": sessions.gap_loglik,
            "pooled_rate_per_day": sessions.pooled_rate, "base_rate": base_rate,
            "churn_probability": estimate(sessions.churn_probability, sessions.churn_probability_se),
            "churn_bias": world.returns.churn_bias, "churn_after": floor,
            "return_rate": _spread(sessions.user_rates.to_numpy()),
            "visits": {"consuming_share": visits.clicked_share, "churn_per_visit": visits.churn_per_visit,
                       "satisfaction_reference": visits.satisfaction_reference,
                       "end_satisfaction": _spread(moments.sessions.satisfaction)},
        },
        "like_threshold": (like if like is not None
                           else {"note": "not identified: the log has no explicit ratings of consumptions"}),
        "moments": {"bias": moments.bias, "patience_scale": moments.patience_scale,
                    "budget_scale": moments.budget_scale, "objective": moments.objective,
                    "evaluations": moments.evaluations, "observed": moments.observed,
                    "simulated": moments.simulated},
        "not_identified": list(NOT_IDENTIFIED),
    }
    calibrated = CalibratedWorld(world, real.catalog, profiles, report)
    stage(STAGES[6])
    check = check_fit(calibrated, real, config)
    report["fit_check"] = check
    report["warnings"] = fit_warnings(check) + fold_warnings(folds) + _moment_warnings(moments)
    return calibrated


@dataclass(frozen=True)
class _Choices:
    """The choice logit fitted on one stretch of a log (the whole train split, or a time fold)."""

    logit: LogitFit
    fit_rows: ChoiceData
    valid_rows: ChoiceData
    valid_loglik: float
    ids: list[str]
    first: pd.DataFrame  # user -> c (first fit choice), v (first validation choice), positions in their history
    half_life: float | None = None  # days (inf: all-time counts up to each choice); None: the context's catalog
    grid: dict[float, dict[str, float]] = field(default_factory=dict)  # half-life -> train/valid log-lik, weight


@dataclass(frozen=True)
class _AttentionLog:
    """Every train interaction (all users, sorted by time): what the attention at a choice's time may read."""

    items: np.ndarray  # catalog rows
    times: np.ndarray  # seconds
    n_items: int

    @classmethod
    def of(cls, log: pd.DataFrame, n_items: int) -> _AttentionLog:
        return cls(log["item"].to_numpy(np.int64), log["timestamp"].to_numpy(np.float64), n_items)

    def features(self, rows: list[ChoiceData], half_life: float) -> list[ChoiceData]:
        """`rows` with the popularity feature read at each choice's own time (`attention_z`)."""
        at = np.concatenate([r.time for r in rows if r.time is not None])
        cand = np.concatenate([r.items for r in rows if r.items is not None])
        z = attention_z(self.items, self.times, self.n_items, half_life, at, cand)
        ends = np.cumsum([0] + [len(r.user) for r in rows])
        return [with_popularity(r, z[a:b]) for r, a, b in zip(rows, ends[:-1], ends[1:])]


def _attention_catalog(catalog: Catalog, attention: _AttentionLog, half_life: float,
                       representation: RepresentationConfig) -> Catalog:
    """The world's catalog with popularity = the attention at the cutoff (the train log's end) with the half-life the
    choice weights were fitted for, on the scale of `attention_z` (same smoothing and standardization)."""
    days = float(half_life) if np.isfinite(half_life) else None
    popularity, used = _popularity(attention.items, attention.times, attention.n_items, days,
                                   representation.popularity_horizon_days)
    cfg = representation.model_copy(update={"popularity_half_life_days": days})
    return dataclasses.replace(catalog, popularity=popularity.astype(np.float32),
                               metadata={**catalog.metadata, "config": cfg.model_dump_json(),
                                         "popularity_half_life_days": used})


def _half_life_key(h: float) -> str:
    return "inf" if not np.isfinite(h) else f"{h:g}"


def _attention_report(requested: float | str | None, choices: _Choices) -> dict[str, Any]:
    """calibration.json's `attention`: which popularity the choices and the world read, and why that half-life."""
    if choices.half_life is None:
        return {"half_life_days": None, "note": "popularity is the all-time count (choices: the context's "
                "catalog; world: the train log's), static in time"}
    how = ("fitted by the choice model itself: the half-life whose attention-in-time feature gives the best "
           "validation log-likelihood per choice" if requested == "fit" else "given")
    return {"half_life_days": _half_life_key(choices.half_life), "how": how,
            "feature": "standardized log attention of each candidate at its choice's day, from interactions of "
                       "all users on earlier days only (add-one smoothed as the catalog's popularity)",
            "world": "the catalog's popularity is the attention at the cutoff with this half-life",
            "grid": {_half_life_key(h): v for h, v in choices.grid.items()}}


def _fit_choices(dataset: Dataset, log: pd.DataFrame, config: CalibrationConfig, rng: np.random.Generator,
                 attention: _AttentionLog | None = None, half_lives: tuple[float, ...] = ()) -> _Choices:
    """Context / fit / valid per user in time; features from the context only (module docstring).

    `log` is sorted by time and has the catalog row of each item in `item`. With `attention`, the
    popularity feature is the attention at each choice's own time instead of the context catalog's
    (`attention_z`), for each of `half_lives`; the half-life whose fit scores best on the validation
    choices is kept (ties: the longer memory).
    """
    sizes = log.groupby("user_id")["item"].transform("size")
    log = log[sizes >= config.min_interactions]
    rank = log.groupby("user_id").cumcount()
    n_u = log.groupby("user_id")["item"].transform("size")
    ctx_end = np.ceil(config.context_fraction * n_u).astype(int)
    valid_start = np.maximum(n_u - np.floor(config.valid_fraction * n_u).astype(int), ctx_end + 1)
    context = log[rank < ctx_end]
    representation = config.data.representation
    if attention is not None:  # the context catalog's popularity is replaced per choice; traits read all-time counts
        representation = representation.model_copy(update={"popularity_half_life_days": None})
    ctx_catalog = build_catalog(dataset, context, representation)
    ctx_profiles = build_profiles(dataset, ctx_catalog, context, np.random.default_rng(config.seed),
                                  n_topics=config.data.n_topics)
    ids = [p.user_id for p in ctx_profiles]
    interests = np.stack([p.interest_vector(ctx_catalog) for p in ctx_profiles]).astype(np.float64)
    trait = np.array([p.novelty_trait for p in ctx_profiles])
    seq = log.groupby("user_id")["item"].agg(lambda s: s.to_numpy())
    first = log.assign(c=ctx_end, v=valid_start).groupby("user_id")[["c", "v"]].first()
    hist = [seq[u] for u in ids]
    when = None
    if attention is not None:
        stamps = log.groupby("user_id")["timestamp"].agg(lambda s: s.to_numpy(np.float64))
        when = [stamps[u] for u in ids]
    fit_rows = choice_data(ctx_catalog, interests, trait, [h[: first.at[u, "v"]] for u, h in zip(ids, hist)],
                           first.loc[ids, "c"].to_numpy(), config.n_negatives, rng,
                           times=None if when is None else [t[: first.at[u, "v"]] for u, t in zip(ids, when)])
    valid_rows = choice_data(ctx_catalog, interests, trait, hist, first.loc[ids, "v"].to_numpy(),
                             config.n_negatives, rng, times=when)
    if attention is None:
        logit = fit_logit(fit_rows)
        valid_ll = mean_loglik(valid_rows, np.array([logit.weights[t] for t in CHOICE_TERMS]))
        return _Choices(logit, fit_rows, valid_rows, valid_ll, ids, first)
    fits: dict[float, _Choices] = {}
    for h in half_lives:
        fit_h, valid_h = attention.features([fit_rows, valid_rows], h)
        logit = fit_logit(fit_h)
        valid_ll = mean_loglik(valid_h, np.array([logit.weights[t] for t in CHOICE_TERMS]))
        fits[float(h)] = _Choices(logit, fit_h, valid_h, valid_ll, ids, first, float(h))
    best = max(fits, key=lambda h: (fits[h].valid_loglik, h))
    grid = {h: {"valid_loglik": c.valid_loglik, "train_loglik": c.logit.loglik,
                "popularity_weight": c.logit.weights["popularity"]} for h, c in fits.items()}
    return dataclasses.replace(fits[best], grid=grid)


def _fold_weights(dataset: Dataset, log: pd.DataFrame, config: CalibrationConfig,
                  attention: _AttentionLog | None = None, half_life: float | None = None) -> list[dict[str, Any]]:
    """The choice weights fitted on each of `config.folds` consecutive time windows of the train log.

    Same procedure as the main fit (its own context / fit / valid split and context-only
    features per window, and with attention in time the main fit's half-life, read from every
    train interaction before each choice), so the spread between folds is what the fit would give
    on another stretch of the same log: a weight whose folds disagree beyond their standard errors
    is not a stable property of the users (`fold_warnings`).
    """
    t = log["timestamp"].to_numpy(np.float64)
    edges = np.quantile(t, np.linspace(0, 1, config.folds + 1))
    out = []
    for f in range(config.folds):
        inside = (t >= edges[f]) & ((t < edges[f + 1]) if f < config.folds - 1 else (t <= edges[f + 1]))
        part = log[inside]
        entry: dict[str, Any] = {"fold": f, "start": float(edges[f]), "end": float(edges[f + 1]),
                                 "interactions": int(inside.sum())}
        counts = part.groupby("user_id").size()
        if int((counts >= config.min_interactions).sum()) < config.min_users:
            out.append(entry | {"note": f"fewer than {config.min_users} users with {config.min_interactions} "
                                        "interactions in this window: not fitted"})
            continue
        try:
            fit = _fit_choices(dataset, part, config, np.random.default_rng(config.seed + 1 + f),
                               attention if half_life is not None else None,
                               () if half_life is None else (half_life,))
        except ValueError as err:
            out.append(entry | {"note": f"not fitted: {err}"})
            continue
        out.append(entry | {"users": len(fit.ids), "choices": len(fit.fit_rows.user),
                            "weights": {k: estimate(fit.logit.weights[k], fit.logit.std_errors[k])
                                        for k in CHOICE_TERMS}})
    return out


def fold_warnings(folds: list[dict[str, Any]]) -> list[str]:
    """One sentence per weight whose estimates on two folds differ by more than 1.96 SE of the difference."""
    out = []
    fitted = [f for f in folds if "weights" in f]
    for term in CHOICE_TERMS:
        pairs = []
        for i, a in enumerate(fitted):
            for b in fitted[i + 1:]:
                wa, wb = a["weights"][term], b["weights"][term]
                if abs(wa["value"] - wb["value"]) > Z95_ROUNDED * np.hypot(wa["se"], wb["se"]):
                    pairs.append(f"{a['fold']} vs {b['fold']} ({wa['value']:.3g} vs {wb['value']:.3g})")
        if pairs:
            out.append(f"folds: choice.{term} differs between time folds beyond their standard errors: "
                       + "; ".join(pairs) + ". It is not stable over the log's time span")
    return out


def check_fit(calibrated: CalibratedWorld, real: RealWorld, config: CalibrationConfig) -> dict[str, dict[str, Any]]:
    """The fitted-vs-log table (`fit_check`): the calibrated users simulated over their train windows."""
    train = real.split.train
    ids = [p.user_id for p in calibrated.profiles]
    window = _train_windows(real).reindex(ids).fillna(0.0).to_numpy()
    logged = train.assign(positive=positive_ratings(train["rating"].to_numpy(np.float64), real.dataset.rating_scale)
                          if "rating" in train.columns else np.nan)
    log_stats = log_statistics(logged[logged["user_id"].isin(set(ids))][["user_id", "timestamp", "positive"]],
                               len(ids), config.session_gap_minutes)
    sim = simulate_log(calibrated.catalog, calibrated.world, calibrated.profiles, window, config.seed)
    return fit_check(log_stats, sim, log_statistics(sim.consumptions, len(ids), config.session_gap_minutes),
                     config.ctr_band)


def _train_windows(real: RealWorld) -> pd.Series:
    """user -> days from their first train interaction to the end of what train observed of them.

    Global split: the cutoff. Per-user split: the user's first held-out interaction (their train
    history was cut there), else the last train timestamp.
    """
    train = real.split.train
    first = train.groupby("user_id")["timestamp"].min()
    end = pd.Series(real.split.cutoff if real.split.cutoff is not None else float(train["timestamp"].max()),
                    index=first.index)
    if real.split.mode == "per_user" and len(real.split.test):
        held = real.split.test.groupby("user_id")["timestamp"].min()
        end = held.reindex(first.index).fillna(end)
    return ((end - first) / SECONDS_PER_DAY).clip(lower=0.0)


def _check_no_test_time(real: RealWorld) -> None:
    """With a global split, nothing after the cutoff may reach a fit (the train part is all that is read)."""
    if real.split.cutoff is not None and len(real.split.train) and \
            float(real.split.train["timestamp"].max()) > real.split.cutoff:
        raise AssertionError("global split: train interactions after the cutoff")


def _leakage(real: RealWorld) -> dict[str, Any]:
    """What of the held-out part any fit reads (calibration.json's `leakage`)."""
    if real.split.mode == "per_user":
        return {"leaks": True, "what": [
            "sessions, return gaps, return rates and churn are fitted on the whole log's (user, timestamp) pairs, "
            "held-out interactions included (their times, never their items or ratings): a per-user split ends "
            "every user's train history early and would make everyone look churned",
            "a per-user split keeps other users' interactions that are later than a user's held-out ones in train "
            "(the catalog's popularity, quality and factors and the choice fit read them)",
        ], "avoid": "use the global split (one time cutoff): then every fit reads only interactions before it"}
    return {"leaks": False, "what": [f"every fit reads only train interactions, all at or before the cutoff "
                                     f"t={real.split.cutoff:.0f}"]}


def _moment_warnings(moments: MomentFit) -> list[str]:
    """A moment the fit could not bring within the fit check's tolerance for it (one definition of a miss;
    a discrete median one item off its log value of 3 is within it, as in the table)."""
    missed = [m for m, row in _MOMENT_ROWS.items()
              if not TOLERANCES[row].ok(moments.observed[m], moments.simulated[m])]
    if missed:
        return [f"moments: the session-size {', '.join(missed)} stay(s) beyond the fit check's tolerance (objective "
                f"{moments.objective:.3g}): simulated {_fmt_moments(moments.simulated)} against the log's "
                f"{_fmt_moments(moments.observed)}"]
    return []


def _fmt_moments(m: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in m.items())


def _feature_correlation(rows: ChoiceData) -> dict[str, float]:
    """Pairwise correlations of the choice features over all alternatives: collinearity makes weights unstable."""
    x = rows.x.reshape(-1, rows.x.shape[2])
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant feature (implicit log: quality) has none
        c = np.nan_to_num(np.corrcoef(x, rowvar=False))
    return {f"{CHOICE_TERMS[i]}~{CHOICE_TERMS[j]}": float(c[i, j])
            for i in range(len(CHOICE_TERMS)) for j in range(i + 1, len(CHOICE_TERMS))}


def _check_log(dataset: Dataset, config: CalibrationConfig) -> None:
    """Bad input gets one clear sentence naming what is missing, before anything is fitted."""
    where = config.data.path
    log = dataset.interactions
    if not dataset.has_timestamps:
        raise ConfigError(f"{where}: the log has no timestamps; calibration needs them to order each user's "
                          "choices and to cut sessions")
    if log["timestamp"].nunique() < 2:
        raise ConfigError(f"{where}: every interaction has the same timestamp; calibration needs their times")
    if log["item_id"].nunique() < 2:
        raise ConfigError(f"{where}: the log names a single item; a choice model needs at least two")
    _check_users(log, config, "")


def _check_train(real: RealWorld, config: CalibrationConfig) -> None:
    _check_users(real.split.train, config, " train")


def _check_users(log: pd.DataFrame, config: CalibrationConfig, which: str) -> None:
    counts = log.groupby("user_id").size()
    enough = int((counts >= config.min_interactions).sum())
    if enough < config.min_users:
        raise ConfigError(f"{config.data.path}: only {enough} of {len(counts)} users have at least "
                          f"{config.min_interactions}{which} interactions; calibration needs at least "
                          f"{config.min_users} such users")


def _timing_log(real: RealWorld) -> pd.DataFrame:
    """The interactions whose times the session and return fit reads.

    A per-user split holds out each user's latest interactions, so its train part would end
    every user early and make everyone look churned; the return fit then reads the whole log's
    (user, time) pairs, never which items the held-out interactions were. A global split's
    train part is a clean observation window and is used as is.
    """
    if real.split.mode == "per_user":
        return real.dataset.interactions[["user_id", "timestamp"]]
    return real.split.train


def _gaps_days(sessions: pd.DataFrame) -> np.ndarray:
    """Days from each session's end to the same user's next session's start."""
    nxt = sessions.groupby("user_id")["start"].shift(-1)
    return ((nxt - sessions["end"]) / SECONDS_PER_DAY).dropna().to_numpy()


def _ratings(log: pd.DataFrame, ids: list[str]) -> list[np.ndarray]:
    """Each user's ratings in the order of their choices (`log` is sorted by time)."""
    per_user = log.groupby("user_id")["rating"].agg(lambda s: s.to_numpy(np.float64))
    return [per_user[u] for u in ids]


def _like_threshold(rows: ChoiceData, positive: np.ndarray, weights: np.ndarray, bias: float,
                    activity: np.ndarray, simulated_utility: np.ndarray,
                    train_positive: np.ndarray) -> dict[str, Any] | None:
    """The like threshold, or None without usable ratings (no explicit ratings, or all alike).

    The log gives P(positive | consumed) = sigmoid(u - T) by maximum likelihood on the fitted
    utility u of each consumed item (`fit_like_threshold`), u as the log can see it: context
    features at position 0 and no fatigue. A simulated user's like compares the *whole* click
    utility with T, and the clicks of a simulated user carry terms the log does not show
    (position and fatigue penalties, kept at their defaults, a novelty appetite that moves
    per session), so the clicked items' utilities sit lower than the log's fitted ones, and
    the MLE's threshold would make the world's positive rate too low (0.48 against 0.58 on the
    reference log). The MLE's estimating equation, sum(y - sigmoid(u - T)) = 0, says the mean
    like probability over consumed items is the positive share; the world's threshold solves
    the same equation over the utilities its simulated users click at (`simulated_utility`,
    from the moment fit's sessions), with the positive share of every train consumption
    (`train_positive`; the MLE sees only the fit segment's). Both thresholds, and the shift
    between them, are reported.
    """
    rated = ~np.isnan(positive)
    if not rated.any() or np.nanmin(positive) == np.nanmax(positive):
        return None
    utility = bias + activity[rows.user] + rows.x[:, 0] @ weights
    log_t, se = fit_like_threshold(utility[rated], positive[rated])
    share = float(np.nanmean(train_positive))
    if not len(simulated_utility):
        return estimate(log_t, se) | {"positive_share": share, "log_mle": log_t, "note": "no simulated clicks"}
    value = _solve_share(np.asarray(simulated_utility, np.float64), share)
    return estimate(value, se) | {"positive_share": share, "log_mle": log_t, "shift": value - log_t,
                                   "note": "solved on the simulated users' click utilities (the MLE's estimating "
                                           "equation); log_mle is the threshold on the log's fitted utilities"}


def _solve_share(utility: np.ndarray, share: float) -> float:
    """T with mean(sigmoid(utility - T)) = share (decreasing in T: bisection)."""
    lo, hi = float(utility.min()) - 30.0, float(utility.max()) + 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(np.clip(mid - utility, -500, 500)))) > share:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _world(catalog: Catalog, weights: dict[str, float], gap_shape: float) -> WorldConfig:
    base = WorldConfig()
    n = len(catalog)
    candidates = min(base.n_candidates, n)
    return build(WorldConfig, "calibrated world", base,
                 n_candidates=candidates, slate_size=min(base.slate_size, candidates),
                 catalog={"n_items": max(n, 10)},
                 choice={t: float(weights[t]) for t in CHOICE_TERMS}, returns={"gap_shape": gap_shape})


def _activity(sessions: pd.DataFrame) -> dict[str, float]:
    """user -> log(mean session size / median user's), shrunk toward 0 by n / (n + 3) sessions."""
    per_user = sessions.groupby("user_id")["size"].agg(["mean", "size"])
    raw = np.log(per_user["mean"] / per_user["mean"].median())
    shrunk = raw * per_user["size"] / (per_user["size"] + _ACTIVITY_SHRINK)
    return {str(u): float(v) for u, v in shrunk.items()}


def _spread(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.1, 0.5, 0.9]) if len(values) else np.zeros(3)
    return {"mean": float(np.mean(values)) if len(values) else 0.0, "p10": float(q[0]), "median": float(q[1]),
            "p90": float(q[2])}


def save_calibration(calibrated: CalibratedWorld, out: str | Path) -> Path:
    """Write world.yaml, profiles.jsonl, catalog.parquet and calibration.json into `out`."""
    out = Path(out)
    write_atomic(out / "world.yaml", yaml.safe_dump(calibrated.world.model_dump(mode="json"), sort_keys=False))
    write_atomic(out / "profiles.jsonl", "".join(p.model_dump_json() + "\n" for p in calibrated.profiles))
    calibrated.catalog.to_parquet(out / "catalog.parquet")
    write_atomic(out / "calibration.json", json.dumps(calibrated.report, indent=2))
    return out


def load_calibration(path: str | Path) -> CalibratedWorld:
    """Read what `save_calibration` (`recoworld calibrate`) wrote."""
    from recoworld.evaluation.simulation import load_world

    root = Path(path)
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"{root} is not a calibrated world: missing {', '.join(missing)} "
                          "(write one with `recoworld calibrate --data DIR --out DIR`)")
    catalog = Catalog.from_parquet(root / "catalog.parquet")
    try:
        report = json.loads((root / "calibration.json").read_text())
    except ValueError as err:
        raise ConfigError(f"{root / 'calibration.json'}: not valid JSON ({err})") from None
    return CalibratedWorld(load_world(root / "world.yaml"), catalog, _load_profiles(root, catalog), report)


def _load_profiles(root: Path, catalog: Catalog) -> list[UserProfile]:
    """profiles.jsonl, each line a user of `catalog`; a bad line is an error naming the file and the line."""
    file, topics = root / "profiles.jsonl", set(catalog.topic_names)
    profiles = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            profile = UserProfile.model_validate_json(line)
        except ValidationError as err:
            raise ConfigError(f"{file}: line {n} is not a user profile ({err.errors()[0]['msg']}); "
                              "rewrite the folder with `recoworld calibrate`") from None
        unknown = sorted((set(profile.topic_interests) | set(profile.shifted_interests or {})) - topics)
        if unknown:
            raise ConfigError(f"{file}: line {n} names topic {unknown[0]!r}, which {root / 'catalog.parquet'} "
                              "lacks: the catalog is not the one this world was calibrated on")
        profiles.append(profile)
    return profiles
