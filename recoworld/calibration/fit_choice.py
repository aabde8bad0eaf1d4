"""Maximum-likelihood fit of the one-step choice logit, observed items against sampled unobserved ones.

Every logged interaction (user u chose item i after the history h) is a choice; for each,
`n_negatives` items the user never interacted with are drawn uniformly (seeded), and the
chosen item plus these form the event's choice set.
Features follow `ChoiceModel.utility` at the start of a session (fatigue 0, position 0):

| term             | feature                                                                    |
|------------------|----------------------------------------------------------------------------|
| relevance        | item embedding . user interests (the profile's long-term interest vector) |
| quality          | catalog quality                                                            |
| popularity       | catalog standardized log popularity (`Catalog.popularity_z`), or, with     |
|                  | attention in time, the standardized log attention of the item at the      |
|                  | choice's own time (`with_popularity`, `recoworld.data.attention`)          |
| novelty_mismatch | -abs(novelty - novelty_trait), novelty = 1 - max cosine to the last        |
|                  | `memory_size` items of h                                                   |

The model is the conditional logit on these sampled choice sets, P(chosen | set) =
exp(w . x_chosen) / sum_j exp(w . x_j): with alternatives sampled uniformly it estimates the
click-logit weights consistently (McFadden, 1978), the rare-click limit of a per-item logit.
Each event's own intercept cancels, which matters: a pooled binary logit of positives versus
negatives leaves out each event's normalizer, which depends on the user's memory, and so
biases the memory-dependent novelty weight (by about a third in tests/test_calibration.py's
recovery setting). The click bias is therefore not identified here (see `moments`). The fit
is Newton's method (the log-likelihood is concave), and standard errors come from the inverse
observed Fisher information at the optimum.

The like threshold is a third stage, once the click bias is known (`fit_like_threshold`): with
explicit ratings, whether a consumption was rated positive is a logit in the threshold given
the consumed item's fitted utility.

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
    x: np.ndarray  # (E, K, len(CHOICE_TERMS)) features of each event's choice set; [:, 0] was chosen
    user: np.ndarray  # (E,) row of the user in the `interests` passed to `choice_data`
    items: np.ndarray | None = None  # (E, K) catalog rows of each choice set
    time: np.ndarray | None = None  # (E,) seconds: when each choice was made (given `times`)


def with_popularity(data: ChoiceData, popularity: np.ndarray) -> ChoiceData:
    """The same choices with another (E, K) popularity feature, e.g. the attention at each choice's time for one
    half-life: the other features do not depend on it, so a half-life grid rebuilds only this column."""
    x = data.x.copy()
    x[:, :, CHOICE_TERMS.index("popularity")] = popularity
    return ChoiceData(x, data.user, data.items, data.time)


@dataclass(frozen=True)
class LogitFit:
    weights: dict[str, float]
    std_errors: dict[str, float]
    loglik: float  # mean log-likelihood per choice on the fitted data
    null_loglik: float  # same, with all weights 0: -log(choice set size)


def choice_data(
    catalog: Catalog,
    interests: np.ndarray,
    novelty_trait: np.ndarray,
    histories: list[np.ndarray],
    starts: np.ndarray,
    n_negatives: int,
    rng: np.random.Generator,
    memory_size: int = 30,
    times: list[np.ndarray] | None = None,
) -> ChoiceData:
    """Positives are `histories[u][starts[u]:]`; each earlier item is context for the ones after it.

    `times[u]` (seconds, aligned with `histories[u]`) records when each choice was made, for a
    popularity feature read at that time (`with_popularity`); the returned data keeps the choice
    sets' items and times for it.

    `interests` (U, D) and `novelty_trait` (U,) describe each user. The sampled alternatives of
    the t-th choice are items the user had not chosen up to and including t: items chosen later
    were available then, and leaving them out would drop the most attractive alternatives and
    inflate every weight (by 5-15% in the recovery test).
    """
    emb = np.vstack([catalog.embeddings, np.zeros((1, catalog.embedding_dim), np.float32)]).astype(np.float64)
    n_items = len(catalog)
    users, items, positions, memory = [], [], [], []
    for u, (hist, start) in enumerate(zip(histories, starts)):
        for t in range(int(start), len(hist)):
            mem = hist[max(0, t - memory_size) : t]
            memory.append(np.concatenate([np.full(memory_size - len(mem), -1, np.int64), mem]))
            users.append(u)
            items.append(hist[t])
            positions.append(t)
    user = np.asarray(users, dtype=np.int64)
    if not len(user):
        raise ValueError("no interactions to fit the choice model on")
    pos = np.asarray(items, dtype=np.int64)
    neg = _negatives(user, np.asarray(positions), histories, n_items, n_negatives, rng)
    cand = np.concatenate([pos[:, None], neg], axis=1)  # (E, 1 + n_neg)
    mem = np.asarray(memory)
    rel, max_sim = np.empty(cand.shape), np.empty(cand.shape)
    for s in range(0, len(cand), 4096):  # chunks keep the (E, K, D) and (E, K, M) tensors small
        c, m = emb[cand[s : s + 4096]], emb[mem[s : s + 4096]]
        rel[s : s + 4096] = np.einsum("ekd,ed->ek", c, interests[user[s : s + 4096]])
        max_sim[s : s + 4096] = np.einsum("ekd,emd->ekm", c, m).max(axis=2)
    novelty = 1.0 - np.minimum(max_sim, 1.0)
    x = np.stack([rel, catalog.quality[cand].astype(np.float64), catalog.popularity_z[cand],
                  -np.abs(novelty - novelty_trait[user][:, None])], axis=2)
    when = None
    if times is not None:
        when = np.concatenate([np.asarray(tu, dtype=np.float64)[int(start):len(hist)]
                               for tu, hist, start in zip(times, histories, starts)])
    return ChoiceData(x, user, cand, when)


def _negatives(user: np.ndarray, time: np.ndarray, histories: list[np.ndarray], n_items: int, k: int,
               rng: np.random.Generator) -> np.ndarray:
    """(E, k) items drawn uniformly among those the event's user had not chosen by its time (redrawn on clash)."""
    first: list[dict[int, int]] = [{} for _ in histories]  # user -> item -> position of its first choice
    for u, hist in enumerate(histories):
        for t, i in enumerate(hist.tolist()):
            first[u].setdefault(i, t)
    if any(len(f) >= n_items for f in first):
        raise ValueError("a user interacted with every item, so no unobserved item is left to sample")
    neg = rng.integers(0, n_items, (len(user), k))
    while True:
        clash = np.array([[first[u].get(i, t + 1) <= t for i in row] for u, t, row in zip(user, time, neg)])
        if not clash.any():
            return neg
        neg[clash] = rng.integers(0, n_items, int(clash.sum()))


def fit_logit(data: ChoiceData, iterations: int = 50, tol: float = 1e-9) -> LogitFit:
    """Newton's method on the concave conditional log-likelihood.

    Standard errors are cluster-robust (the sandwich H^-1 (sum over users of g_u g_u^T) H^-1, g_u a user's
    summed scores): one user's choices share what the features miss of them, and the sampled choice sets
    make the conditional logit an approximation of a per-item click model. The inverse Hessian alone
    understated the spread of the estimates over seeds about twofold (tests/test_calibration.py)."""
    x = data.x
    beta = np.zeros(x.shape[2])
    ridge = 1e-8 * np.eye(len(beta))  # keeps the step defined if a feature is constant
    for _ in range(iterations):
        grad, hess = _score(x, beta)
        step = np.linalg.solve(hess + ridge, grad)
        beta += step
        if np.abs(step).max() < tol:
            break
    se = _robust_se(x, beta, data.user, ridge)
    return LogitFit(
        weights={t: float(b) for t, b in zip(CHOICE_TERMS, beta)},
        std_errors={t: float(s) for t, s in zip(CHOICE_TERMS, se)},
        loglik=mean_loglik(data, beta),
        null_loglik=-float(np.log(x.shape[1])),
    )


def _robust_se(x: np.ndarray, beta: np.ndarray, user: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    p = _softmax(x @ beta)
    scores = x[:, 0] - np.einsum("ek,ekp->ep", p, x)  # (E, P): each choice's contribution to the gradient
    per_user = np.zeros((int(user.max()) + 1, x.shape[2]))
    np.add.at(per_user, user, scores)
    bread = np.linalg.inv(_score(x, beta)[1] + ridge)
    return np.sqrt(np.diag(bread @ (per_user.T @ per_user) @ bread))


def _score(x: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and negated Hessian of the conditional log-likelihood (chosen alternative first)."""
    p = _softmax(x @ beta)  # (E, K)
    mean = np.einsum("ek,ekp->ep", p, x)
    grad = (x[:, 0] - mean).sum(axis=0)
    hess = np.einsum("ek,ekp,ekq->pq", p, x, x) - mean.T @ mean
    return grad, hess


def mean_loglik(data: ChoiceData, weights: np.ndarray) -> float:
    """Mean conditional log-likelihood per choice of a logit with these weights."""
    eta = data.x @ np.asarray(weights)
    return float(np.mean(eta[:, 0] - np.logaddexp.reduce(eta, axis=1)))


def fit_conformity(data: ChoiceData, fit: LogitFit, n_users: int, iterations: int = 20) -> np.ndarray:
    """(n_users,) per-user multiplier of the popularity weight: MAP under a N(1, 0.5^2) prior.

    Users absent from `data` keep the prior mean 1. Non-negative: a user does not avoid hits
    more than the model without a popularity term allows.
    """
    w = np.array([fit.weights[t] for t in CHOICE_TERMS])
    k = CHOICE_TERMS.index("popularity")
    pop = w[k] * data.x[:, :, k]  # (E, K)
    rest = data.x @ w - pop
    a = np.ones(n_users)
    prec = 1.0 / _CONFORMITY_PRIOR_SD**2
    for _ in range(iterations):
        p = _softmax(rest + a[data.user][:, None] * pop)
        mean = (p * pop).sum(axis=1)
        grad = np.bincount(data.user, pop[:, 0] - mean, n_users) - prec * (a - 1.0)
        hess = np.bincount(data.user, (p * pop**2).sum(axis=1) - mean**2, n_users) + prec
        a = np.maximum(a + grad / hess, 0.0)
    return a


def fit_like_threshold(utility: np.ndarray, positive: np.ndarray, iterations: int = 50,
                       tol: float = 1e-10) -> tuple[float, float]:
    """(like threshold T, standard error) by maximum likelihood of P(positive | consumed) = sigmoid(u - T).

    A click of utility u is a like when u + e > T, with logistic e independent of the click's
    own noise (`ChoiceModel.engagement`), so given the click P(like) = sigmoid(u - T) exactly:
    a one-parameter logit with offset u. Newton's method (concave); the standard error is the
    inverse square root of the observed information sum p (1 - p).
    """
    u, y = np.asarray(utility, dtype=np.float64), np.asarray(positive, dtype=np.float64)
    if not len(y) or y.min() == y.max():
        raise ValueError("the like threshold needs both positive and other ratings among consumptions")
    share = y.mean()
    t = float(np.mean(u) - np.log(share / (1 - share)))
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(t - u))
        step = float((y - p).sum() / max((p * (1 - p)).sum(), 1e-12))
        t -= step
        if abs(step) < tol:
            break
    p = 1.0 / (1.0 + np.exp(t - u))
    return t, 1.0 / float(np.sqrt(max((p * (1 - p)).sum(), 1e-12)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
