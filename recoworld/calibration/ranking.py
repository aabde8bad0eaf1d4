"""Policy-ranking check of a distilled surrogate (`recoworld distill --rank-check`, issue 15).

A surrogate is good for choosing recommenders when it ranks them as the LLM users do. The run's
recommenders (at least `MIN_AGENTS`) are ranked by each metric of `METRICS` twice: under the LLM
users, from the run's own logs (turns the parametric user played as a fallback included, as in the
run's summary), and under the surrogate, by simulating the distilled world on the same users with
the same recommenders, `replicas` times (seeds: the run's seed + 0, 1, ...; the surrogate is cheap,
so its own sampling noise is averaged away). Spearman's rho (ranks of ties averaged) compares the
two rankings.

How sure is rho? With 4 recommenders it takes few values (1, 0.8, 0.6, 0.4, ...) and one swap of
two close recommenders costs 0.2, and on a small LLM population the LLM users' own ranking is noisy.
So each rho comes with
- a 95% bootstrap interval over users: the same users redrawn with replacement on both sides (each
  user met every recommender under both, so the draw is paired), both rankings recomputed;
- rho per surrogate replica, against the LLM users' full ranking: the spread the surrogate's own
  sampling adds.
An interval that spans 0 says the check cannot tell on this run: the recommenders are closer on
that metric than the LLM population can separate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recoworld.agents import agent_labels
from recoworld.calibration.calibrated import CalibratedWorld
from recoworld.calibration.distill import MIN_AGENTS, Decisions
from recoworld.errors import ConfigError
from recoworld.stats import bootstrap_indices, percentile_ci

#: Metrics (columns of `recoworld.evaluation.metrics.summarize`) ranked, higher is better; the first is the headline.
METRICS = ("return_per_user", "ctr", "like_rate", "dwell_min_per_user", "retention")
#: Per (recommender, user) sums from which every metric of `METRICS` is recomputed on any set of users.
_SUMS = ("reviewed", "clicks", "likes", "dwell", "total_reward", "retention")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties share their mean rank); nan if either is constant."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def user_sums(trajectories: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per (recommender, user_id) episode with `_SUMS`: reviewed items, clicks, likes, dwell minutes,
    the episode's return and retention. `metrics` of all of a recommender's rows are `summarize`'s values."""
    react = trajectories["reaction"].to_numpy()
    per_row = pd.DataFrame({"recommender": trajectories["recommender"].to_numpy(),
                            "user_id": trajectories["user_id"].to_numpy(), "reviewed": react >= 0,
                            "clicks": react >= 1, "likes": react >= 2,
                            "dwell": trajectories["dwell_min"].to_numpy(np.float64)})
    sums = per_row.groupby(["recommender", "user_id"], sort=False).sum()
    eps = episodes.set_index(["recommender", "user_id"])[["total_reward", "retention"]]
    return eps.join(sums).fillna(0.0)[list(_SUMS)].astype(np.float64)


def metrics(sums: np.ndarray) -> np.ndarray:
    """(..., len(METRICS)) metric values from (..., users, len(_SUMS)) per-user sums (users summed over)."""
    total = sums.sum(axis=-2)
    n = sums.shape[-2]
    reviewed = np.maximum(total[..., 0], 1e-12)
    return np.stack([total[..., 4] / n, total[..., 1] / reviewed, total[..., 2] / reviewed, total[..., 3] / n,
                     total[..., 5] / n], axis=-1)


def _tensor(sums: pd.DataFrame, agents: list[str], users: list[str]) -> np.ndarray:
    """(recommenders, users, len(_SUMS)) of `user_sums`, in these orders."""
    index = pd.MultiIndex.from_product([agents, users], names=["recommender", "user_id"])
    missing = index.difference(sums.index)
    if len(missing):
        raise ConfigError(f"the run has no episode of {len(missing)} (recommender, user) pairs, e.g. {missing[0]}: "
                          "the rank check needs every user under every recommender")
    return sums.reindex(index).to_numpy().reshape(len(agents), len(users), len(_SUMS))


def _rhos(llm: np.ndarray, sur: np.ndarray) -> np.ndarray:
    """rho per metric between (..., recommenders, metrics) values, rounded so that equal results (two
    recommenders that served the same slates) stay tied whatever the summing order."""
    a, b = np.round(llm, 9), np.round(sur, 9)
    return np.array([spearman(a[:, m], b[:, m]) for m in range(len(METRICS))])


def rank_check(decisions: Decisions, surrogate: CalibratedWorld, seed: int | None = None, replicas: int = 5,
               n_boot: int = 1000) -> pd.DataFrame:
    """One row per metric x recommender: its value and rank (1 = best) under the LLM users and under the
    surrogate (mean over `replicas`), and the metric's Spearman rho with its 95% bootstrap interval over users
    and its value per surrogate replica (repeated on each of the metric's rows)."""
    from recoworld.evaluation.simulation import SimulationConfig, simulate

    agents = decisions.agents
    if len(agents) < MIN_AGENTS:
        raise ConfigError(f"the rank check ranks at least {MIN_AGENTS} recommenders; the run has {len(agents)} "
                          f"({', '.join(agents)}): rerun simulate with e.g. --agents random,popular,greedy,instruct")
    if decisions.user_sums is None:
        raise ConfigError("the run has no episodes/*.parquet (it did not finish); the rank check needs every "
                          "recommender's episodes")
    users = [p.user_id for p in surrogate.profiles]
    labels = agent_labels(agents)  # what the trajectories call them (a plug-in's `name`)
    llm = _tensor(decisions.user_sums, labels, users)
    base = decisions.seed if seed is None else seed
    runs = []
    for r in range(replicas):
        cfg = SimulationConfig(n_users=len(users), agents=agents, seed=base + r, world=surrogate.world)
        result = simulate(cfg, catalog=surrogate.catalog, profiles=surrogate.profiles)
        runs.append(_tensor(user_sums(result.trajectories, result.episodes), labels, users))
    sur = np.mean(runs, axis=0)
    a, b = metrics(llm), metrics(sur)
    rho = _rhos(a, b)
    per_seed = np.array([_rhos(a, metrics(run)) for run in runs])
    rng = np.random.default_rng(base)
    boot = np.array([_rhos(metrics(llm[:, d]), metrics(sur[:, d]))
                     for d in bootstrap_indices(rng, len(users), n_boot)])
    rows = []
    for m, metric in enumerate(METRICS):
        lo, hi = percentile_ci(boot[:, m])
        ra, rb = pd.Series(-np.round(a[:, m], 9)).rank().to_numpy(), pd.Series(-np.round(b[:, m], 9)).rank().to_numpy()
        for i, name in enumerate(labels):
            rows.append({"metric": metric, "recommender": name, "llm": a[i, m], "surrogate": b[i, m],
                         "llm_rank": ra[i], "surrogate_rank": rb[i], "spearman_rho": rho[m],
                         "rho_ci_low": lo, "rho_ci_high": hi,
                         "rho_per_replica": " ".join(f"{x:+.2f}" for x in per_seed[:, m])})
    return pd.DataFrame(rows)


def summary(ranking: pd.DataFrame) -> dict:
    """The report's `ranking` entry: rho per metric, the headline metric's two orders."""
    head = ranking[ranking["metric"] == METRICS[0]]
    return {
        "spearman_rho": {m: _num(g["spearman_rho"].iloc[0]) for m, g in ranking.groupby("metric", sort=False)},
        "rho_ci95": {m: [_num(g["rho_ci_low"].iloc[0]), _num(g["rho_ci_high"].iloc[0])]
                     for m, g in ranking.groupby("metric", sort=False)},
        "rho_per_replica": {m: [_num(float(x)) for x in g["rho_per_replica"].iloc[0].split()]
                            for m, g in ranking.groupby("metric", sort=False)},
        "metric": METRICS[0],
        "llm_order": head.sort_values("llm_rank", kind="stable")["recommender"].tolist(),
        "surrogate_order": head.sort_values("surrogate_rank", kind="stable")["recommender"].tolist(),
    }


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def table(ranking: pd.DataFrame) -> str:
    """Terminal table: a line per metric, recommenders ordered under LLM users and under the surrogate, and rho;
    a rho or interval that is not a number reads "n/a", and a line under the table says why (`undefined`)."""
    lines = ["metric              rho    95% CI (users)   LLM users' order  |  surrogate's order"]
    notes = []
    for metric, g in ranking.groupby("metric", sort=False):
        rho, lo, hi = g[["spearman_rho", "rho_ci_low", "rho_ci_high"]].iloc[0]
        ci = "n/a" if np.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
        lines.append(f"{metric:<18}  {_signed(rho):>5}   {ci:<14}   {_order(g, 'llm_rank')}  |  "
                     f"{_order(g, 'surrogate_rank')}")
        why = undefined(g)
        if why:
            notes.append(f"{metric}: {why}")
    return "\n".join(lines + notes)


def undefined(g: pd.DataFrame) -> str:
    """Why one metric's rho, or its interval, is not a number (empty when both are): a rank correlation needs
    the recommenders apart on both sides, and every recommender tied on one side leaves nothing to order."""
    rho, lo = g["spearman_rho"].iloc[0], g["rho_ci_low"].iloc[0]
    tied = [side for side, column in (("the LLM users", "llm"), ("the surrogate", "surrogate"))
            if np.round(g[column].to_numpy(np.float64), 9).std() == 0]
    if np.isnan(rho):
        return (f"rho n/a: every recommender has the same value under {' and under '.join(tied) or 'one side'}, "
                "so there is no order to compare (e.g. every user active every day of a short run)")
    if np.isnan(lo):
        return "95% CI n/a: on every bootstrap resample of the users one side ties all recommenders"
    return ""


def _signed(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:+.2f}"


def _order(g: pd.DataFrame, rank: str) -> str:
    """'a > b = c > d': best first, ties joined by '='."""
    g = g.sort_values(rank, kind="stable")
    names, ranks = g["recommender"].tolist(), g[rank].tolist()
    return names[0] + "".join((" = " if r == q else " > ") + n for n, r, q in zip(names[1:], ranks[1:], ranks))
