"""Policy-ranking check of a distilled surrogate (`recoworld distill --rank-check`, issue 15).

A surrogate is good for choosing recommenders when it ranks them as the LLM users do. The run's
recommenders (at least `MIN_AGENTS`) are ranked by each metric of `METRICS` twice: under the LLM
users, from the run's own logs (turns the parametric user played as a fallback included, as in the
run's summary), and under the surrogate, by simulating the distilled world on the same users with
the same recommenders and seed. Spearman's rho (ranks of ties averaged) compares the two rankings;
with 4 recommenders rho takes few values (1, 0.8, 0.6, 0.4, ...), so read it with the values beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recoworld.calibration.calibrated import CalibratedWorld
from recoworld.calibration.distill import MIN_AGENTS, Decisions
from recoworld.errors import ConfigError

#: Metrics (columns of `recoworld.evaluation.metrics.summarize`) ranked, higher is better; the first is the headline.
METRICS = ("return_per_user", "ctr", "like_rate", "dwell_min_per_user", "retention")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson's correlation of the ranks (ties share their mean rank); nan if either is constant."""
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_check(decisions: Decisions, surrogate: CalibratedWorld, seed: int | None = None) -> pd.DataFrame:
    """One row per metric x recommender: its value and rank (1 = best) under the LLM users and under the
    surrogate, and the metric's Spearman rho (repeated on each of its rows)."""
    from recoworld.evaluation.simulation import SimulationConfig, simulate

    agents = decisions.agents
    if len(agents) < MIN_AGENTS:
        raise ConfigError(f"the rank check ranks at least {MIN_AGENTS} recommenders; the run has {len(agents)} "
                          f"({', '.join(agents)}): rerun simulate with e.g. --agents random,popular,greedy,instruct")
    if decisions.summary is None:
        raise ConfigError("the run has no summary.csv (it did not finish); the rank check needs every recommender's")
    llm = decisions.summary.set_index("recommender").reindex(agents)
    cfg = SimulationConfig(n_users=len(surrogate.profiles), agents=agents,
                           seed=decisions.seed if seed is None else seed, world=surrogate.world)
    sur = simulate(cfg, catalog=surrogate.catalog, profiles=surrogate.profiles).summary
    sur = sur.set_index("recommender").reindex(agents)
    rows = []
    for metric in METRICS:
        # rounded: equal results (two recommenders that served the same slates) stay tied whatever the summing order
        a, b = (np.round(df[metric].to_numpy(np.float64), 9) for df in (llm, sur))
        rho = spearman(a, b)
        ra, rb = pd.Series(-a).rank().to_numpy(), pd.Series(-b).rank().to_numpy()
        for i, name in enumerate(agents):
            rows.append({"metric": metric, "recommender": name, "llm": a[i], "surrogate": b[i],
                         "llm_rank": ra[i], "surrogate_rank": rb[i], "spearman_rho": rho})
    return pd.DataFrame(rows)


def summary(ranking: pd.DataFrame) -> dict:
    """The report's `ranking` entry: rho per metric, the headline metric's two orders."""
    head = ranking[ranking["metric"] == METRICS[0]]
    return {
        "spearman_rho": {m: _num(g["spearman_rho"].iloc[0]) for m, g in ranking.groupby("metric", sort=False)},
        "metric": METRICS[0],
        "llm_order": head.sort_values("llm_rank", kind="stable")["recommender"].tolist(),
        "surrogate_order": head.sort_values("surrogate_rank", kind="stable")["recommender"].tolist(),
    }


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def table(ranking: pd.DataFrame) -> str:
    """Terminal table: a line per metric, recommenders ordered under LLM users and under the surrogate, and rho."""
    lines = ["metric              rho     LLM users' order  |  surrogate's order"]
    for metric, g in ranking.groupby("metric", sort=False):
        rho = g["spearman_rho"].iloc[0]
        lines.append(f"{metric:<18}  {rho:+.2f}   {_order(g, 'llm_rank')}  |  {_order(g, 'surrogate_rank')}")
    return "\n".join(lines)


def _order(g: pd.DataFrame, rank: str) -> str:
    """'a > b = c > d': best first, ties joined by '='."""
    g = g.sort_values(rank, kind="stable")
    names, ranks = g["recommender"].tolist(), g[rank].tolist()
    return names[0] + "".join((" = " if r == q else " > ") + n for n, r, q in zip(names[1:], ranks[1:], ranks))
