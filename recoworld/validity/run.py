"""The validation protocol: the same real users, lived by each simulated world, on the same items,
judged on the period after the split's cutoff, which nothing fitted has seen.

1. The real log is loaded and split in time as for fidelity (`prepare_world`; by default one
   global cutoff). `users` of the users with a train history are drawn with the seed: the
   compared users. The simulated worlds are built from the train part only (the calibration
   fitted it; the default world's profiles read it), so the cutoff is "now" for a simulation.
2. Two periods are compared (`PERIODS`), each a column of the report:
   - **out-of-sample** (the headline): the test period after the cutoff. The log side is the
     compared users' interactions after the cutoff; the simulated side is each world
     simulating the same users from the cutoff (profiles as of the cutoff) for the test
     period's length in days, capped at `max_days` (or `days`, never longer than the period).
     Both sides count time from the cutoff, and every compared user is observed for the
     whole period, so a real user who does not come back is a user with no consumption (as a
     simulated user who never clicks), not a missing one. Neither calibration nor profile
     building ever read these interactions, so a fact that holds here is a fact the world
     predicts, not one it was fitted to.
     With `continuation` (the default, and only with a global cutoff) each simulated user
     continues from where they stood at the cutoff, not from a fresh session on day 0: at a
     real cutoff most users are away (churned, or in a long gap), and starting everyone at
     once would make the column measure that, not the fitted behaviour. The simulated side
     assumes that a user's state at the cutoff is their time since the end of their last train
     session (cut as calibration cuts sessions) read through the world's own return model at
     neutral satisfaction: churned with the posterior probability of that absence, else back
     after the residual gap (`ReturnGapModel.continuation`, `recoworld.validity.continuation`).
     Users churned or back after the horizon have no activity and are still compared; the
     others start their episode with that first session, and the simulated times count from
     the cutoff, as the log's do. Everything else about the user (interests, satisfaction,
     fatigue) starts fresh at that first session, as after any long gap. Without it
     (`continuation=False`) every simulated user opens a session on day 0, the earlier protocol.
   - **in-sample**: the train period, which calibration fitted: the compared users' train
     interactions, each user clipped to their first `horizon` days (the train span, capped),
     against the same simulation over that horizon. A world can fit this column and still
     miss the other; the gap between the two columns is what fitting bought.
   Without continuation each world is simulated once, for the longer of the two horizons, and
   each period reads the simulated days inside its own horizon; with it the out-of-sample
   simulation is its own run, from the cutoff. A per-user split has no common cutoff: there the
   out-of-sample period is each user's held-out interactions, and the report says that train
   leaks later interactions of other users.
3. By default the users meet uniform exposure: candidates drawn uniformly from the catalog
   (`candidates="uniform"`, the worlds' retrieval switched off) and a random slate of them
   (`agent="random"`). A log records no exposures, and calibration fits choices against
   uniformly drawn alternatives, so the fitted user is a model of choice under uniform
   exposure; that is the exposure under which a world's behaviour can be compared with the
   log's. A recommender or retrieval stage adds its own exposure bias on top, and the
   popularity facts then measure the feed as much as the users. `agent` and
   `candidates="world"` study that on purpose.
4. Both sides become `ConsumptionLog`s on the real log's catalog, so every fact is computed
   by the same code, and each world's facts are compared with the real ones (`compare`).
   The `users` rows count who is actually compared per period and side: the users drawn, and
   those with consumptions in the period (a real user inactive after the cutoff has none; that
   is behaviour, and the counts show it instead of hiding it).
5. Ranking fidelity comes from `recoworld.evaluation.fidelity` on the held-out interactions:
   out of sample by construction, so it is in the out-of-sample column only. The warm users
   are the compared users with new held-out items; the log's cold-start users (test users
   without train history, who cannot be among the compared users) are counted and scored
   apart with the population's prior profile. Its "real" value is 1 by definition (the
   held-out items are what the real users chose), so its distance is the gap to a perfect
   ranking. The headline is the choice model's AUC (the expected choice); the simulated AUC
   scores the mean reaction over `passes` passes of shuffled slates (`DEFAULT_PASSES`, the
   same default as `recoworld fidelity`, so the two commands agree), and is the headline for
   LLM users, which have no utility to read.

`HEADLINE` names the one statistic per fact whose distance sums the fact up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from recoworld.calibration.fit_sessions import SECONDS_PER_DAY
from recoworld.catalog import Catalog
from recoworld.config import RetrievalConfig, StrictModel, WorldConfig
from recoworld.data import RealWorld
from recoworld.errors import ConfigError
from recoworld.evaluation.fidelity import (
    COLD,
    DEFAULT_PASSES,
    ChoiceModelScorer,
    ChoiceScorer,
    FidelityConfig,
    PopularityScorer,
    default_scorers,
    eval_population,
    evaluate,
    llm_scorer,
)
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.population import UserProfile, draw_profiles
from recoworld.validity.continuation import absent_days, simulate_from_cutoff
from recoworld.validity.events import ConsumptionLog, from_interactions, from_trajectories
from recoworld.validity.facts import EVENT_FACTS, Fact, compare, event_facts

RANKING = "ranking"
USERS = "users"
OUT_OF_SAMPLE, IN_SAMPLE = "out-of-sample", "in-sample"
#: The two columns of the report, the headline first.
PERIODS = (OUT_OF_SAMPLE, IN_SAMPLE)
COLUMNS = ["period", "fact", "statistic", "real", "world", "value", "distance", "note"]
#: Per fact, the statistics whose distance is its headline, in order of preference (the first the log has).
HEADLINE: dict[str, tuple[str, ...]] = {
    RANKING: ("AUC (choice model)", "AUC (simulated)"), "positive rate": ("of consumptions", "per impression"),
    "popularity": ("Gini",),
    "activity": ("KS",), "session length": ("KS",), "session gap": ("KS",), "return curve": ("curve mean |gap|",),
    "interest drift": ("KS",), "distinctness": ("KS",),
}
_UNIFORM = RetrievalConfig(interest_share=0.0, popular_share=0.0, instruction_share=0.0)


class ValidityConfig(StrictModel):
    """What `recoworld validate` compares."""

    users: int = Field(200, ge=2, description="real users compared, drawn with the seed")
    days: float | None = Field(None, gt=0, description="simulated horizon; default: each period's span, capped; "
                               "the out-of-sample horizon never exceeds the test period")
    max_days: float = Field(60.0, gt=0, description="cap of the default horizon")
    agent: str = Field("random", description="the recommender the simulated users meet (random: uniform exposure)")
    candidates: Literal["uniform", "world"] = Field(
        "uniform", description="uniform: candidates drawn uniformly from the catalog; world: each world's retrieval")
    passes: int = Field(DEFAULT_PASSES, ge=1, description="passes of shuffled slates behind the simulated AUC "
                        "(the same default as `recoworld fidelity`)")
    fidelity_users: int = Field(100, ge=1, description="users of the ranking fidelity")
    llm_users: int = Field(0, ge=0, description="LLM users simulated on the same facts; 0 = none")
    llm_max_steps: int = Field(20, ge=1, description="turns per LLM user (the model is slow)")
    continuation: bool = Field(
        True, description="out of sample, simulate each user from their state at the cutoff (churned, or back "
        "after the residual gap of their absence under the world's return model) instead of a session on day 0 "
        "for everyone; needs a global cutoff")
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class SimWorld:
    """A simulated world to validate: its config, its catalog (same item ids as the log) and its users."""

    name: str
    world: WorldConfig
    catalog: Catalog
    profiles: list[UserProfile]


@dataclass(frozen=True)
class Period:
    """One column of the report: which interactions are the log side, and who is compared on each side."""

    name: str  # OUT_OF_SAMPLE or IN_SAMPLE
    description: str  # what the period is, for the header
    horizon_days: float
    real_users: int  # compared users with consumptions in the period
    simulated_users: dict[str, int]  # world -> its simulated users with consumptions in the horizon
    compared: int  # users drawn


@dataclass
class ValidityResult:
    rows: pd.DataFrame  # COLUMNS: period, fact, statistic, real, world, value, distance, note
    facts: dict[str, dict[str, dict[str, Fact]]]  # period -> source ("real" or a world's name) -> fact -> Fact
    periods: dict[str, Period]
    users: list[str]
    notes: list[str]  # what a reader needs besides the numbers (LLM fallbacks, a run stopped by its budget)

    @property
    def horizon_days(self) -> float:
        """The headline (out-of-sample) period's horizon."""
        return self.periods[OUT_OF_SAMPLE].horizon_days


def headline(rows: pd.DataFrame, period: str = OUT_OF_SAMPLE) -> pd.DataFrame:
    """One row per fact and world of validity `rows` (the CSV's columns) in `period` (out of sample
    by default): the fact's `HEADLINE` statistic (the first this world has) and its distance."""
    if "period" in rows:
        rows = rows[rows["period"] == period]
    rows = rows.dropna(subset=["distance"])
    out = []
    for (fact, world), group in rows.groupby(["fact", "world"], sort=False):
        stat = next((s for s in HEADLINE.get(str(fact), ()) if (group["statistic"] == s).any()), None)
        if stat is not None:
            out.append({"fact": fact, "world": world, "statistic": stat,
                        "distance": float(group.loc[group["statistic"] == stat, "distance"].iloc[0])})
    return pd.DataFrame(out, columns=["fact", "world", "statistic", "distance"])


def span_days(timestamps: np.ndarray, start: float | None = None) -> float:
    """Whole days from `start` (default: the earliest timestamp) to the latest timestamp, at least 1."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if not len(ts):
        return 1.0
    origin = ts.min() if start is None else start
    return float(max(1, math.ceil((ts.max() - origin) / SECONDS_PER_DAY)))


def horizon_days(interactions: pd.DataFrame, config: ValidityConfig, start: float | None = None) -> float:
    """`config.days`, else the span of `interactions` (from `start`) in whole days, capped at `config.max_days`."""
    if config.days is not None:
        return config.days
    return float(min(config.max_days, span_days(interactions["timestamp"].to_numpy(np.float64), start)))


def llm_world(base: SimWorld, config: ValidityConfig, held_out: set[str] | frozenset[str] = frozenset()) -> SimWorld:
    """LLM users (the base world's `llm` backend) on the base world's catalog, `llm_users` of its users:
    those with held-out interactions (`held_out`) first, since LLM users are costly and only those can be
    ranked, then the others, each in the base world's order."""
    world = base.world.model_copy(update={"user_backend": "llm", "max_steps": config.llm_max_steps})
    ordered = sorted(base.profiles, key=lambda p: p.user_id not in held_out)  # stable: keeps the order within
    return SimWorld("llm users", world, base.catalog, ordered[: config.llm_users])


def _ranking(world: SimWorld, real: RealWorld, config: ValidityConfig, max_users: int) -> list[dict[str, object]]:
    """AUC / NDCG / Hit on held-out items: simulated behaviour, the choice model's expectation, popularity.

    Both user-model numbers are kept: at a low click rate the behavioural score is mostly
    ties (unclicked items), so it can sit near chance while the expected choice ranks well.
    The log's cold-start users are counted, and (for parametric worlds) scored apart with the
    prior profile; their rows carry no distance, so they never move the headline.
    """
    cfg = FidelityConfig(max_users=max_users, seed=config.seed)
    llm = world.world.user_backend == "llm"
    population = eval_population(world.catalog, world.profiles, real.split.train, real.split.test, cfg,
                                 cold_start=not llm)
    counts = population.counts

    def count(stat: str, value: int, note: str | None = None) -> dict[str, object]:
        return {"fact": RANKING, "statistic": stat, "real": np.nan, "value": float(value), "distance": np.nan,
                "note": note}

    rows = [count("users", len(population.warm)),
            count("cold-start users", counts["cold_start"], "no train history: scored with the prior profile"
                  if counts["cold_start"] else None)]
    if not population.warm:
        rows.append({"fact": RANKING, "statistic": "-", "real": np.nan, "value": np.nan, "distance": np.nan,
                     "note": "no compared user has new held-out items"})
        return rows
    scorers: list[ChoiceScorer] = (
        [llm_scorer(world.catalog, world.world), PopularityScorer(world.catalog)]
        if llm else default_scorers(world.catalog, world.world, config.passes))
    summary, _ = evaluate(population.users, scorers, cfg)
    metrics = (("AUC", "auc"), (f"NDCG@{cfg.k}", f"ndcg@{cfg.k}"), (f"Hit@{cfg.k}", f"hit@{cfg.k}"))
    by_name = {s.name: s for s in scorers}
    for _, result in summary.iterrows():
        scorer, cold = by_name[str(result["scorer"])], result["group"] == COLD
        prefix = "AUC cold-start" if cold else "AUC"
        if isinstance(scorer, PopularityScorer):
            rows.append({"fact": RANKING, "statistic": f"{prefix} popularity ref.", "real": np.nan,
                         "value": float(result["auc"]), "distance": np.nan, "note": None})
            continue
        kind = "choice model" if isinstance(scorer, ChoiceModelScorer) else "simulated"
        if cold:
            rows.append({"fact": RANKING, "statistic": f"{prefix} ({kind})", "real": 1.0,
                         "value": float(result["auc"]), "distance": np.nan, "note": None})
            continue
        rows += [{"fact": RANKING, "statistic": f"{label} ({kind})", "real": 1.0, "value": float(result[col]),
                  "distance": 1.0 - float(result[col]), "note": None} for label, col in metrics]
    return rows


def _pick_users(profiles: Sequence[UserProfile], n: int, seed: int) -> list[str]:
    if len(profiles) < 2:
        raise ConfigError(f"validation needs at least 2 users with a train history, the log has {len(profiles)}")
    return [p.user_id for p in draw_profiles(list(profiles), n, np.random.default_rng(seed))]


def _clip(trajectories: pd.DataFrame, horizon: float) -> pd.DataFrame:
    """The turns that end inside the first `horizon` simulated days."""
    return trajectories[trajectories["time_days"].to_numpy() <= horizon]


def _n_users(log: ConsumptionLog | None) -> int:
    """Users with a consumption in `log` (0 without a log: the period had no interactions)."""
    return int(log.consumptions["user"].nunique()) if log is not None else 0


def _users_rows(
    real: ConsumptionLog | None, sim: ConsumptionLog, compared: int, simulated: int,
) -> list[dict[str, object]]:
    """Who is compared on each side: users drawn, and those with consumptions in the period."""
    with_data = float(real.consumptions["user"].nunique()) if real is not None else 0.0
    return [
        {"fact": USERS, "statistic": "compared", "real": float(compared), "value": float(simulated),
         "distance": np.nan, "note": None},
        {"fact": USERS, "statistic": "with consumptions in the period", "real": with_data,
         "value": float(sim.consumptions["user"].nunique()), "distance": np.nan, "note": None},
    ]


def _periods(
    real: RealWorld, chosen: set[str], cfg: ValidityConfig,
) -> dict[str, tuple[pd.DataFrame, float, float, str]]:
    """period -> (the compared users' interactions in it, when it stopped observing, horizon, description)."""
    split = real.split
    train, test = split.train, split.test
    log_end = float(real.dataset.interactions["timestamp"].max())
    if split.cutoff is not None:
        out_h = span_days(test["timestamp"].to_numpy(np.float64), split.cutoff)
        out_desc = "test period after the cutoff, never fitted"
        in_end = split.cutoff
    else:
        out_h = span_days(test["timestamp"].to_numpy(np.float64))
        out_desc = "each user's held-out interactions (per_user split: train leaks later interactions)"
        in_end = float(train["timestamp"].max())
    out_horizon = float(min(out_h, cfg.days if cfg.days is not None else cfg.max_days))
    in_horizon = horizon_days(train, cfg)
    return {
        OUT_OF_SAMPLE: (test[test["user_id"].isin(chosen)], log_end, out_horizon, out_desc),
        IN_SAMPLE: (train[train["user_id"].isin(chosen)], in_end, in_horizon, "train period, which calibration fitted"),
    }


def _simulate_periods(
    real: RealWorld, w: SimWorld, periods: dict[str, tuple[pd.DataFrame, float, float, str]], cfg: ValidityConfig,
    exposure: dict[str, RetrievalConfig], continuing: bool, notes: list[str], progress: Callable[[str], None],
) -> dict[str, pd.DataFrame]:
    """period -> world `w`'s trajectories for it: one simulation from day 0 for the longer horizon, or with
    `continuing` that for the in-sample period and a simulation from the cutoff for the out-of-sample one."""
    runs = {IN_SAMPLE: periods[IN_SAMPLE][2]} if continuing else {
        OUT_OF_SAMPLE: max(h for _, _, h, _ in periods.values())}
    out: dict[str, pd.DataFrame] = {}
    for period, horizon in runs.items():
        progress(f"{w.name}: simulating {len(w.profiles)} users for {horizon:g} days against {cfg.agent!r}")
        sim_cfg = SimulationConfig(n_users=len(w.profiles), agents=[cfg.agent], seed=cfg.seed,
                                   world=w.world.model_copy(update={"horizon_days": horizon, **exposure}))
        result = simulate(sim_cfg, catalog=w.catalog, profiles=w.profiles)
        if result.stopped:
            notes.append(f"{w.name}: stopped early: {result.stopped}")
        out[period] = result.trajectories
    if continuing:
        horizon = periods[OUT_OF_SAMPLE][2]
        progress(f"{w.name}: simulating {len(w.profiles)} users from the cutoff for {horizon:g} days")
        train, cutoff = real.split.train, real.split.cutoff
        assert cutoff is not None  # `continuing` needs a global cutoff
        cont = simulate_from_cutoff(w.world.model_copy(update={"horizon_days": horizon, **exposure}), w.catalog,
                                    w.profiles, cfg.agent, cfg.seed, absent_days(train, cutoff),
                                    train.groupby("user_id").size())
        if cont.stopped:
            notes.append(f"{w.name}: stopped early from the cutoff: {cont.stopped}")
        gap = cont.first_gap.to_numpy()
        notes.append(f"{w.name}, from the cutoff: of {len(gap)} users {int(np.isinf(gap).sum())} had churned "
                     f"(return model's posterior given their absence, median {cont.absent_days.median():.0f} days), "
                     f"{int((np.isfinite(gap) & (gap >= horizon)).sum())} come back after the horizon, "
                     f"{int((gap < horizon).sum())} inside it")
        out[OUT_OF_SAMPLE] = cont.trajectories
    else:
        out[IN_SAMPLE] = out[OUT_OF_SAMPLE]
    if w.world.user_backend == "llm":
        turns = pd.concat([t.drop_duplicates(["user_id", "step"]) for t in
                           ({id(t): t for t in out.values()}).values()])
        notes.append(f"{w.name}: {int(turns['llm_fallback'].sum())} of {len(turns)} turns fell back to the "
                     "parametric user")
    return out


def validate(
    real: RealWorld, worlds: Sequence[SimWorld], config: ValidityConfig | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ValidityResult:
    """Compare each world with the real log on every fact, out of sample and in sample (module docstring)."""
    cfg = config or ValidityConfig()
    progress("the compared users and the real log's facts")
    users = _pick_users(real.profiles, cfg.users, cfg.seed)
    chosen = set(users)
    worlds = [SimWorld(w.name, w.world, w.catalog, [p for p in w.profiles if p.user_id in chosen]) for w in worlds]
    if cfg.llm_users and worlds:
        worlds.append(llm_world(worlds[0], cfg, set(real.split.test["user_id"])))
    periods = _periods(real, chosen, cfg)
    notes: list[str] = []
    if len(users) < cfg.users:
        notes.append(f"--users {cfg.users}: the log has {len(users)} users with a train history; all of them compared")
    if cfg.days is not None and periods[OUT_OF_SAMPLE][2] < cfg.days:
        notes.append(f"out-of-sample horizon: {periods[OUT_OF_SAMPLE][2]:g} days, the test period's length "
                     f"(--days {cfg.days:g} is longer)")
    if real.split.cutoff is None:
        notes.append("per_user split: the out-of-sample column is each user's held-out interactions, and train "
                     "holds later interactions of other users (use --split global for a clean cutoff)")
    real_logs: dict[str, ConsumptionLog | None] = {}
    facts: dict[str, dict[str, dict[str, Fact]]] = {p: {} for p in PERIODS}
    for name, (inter, until, horizon, _) in periods.items():
        # Out of sample with a cutoff, every compared user is seen from the cutoff, as the simulation starts there.
        from_cutoff = name == OUT_OF_SAMPLE and bool(real.split.cutoff)
        log = (from_interactions(inter, real.catalog, real.dataset.rating_scale, horizon, observed_until=until,
                                 start=real.split.cutoff if from_cutoff else None, users=users if from_cutoff else ())
               if len(inter) else None)
        if log is not None and not log.consumptions["user"].nunique():
            log = None
        real_logs[name] = log
        facts[name]["real"] = (event_facts(log, real.catalog) if log is not None
                               else {f: Fact({}, missing={"*": "no interaction of the compared users in this period"})
                                     for f in EVENT_FACTS})
    rows: list[dict[str, object]] = []
    sim_users: dict[str, dict[str, int]] = {p: {} for p in PERIODS}
    continuing = cfg.continuation and real.split.cutoff is not None
    if cfg.continuation and not continuing:
        notes.append("continuation needs a global cutoff: every simulated user starts on day 0")
    for w in worlds:
        if not w.profiles:
            raise ConfigError(f"world {w.name!r} has none of the {len(users)} compared users")
        exposure = {"retrieval": _UNIFORM} if cfg.candidates == "uniform" else {}
        trajectories = _simulate_periods(real, w, periods, cfg, exposure, continuing, notes, progress)
        for period, (_, _, horizon, _) in periods.items():
            from_cutoff = continuing and period == OUT_OF_SAMPLE
            sim_log = from_trajectories(_clip(trajectories[period], horizon), w.catalog, real.catalog, horizon,
                                        w.name, users=users if from_cutoff else None)
            facts[period][w.name] = event_facts(sim_log, real.catalog)
            sim_users[period][w.name] = int(sim_log.consumptions["user"].nunique())
            period_rows = _users_rows(real_logs[period], sim_log, len(users), len(w.profiles))
            if period == OUT_OF_SAMPLE:
                progress(f"{w.name}: ranking fidelity on held-out interactions")
                max_users = cfg.llm_users if w.world.user_backend == "llm" else cfg.fidelity_users
                period_rows += _ranking(w, real, cfg, max_users)
            for name, fact in facts[period][w.name].items():
                period_rows += compare(name, facts[period]["real"][name], fact)
            rows += [{**row, "period": period, "world": w.name} for row in period_rows]
    info = {name: Period(name, desc, horizon,
                         _n_users(real_logs[name]),
                         sim_users[name], len(users))
            for name, (_, _, horizon, desc) in periods.items()}
    return ValidityResult(pd.DataFrame(rows, columns=COLUMNS), facts, info, users, notes)
