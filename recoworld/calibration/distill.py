"""`recoworld distill`: fit the parametric user to an LLM user's decisions (a fast surrogate).

The input is the run folder of `recoworld simulate --user-backend llm ... --out RUN`: its
manifest names the world, population and seed, from which the catalog and the drawn users
are rebuilt (and checked against the manifest's fingerprints); its trajectories hold every
decision. Turns the parametric user played instead (`llm_fallback`) are not LLM decisions
and are dropped. A share of the users (`holdout`) is kept out of the fit for the agreement
report (`recoworld.calibration.agreement`).

Each reviewed item (reaction >= 0) is one decision, with the features of `ChoiceModel.utility`
computed teacher-forced, from what the LLM user had actually seen:

| term             | feature                                                                  |
|------------------|--------------------------------------------------------------------------|
| bias             | 1 (identified here: LLM logs have explicit skips, unlike interaction logs)|
| relevance        | item embedding . the profile's interest vector                          |
| quality          | catalog quality                                                          |
| popularity       | standardized log popularity x the profile's conformity                   |
| novelty_mismatch | -abs(novelty - novelty trait), novelty = 1 - max cosine to the last      |
|                  | `memory_size` items the user reviewed                                    |
| position         | -log1p(slot)                                                             |
| duration         | -log1p(item minutes) (`ChoiceConfig.duration`; LLM users see minutes)    |
| taste            | tastes the favourite topics do not explain (`ChoiceConfig.taste`): topic,|
|                  | subtopic, creator, minutes steps, favourite x minutes, persona x topic   |
|                  | and minutes (`recoworld.calibration.terms`)                              |

| parameter                       | method                                                            |
|---------------------------------|-------------------------------------------------------------------|
| choice weights, bias and taste  | click logit, the taste ridge-penalized (`terms.fit_terms`: strength|
|                                 | and kept groups by cross-validation over the fit users), SE from   |
|                                 | the inverse penalized Hessian; `terms` in calibration.json: what   |
|                                 | each group carries                                                 |
| like_threshold, share_threshold | `fit_like_threshold` on clicks (liked?) and likes (shared?)       |
| profiles' patience              | skips in a row before the user left (median over leaves)          |
| dynamics.browse_minutes         | median dwell of skipped items                                     |
| returns: gaps and churn         | on the surrogate's own end-of-session satisfaction, replayed on   |
|                                 | the LLM's reactions: Gamma GLM and churn logit                   |
|                                 | (`recoworld.calibration.returns`)                                 |
| dynamics.instruction_cooldown   | turns between instructions, from the instruction rate per turn    |

Completed dwell has no free parameter in the parametric form (completion is the click
logit itself); the agreement report measures how well that holds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import digamma, polygamma

from recoworld import seeding
from recoworld.calibration import terms
from recoworld.calibration.calibrated import CalibratedWorld
from recoworld.calibration.fit_choice import fit_like_threshold
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig, build
from recoworld.errors import ConfigError
from recoworld.population import UserProfile
from recoworld.simulators.surrogate import rank_reweighted, surrogate_profile
from recoworld.stats import estimate
from recoworld.storage import write_atomic

#: Fewest LLM item decisions (reviewed items, fallbacks excluded) the fit needs.
MIN_DECISIONS = 200
#: Fewest recommenders the policy-ranking check ranks (`recoworld.calibration.ranking`).
MIN_AGENTS = 4
TERMS = ("bias", "relevance", "quality", "popularity", "novelty_mismatch", "position", "duration")


@dataclass
class Decisions:
    """One row per LLM-reviewed item (`items`) and per LLM turn (`turns`) of a run, with the world behind them."""

    items: pd.DataFrame  # user_id, session, step, position, item, reaction, dwell_min, skip_run, ...
    turns: pd.DataFrame  # user_id, session, step, left, instruction, return_gap_days, churned, n_reviewed
    world: WorldConfig
    catalog: Catalog
    profiles: dict[str, UserProfile]
    agents: list[str]
    seed: int = 0
    user_sums: pd.DataFrame | None = None  # `ranking.user_sums` of the run (fallback turns included): rank check


def read_run(run: str | Path | Sequence[str | Path], min_decisions: int = MIN_DECISIONS) -> Decisions:
    """The LLM decisions of a `simulate` run folder (see the module docstring), or of several run folders of one
    world and recommenders (`collect`'s batches: user ids then get `@<folder name>`); a clear error when there are
    fewer than `min_decisions`."""
    from recoworld.calibration.ranking import user_sums

    roots = [Path(run)] if isinstance(run, str | Path) else [Path(r) for r in run]
    if not roots:
        raise ConfigError("no run folder given")
    parts = [_load(root, min_decisions) for root in roots]
    cfg, catalog = parts[0][0], parts[0][3]
    trajs, eps, profiles = [], [], []
    for root, (c, traj, ep, _, profs) in zip(roots, parts):
        if len(parts) > 1:
            if c.world.model_copy(update={"llm": cfg.world.llm}) != cfg.world or c.agents != cfg.agents:
                raise ConfigError(f"{root} has another world or other recommenders than {roots[0]}; distill fits "
                                  "one world's decisions")
            rename = {p.user_id: f"{p.user_id}@{root.name}" for p in profs}
            traj = traj.assign(user_id=traj["user_id"].map(rename))
            ep = ep.assign(user_id=ep["user_id"].map(rename)) if "user_id" in ep else ep
            profs = [p.model_copy(update={"user_id": rename[p.user_id]}) for p in profs]
        trajs.append(traj)
        eps.append(ep)
        profiles += profs
    traj = pd.concat(trajs, ignore_index=True)
    by_id = {p.user_id: p for p in profiles}
    items, turns = _tables(traj, cfg.world, catalog, by_id)
    n = len(items)
    where = roots[0] if len(roots) == 1 else f"{len(roots)} runs ({roots[0].parent})"
    if n < max(1, min_decisions):
        fallbacks = int(traj.drop_duplicates(["recommender", "user_id", "step"])["llm_fallback"].sum())
        raise ConfigError(f"{where} holds {n} LLM item decisions ({fallbacks} fallback turns excluded); distill "
                          f"needs at least {max(1, min_decisions)}: run more users or turns (or lower --min-decisions)")
    episodes = pd.concat([e for e in eps if len(e)], ignore_index=True) if any(len(e) for e in eps) else None
    sums = user_sums(traj, episodes) if episodes is not None else None
    return Decisions(items, turns, cfg.world, catalog, by_id, list(cfg.agents), cfg.seed, sums)


def _load(root: Path, min_decisions: int) -> tuple[Any, pd.DataFrame, pd.DataFrame, Catalog, list[UserProfile]]:
    """(simulate config, trajectories, episodes, catalog, drawn users) of one run folder, checked."""
    from recoworld.catalog import cached_catalog
    from recoworld.evaluation.run_folder import catalog_fingerprint
    from recoworld.evaluation.simulation import SimulationConfig, run_identity
    from recoworld.population import sample_population

    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{root} is not a run folder (no manifest.json); give the --out of "
                          "`recoworld simulate --user-backend llm ... --out RUN`")
    manifest = json.loads(manifest_path.read_text())
    identity = manifest.get("identity", manifest)
    if "config" not in identity:
        raise ConfigError(f"{manifest_path} names no simulate config; distill reads `recoworld simulate` runs")
    cfg = SimulationConfig.model_validate(identity["config"])
    files = sorted((root / "trajectories").glob("*.parquet"))
    if not files:
        raise ConfigError(f"{root} has no trajectories/*.parquet; the run logged no decisions")
    traj = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if cfg.world.user_backend != "llm":
        raise ConfigError(f"{root} was run with user_backend {cfg.world.user_backend!r}: it holds no LLM decisions "
                          f"(distill needs at least {min_decisions} LLM-reviewed items; rerun with --user-backend llm)")
    catalog = cached_catalog(cfg.world.catalog)
    profiles = sample_population(cfg.population, catalog,
                                 seeding.rng(cfg.seed, seeding.POPULATION), n=cfg.n_users)
    expect = identity.get("users")
    if (expect is not None and run_identity(cfg, catalog, profiles)["users"] != expect) \
            or identity.get("catalog") not in (None, catalog_fingerprint(catalog)):
        raise ConfigError(f"{root}: its users or catalog came from files (--data, --catalog or --calibrated), which "
                          "distill cannot rebuild; distill runs over the world's own population")
    eps_files = sorted((root / "episodes").glob("*.parquet"))
    eps = pd.concat([pd.read_parquet(f) for f in eps_files], ignore_index=True) if eps_files else pd.DataFrame()
    return cfg, traj, eps, catalog, profiles


def _tables(traj: pd.DataFrame, world: WorldConfig, catalog: Catalog,
            profiles: dict[str, UserProfile]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-item and per-turn tables of the LLM turns, with teacher-forced features per item."""
    traj = traj[~traj["llm_fallback"].astype(bool)]
    traj = traj.sort_values(["recommender", "user_id", "step", "position"], kind="stable")
    key = ["recommender", "user_id", "step"]
    turns = traj.groupby(key, sort=False).agg(
        session=("session", "first"), left=("left", "first"), instruction=("instruction", "first"),
        return_gap_days=("return_gap_days", "first"), churned=("churned", "first"),
        n_reviewed=("reaction", lambda r: int((r >= 0).sum()))).reset_index()
    turns["instructed"] = turns["instruction"].notna()
    items = traj[traj["reaction"] >= 0].copy()
    if items.empty:
        return items, turns
    items["episode"] = items["recommender"] + "\x00" + items["user_id"]
    emb = catalog.embeddings.astype(np.float64)
    m = world.dynamics.memory_size
    novelty, skip_run = np.empty(len(items)), np.empty(len(items), dtype=np.int64)
    conformity, trait, activity = np.empty(len(items)), np.empty(len(items)), np.empty(len(items))
    budget, spent = np.empty(len(items)), np.empty(len(items))
    skips_before, spent_before = np.empty(len(items), dtype=np.int64), np.empty(len(items))
    start = 0
    for (_, user), part in items.groupby(["episode", "user_id"], sort=False):
        n = len(part)
        p = profiles[user]
        sl = slice(start, start + n)
        seq = part["item"].to_numpy()
        e = emb[seq]
        gram = e @ e.T
        lags = np.arange(n)[:, None] - np.arange(n)[None, :]
        mask = (lags >= 1) & (lags <= m)
        max_sim = np.where(mask, gram, -np.inf).max(axis=1)
        novelty[sl] = 1.0 - np.minimum(np.where(np.isfinite(max_sim), max_sim, 0.0), 1.0)
        conformity[sl], trait[sl], activity[sl] = p.popularity_affinity, p.novelty_trait, p.activity
        budget[sl] = p.time_budget_min
        # skips in a row up to and including this item, within the session (and before it: what a model that
        # predicts this item's reaction may read)
        sess = part["session"].to_numpy()
        react = part["reaction"].to_numpy()
        run, prev = 0, None
        dwell = part["dwell_min"].to_numpy(np.float64)
        day = part["day"].to_numpy()
        used, prev_day = 0.0, None
        for j in range(n):
            if sess[j] != prev:
                run, prev = 0, sess[j]
            skips_before[start + j] = run
            run = run + 1 if react[j] == 0 else 0
            skip_run[start + j] = run
            if day[j] != prev_day:  # the budget is daily (approximately: by the turn's day)
                used, prev_day = 0.0, day[j]
            spent_before[start + j] = used
            used += dwell[j]
            spent[start + j] = used
        start += n
    names = catalog.topic_names
    rank = [list(profiles[u].topic_interests).index(names[t]) if names[t] in profiles[u].topic_interests else -1
            for u, t in zip(items["user_id"].to_numpy(), items["topic"].to_numpy())]
    items = items.assign(novelty=novelty, topic_rank=rank, skip_run=skip_run, skips_before=skips_before,
                         spent_before=spent_before, conformity=conformity,
                         novelty_trait=trait, activity=activity, budget=budget, spent=spent,
                         quality=catalog.quality[items["item"].to_numpy()].astype(np.float64),
                         popularity=catalog.popularity_z[items["item"].to_numpy()],
                         duration=catalog.duration_min[items["item"].to_numpy()].astype(np.float64))
    # the last reviewed item of a turn the user left after
    last = items.groupby(key, sort=False)["position"].transform("max") == items["position"]
    items["leaves"] = last & items["left"].astype(bool)
    return with_relevance(items.reset_index(drop=True), catalog, list(profiles.values())), turns


def with_relevance(items: pd.DataFrame, catalog: Catalog, profiles: list[UserProfile]) -> pd.DataFrame:
    """`items` with relevance and the favourite score (the interest weight of the item's topic, as
    `choice.Taste.tables` reads it) recomputed from these profiles' interests."""
    by_id = {p.user_id: p for p in profiles}
    vec = {u: by_id[u].interest_vector(catalog).astype(np.float64) for u in items["user_id"].unique()}
    emb = catalog.embeddings.astype(np.float64)[items["item"].to_numpy()]
    users = np.stack([vec[u] for u in items["user_id"]]) if len(items) else np.zeros_like(emb)
    names = catalog.topic_names
    favourite = [by_id[u].topic_interests.get(names[t], 0.0)
                 for u, t in zip(items["user_id"].to_numpy(), items["topic"].to_numpy())]
    return items.assign(relevance=np.einsum("nd,nd->n", emb, users), favourite=np.asarray(favourite, np.float64))


def features(items: pd.DataFrame) -> np.ndarray:
    """(N, len(TERMS)) utility features in `TERMS` order (signs as `ChoiceModel.utility` applies them)."""
    return np.stack([np.ones(len(items)), items["relevance"].to_numpy(), items["quality"].to_numpy(),
                     items["popularity"].to_numpy() * items["conformity"].to_numpy(),
                     -np.abs(items["novelty"].to_numpy() - items["novelty_trait"].to_numpy()),
                     -np.log1p(items["position"].to_numpy().astype(np.float64)),
                     -np.log1p(items["duration"].to_numpy())], axis=1)


def weights_of(world: WorldConfig) -> np.ndarray:
    c = world.choice
    return np.array([c.bias, c.relevance, c.quality, c.popularity, c.novelty_mismatch, c.position, c.duration])


def utility(items: pd.DataFrame, world: WorldConfig, profiles: list[UserProfile], catalog: Catalog) -> np.ndarray:
    """Click utility of each decision under `world`'s choice model (fatigue taken as 0) for these `profiles`
    (its taste included, `terms.taste_utility`), plus the user's activity."""
    taste = terms.taste_utility(items, world.choice.taste, {p.user_id: p for p in profiles}, catalog)
    return features(items) @ weights_of(world) + items["activity"].to_numpy() + taste


def fit_binary_logit(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None, ridge: float = 1e-4,
                     iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(weights, standard errors) of P(y) = sigmoid(x w + offset) by Newton's method; a small ridge keeps a
    separable log (a deterministic LLM rule) finite."""
    off = np.zeros(len(y)) if offset is None else offset
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = np.exp(-np.logaddexp(0.0, -(x @ w + off)))  # sigmoid, no overflow on a separable log
        grad = x.T @ (y - p) - ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w += step
        if np.abs(step).max() < 1e-8:
            break
    p = np.exp(-np.logaddexp(0.0, -(x @ w + off)))  # sigmoid, no overflow on a separable log
    hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(len(w))
    return w, np.sqrt(np.diag(np.linalg.inv(hess)))


def fit_gamma(gaps: np.ndarray) -> tuple[float, float]:
    """(shape, mean) of a Gamma by maximum likelihood."""
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    mean = float(gaps.mean())
    return gamma_shape(float(np.log(mean) - np.mean(np.log(gaps)))), mean


def gamma_shape(s: float, iterations: int = 50) -> float:
    """The Gamma shape k solving log k - digamma(k) = s, its likelihood equation given the means (s = mean(y/mu - 1
    - log(y/mu)); log(mean) - mean(log y) for one common mean), by Newton; capped at 100 (s near 0: no spread)."""
    if s <= 1e-9:
        return 100.0
    k = (3 - s + np.sqrt((s - 3) ** 2 + 24 * s)) / (12 * s)
    for _ in range(iterations):
        step = (np.log(k) - float(digamma(k)) - s) / (1 / k - float(polygamma(1, k)))
        k = max(k - step, 1e-3)
        if abs(step) < 1e-10:
            break
    return float(min(k, 100.0))


def split_users(users: list[str], holdout: float, seed: int) -> tuple[set[str], set[str]]:
    """(fit users, held-out users), drawn with `seed`; at least one user on each side."""
    order = np.random.default_rng(seed).permutation(sorted(users))
    n_out = min(max(1, round(holdout * len(order))), len(order) - 1)
    return set(order[n_out:].tolist()), set(order[:n_out].tolist())


def distill(decisions: Decisions, holdout: float = 0.3, seed: int = 0) -> tuple[CalibratedWorld, set[str]]:
    """The distilled world (parametric user backend) fitted on the fit users, and the held-out user ids."""
    items, turns = decisions.items, decisions.turns
    users = sorted(items["user_id"].unique())
    if len(users) < 2:
        raise ConfigError(f"the run's LLM decisions come from {len(users)} user; distill holds users out for "
                          "evaluation and needs at least 2 (more for a useful report)")
    fit_users, held = split_users(users, holdout, seed)
    it = items[items["user_id"].isin(fit_users)]
    tu = turns[turns["user_id"].isin(fit_users)]
    base = decisions.world
    profiles = list(decisions.profiles.values())
    rank_weights = _rank_weights(it)
    if rank_weights is not None:  # what the persona's ordered list of favourites means to the LLM
        profiles = [rank_reweighted(p, rank_weights) for p in profiles]
    it = with_relevance(it, decisions.catalog, profiles)
    x = features(it)
    act = it["activity"].to_numpy()
    react = it["reaction"].to_numpy()
    click = (react >= 1).astype(np.float64)
    report: dict[str, Any] = {"decisions": {"fit": len(it), "held_out": int(len(items) - len(it)),
                                            "fit_users": len(fit_users), "held_out_users": len(held)}}
    choice: dict[str, Any] = {}
    by_id = {p.user_id: p for p in profiles}
    if 0 < click.sum() < len(click):
        layout = terms.layout(it, by_id, decisions.catalog)
        fit = terms.fit_terms(x, TERMS, terms.design(it, layout, by_id, decisions.catalog), layout, click, act,
                              it["user_id"].to_numpy(), seed)
        choice = {t: float(v) for t, v in zip(TERMS, fit.base)} | {"taste": fit.taste.model_dump()}
        report["choice"] = {t: estimate(fit.base[i], fit.se[i]) for i, t in enumerate(TERMS)}
        report["terms"] = {"importance": fit.importance, "ridge": fit.ridge, "cv_loglik": fit.cv_loglik,
                           "measure": "drop in the fit users' cross-validated log-likelihood per decision (nats) "
                                      "when the term is removed"}
    else:
        report["choice"] = {"note": "every decision was the same (all clicks or all skips); weights kept"}
    u = utility(it, build(WorldConfig, "distilled world", base, choice=choice), profiles, decisions.catalog)
    for name, given, outcome in (("like_threshold", react >= 1, react >= 2),
                                 ("share_threshold", react >= 2, react >= 3)):
        y = outcome[given]
        if len(y) and 0 < y.sum() < len(y):
            t, se_t = fit_like_threshold(u[given], y.astype(np.float64))
            choice[name] = t
            report[name] = estimate(t, se_t)
        elif len(y):  # all or none: put the threshold far on the side the log shows
            choice[name] = float(u[given].min() - 6.0) if y.all() else float(u[given].max() + 6.0)
            report[name] = {"value": choice[name], "note": "every decision the same; set past the fitted utilities"}
    if choice.get("share_threshold", np.inf) < choice.get("like_threshold", -np.inf):
        choice["share_threshold"] = choice["like_threshold"]
    # leaving: skips in a row at the point the user left (turns that ended on a skip)
    leaves = it[it["leaves"] & (it["reaction"] == 0)]
    patience = int(np.median(leaves["skip_run"])) if len(leaves) else None
    report["patience"] = ({"value": patience, "leaves": len(leaves)} if patience is not None
                          else {"note": "no user left after a skip; profiles keep their patience"})
    dynamics: dict[str, Any] = {}
    skips = it.loc[it["reaction"] == 0, "dwell_min"].to_numpy(np.float64)
    if len(skips) and np.median(skips) > 0:
        dynamics["browse_minutes"] = float(np.median(skips))
    rate = float(tu["instructed"].mean()) if len(tu) else 0.0
    report["instruction_rate_per_turn"] = rate
    if rate > 0:
        dynamics["instruction_cooldown"] = int(max(0, round(1.0 / rate) - 1))
    from recoworld.calibration.returns import fit_returns

    weight_list = None if rank_weights is None else rank_weights.tolist()
    surrogates = [surrogate_profile(p, weight_list, patience) for p in decisions.profiles.values()]

    def own_satisfaction(returns: dict[str, float]) -> np.ndarray:
        """End-of-session satisfaction of the surrogate (these returns) on the fit users and the run's recommenders
        (sessions that did not end in churn)."""
        from recoworld.evaluation.simulation import SimulationConfig, simulate

        world = build(WorldConfig, "distilled world", base, user_backend="parametric", choice=choice,
                      dynamics=dynamics, returns=returns).model_copy(update={"expose_mindset": True})
        users = [p for p in surrogates if p.user_id in fit_users]
        traj = simulate(SimulationConfig(n_users=len(users), agents=decisions.agents, seed=decisions.seed,
                                         world=world), catalog=decisions.catalog, profiles=users).trajectories
        ends = traj.drop_duplicates(["recommender", "user_id", "step"])
        return ends.loc[ends["left"].astype(bool) & ~ends["churned"].astype(bool), "satisfaction"].to_numpy(np.float64)

    returns, report["returns"] = fit_returns(it, {p.user_id: p for p in profiles}, decisions.catalog,
                                             base.dynamics.model_copy(update=dynamics), base.returns,
                                             own_satisfaction)
    world = build(WorldConfig, "distilled world", base, user_backend="parametric", choice=choice,
                  dynamics=dynamics, returns=returns)
    profiles = surrogates
    report["favourite_rank_weights"] = weight_list
    report["held_out_users"] = sorted(held)
    report["source"] = "recoworld distill"
    return CalibratedWorld(world, decisions.catalog, profiles, report), held


def _rank_weights(items: pd.DataFrame) -> np.ndarray | None:
    """Weight of the persona's 1st, 2nd, ... favourite topic in the LLM's clicks: a click logit on one
    indicator per rank (and the other terms), its positive coefficients over the other topics' normalized."""
    rank = items["topic_rank"].to_numpy()
    n = int(rank.max()) + 1 if len(rank) else 0
    click = (items["reaction"].to_numpy() >= 1).astype(np.float64)
    if n < 1 or not 0 < click.sum() < len(click):
        return None
    onehot = (rank[:, None] == np.arange(n)[None, :]).astype(np.float64)
    x = np.concatenate([onehot, np.delete(features(items), TERMS.index("relevance"), axis=1)], axis=1)
    w, _ = fit_binary_logit(x, click, items["activity"].to_numpy())
    coef = np.maximum(w[:n], 0.0)
    return coef / coef.sum() if coef.sum() > 0 else None


def distill_run(run: str | Path | Sequence[str | Path], out: str | Path, holdout: float = 0.3, seed: int = 0,
                n_boot: int = 200, min_decisions: int = MIN_DECISIONS,
                rank_check: bool | None = None, neural: bool = False,
                ceiling: Callable[[Decisions], Callable[[pd.DataFrame], pd.DataFrame]] | None = None,
                on_stage: Callable[[str], None] | None = None,
                ) -> tuple[CalibratedWorld, pd.DataFrame]:
    """`recoworld distill --from RUN --out DIR`: fit, write the world (calibrated-world format, so `--calibrated
    DIR` and `--config DIR/world.yaml` take it), and the agreement report (agreement.csv, agreement.png) of the
    default parametric user and the distilled one on the held-out users.

    `rank_check` (`recoworld.calibration.ranking`): True runs the policy-ranking check (an error if the run has
    too few recommenders), None runs it when the run has enough, False never; its table is ranking.csv and its
    Spearman's rho the report's `ranking`. `neural` also trains the neural choice model
    (`recoworld.calibration.neural`) on the fit users, adds its (item-level) column to the report and writes it to
    DIR/neural.pt (`neural.load_neural`). `ceiling`, when the rule behind the decisions is known (a scripted
    user's), makes from the run's decisions a perfect model's scorer: the report's `ceiling` column
    (`recoworld.calibration.agreement`). The terms carrying the fit are the report's `attrs["terms"]`.
    `on_stage(name)` is called as each stage starts."""
    from recoworld.calibration.agreement import agreement, plot
    from recoworld.calibration.calibrated import save_calibration

    stage = on_stage or (lambda _name: None)
    if not 0 < holdout < 1:
        raise ConfigError(f"--holdout must be a share between 0 and 1 (exclusive), got {holdout}")
    stage("reading the run's LLM decisions")
    decisions = read_run(run, min_decisions)
    stage("fitting the surrogate")
    distilled, held = distill(decisions, holdout, seed)
    default = build(WorldConfig, "default world", decisions.world, user_backend="parametric",
                    choice=WorldConfig().choice.model_dump(), dynamics=WorldConfig().dynamics.model_dump(),
                    returns=WorldConfig().returns.model_dump())
    scorers = {}
    neural_model = None
    if neural:
        from recoworld.calibration.neural import fit_neural

        stage("training the neural choice model")
        neural_model = fit_neural(decisions.items[~decisions.items["user_id"].isin(held)], decisions.profiles,
                                  decisions.catalog, seed=seed)
        scorers["neural"] = functools.partial(neural_model.predict, profiles=decisions.profiles,
                                              catalog=decisions.catalog)
    stage(f"agreement on {len(held)} held-out users ({n_boot} bootstrap resamples)")
    report = agreement(decisions, held, {"default": (default, list(decisions.profiles.values())),
                                         "distilled": (distilled.world, distilled.profiles)}, n_boot, seed, scorers,
                       None if ceiling is None else ceiling(decisions))
    distilled.report["agreement"] = report.to_dict(orient="records")
    report.attrs["terms"] = distilled.report.get("terms", {}).get("importance", [])
    ranking = None
    if rank_check or (rank_check is None and len(decisions.agents) >= MIN_AGENTS and decisions.user_sums is not None):
        from recoworld.calibration import ranking as rk

        stage(f"rank check: {len(decisions.agents)} recommenders under the surrogate")
        ranking = rk.rank_check(decisions, distilled)
        distilled.report["ranking"] = rk.summary(ranking)
    stage("writing the distilled world and the agreement report")
    path = save_calibration(distilled, out)
    if neural_model is not None:
        neural_model.save(path / "neural.pt")
    if ranking is not None:
        write_atomic(path / "ranking.csv", ranking.to_csv(index=False))
    write_atomic(path / "agreement.csv", report.to_csv(index=False))
    plot(report, path / "agreement.png")
    return distilled, report


def count_decisions(trajectories: pd.DataFrame) -> int:
    """LLM item decisions in a run's trajectories: reviewed items of turns the LLM played (no fallback)."""
    if trajectories.empty:
        return 0
    return int(((trajectories["reaction"] >= 0) & ~trajectories["llm_fallback"].astype(bool)).sum())


def collect(world: WorldConfig, n_decisions: int, out: str | Path, agents: list[str], seed: int = 0,
            batch_users: int = 8, max_users: int = 10_000, population: Any = None,
            on_batch: Any = None) -> tuple[list[Path], str | None]:
    """`recoworld distill --collect N`: run LLM users in batches of fresh users (batch b: seed + b) into
    `out/collect/batch-NNN` until `n_decisions` LLM item decisions are logged, the LLM budget stops the run, or
    `max_users` users have played. The first batch has `batch_users` users; the next ones as many as the decisions
    per user seen so far say are missing (plus 10%). All batches share one LLM cache and one budget ledger
    (`out/collect/llm-cache`, `out/collect/llm-budget.json`, unless the llm block sets them), so the world's
    budget bounds the whole collection and a rerun replays what was already asked. `on_batch(run, decisions so
    far)` after each batch. Returns (the batch folders, why the budget stopped it or None)."""
    import math

    from recoworld.evaluation.simulation import SimulationConfig, simulate
    from recoworld.population import PopulationSpec

    root = Path(out) / "collect"
    world = world.model_copy(update={"user_backend": "llm", "llm": world.llm.for_run(root, ledger=True)})
    runs: list[Path] = []
    got, users, n = 0, 0, batch_users
    while True:
        run = root / f"batch-{len(runs):03d}"
        cfg = SimulationConfig(n_users=n, agents=agents, seed=seed + len(runs), world=world,
                               population=population if population is not None else PopulationSpec.default())
        result = simulate(cfg, out=run, overwrite=True)  # a batch of another size (a rerun without cache)
        runs.append(run)
        users += n
        got += count_decisions(result.trajectories)
        if on_batch is not None:
            on_batch(run, got)
        if got >= n_decisions or result.stopped or users >= max_users:
            return runs, result.stopped
        per_user = got / users
        need = math.ceil(1.1 * (n_decisions - got) / per_user) if per_user > 0 else 2 * n
        n = max(1, min(need, max_users - users, 4 * n))
