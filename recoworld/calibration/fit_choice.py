"""Maximum-likelihood fit of the one-step choice logit, observed items against sampled unobserved ones.

Every logged interaction (user u chose item i after the history h) is a positive; for each,
`n_negatives` items the user never interacted with are drawn uniformly (seeded) as negatives.
Features follow `ChoiceModel.utility` at the start of a session (fatigue 0, position 0):

| term             | feature                                                                    |
|------------------|----------------------------------------------------------------------------|
| relevance        | item embedding . user interests (the profile's long-term interest vector) |
| quality          | catalog quality                                                            |
| popularity       | catalog standardized log popularity (`Catalog.popularity_z`)               |
| novelty_mismatch | -abs(novelty - novelty_trait), novelty = 1 - max cosine to the last        |
|                  | `memory_size` items of h                                                   |

Sampling on the outcome (case-control) leaves a logit's slopes consistent and moves only the
intercept (Prentice & Pyke, 1979), so the slopes are the click-logit weights while the
intercept, which depends on the sampling rate, is not reported as the click bias. The fit is
Newton's method (the log-likelihood is concave), and standard errors come from the inverse
observed Fisher information at the optimum.

Per-user popularity affinity (conformity) is a second stage: each user's multiplier of the
popularity weight, the maximum a posteriori under a N(1, 0.5^2) prior (so users with few
interactions stay near the population weight), by a vectorized Newton step per user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recoworld.catalog import Catalog

#: The fitted weights, in feature-column order.
CHOICE_TERMS = ("relevance", "quality", "popularity", "novelty_mismatch")
_CONFORMITY_PRIOR_SD = 0.5


@dataclass(frozen=True)
class ChoiceData:
    x: np.ndarray  # (n, len(CHOICE_TERMS)) features
    y: np.ndarray  # (n,) 1 = observed, 0 = sampled unobserved
    user: np.ndarray  # (n,) row of the user in the `interests` passed to `choice_data`


@dataclass(frozen=True)
class LogitFit:
    weights: dict[str, float]
    std_errors: dict[str, float]
    intercept: float
    loglik: float  # mean log-likelihood per observation on the fitted data
    null_loglik: float  # same, intercept-only model


def choice_data(
    catalog: Catalog,
    interests: np.ndarray,
    novelty_trait: np.ndarray,
    histories: list[np.ndarray],
    starts: np.ndarray,
    n_negatives: int,
    rng: np.random.Generator,
    memory_size: int = 30,
) -> ChoiceData:
    """Positives are `histories[u][starts[u]:]`; each earlier item is context for the ones after it.

    `interests` (U, D) and `novelty_trait` (U,) describe each user; negatives are items outside
    the user's whole history.
    """
    emb = np.vstack([catalog.embeddings, np.zeros((1, catalog.embedding_dim), np.float32)]).astype(np.float64)
    n_items = len(catalog)
    users, items, memory = [], [], []
    for u, (hist, start) in enumerate(zip(histories, starts)):
        for t in range(int(start), len(hist)):
            mem = hist[max(0, t - memory_size) : t]
            memory.append(np.concatenate([np.full(memory_size - len(mem), -1, np.int64), mem]))
            users.append(u)
            items.append(hist[t])
    user = np.asarray(users, dtype=np.int64)
    if not len(user):
        raise ValueError("no interactions to fit the choice model on")
    pos = np.asarray(items, dtype=np.int64)
    neg = _negatives(user, histories, n_items, n_negatives, rng)
    cand = np.concatenate([pos[:, None], neg], axis=1)  # (E, 1 + n_neg)
    mem = np.asarray(memory)
    rel = np.einsum("ekd,ed->ek", emb[cand], interests[user])
    max_sim = np.empty(cand.shape)
    for s in range(0, len(cand), 4096):  # chunks keep the (E, K, M) similarity tensor small
        c, m = emb[cand[s : s + 4096]], emb[mem[s : s + 4096]]
        max_sim[s : s + 4096] = np.einsum("ekd,emd->ekm", c, m).max(axis=2)
    novelty = 1.0 - np.minimum(max_sim, 1.0)
    x = np.stack([rel, catalog.quality[cand].astype(np.float64), catalog.popularity_z[cand],
                  -np.abs(novelty - novelty_trait[user][:, None])], axis=2)
    y = np.zeros(cand.shape)
    y[:, 0] = 1.0
    return ChoiceData(x.reshape(-1, len(CHOICE_TERMS)), y.ravel(), np.repeat(user, cand.shape[1]))


def _negatives(user: np.ndarray, histories: list[np.ndarray], n_items: int, k: int,
               rng: np.random.Generator) -> np.ndarray:
    """(E, k) items uniformly drawn outside each event's user history (redrawn on collision)."""
    seen = {u: set(h.tolist()) for u, h in enumerate(histories)}
    if any(len(s) >= n_items for s in seen.values()):
        raise ValueError("a user interacted with every item, so no unobserved item is left to sample")
    neg = rng.integers(0, n_items, (len(user), k))
    while True:
        clash = np.array([[i in seen[u] for i in row] for u, row in zip(user, neg)])
        if not clash.any():
            return neg
        neg[clash] = rng.integers(0, n_items, int(clash.sum()))


def fit_logit(data: ChoiceData, iterations: int = 50, tol: float = 1e-9) -> LogitFit:
    """Newton's method on the concave log-likelihood; standard errors from the inverse Hessian."""
    x = np.hstack([np.ones((len(data.y), 1)), data.x])
    beta = np.zeros(x.shape[1])
    beta[0] = np.log(data.y.mean() / (1 - data.y.mean()))
    ridge = 1e-8 * np.eye(len(beta))  # keeps the step defined if a feature is constant
    for _ in range(iterations):
        p = _sigmoid(x @ beta)
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hess, x.T @ (data.y - p))
        beta += step
        if np.abs(step).max() < tol:
            break
    p = _sigmoid(x @ beta)
    cov = np.linalg.inv((x * (p * (1 - p))[:, None]).T @ x + ridge)
    se = np.sqrt(np.diag(cov))
    return LogitFit(
        weights={t: float(b) for t, b in zip(CHOICE_TERMS, beta[1:])},
        std_errors={t: float(s) for t, s in zip(CHOICE_TERMS, se[1:])},
        intercept=float(beta[0]),
        loglik=mean_loglik(data, beta[0], beta[1:]),
        null_loglik=mean_loglik(data, float(np.log(data.y.mean() / (1 - data.y.mean()))), np.zeros(len(beta) - 1)),
    )


def mean_loglik(data: ChoiceData, intercept: float, weights: np.ndarray) -> float:
    """Mean Bernoulli log-likelihood per observation of a logit with these coefficients."""
    eta = intercept + data.x @ np.asarray(weights)
    return float(np.mean(data.y * eta - np.logaddexp(0.0, eta)))


def fit_conformity(data: ChoiceData, fit: LogitFit, n_users: int, iterations: int = 20) -> np.ndarray:
    """(n_users,) per-user multiplier of the popularity weight: MAP under a N(1, 0.5^2) prior.

    Users absent from `data` keep the prior mean 1. Non-negative: a user does not avoid hits
    more than the model without a popularity term allows.
    """
    w = np.array([fit.weights[t] for t in CHOICE_TERMS])
    k = CHOICE_TERMS.index("popularity")
    pop = w[k] * data.x[:, k]
    rest = fit.intercept + data.x @ w - pop
    a = np.ones(n_users)
    prec = 1.0 / _CONFORMITY_PRIOR_SD**2
    for _ in range(iterations):
        p = _sigmoid(rest + a[data.user] * pop)
        grad = np.bincount(data.user, (data.y - p) * pop, n_users) - prec * (a - 1.0)
        hess = np.bincount(data.user, p * (1 - p) * pop**2, n_users) + prec
        a = np.maximum(a + grad / hess, 0.0)
    return a


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
