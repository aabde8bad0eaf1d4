"""`calibrate`: fit the parametric user to a real log, and write/read the calibrated world.

Only the train part of the data's time split is read for choices (the same split `fidelity`
uses), so held-out items stay unseen; see `_timing_log` for the one use of held-out times.
Within each user's train history, in time:

    [ context (first `context_fraction`) | fit | valid (last `valid_fraction`) ]

The choice logit is fitted on the `fit` choices with interests, popularity and novelty
computed from the context only (a next-choice model, not an in-sample one), and its
log-likelihood is reported on `fit` (train) and on `valid` (validation). The written world
then uses the same weights with catalog and profiles rebuilt from the whole train split.

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
| choice bias, profiles' patience scale       | simulated moments of items per session (`moments`);   |
|                                             | jointly: sizes identify a combination of the two      |
| choice like_threshold                       | 1-D MLE of P(positive rating | consumed) given the    |
|                                             | fitted utility (`fit_like_threshold`), SE; needs      |
|                                             | explicit ratings, else kept at its configured value   |

The share threshold keeps its configured offset above the like threshold (a log of ratings
has no shares), so likes and shares stay ordered as in the synthetic world.

Not identified by an interaction log and kept at their configured values: position and
fatigue weights (no slates, no order of exposure), satisfaction effects and dynamics (no
satisfaction signal), the share threshold's offset. calibration.json lists them as such.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field

from recoworld.calibration.fit_choice import (
    CHOICE_TERMS,
    ChoiceData,
    choice_data,
    fit_conformity,
    fit_like_threshold,
    fit_logit,
    mean_loglik,
)
from recoworld.calibration.fit_sessions import SECONDS_PER_DAY, fit_sessions, visit_returns
from recoworld.calibration.moments import consuming_share, fit_session_moments, scale_patience
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.data.dataset import Dataset, positive_ratings
from recoworld.data.items import build_catalog
from recoworld.data.load import load_dataset
from recoworld.data.users import build_profiles
from recoworld.data.world import DataConfig, RealWorld, prepare_world
from recoworld.errors import ConfigError
from recoworld.population import UserProfile

FILES = ("world.yaml", "profiles.jsonl", "catalog.parquet", "calibration.json")
NOT_IDENTIFIED = ("choice.position", "choice.fatigue", "choice.share_threshold - like_threshold",
                  "returns.satisfaction_effect", "returns.churn_satisfaction", "dynamics.*")
_ACTIVITY_SHRINK = 3.0
_ACTIVITY_GRID = 7  # activity offsets at which the share of visits that consume is simulated
_MAX_PROPENSITY = 0.95


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
    seed: int = Field(0, ge=0)


@dataclass
class CalibratedWorld:
    """A calibrated world: what `simulate`, `fidelity` and the validity report run on."""

    world: WorldConfig
    catalog: Catalog
    profiles: list[UserProfile]
    report: dict[str, Any] = field(default_factory=dict)


def calibrate(config: CalibrationConfig, on_eval: Callable[[int, float], None] | None = None) -> CalibratedWorld:
    """Fit the parametric user to `config.data` (module docstring); `on_eval(n, best)` tracks the moments fit."""
    data = config.data
    dataset = load_dataset(data.path, data.format, data.columns or None)
    _check_log(dataset, config)
    real = prepare_world(data, dataset)
    _check_train(real, config)
    train = real.split.train
    row = pd.Series(np.arange(len(real.catalog)), index=real.catalog.item_ids)
    log = train.assign(item=row.reindex(train["item_id"].to_numpy()).to_numpy().astype(np.int64))
    log = log.sort_values(["timestamp"], kind="stable")
    sizes = log.groupby("user_id")["item"].transform("size")
    log = log[sizes >= config.min_interactions]
    rank = log.groupby("user_id").cumcount()
    n_u = log.groupby("user_id")["item"].transform("size")
    ctx_end = np.ceil(config.context_fraction * n_u).astype(int)
    valid_start = np.maximum(n_u - np.floor(config.valid_fraction * n_u).astype(int), ctx_end + 1)
    context = log[rank < ctx_end]

    rng = np.random.default_rng(config.seed)
    ctx_catalog = build_catalog(real.dataset, context, config.data.representation)
    ctx_profiles = build_profiles(real.dataset, ctx_catalog, context, np.random.default_rng(config.seed),
                                  n_topics=config.data.n_topics)
    ids = [p.user_id for p in ctx_profiles]
    interests = np.stack([p.interest_vector(ctx_catalog) for p in ctx_profiles]).astype(np.float64)
    trait = np.array([p.novelty_trait for p in ctx_profiles])
    seq = log.groupby("user_id")["item"].agg(lambda s: s.to_numpy())
    first = log.assign(c=ctx_end, v=valid_start).groupby("user_id")[["c", "v"]].first()
    hist = [seq[u] for u in ids]
    fit_rows = choice_data(ctx_catalog, interests, trait, [h[: first.at[u, "v"]] for u, h in zip(ids, hist)],
                           first.loc[ids, "c"].to_numpy(), config.n_negatives, rng)
    valid_rows = choice_data(ctx_catalog, interests, trait, hist, first.loc[ids, "v"].to_numpy(),
                             config.n_negatives, rng)
    logit = fit_logit(fit_rows)
    weights = np.array([logit.weights[t] for t in CHOICE_TERMS])
    valid_ll = mean_loglik(valid_rows, weights)
    conformity = dict(zip(ids, fit_conformity(fit_rows, logit, len(ids))))

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
    moments = fit_session_moments(real.catalog, world0, moment_profiles, sessions.sessions["size"].to_numpy(),
                                  config.seed, config.moment_budget, on_eval, gaps)
    p_churn = min(max(sessions.churn_probability, 1e-4), 1 - 1e-4)
    visits = visit_returns(moments.sessions.satisfaction, moments.sessions.clicks > 0, p_churn, world0.returns)
    user_activity = np.array([activity.get(u, 0.0) for u in sessions.user_rates.index])
    grid = np.linspace(user_activity.min(), user_activity.max(), _ACTIVITY_GRID)
    share = consuming_share(real.catalog, world0, moment_profiles, moments.bias, moments.patience_scale, config.seed,
                            grid, gaps)
    per_user_share = np.interp(user_activity, grid, np.maximum(share, 1.0 / len(moment_profiles)))
    visit_rates = sessions.user_rates / per_user_share
    base_rate = float(np.quantile(visit_rates, 0.99)) * 0.5 / _MAX_PROPENSITY
    pooled = sessions.pooled_rate / visits.clicked_share
    profiles = [p.model_copy(update={
        "patience": scale_patience(p.patience, moments.patience_scale),
        "return_propensity": float(np.clip(0.5 * visit_rates.get(p.user_id, pooled) / base_rate, 0.01, 0.99)),
    }) for p in profiles]
    positive = positive_ratings(np.concatenate([r[first.at[u, "c"]: first.at[u, "v"]]
                                                for u, r in zip(ids, _ratings(log, ids))]), real.dataset.rating_scale)
    like = _like_threshold(fit_rows, positive, weights, moments.bias,
                           np.array([activity.get(u, 0.0) for u in ids]))
    choice = {"bias": moments.bias}
    if like is not None:
        base = world0.choice
        choice |= {"like_threshold": like[0], "share_threshold": like[0] + base.share_threshold - base.like_threshold}
    world = build(WorldConfig, "calibrated world", world0, choice=choice,
                  returns={"base_rate": base_rate, "satisfaction_reference": visits.satisfaction_reference,
                           "churn_bias": visits.churn_bias, "churn_after": floor})

    report = {
        "data": json.loads(config.data.model_dump_json()),
        "split": real.split.describe(),
        "choice": {
            "choices": {"fit": len(fit_rows.user), "valid": len(valid_rows.user),
                        "negatives_per_choice": config.n_negatives},
            "weights": {t: _estimate(logit.weights[t], logit.std_errors[t]) for t in CHOICE_TERMS},
            "loglik_per_choice": {"train": logit.loglik, "valid": valid_ll, "null": logit.null_loglik},
        },
        "conformity": _spread(np.array(list(conformity.values()))),
        "activity": _spread(np.array(list(activity.values()))),
        "sessions": {
            "gap_minutes": config.session_gap_minutes, "sessions": len(sessions.sessions), "gaps": sessions.n_gaps,
            "gap_shape": _estimate(sessions.gap_shape, sessions.gap_shape_se),
            "gap_loglik_per_gap": sessions.gap_loglik,
            "pooled_rate_per_day": sessions.pooled_rate, "base_rate": base_rate,
            "churn_probability": _estimate(sessions.churn_probability, sessions.churn_probability_se),
            "churn_bias": world.returns.churn_bias, "churn_after": floor,
            "return_rate": _spread(sessions.user_rates.to_numpy()),
            "visits": {"consuming_share": visits.clicked_share, "churn_per_visit": visits.churn_per_visit,
                       "satisfaction_reference": visits.satisfaction_reference,
                       "end_satisfaction": _spread(moments.sessions.satisfaction)},
        },
        "like_threshold": (_estimate(*like) | {"positive_share": float(np.nanmean(positive))} if like is not None
                           else {"note": "not identified: the log has no explicit ratings of consumptions"}),
        "moments": {"bias": moments.bias, "patience_scale": moments.patience_scale, "objective": moments.objective,
                    "evaluations": moments.evaluations, "observed": moments.observed,
                    "simulated": moments.simulated},
        "not_identified": list(NOT_IDENTIFIED),
    }
    return CalibratedWorld(world, real.catalog, profiles, report)


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
                    activity: np.ndarray) -> tuple[float, float] | None:
    """(threshold, SE) from the fitted click utility of each chosen item, or None without usable ratings."""
    rated = ~np.isnan(positive)
    if not rated.any() or np.nanmin(positive) == np.nanmax(positive):
        return None
    utility = bias + activity[rows.user] + rows.x[:, 0] @ weights
    return fit_like_threshold(utility[rated], positive[rated])


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


def _estimate(value: float, se: float) -> dict[str, float]:
    return {"value": float(value), "se": float(se), "ci95": [float(value - 1.96 * se), float(value + 1.96 * se)]}


def _spread(values: np.ndarray) -> dict[str, float]:
    q = np.quantile(values, [0.1, 0.5, 0.9]) if len(values) else np.zeros(3)
    return {"mean": float(np.mean(values)) if len(values) else 0.0, "p10": float(q[0]), "median": float(q[1]),
            "p90": float(q[2])}


def save_calibration(calibrated: CalibratedWorld, out: str | Path) -> Path:
    """Write world.yaml, profiles.jsonl, catalog.parquet and calibration.json into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.yaml").write_text(yaml.safe_dump(calibrated.world.model_dump(mode="json"), sort_keys=False))
    (out / "profiles.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in calibrated.profiles))
    calibrated.catalog.to_parquet(out / "catalog.parquet")
    (out / "calibration.json").write_text(json.dumps(calibrated.report, indent=2))
    return out


def load_calibration(path: str | Path) -> CalibratedWorld:
    """Read what `save_calibration` (`recoworld calibrate`) wrote."""
    from recoworld.evaluation.simulation import load_world

    root = Path(path)
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise ConfigError(f"{root} is not a calibrated world: missing {', '.join(missing)} "
                          "(write one with `recoworld calibrate --data DIR --out DIR`)")
    lines = (root / "profiles.jsonl").read_text().splitlines()
    return CalibratedWorld(load_world(root / "world.yaml"), Catalog.from_parquet(root / "catalog.parquet"),
                           [UserProfile.model_validate_json(line) for line in lines if line.strip()],
                           json.loads((root / "calibration.json").read_text()))
