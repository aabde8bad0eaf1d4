"""The distilled choice model's terms (issue 33): the click logit with room for tastes the persona does not explain.

`recoworld distill` fits one logistic regression of click on the LLM decisions of the fit users. Its columns:

| group           | columns                                                      | penalty          |
|-----------------|--------------------------------------------------------------|------------------|
| bias .. duration| `distill.TERMS`, the parametric user's own terms              | none (1e-4)      |
| topic           | one per catalog topic                                        | ridge            |
| minutes         | one step per knot: 1 when the item is longer than the knot    | ridge            |
| subtopic        | one per subtopic                                             | ridge            |
| creator         | one per creator                                              | ridge            |
| favourite       | the persona's favourite score of the item's topic (its        | ridge            |
|                 | rank weight), alone and times each minutes step               |                  |
| persona_topic   | each persona feature times each topic                         | ridge            |
| persona_minutes | each persona feature times each minutes step                  | ridge            |

Persona features (`choice.persona_features`) are the profile's categorical attributes (`device=phone`, one per
value at least two fit users have) and its novelty trait and daily minutes, all of which the LLM reads in the
persona line. Knots sit at round minutes (the thresholds a rule or an LLM states) inside the catalog's range.
Ridge columns are scaled to unit root mean square, so one strength fits all groups; it is chosen from a grid by
the held-out log-likelihood of a K-fold split of the fit users (never the held-out users). A group is kept when
removing it lowers that cross-validated likelihood (it "carries the fit"), else dropped and the rest refitted
(unless dropping all such groups together lowers it: then every group stays); persona interactions enter where
the data supports them. The drop of each group, base terms included, is
reported in nats per decision (`importance`); it is the honest measure, as coefficients of collinear groups
(minutes steps and `duration`, favourite and `relevance`) trade weight without changing the fit.

The fitted taste becomes `ChoiceConfig.taste`, which `choice.Taste` plays; `taste_utility` scores decisions
through that same lookup, so what the agreement report measures is what the simulator plays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import optimize, sparse

from recoworld.catalog import Catalog
from recoworld.config import PERSONA_TRAITS, PersonaTaste, TasteConfig
from recoworld.population import UserProfile
from recoworld.simulators.choice import Taste, minutes_bins, persona_features

#: Candidate knots of the minutes steps: round minutes, as thresholds are stated.
KNOTS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 30.0, 45.0, 60.0)
#: Fewest catalog items on each side of a knot (share) for it to be kept.
KNOT_SUPPORT = 0.01
TASTE_GROUPS = ("topic", "minutes", "subtopic", "creator", "favourite", "persona_topic", "persona_minutes")
#: Ridge strengths tried (on unit-RMS columns); the cross-validated likelihood picks one.
RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
#: Folds of the fit users for the ridge strength and the term importances.
FOLDS = 3
_BASE_RIDGE = 1e-4  # the parametric user's own terms: only enough to keep a separable log finite


def layout(items: pd.DataFrame, profiles: Mapping[str, UserProfile], catalog: Catalog) -> TasteConfig:
    """The taste columns these decisions support, with zero weights: the catalog's topics, subtopics and creators,
    the knots inside its minutes, and the persona features of the fit users (`items`' users)."""
    minutes = catalog.duration_min.astype(np.float64)
    knots = [k for k in KNOTS if min(np.mean(minutes <= k), np.mean(minutes > k)) >= KNOT_SUPPORT]
    users = [profiles[u] for u in sorted(items["user_id"].unique())]
    counts = pd.Series([f"{a}={v}" for p in users for a, v in sorted(p.attributes.items())]).value_counts()
    persona = [*sorted(counts[counts >= 2].index), *PERSONA_TRAITS]
    t, k = len(catalog.topic_names), len(knots)
    return TasteConfig(topics=list(catalog.topic_names), minutes_knots=knots, topic=[0.0] * t, minutes=[0.0] * k,
                       subtopic=dict.fromkeys(catalog.subtopic_names, 0.0),
                       creator=dict.fromkeys(catalog.creator_names, 0.0), favourite=[0.0] * (k + 1),
                       persona={n: PersonaTaste(topic=[0.0] * t, minutes=[0.0] * k) for n in persona})


def design(items: pd.DataFrame, taste: TasteConfig, profiles: Mapping[str, UserProfile], catalog: Catalog,
           groups: Sequence[str] = TASTE_GROUPS) -> dict[str, sparse.csr_matrix]:
    """The taste columns of each decision, by group (module docstring), in the order `to_taste` reads them; only
    `groups`. `items` needs the `distill._tables` columns and `favourite` (`distill.with_relevance`)."""
    n = len(items)
    rows = np.arange(n)
    index = {t: i for i, t in enumerate(taste.topics)}
    topic_of = np.array([index.get(t, -1) for t in catalog.topic_names])[items["topic"].to_numpy(np.int64)]
    has_topic = topic_of >= 0
    topic = _onehot(rows[has_topic], topic_of[has_topic], n, len(taste.topics))
    k = len(taste.minutes_knots)
    steps = sparse.csr_matrix(np.arange(k)[None, :] < minutes_bins(taste.minutes_knots,
                                                                  items["duration"].to_numpy())[:, None],
                              dtype=np.float64)
    item = items["item"].to_numpy(np.int64)
    sub_index = {s: i for i, s in enumerate(taste.subtopic)}
    sub_of = np.array([sub_index.get(s, -1) for s in catalog.subtopic_names])
    cre_index = {c: i for i, c in enumerate(taste.creator)}
    cre_of = np.array([cre_index.get(c, -1) for c in catalog.creator_names])
    fav = sparse.csr_matrix(items["favourite"].to_numpy(np.float64)[:, None])
    build = {
        "topic": lambda: topic,
        "minutes": lambda: steps,
        "subtopic": lambda: _mapped(sub_of[catalog.subtopic[item].astype(np.int64)], len(sub_index)),
        "creator": lambda: _mapped(cre_of[catalog.creator[item].astype(np.int64)], len(cre_index)),
        "favourite": lambda: sparse.hstack([fav, steps.multiply(fav)]).tocsr(),
        "persona_topic": lambda: _face_split(persona_rows(items, list(taste.persona), profiles), topic),
        "persona_minutes": lambda: _face_split(persona_rows(items, list(taste.persona), profiles), steps),
    }
    return {g: build[g]() for g in groups}


def persona_rows(items: pd.DataFrame, names: Sequence[str], profiles: Mapping[str, UserProfile]) -> np.ndarray:
    """(N, len(names)): the persona features (`choice.persona_features`) of each decision's user."""
    codes, users = pd.factorize(items["user_id"])
    if not len(users):
        return np.zeros((len(items), len(names)))
    return np.stack([persona_features(profiles[u], names) for u in users])[codes]


def to_taste(taste: TasteConfig, groups: Mapping[str, np.ndarray]) -> TasteConfig:
    """`taste` with the weights of each fitted group (`design`'s column order); groups left out stay zero."""
    t, k = len(taste.topics), len(taste.minutes_knots)
    w = {g: np.asarray(groups.get(g, np.zeros(_width(taste, g)))).tolist() for g in TASTE_GROUPS}
    names = list(taste.persona)
    return taste.model_copy(update={
        "topic": w["topic"], "minutes": w["minutes"], "favourite": w["favourite"],
        "subtopic": dict(zip(taste.subtopic, w["subtopic"])), "creator": dict(zip(taste.creator, w["creator"])),
        "persona": {n: PersonaTaste(topic=w["persona_topic"][f * t:(f + 1) * t],
                                    minutes=w["persona_minutes"][f * k:(f + 1) * k]) for f, n in enumerate(names)},
    })


def taste_utility(items: pd.DataFrame, taste: TasteConfig | None, profiles: Mapping[str, UserProfile],
                  catalog: Catalog) -> np.ndarray:
    """What `taste` adds to each decision's utility, by the simulator's own lookup (`choice.Taste`)."""
    if taste is None or not len(items):
        return np.zeros(len(items))
    played = Taste(taste, catalog)
    users, row = np.unique(items["user_id"].to_numpy(), return_inverse=True)
    tables = played.tables([profiles[u] for u in users])
    return played.bonus(tables[row], items["item"].to_numpy(np.int64)[:, None])[:, 0]


@dataclass
class TermsFit:
    """The click logit's weights: the parametric user's terms, their standard errors (inverse penalized Hessian),
    the taste, the ridge strength and what each group of terms carries."""

    base: np.ndarray
    se: np.ndarray
    taste: TasteConfig
    ridge: float
    importance: list[dict[str, float | int | str | bool]] = field(default_factory=list)
    cv_loglik: float = float("nan")


def fit_terms(base: np.ndarray, base_names: Sequence[str], groups: Mapping[str, sparse.csr_matrix],
              taste: TasteConfig, y: np.ndarray, offset: np.ndarray, users: np.ndarray, seed: int = 0) -> TermsFit:
    """The click logit on the base columns (unpenalized) and the taste groups (ridge), the strength and the kept
    groups chosen by cross-validation over `users` (module docstring). Each fold's fits start from the last
    solution of that fold (the next ridge strength down, or the full model for a term's removal)."""
    scale = {g: _rms(x) for g, x in groups.items()}
    taste_names = [g for g in TASTE_GROUPS if g in groups and groups[g].shape[1]]
    x = sparse.hstack([sparse.csr_matrix(base)] + [groups[g] @ sparse.diags(1.0 / scale[g]) for g in taste_names]
                      ).tocsr()
    labels = np.array([*base_names, *[g for g in taste_names for _ in range(groups[g].shape[1])]])
    penalized = ~np.isin(labels, list(base_names))
    folds = _folds(users, seed)
    keep = np.ones(len(labels), dtype=bool)
    ridge, cv = 1.0, float("nan")
    importance: list[dict[str, float | int | str | bool]] = []
    if folds:  # else one fit user: no split to choose on; a middle strength, every group
        starts: Sequence[np.ndarray | None] = [None] * len(folds)
        by_ridge = {}
        for r in sorted(RIDGES, reverse=True):  # strong to weak: each solution starts the next
            by_ridge[r] = _cv(x, y, offset, folds, np.where(penalized, r, _BASE_RIDGE), starts)
            starts = by_ridge[r][1]
        ridge = max(by_ridge, key=lambda r: by_ridge[r][0])
        cv, full = by_ridge[ridge]
        penalty = np.where(penalized, ridge, _BASE_RIDGE)
        for name in [*base_names[1:], *taste_names]:  # the bias is the intercept, not a term to drop
            mask = labels != name
            without, _ = _cv(x[:, mask], y, offset, folds, penalty[mask], [w[mask] for w in full])
            importance.append({"term": name, "columns": int((~mask).sum()), "loglik_drop": cv - without,
                               "kept": name in base_names or cv - without > 0})
            if name in taste_names and cv - without <= 0:
                keep &= mask
        importance.sort(key=lambda r: -float(r["loglik_drop"]))
        if not keep.all():  # groups that stand in for each other can each look dispensable: drop them only if
            reduced, _ = _cv(x[:, keep], y, offset, folds, penalty[keep], [w[keep] for w in full])  # jointly too
            if reduced < cv:
                keep[:] = True
                for term in importance:
                    term["kept"] = True
    penalty = np.where(penalized, ridge, _BASE_RIDGE)[keep]
    w = np.zeros(len(labels))
    w[keep] = _fit(x[:, keep], y, offset, penalty)
    cov = np.linalg.inv(_hessian(x[:, keep], w[keep], offset, penalty))
    fitted = {g: w[labels == g] / scale[g] for g in taste_names if keep[labels == g].all()}
    nb = base.shape[1]
    return TermsFit(w[:nb], np.sqrt(np.diag(cov))[:nb], to_taste(taste, fitted), ridge, importance, cv)


def importance_table(importance: Sequence[Mapping[str, float | int | str | bool]]) -> str:
    """What carries the fit, as terminal lines: each term group's drop in cross-validated log-likelihood."""
    lines = ["terms carrying the click fit (drop in cross-validated log-likelihood per decision when removed):"]
    for r in importance:
        mark = "" if r["kept"] else "  (dropped: no support)"
        lines.append(f"  {r['term']:<17} {float(r['loglik_drop']):+.4f} nats  ({r['columns']} columns){mark}")
    return "\n".join(lines)


def _width(taste: TasteConfig, group: str) -> int:
    t, k, f = len(taste.topics), len(taste.minutes_knots), len(taste.persona)
    return {"topic": t, "minutes": k, "subtopic": len(taste.subtopic), "creator": len(taste.creator),
            "favourite": k + 1, "persona_topic": f * t, "persona_minutes": f * k}[group]


def _onehot(rows: np.ndarray, cols: np.ndarray, n: int, width: int) -> sparse.csr_matrix:
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, width))


def _mapped(cols: np.ndarray, width: int) -> sparse.csr_matrix:
    """One-hot of `cols` (-1: no column)."""
    rows = np.flatnonzero(cols >= 0)
    return _onehot(rows, cols[rows], len(cols), width)


def _face_split(z: np.ndarray, x: sparse.csr_matrix) -> sparse.csr_matrix:
    """Row-wise Kronecker product: column f * x.shape[1] + j is z[:, f] * x[:, j]."""
    if not z.shape[1]:
        return sparse.csr_matrix((x.shape[0], 0))
    return sparse.hstack([x.multiply(z[:, [f]]) for f in range(z.shape[1])]).tocsr()


def _rms(x: sparse.csr_matrix) -> np.ndarray:
    """Root mean square of each column (1 for an empty one, which then stays at zero)."""
    ms = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    return np.where(ms > 0, np.sqrt(ms), 1.0)


def _folds(users: np.ndarray, seed: int) -> list[np.ndarray]:
    """Held-out masks of a split of the users into `FOLDS` groups (fewer when there are fewer users)."""
    names = np.unique(users)
    if len(names) < 2:
        return []
    order = np.random.default_rng(seed).permutation(names)
    return [np.isin(users, part) for part in np.array_split(order, min(FOLDS, len(names)))]


def _cv(x: sparse.csr_matrix, y: np.ndarray, offset: np.ndarray, folds: Sequence[np.ndarray],
        penalty: np.ndarray, starts: Sequence[np.ndarray | None]) -> tuple[float, list[np.ndarray]]:
    """Mean held-out log-likelihood per decision over the folds, and each fold's solution."""
    total, solutions = 0.0, []
    for out, start in zip(folds, starts):
        w = _fit(x[~out], y[~out], offset[~out], penalty, start)
        eta = x[out] @ w + offset[out]
        total += float(np.sum(y[out] * eta - np.logaddexp(0.0, eta)))
        solutions.append(w)
    return total / len(y), solutions


def _fit(x: sparse.csr_matrix, y: np.ndarray, offset: np.ndarray, penalty: np.ndarray,
         start: np.ndarray | None = None) -> np.ndarray:
    """Penalized logistic regression by L-BFGS (sparse columns: a gradient costs one pass over the nonzeros)."""
    xt = x.T.tocsr()

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        eta = x @ w + offset
        p = np.exp(-np.logaddexp(0.0, -eta))  # sigmoid, no overflow on a separable log
        value = float(np.sum(np.logaddexp(0.0, eta) - y * eta) + 0.5 * np.sum(penalty * w * w))
        return value, xt @ (p - y) + penalty * w

    result = optimize.minimize(loss, np.zeros(x.shape[1]) if start is None else start, jac=True,
                               method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-4, "ftol": 1e-10})
    return result.x


def _hessian(x: sparse.csr_matrix, w: np.ndarray, offset: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    eta = x @ w + offset
    p = np.exp(-np.logaddexp(0.0, -eta))
    weighted = x.multiply(np.sqrt(p * (1 - p))[:, None]).tocsr()
    return (weighted.T @ weighted).toarray() + np.diag(penalty)
