"""The return model of a distilled surrogate (`recoworld distill`): return gaps and churn as they depend on how
the session went, fitted on the surrogate's own end-of-session satisfaction.

The parametric user's return hazard reads one number, its satisfaction s when the session ends (`ReturnConfig`):
mean gap = exp(-satisfaction_effect * (s - satisfaction_reference)) / base_rate (return propensity 0.5, as the
distilled profiles have), churn probability = sigmoid(churn_bias - churn_satisfaction * s). An LLM user states
its gap and whether it comes back at each session's end, and its own stated satisfaction is on another scale (or
absent). So s is *replayed*: `replay_satisfaction` runs the parametric user's satisfaction dynamics (those of
`ParametricUsers.review` and `start_sessions`: per-item targets and rates, fatigue from repetition and low
quality, interest drift after clicks, dislikes and instructions, recovery between sessions) on the LLM's own
reactions and instructions, teacher-forced, through the user's own rule (`review_kernels.satisfaction_step`,
`fatigue_step`), so a change to the user model reaches the replay.
The surrogate then maps its own simulated s through the fitted hazard, so a recommender that earned the LLM user's
quick returns earns the surrogate's too.

| parameter                                 | method                                                          |
|-------------------------------------------|-----------------------------------------------------------------|
| satisfaction_effect, base_rate, gap_shape | Gamma GLM, log link: log E[gap] = a - effect (s - reference),    |
|                                           | Fisher scoring; shape by profile likelihood; SEs from Fisher    |
| satisfaction_reference                    | mean replayed s of the fitted session ends (so base_rate is the |
|                                           | typical session's)                                              |
| churn_bias, churn_satisfaction            | logit of churned on (1, -s) over session ends                   |
| base_rate's level                         | matched on the surrogate's own simulated session ends           |
|                                           | (`fit_returns`, `own_satisfaction`)                             |

Effects are held at >= 0 (`ReturnConfig`'s bounds: a happier user never returns later); a log that shows the
opposite gets 0 and a note. Without this fit (one Gamma for every session, the first version of distill), the
surrogate's retention hardly responded to what the recommender served: on the hidden-rule user, a spread of 0.03
between the best and worst recommender against the LLM users' 0.13, which single simulations could rank either
way (docs/results.md, `experiments/distill_rank_check.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from recoworld.calibration.distill import fit_binary_logit, gamma_shape
from recoworld.catalog import Catalog
from recoworld.config import DynamicsConfig, ReturnConfig
from recoworld.mindset import Intent
from recoworld.population import UserProfile
from recoworld.simulators.instructions import intent_direction
from recoworld.simulators.review_kernels import (
    fatigue_increase,
    fatigue_step,
    low_quality_fatigue,
    satisfaction_step,
    settle_params,
)

#: Churned and returning session ends (each) before churn's dependence on satisfaction is fitted: on fewer, a
#: separable handful (6 session ends of a real model) gave a slope of 74; then only the share is fitted.
MIN_EACH_OUTCOME = 5


def replay_satisfaction(items: pd.DataFrame, profiles: dict[str, UserProfile], catalog: Catalog,
                        dynamics: DynamicsConfig, returns: ReturnConfig) -> np.ndarray:
    """The parametric user's satisfaction after each reviewed item of `items` (rows of one episode together, in
    order: `distill`'s items table), had it made the LLM's reactions. Between sessions the state recovers over
    the previous session's `return_gap_days`. Novelty is the items table's (max similarity to the last reviewed
    items), which the simulator computes over its memory slots: the same, up to slots left unseen."""
    emb = catalog.embeddings.astype(np.float64)
    params = settle_params(dict(dynamics))  # the user's rule reads them as the compiled review does
    quality = catalog.quality.astype(np.float64)
    low_quality = low_quality_fatigue(quality, params)
    initial = dynamics.initial_satisfaction
    sat_out = np.empty(len(items))
    episode = (items["recommender"] + "\x00" + items["user_id"]).to_numpy()
    cols = {c: items[c].to_numpy() for c in ("item", "reaction", "session", "step", "novelty", "left",
                                            "return_gap_days")}
    disliked = items["disliked"].to_numpy(bool) if "disliked" in items else np.zeros(len(items), bool)
    intents = items["intent"].to_numpy() if "intent" in items else np.full(len(items), None)
    eta = dynamics.interest_drift
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    for lo, hi in zip(starts, np.r_[starts[1:], len(items)]):
        long_term = profiles[items["user_id"].iat[lo]].interest_vector(catalog).astype(np.float64)
        interests, sat, fat, gap = long_term.copy(), initial, 0.0, math.inf
        session, step, push, intent = None, None, np.zeros_like(long_term), None
        for j in range(lo, hi):
            if cols["step"][j] != step:  # a new turn: the last one's dislikes and instruction move interests
                interests = _moved(interests, push, intent, catalog, dynamics)
                push[:] = 0.0
                step, intent = cols["step"][j], intents[j]
                fat = min(fat, 1.0)  # the state a turn starts from is capped; within a slate the path is not
            if cols["session"][j] != session:  # a new session: recover from the gap (inf before the first)
                session = cols["session"][j]
                interests = long_term + (interests - long_term) * math.exp(-gap / returns.interest_memory_days)
                fat *= math.exp(-gap / returns.fatigue_recovery_days)
                sat = initial + (sat - initial) * math.exp(-gap / returns.satisfaction_recovery_days)
            item = cols["item"][j]
            e = emb[item]
            rel = float(e @ interests)
            fat = fatigue_step(fat, fatigue_increase(1.0 - cols["novelty"][j], low_quality[item], params), params)
            clicked = bool(cols["reaction"][j] >= 1)
            dislike = bool(disliked[j]) and not clicked
            sat = satisfaction_step(sat, clicked, dislike, rel, quality[item], min(fat, 1.0), params)
            if clicked:
                interests = (1.0 - eta) * interests + eta * e
            elif dislike:
                push += e
            sat_out[j] = sat
            gap_j = cols["return_gap_days"][j]
            if cols["left"][j] and np.isfinite(gap_j):
                gap = float(gap_j)
    return sat_out


def _moved(interests: np.ndarray, push: np.ndarray, intent: str | None, catalog: Catalog,
           dynamics: DynamicsConfig) -> np.ndarray:
    """Interests after a turn: pushed away from its disliked items (`ParametricUsers._push_away`), then toward its
    instruction's intent (a JSON `Intent`; `ParametricUsers.apply_intent`), each keeping the norm at most 1."""
    if push.any():
        vec = interests - dynamics.dislike_push * push
        interests = vec / max(1.0, float(np.linalg.norm(vec)))
    if isinstance(intent, str) and intent:
        said = Intent.model_validate_json(intent)
        known = set(catalog.topic_names)  # a model may name a topic the catalog lacks: it moves nothing
        said = said.model_copy(update={"topics": [x for x in said.topics if x in known],
                                       "related": [x for x in said.related if x in known]})
        vec = interests + dynamics.instruction_strength * intent_direction(said, catalog)
        interests = vec / max(1.0, float(np.linalg.norm(vec)))
    return interests


def session_ends(items: pd.DataFrame, satisfaction: np.ndarray) -> pd.DataFrame:
    """One row per session the LLM user ended (its leaving turn's last reviewed item): replayed satisfaction,
    stated return gap (nan when churned) and churned."""
    ends = items["leaves"].to_numpy(bool)
    return pd.DataFrame({"satisfaction": satisfaction[ends],
                         "gap": items.loc[ends, "return_gap_days"].to_numpy(np.float64),
                         "churned": items.loc[ends, "churned"].fillna(False).to_numpy(bool)})


def fit_gap_glm(gaps: np.ndarray, s: np.ndarray, reference: float,
                iterations: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """Gamma GLM with log link, log E[gap] = a + b (s - reference): ((a, b), their standard errors, shape k).

    Fisher scoring (for a Gamma with log link the working weights are constant, so each step is a least-squares
    solve); the shape by profile likelihood at the fitted means (log k - digamma(k) = mean(y/mu - 1 - log(y/mu)));
    Cov(a, b) = (X'X)^-1 / k."""
    x = np.stack([np.ones(len(s)), s - reference], axis=1)
    xtx = x.T @ x
    beta = np.array([math.log(float(gaps.mean())), 0.0])
    for _ in range(iterations):
        mu = np.exp(x @ beta)
        step = np.linalg.lstsq(xtx, x.T @ ((gaps - mu) / mu), rcond=None)[0]
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    ratio = gaps / np.exp(x @ beta)
    shape = gamma_shape(float(np.mean(ratio - 1.0 - np.log(ratio))))
    se = np.sqrt(np.diag(np.linalg.pinv(xtx)) / shape)
    return beta, se, shape


def fit_returns(items: pd.DataFrame, profiles: dict[str, UserProfile], catalog: Catalog,
                dynamics: DynamicsConfig, returns: ReturnConfig,
                own_satisfaction: Callable[[dict[str, float]], np.ndarray] | None = None,
                ) -> tuple[dict[str, float], dict[str, Any]]:
    """(`ReturnConfig` fields, report entry) fitted on the fit users' session ends (module docstring); empty
    fields (the base world's kept) when no session ended.

    `own_satisfaction(fields)`: the end-of-session satisfactions of the surrogate itself (with these return
    fields) on the same users and recommenders. The surrogate's own sessions need not end as happy as its replay of
    the LLM's reactions (its choices are noisy where a model's may be near-deterministic); then the gap model is
    right in its slope but off in level. So `base_rate` is scaled until the surrogate's mean relative gap,
    mean exp(-effect (s - reference)), over its own session ends equals the replay's: the level the LLM users
    showed, as `fit_sessions.visit_returns` sets a calibrated world's reference on simulated satisfaction."""
    ends = session_ends(items, replay_satisfaction(items, profiles, catalog, dynamics, returns))
    if ends.empty:
        return {}, {"note": "no session ended; the base world's returns are kept"}
    s = ends["satisfaction"].to_numpy()
    fields: dict[str, float] = {"churn_after": 0}
    report: dict[str, Any] = {"session_ends": len(ends), "mean_satisfaction": float(s.mean())}
    came_back = ~ends["churned"].to_numpy() & np.isfinite(ends["gap"].to_numpy()) & (ends["gap"].to_numpy() > 0)
    gaps = ends["gap"].to_numpy()[came_back]
    if len(gaps) >= 2:
        reference = float(np.clip(s[came_back].mean(), 0.0, 1.0))
        beta, se, shape = fit_gap_glm(gaps, s[came_back], reference)
        if beta[1] > 0:  # happier users returned later: outside the model's bounds, so no effect
            report["satisfaction_effect_note"] = f"fitted {-beta[1]:.3f} < 0 (happier users came back later); set 0"
            beta, se, shape = fit_gap_glm(gaps, np.full(len(gaps), reference), reference)
            beta[1], se[1] = 0.0, float("nan")
        fields |= {"gap_shape": min(shape, 100.0), "base_rate": math.exp(-beta[0]),
                   "satisfaction_effect": -beta[1], "satisfaction_reference": reference}
        if own_satisfaction is not None and beta[1] < 0:
            own = own_satisfaction(fields)
            if len(own):
                factor = float(np.mean(np.exp(beta[1] * (own - reference)))
                               / np.mean(np.exp(beta[1] * (s[came_back] - reference))))
                fields["base_rate"] *= factor
                report["level"] = {"own_mean_satisfaction": float(own.mean()), "own_session_ends": len(own),
                                   "replayed_mean_satisfaction": float(s[came_back].mean()),
                                   "base_rate_factor": factor}
        report |= {"gap_shape": shape, "mean_gap_days_at_reference": math.exp(beta[0]), "gaps": len(gaps),
                   "satisfaction_effect": {"value": -beta[1], "se": se[1],
                                           "ci95": [-beta[1] - 1.96 * se[1], -beta[1] + 1.96 * se[1]]}}
    else:
        report["gaps_note"] = f"{len(gaps)} stated return gap(s): too few to fit; the base world's gap model is kept"
    churned = ends["churned"].to_numpy().astype(np.float64)
    share = float(np.clip(churned.mean(), 1e-4, 1 - 1e-4))
    bias, slope = math.log(share / (1 - share)), 0.0
    if min(churned.sum(), len(churned) - churned.sum()) >= MIN_EACH_OUTCOME:
        w, _ = fit_binary_logit(np.stack([np.ones(len(s)), -s], axis=1), churned)
        if w[1] >= 0:
            bias, slope = float(w[0]), float(w[1])
    elif 0 < churned.sum() < len(churned):
        report["churn_note"] = (f"{int(churned.sum())} churned and {int(len(churned) - churned.sum())} returning "
                                f"session ends: under {MIN_EACH_OUTCOME} of one, so only the churn share is fitted")
    fields |= {"churn_bias": bias, "churn_satisfaction": slope}
    report["churn"] = {"per_session": float(churned.mean()), "churn_bias": bias, "churn_satisfaction": slope}
    return fields, report
