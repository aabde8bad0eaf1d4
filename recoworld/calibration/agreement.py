"""Agreement of user models with held-out LLM decisions (`recoworld distill`'s report).

Item-level measures are teacher-forced: each held-out LLM decision is scored by what the model
would do in the same place (same item, slot, memory of what the LLM user reviewed, skips in a
row so far, minutes spent today), so no sampling noise and no drift from the LLM's path enter:

| measure            | what                                                                      |
|--------------------|---------------------------------------------------------------------------|
| reaction_accuracy  | the model's most likely reaction (skip/click/like/share) = the LLM's      |
| reaction_macro_f1  | macro-F1 over the reactions the LLM gave                                  |
| click_auc          | AUC of the model's click probability for the LLM's clicks (1 if any)      |
| dwell_corr         | Pearson correlation of expected and LLM dwell minutes                    |
| leave_accuracy     | after each reviewed item, leaves (patience or time run out) = the LLM's   |

Session-level measures come from running the model itself (`simulate`, parametric backend)
on the held-out users with the run's recommenders:

| instruction_agreement | 1 - abs(instructions per turn, model - LLM)                            |
| return_gap_ks         | Kolmogorov-Smirnov distance of the return gaps (lower is better)        |

Every measure has a 95% bootstrap interval over held-out users (clusters).

`ceiling`: what a perfect model would reach on the same held-out decisions, per item-level measure, when the
rule behind the decisions is known (a scripted user's `oracle`, a scorer like the others): for a rule that flips
a share `noise` of its decisions at random, reaction accuracy's ceiling is 1 - noise (the flips it drew), and click
AUC's is the AUC of the rule's own click probability. A real LLM's rule is unknown: its ceiling stays empty (nan),
and so do the session-level measures', which a perfect model reaches only up to sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recoworld.calibration.distill import Decisions, utility, with_relevance
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.population import UserProfile
from recoworld.stats import bootstrap_indices, percentile_ci

MEASURES = ("reaction_accuracy", "reaction_macro_f1", "click_auc", "dwell_corr", "leave_accuracy",
            "instruction_agreement", "return_gap_ks")

#: Why a measure can be n/a (not a number) in the agreement table.
UNDEFINED = {
    "click_auc": "needs held-out items both clicked and not clicked",
    "dwell_corr": "needs dwell that varies, in the log and in the model's predictions",
    "return_gap_ks": "needs return gaps on both sides (a model that only scores items, such as neural, has none)",
    "instruction_agreement": "needs turns the model plays (a model that only scores items, such as neural, has none)",
}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def predict(items: pd.DataFrame, world: WorldConfig, profiles: list[UserProfile], catalog: Catalog) -> pd.DataFrame:
    """Teacher-forced predictions per decision of the model (`world`, `profiles`): most likely reaction,
    click probability, expected dwell and whether the user leaves after the item."""
    items = with_relevance(items, catalog, profiles)
    patience = {p.user_id: p.patience for p in profiles}
    u = utility(items, world, profiles, catalog)
    c = world.choice
    p_click = _sigmoid(u)
    p_like = p_click * _sigmoid(u - c.like_threshold)
    p_share = p_like * _sigmoid(u - c.share_threshold)
    probs = np.stack([1 - p_click, p_click - p_like, p_like - p_share, p_share], axis=1)
    duration = items["duration"].to_numpy()
    dwell = p_click * duration * _sigmoid(u) + (1 - p_click) * world.dynamics.browse_minutes
    pat = items["user_id"].map(patience).to_numpy()
    leaves = (items["skip_run"].to_numpy() >= pat) | (items["spent"].to_numpy() >= items["budget"].to_numpy())
    return pd.DataFrame({"user_id": items["user_id"].to_numpy(), "reaction": probs.argmax(axis=1),
                         "p_click": p_click, "dwell": dwell, "leaves": leaves})


def free_run(decisions: Decisions, world: WorldConfig, profiles: list[UserProfile], seed: int = 0) -> pd.DataFrame:
    """Per-turn table (instructed, left, return gap) of the model itself on `profiles` with the run's recommenders."""
    from recoworld.evaluation.simulation import SimulationConfig, simulate

    world = world.model_copy(update={"user_backend": "parametric"})
    cfg = SimulationConfig(n_users=len(profiles), agents=decisions.agents, seed=seed, world=world)
    traj = simulate(cfg, catalog=decisions.catalog, profiles=profiles).trajectories
    return traj.drop_duplicates(["recommender", "user_id", "step"]).assign(
        instructed=lambda t: t["instruction"].notna())[["user_id", "instructed", "left", "return_gap_days"]]


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    scores = []
    for k in np.unique(y):
        tp = np.sum((y == k) & (p == k))
        denom = np.sum(y == k) + np.sum(p == k)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank().to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a[np.isfinite(a)]), np.sort(b[np.isfinite(b)])
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def _measures(items: pd.DataFrame, pred: pd.DataFrame, turns: pd.DataFrame, model_turns: pd.DataFrame | None) -> dict:
    y = items["reaction"].to_numpy()
    dwell = items["dwell_min"].to_numpy(np.float64)
    corr = float(np.corrcoef(dwell, pred["dwell"])[0, 1]) if len(y) > 2 and dwell.std() and pred["dwell"].std() \
        else float("nan")
    gaps = turns.loc[turns["left"].astype(bool), "return_gap_days"].to_numpy(np.float64)
    if model_turns is None:  # a model that is no simulator (the neural scorer): item-level measures only
        model_turns = pd.DataFrame({"instructed": [np.nan], "left": [False], "return_gap_days": [np.nan]})
    model_gaps = model_turns.loc[model_turns["left"].astype(bool), "return_gap_days"].to_numpy(np.float64)
    return {
        "reaction_accuracy": float(np.mean(pred["reaction"].to_numpy() == y)),
        "reaction_macro_f1": _macro_f1(y, pred["reaction"].to_numpy()),
        "click_auc": _auc(y >= 1, pred["p_click"].to_numpy()),
        "dwell_corr": corr,
        "leave_accuracy": float(np.mean(pred["leaves"].to_numpy() == items["leaves"].to_numpy())),
        "instruction_agreement": 1.0 - abs(float(turns["instructed"].mean()) - float(model_turns["instructed"].mean())),
        "return_gap_ks": _ks(gaps, model_gaps),
    }


Scorer = Callable[[pd.DataFrame], pd.DataFrame]


def agreement(decisions: Decisions, held_out: set[str], models: Mapping[str, tuple[WorldConfig, list[UserProfile]]],
              n_boot: int = 200, seed: int = 0, scorers: Mapping[str, Scorer] | None = None,
              ceiling: Scorer | None = None) -> pd.DataFrame:
    """One row per model x measure: value, 95% bootstrap interval over held-out users, and the `ceiling` (module
    docstring; nan without one). `scorers` are more models that only score decisions (teacher-forced predictions
    of the held-out items, as `predict`'s columns): their session-level measures are nan."""
    items = decisions.items[decisions.items["user_id"].isin(held_out)].reset_index(drop=True)
    turns = decisions.turns[decisions.turns["user_id"].isin(held_out)].reset_index(drop=True)
    users = np.array(sorted(held_out))
    rng = np.random.default_rng(seed)
    draws = users[bootstrap_indices(rng, len(users), n_boot)]
    rows = []
    runs: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]] = {}
    for name, (world, profiles) in models.items():
        by_id = {p.user_id: p for p in profiles}
        held_profiles = [by_id[u] for u in users]
        runs[name] = (predict(items, world, held_profiles, decisions.catalog),
                      free_run(decisions, world, held_profiles, seed))
    for name, scorer in (scorers or {}).items():
        runs[name] = (scorer(items).reset_index(drop=True), None)
    best = dict.fromkeys(MEASURES, np.nan)
    if ceiling is not None:
        item_level = _measures(items, ceiling(items).reset_index(drop=True), turns, None)
        best |= {m: item_level[m] for m in MEASURES if m not in ("instruction_agreement", "return_gap_ks")}
    for name, (pred, model_turns) in runs.items():
        point = _measures(items, pred, turns, model_turns)
        item_rows = {u: np.flatnonzero(items["user_id"].to_numpy() == u) for u in users}
        turn_rows = {u: np.flatnonzero(turns["user_id"].to_numpy() == u) for u in users}
        boot = []
        for draw in draws:
            ii = np.concatenate([item_rows[u] for u in draw])
            tt = np.concatenate([turn_rows[u] for u in draw])
            boot.append(_measures(items.iloc[ii], pred.iloc[ii].reset_index(drop=True), turns.iloc[tt], model_turns))
        for m in MEASURES:
            values = np.array([b[m] for b in boot], dtype=np.float64)
            lo, hi = percentile_ci(values)
            rows.append({"model": name, "measure": m, "value": point[m], "ci_low": lo, "ci_high": hi,
                         "ceiling": best[m], "n_users": len(users), "n_decisions": len(items)})
    return pd.DataFrame(rows)


def table(report: pd.DataFrame) -> str:
    """The report as a terminal table: measures down, models across, `value [low, high]`, then the ceiling when
    one is known; then, when `distill_run` attached them (`report.attrs["terms"]`), the terms carrying the fit."""
    models = list(dict.fromkeys(report["model"]))
    cell = report.assign(cell=report.apply(
        lambda r: "n/a" if np.isnan(r.value) else f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]", axis=1))
    wide = cell.pivot(index="measure", columns="model", values="cell").reindex(list(MEASURES))[models]
    if "ceiling" in report and report["ceiling"].notna().any():
        best = report.drop_duplicates("measure").set_index("measure")["ceiling"].reindex(list(MEASURES))
        wide["ceiling"] = best.map(lambda v: "" if np.isnan(v) else f"{v:.3f}")
    width = max(len(m) for m in MEASURES)
    cols = [max(len(str(m)), 24) for m in wide.columns]
    lines = [" " * width + "  " + "  ".join(str(m).ljust(w) for m, w in zip(wide.columns, cols))]
    for measure, row in wide.iterrows():
        lines.append(str(measure).ljust(width) + "  " + "  ".join(str(v).ljust(w) for v, w in zip(row, cols)))
    undefined = report.loc[report["value"].isna(), "measure"].unique()
    lines += [f"n/a: {m}: {UNDEFINED.get(m, 'not defined on these users')}" for m in MEASURES if m in undefined]
    if report.attrs.get("terms"):
        from recoworld.calibration.terms import importance_table

        lines.append(importance_table(report.attrs["terms"]))
    return "\n".join(lines)


def plot(report: pd.DataFrame, path: str | Path) -> Path:
    """One panel of bars with 95% intervals per measure, a bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(report["model"]))
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(2.3 * len(MEASURES), 3.2))
    for ax, m in zip(axes, MEASURES):
        part = report[report["measure"] == m].set_index("model").reindex(models)
        err = np.abs(np.stack([part["value"] - part["ci_low"], part["ci_high"] - part["value"]]))
        colors = ["#999", "#3a7", "#37a"][: len(models)]
        ax.bar(range(len(models)), part["value"], yerr=np.nan_to_num(err), color=colors, capsize=3)
        ax.set_xticks(range(len(models)), models, rotation=30, fontsize=7)
        ax.set_title(m.replace("_", " "), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
