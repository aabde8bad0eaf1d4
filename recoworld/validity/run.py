"""The validation protocol: the same real users, lived by each simulated world, on the same items.

1. The real log is loaded and split as for fidelity (`prepare_world`); `users` of its users are
   drawn with the seed. Their whole log, each user clipped to their first `horizon` days, is
   the reference. The horizon is the log's span in days, capped at `max_days` (simulating a
   year of MovieLens ratings would mostly measure the cap of the simulator, not its users).
2. Each world (the default one, a calibrated one, LLM users) simulates those users, built from
   the train split, against one recommender (`agent`) for the horizon. By default the users
   meet uniform exposure: candidates drawn uniformly from the catalog (`candidates="uniform"`,
   the worlds' retrieval switched off) and a random slate of them (`agent="random"`). A log
   records no exposures, and calibration fits choices against uniformly drawn alternatives, so
   the fitted user is a model of choice under uniform exposure; that is the exposure under
   which a world's behaviour can be compared with the log's. A recommender or retrieval stage
   adds its own exposure bias on top, and the popularity facts then measure the feed as much
   as the users (a popularity-weighted feed in front of a user model that already follows the
   crowd counts popularity twice). `agent` and `candidates="world"` study that on purpose.
3. Both sides become `ConsumptionLog`s on the real log's catalog, so every fact is computed
   by the same code, and each world's facts are compared with the real ones (`compare`).
4. Ranking fidelity comes from `recoworld.evaluation.fidelity` on the held-out interactions of the same
   users: the world's simulated users and its choice model as scorers, train popularity as the
   reference. Its "real" value is 1 by definition (the held-out items are what the real users
   chose), so its distance is the gap to a perfect ranking. The headline is the choice model's
   AUC (the expected choice): the simulated AUC scores the mean reaction over `passes` passes
   of shuffled slates, so as passes grow it approaches the ranking by expected click
   probability, which is the choice model's. A realistic user clicks a few percent of what it
   sees, so a handful of passes leaves most candidates tied at "not clicked" and measures the
   pass count rather than the user; the simulated AUC is still reported, over 200 passes by
   default, and is the headline for LLM users, which have no utility to read.

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
    ChoiceModelScorer,
    ChoiceScorer,
    FidelityConfig,
    PopularityScorer,
    default_scorers,
    eval_users,
    evaluate,
    llm_scorer,
)
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.population import UserProfile, draw_profiles
from recoworld.validity.events import from_interactions, from_trajectories
from recoworld.validity.facts import Fact, compare, event_facts

RANKING = "ranking"
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
    days: float | None = Field(None, gt=0, description="simulated horizon; default: the log's span, capped")
    max_days: float = Field(60.0, gt=0, description="cap of the default horizon")
    agent: str = Field("random", description="the recommender the simulated users meet (random: uniform exposure)")
    candidates: Literal["uniform", "world"] = Field(
        "uniform", description="uniform: candidates drawn uniformly from the catalog; world: each world's retrieval")
    passes: int = Field(200, ge=1, description="passes of shuffled slates behind the simulated AUC")
    fidelity_users: int = Field(100, ge=1, description="users of the ranking fidelity")
    llm_users: int = Field(0, ge=0, description="LLM users simulated on the same facts; 0 = none")
    llm_max_steps: int = Field(20, ge=1, description="turns per LLM user (the model is slow)")
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class SimWorld:
    """A simulated world to validate: its config, its catalog (same item ids as the log) and its users."""

    name: str
    world: WorldConfig
    catalog: Catalog
    profiles: list[UserProfile]


@dataclass
class ValidityResult:
    rows: pd.DataFrame  # fact, statistic, real, world, value, distance, note
    facts: dict[str, dict[str, Fact]]  # source ("real" or a world's name) -> fact -> Fact
    horizon_days: float
    users: list[str]
    notes: list[str]  # what a reader needs besides the numbers (LLM fallbacks, a run stopped by its budget)


def headline(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per fact and world of validity `rows` (the CSV's columns): the fact's `HEADLINE`
    statistic (the first this world has) and the world's distance on it."""
    rows = rows.dropna(subset=["distance"])
    out = []
    for (fact, world), group in rows.groupby(["fact", "world"], sort=False):
        stat = next((s for s in HEADLINE.get(str(fact), ()) if (group["statistic"] == s).any()), None)
        if stat is not None:
            out.append({"fact": fact, "world": world, "statistic": stat,
                        "distance": float(group.loc[group["statistic"] == stat, "distance"].iloc[0])})
    return pd.DataFrame(out, columns=["fact", "world", "statistic", "distance"])


def horizon_days(interactions: pd.DataFrame, config: ValidityConfig) -> float:
    """`config.days`, else the log's span in whole days, capped at `config.max_days`."""
    if config.days is not None:
        return config.days
    ts = interactions["timestamp"].to_numpy(np.float64)
    return float(min(config.max_days, max(1, math.ceil((ts.max() - ts.min()) / SECONDS_PER_DAY))))


def llm_world(base: SimWorld, config: ValidityConfig) -> SimWorld:
    """LLM users (the base world's `llm` backend) on the base world's catalog, `llm_users` of its users."""
    world = base.world.model_copy(update={"user_backend": "llm", "max_steps": config.llm_max_steps})
    return SimWorld("llm users", world, base.catalog, base.profiles[: config.llm_users])


def _ranking(world: SimWorld, real: RealWorld, config: ValidityConfig, max_users: int) -> list[dict[str, object]]:
    """AUC / NDCG / Hit on held-out items: simulated behaviour, the choice model's expectation, popularity.

    Both user-model numbers are kept: at a low click rate the behavioural score is mostly
    ties (unclicked items), so it can sit near chance while the expected choice ranks well.
    """
    cfg = FidelityConfig(max_users=max_users, seed=config.seed)
    users = eval_users(world.catalog, world.profiles, real.split.train, real.split.test, cfg)
    if not users:
        return [{"fact": RANKING, "statistic": "-", "real": np.nan, "value": np.nan, "distance": np.nan,
                 "note": "no user has new held-out items"}]
    scorers: list[ChoiceScorer] = (
        [llm_scorer(world.catalog, world.world), PopularityScorer(world.catalog)]
        if world.world.user_backend == "llm" else default_scorers(world.catalog, world.world, config.passes))
    summary, _ = evaluate(users, scorers, cfg)
    rows: list[dict[str, object]] = [{"fact": RANKING, "statistic": "users", "real": np.nan,
                                      "value": float(len(users)), "distance": np.nan, "note": None}]
    metrics = (("AUC", "auc"), (f"NDCG@{cfg.k}", f"ndcg@{cfg.k}"), (f"Hit@{cfg.k}", f"hit@{cfg.k}"))
    for scorer, (_, result) in zip(scorers, summary.iterrows()):
        if isinstance(scorer, PopularityScorer):
            rows.append({"fact": RANKING, "statistic": "AUC popularity ref.", "real": np.nan,
                         "value": float(result["auc"]), "distance": np.nan, "note": None})
            continue
        kind = "choice model" if isinstance(scorer, ChoiceModelScorer) else "simulated"
        rows += [{"fact": RANKING, "statistic": f"{label} ({kind})", "real": 1.0, "value": float(result[col]),
                  "distance": 1.0 - float(result[col]), "note": None} for label, col in metrics]
    return rows


def _pick_users(profiles: Sequence[UserProfile], n: int, seed: int) -> list[str]:
    if len(profiles) < 2:
        raise ConfigError(f"validation needs at least 2 users with a train history, the log has {len(profiles)}")
    return [p.user_id for p in draw_profiles(list(profiles), n, np.random.default_rng(seed))]


def validate(
    real: RealWorld, worlds: Sequence[SimWorld], config: ValidityConfig | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ValidityResult:
    """Compare each world with the real log on every fact (see the module docstring)."""
    cfg = config or ValidityConfig()
    inter = real.dataset.interactions
    horizon = horizon_days(inter, cfg)
    users = _pick_users(real.profiles, cfg.users, cfg.seed)
    chosen = set(users)
    worlds = [SimWorld(w.name, w.world, w.catalog, [p for p in w.profiles if p.user_id in chosen]) for w in worlds]
    if cfg.llm_users and worlds:
        worlds.append(llm_world(worlds[0], cfg))
    real_log = from_interactions(inter[inter["user_id"].isin(chosen)], real.catalog, real.dataset.rating_scale,
                                 horizon)
    facts = {"real": event_facts(real_log, real.catalog)}
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    for w in worlds:
        if not w.profiles:
            raise ConfigError(f"world {w.name!r} has none of the {len(users)} compared users")
        progress(f"{w.name}: simulating {len(w.profiles)} users for {horizon:g} days against {cfg.agent!r}")
        exposure = {"retrieval": _UNIFORM} if cfg.candidates == "uniform" else {}
        sim_cfg = SimulationConfig(n_users=len(w.profiles), agents=[cfg.agent], seed=cfg.seed,
                                   world=w.world.model_copy(update={"horizon_days": horizon, **exposure}))
        result = simulate(sim_cfg, catalog=w.catalog, profiles=w.profiles)
        if result.stopped:
            notes.append(f"{w.name}: stopped early: {result.stopped}")
        if w.world.user_backend == "llm":
            turns = result.trajectories.drop_duplicates(["user_id", "step"])
            notes.append(f"{w.name}: {int(turns['llm_fallback'].sum())} of {len(turns)} turns fell back to the "
                         "parametric user")
        sim_log = from_trajectories(result.trajectories, w.catalog, real.catalog, horizon, w.name)
        facts[w.name] = event_facts(sim_log, real.catalog)
        progress(f"{w.name}: ranking fidelity on held-out interactions")
        max_users = cfg.llm_users if w.world.user_backend == "llm" else cfg.fidelity_users
        world_rows = _ranking(w, real, cfg, max_users)
        for name, fact in facts[w.name].items():
            world_rows += compare(name, facts["real"][name], fact)
        rows += [{**row, "world": w.name} for row in world_rows]
    columns = ["fact", "statistic", "real", "world", "value", "distance", "note"]
    return ValidityResult(pd.DataFrame(rows, columns=columns), facts, horizon, users, notes)
