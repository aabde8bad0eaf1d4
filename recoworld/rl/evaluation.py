"""Evaluating a trained policy against the baselines and the oracle on fixed, seeded evaluation users:
the paired comparison table, the share of the random-to-oracle gap, the summary over training seeds,
and the learning-curve plot.

## Evaluation
Every `eval.every` iterations the policy plays the fixed evaluation users (greedy decode by
default, `eval.decode: sample` draws from its distribution), paired per user with the
baselines (`eval.baselines`, by default random and the strongest heuristics greedy, diverse and
instruct) and the `oracle` (`eval.oracle`): a reference that reads the hidden mindset, not a
recommender anyone could deploy, which measures headroom. The table reports each one's share
of the random-to-oracle gap. `experiments/train_ppo.py --seeds N` repeats training over seeds.

"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from recoworld.agents import AgentFactory, make_recommender
from recoworld.agents.base import Recommender
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig, build
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.rl.policy import RLlibRecommender
from recoworld.rl.train_config import TrainConfig
from recoworld.rl.training_env import RETURN_WINDOW
from recoworld.stats import mean_ci

#: Name of the trained policy in evaluation tables.
POLICY = "ppo"
#: Name of the headroom reference that reads the hidden mindset (recoworld/agents/oracle.py).
ORACLE = "oracle"
#: The reference floor of the gap-closed share.
FLOOR = "random"


def evaluate(cfg: TrainConfig, agents: dict[str, AgentFactory],
             expose_mindset: bool = False, on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run `agents` on the fixed evaluation users; one row per (recommender, user).

    Every call draws the same users with the same episode seeds (common random numbers), so
    rounds and recommenders are compared on identical conditions. `expose_mindset` puts the
    hidden mindset in `info` (for the oracle); it changes no random draw, so the users and
    their episodes stay the same. `on_episode(recommender)` is called after each episode (`progress`).
    """
    return play(cfg, cfg.eval_world(), agents, cfg.eval.n_users, cfg.eval.seed, expose_mindset, on_episode)


def play(cfg: TrainConfig, world: WorldConfig, agents: dict[str, AgentFactory],
         n_users: int, seed: int, expose_mindset: bool = False,
         on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run `agents` in `world` on `n_users` users of `cfg`'s population (or calibrated users)
    drawn with `seed`; one row per (recommender, user), `on_episode(recommender)` after each."""
    if expose_mindset:
        world = build(WorldConfig, "evaluation world", world, expose_mindset=True)
    sim = SimulationConfig(n_users=n_users, agents=list(agents), seed=seed, world=world, population=cfg.population)
    catalog, profiles = None, None
    if cfg.calibrated is not None:
        from recoworld.calibration.inputs import cached_calibration

        calibrated = cached_calibration(str(cfg.calibrated))
        catalog, profiles = calibrated.catalog, calibrated.profiles
    result = simulate(sim, catalog=catalog, profiles=profiles, build_agent=partial(_build, agents),
                      on_episode=on_episode)
    return result.episodes


def _build(agents: dict[str, AgentFactory], name: str, catalog: Catalog, k: int, seed: int | None) -> Recommender:
    """`agents[name]`, and a trained policy gets the world's catalog (`RLlibRecommender.use_catalog`): one trained
    on the intent features reads the candidates' topics from it."""
    agent = agents[name](catalog, k, seed)
    if isinstance(agent, RLlibRecommender) and agent.catalog is None:
        agent.use_catalog(catalog)
    return agent


def baseline_agents(names: list[str]) -> dict[str, AgentFactory]:
    return {name: partial(make_recommender, name) for name in names}


def evaluate_references(cfg: TrainConfig, on_episode: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The baselines and (with `eval.oracle`) the oracle on the evaluation users: fixed, so run once."""
    parts = [evaluate(cfg, baseline_agents(cfg.eval.baselines), on_episode=on_episode)] if cfg.eval.baselines else []
    if cfg.eval.oracle:
        parts.append(evaluate(cfg, baseline_agents([ORACLE]), expose_mindset=True, on_episode=on_episode))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def compare(episodes: pd.DataFrame, policy: str = POLICY) -> pd.DataFrame:
    """Retention per recommender with 95% CIs, the policy's paired advantage over each one, and
    the share of the random-to-oracle gap each closes.

    The paired difference is taken per user (same user, same episode seed), which removes
    the between-user variance that dominates the unpaired intervals. `gap_closed` is
    `(retention - random's) / (oracle's - random's)`: 0 = random, 1 = the oracle (NaN without
    both, or when the oracle is not above random).
    """
    rows = []
    mine = episodes[episodes["recommender"] == policy].set_index("user_id")["retention"]
    means = episodes.groupby("recommender")["retention"].mean()
    gap = means.get(ORACLE, np.nan) - means.get(FLOOR, np.nan)
    for name, eps in episodes.groupby("recommender", sort=False):
        retention, ci = mean_ci(eps["retention"])
        ret = eps.set_index("user_id")["retention"]
        diff, diff_ci = mean_ci((mine - ret).dropna()) if name != policy and len(mine) else (np.nan, np.nan)
        rows.append({"recommender": name, "users": len(eps), "retention": retention, "retention_ci": ci,
                     "sessions_per_user": float(eps["sessions"].mean()), "churn_rate": float(eps["churned"].mean()),
                     "return_per_user": float(eps["total_reward"].mean()),
                     f"{policy}_minus_this": diff, f"{policy}_minus_this_ci": diff_ci,
                     "gap_closed": (retention - means[FLOOR]) / gap if gap > 0 else np.nan})
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, policy: str = POLICY) -> str:
    """The final comparison as plain text: retention ± 95% CI, the policy's paired advantage, and
    the share of the random-to-oracle gap closed. The oracle row is labelled as the reference it is."""
    lines = [f"{'recommender':<12} {'users':>5} {'retention':>16} {'sessions':>9} {'churn':>6} "
             f"{policy + ' - this (paired)':>24} {'gap closed':>10}"]
    for _, r in table.iterrows():
        diff = "" if pd.isna(r[f"{policy}_minus_this"]) else \
            f"{r[f'{policy}_minus_this']:+.3f} ± {r[f'{policy}_minus_this_ci']:.3f}"
        closed = "" if pd.isna(r.get("gap_closed", np.nan)) else f"{r['gap_closed']:+.0%}"
        note = "  (reference: reads the hidden mindset, not deployable)" if r["recommender"] == ORACLE else ""
        lines.append(f"{r['recommender']:<12} {r['users']:>5d} {r['retention']:>8.3f} ± {r['retention_ci']:.3f} "
                     f"{r['sessions_per_user']:>9.2f} {r['churn_rate']:>6.2f} {diff:>24} {closed:>10}{note}")
    return "\n".join(lines)


#: Two-sided 95% Student t quantiles by degrees of freedom (the normal 1.96 past 30).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    """The 95% two-sided Student t quantile for `df` degrees of freedom (conservative between table rows)."""
    if df < 1:
        return float("nan")
    return _T95[min(k for k in _T95 if k >= df)] if df <= 30 else 1.96


def seed_summary(tables: dict[int, pd.DataFrame], policy: str = POLICY) -> pd.DataFrame:
    """Across training seeds: per recommender, the mean of the policy's final paired advantage
    with a 95% t interval over seeds, how many seeds have their own paired 95% CI above 0, and
    the mean share of the random-to-oracle gap closed (the policy's and the recommender's)."""
    rows = []
    names = [n for n in next(iter(tables.values()))["recommender"] if n != policy]
    for name in names:
        per_seed = [t.set_index("recommender").loc[name] for t in tables.values()]
        diffs = np.array([r[f"{policy}_minus_this"] for r in per_seed], dtype=float)
        above = sum(bool(r[f"{policy}_minus_this"] - r[f"{policy}_minus_this_ci"] > 0) for r in per_seed)
        half = t95(len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)) if len(diffs) > 1 else np.nan
        rows.append({"recommender": name, "seeds": len(diffs), f"{policy}_minus_this": float(diffs.mean()),
                     f"{policy}_minus_this_ci": float(half), "seeds_ci_above_0": above,
                     "retention": float(np.mean([r["retention"] for r in per_seed])),
                     "gap_closed": float(np.mean([r.get("gap_closed", np.nan) for r in per_seed]))})
    mine = [t.set_index("recommender").loc[policy] for t in tables.values()]
    rows.insert(0, {"recommender": policy, "seeds": len(mine),
                    "retention": float(np.mean([r["retention"] for r in mine])),
                    "gap_closed": float(np.mean([r.get("gap_closed", np.nan) for r in mine]))})
    return pd.DataFrame(rows)


def format_seed_summary(summary: pd.DataFrame, policy: str = POLICY) -> str:
    """`seed_summary` as plain text."""
    lines = [f"{'recommender':<12} {'seeds':>5} {'retention':>9} {'gap closed':>10} "
             f"{policy + ' - this, mean over seeds':>31} {'seeds with paired CI > 0':>25}"]
    for _, r in summary.iterrows():
        diff = "" if pd.isna(r.get(f"{policy}_minus_this", np.nan)) else \
            f"{r[f'{policy}_minus_this']:+.3f} ± {r[f'{policy}_minus_this_ci']:.3f}"
        above = "" if pd.isna(r.get("seeds_ci_above_0", np.nan)) else \
            f"{int(r['seeds_ci_above_0'])} of {int(r['seeds'])}"
        closed = "" if pd.isna(r["gap_closed"]) else f"{r['gap_closed']:+.0%}"
        lines.append(f"{r['recommender']:<12} {int(r['seeds']):>5d} {r['retention']:>9.3f} {closed:>10} "
                     f"{diff:>31} {above:>25}")
    return "\n".join(lines)


def plot_learning_curve(curve: pd.DataFrame, path: Path) -> Path:
    """Left: mean training episode return. Right: evaluation retention (95% CI) vs the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ret, ax_eval) = plt.subplots(1, 2, figsize=(12, 4.5))
    if len(curve):
        ax_ret.plot(curve["env_steps"], curve["charts/episode_return_mean"])
        evals = curve.dropna(subset=[f"retention/{POLICY}"]) if f"retention/{POLICY}" in curve else curve.iloc[:0]
        for col in [c for c in curve.columns if c.startswith("retention/")]:
            name = col.split("/", 1)[1]
            ax_eval.errorbar(evals["env_steps"], evals[col], yerr=evals[f"retention_ci/{name}"].fillna(0),
                             label=name, capsize=3, marker="o" if name == POLICY else None,
                             linestyle="-" if name == POLICY else "--")
    ax_ret.set_xlabel("env steps")
    ax_ret.set_ylabel(f"mean return of the last {RETURN_WINDOW} finished training episodes")
    ax_ret.set_title("PPO training return")
    ax_eval.set_xlabel("env steps")
    ax_eval.set_ylabel("retention on the evaluation users")
    ax_eval.set_title("Evaluation retention (95% CI)")
    ax_eval.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
