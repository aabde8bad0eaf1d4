"""RecoWorld-Bench scenarios: versioned, seeded tasks with a fixed population, world and metrics.

A scenario pins everything that determines its numbers except the recommenders: the
world (as overrides of the default `WorldConfig`), the population and how many users
are drawn from it, the seed, and the metrics it reports. Changing any of that is a new
`version`; `results.json` records each scenario's version, seed and config hash, so two
leaderboards are comparable exactly when those agree.

Kinds:

- `simulate`: `recoworld simulate` on the scenario's users (every recommender meets the
  same users with the same episode seeds);
- `creator`: a creator study run in-process (`recoworld.studies.runner.prepare` and
  `run_shard`, no Ray): every recommender plays the shared-platform world twice, without
  and with the creator's new items, on the same users and seeds;
- `llm`: `simulate` with LLM users on the configured OpenAI-compatible server (cached);
- `real-log`: `simulate` on a world calibrated from the log given with `--data`, on the
  interactions before one global time cutoff (`runner.REAL_LOG_SPLIT`; version 1.0 used the
  leaky per-user split).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from recoworld import seeding
from recoworld.catalog import Catalog
from recoworld.config import StrictModel, WorldConfig, build
from recoworld.errors import ConfigError, check_distinct
from recoworld.population import Beta, Normal, PopulationSpec, Segment, UserProfile, sample_population
from recoworld.studies.spec import CreatorSpec, NewItemsSpec

Kind = Literal["simulate", "creator", "llm", "real-log"]


class InterestShift(StrictModel):
    """Every user's long-term interests move to new topics on `day` (`UserProfile.interest_shift_day`)."""

    day: float = Field(gt=0, description="day of the shift, inside the horizon")
    n_topics: int = Field(2, ge=1, description="favourite topics after the shift, none of them a favourite before")
    interest_concentration: float = Field(1.0, gt=0, description="Dirichlet alpha over the new favourites")


class Scenario(StrictModel):
    """One benchmark task. Everything but the recommenders is fixed here."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1, description="bumped whenever anything below changes the numbers")
    description: str = Field(min_length=1, description="one line, shown by `recoworld bench --list`")
    kind: Kind = "simulate"
    seed: int = Field(0, ge=0)
    n_users: int = Field(200, ge=1)
    world: dict[str, Any] = Field(default_factory=dict, description="overrides of the default WorldConfig")
    population: PopulationSpec = Field(default_factory=PopulationSpec.default)
    metrics: list[str] = Field(min_length=1, description="reported metrics (`recoworld.bench.metrics`); the "
                               "first one orders the leaderboard")
    interest_shift: InterestShift | None = None
    creator: CreatorSpec | None = None
    shard_size: int = Field(16, ge=1, description="creator scenarios: users per shared platform")

    def world_config(self, **overrides: Any) -> WorldConfig:
        """The scenario's world, with `overrides` (e.g. the command line's LLM settings) on top."""
        return build(WorldConfig, f"scenario {self.name} world", self.world, **overrides)

    def varied(self, n_users: int | None = None, seed: int | None = None, days: float | None = None) -> Scenario:
        """The same scenario with another number of users, seed or horizon in days (None: the scenario's own);
        the config hash records what changed. An interest shift must stay inside the new horizon."""
        for flag, value, low in (("--users", n_users, 1), ("--seed", seed, 0)):
            if value is not None and value < low:
                raise ConfigError(f"{flag} {value}: give at least {low}")
        update: dict[str, Any] = {k: v for k, v in {"n_users": n_users, "seed": seed}.items() if v is not None}
        if days is not None:
            if not 0 < days < math.inf:
                raise ConfigError(f"--days {days:g}: give a finite horizon above 0 days")
            if self.interest_shift is not None and days <= self.interest_shift.day:
                raise ConfigError(
                    f"--days {days:g}: scenario {self.name} shifts interests on day {self.interest_shift.day:g}; "
                    "give a horizon past it"
                )
            update["world"] = {**self.world, "horizon_days": days}
        varied = self.model_validate({**self.model_dump(), **update}) if update else self
        varied.world_config()  # a horizon the world refuses is an error now, naming the scenario
        return varied

    def draw_profiles(self, catalog: Catalog) -> list[UserProfile]:
        """The scenario's users, a function of its seed alone (and the interest shift, when it has one)."""
        rng = seeding.rng(self.seed, seeding.BENCH_USERS)
        profiles = sample_population(self.population, catalog, rng, n=self.n_users)
        if self.interest_shift is not None:
            profiles = shift_interests(profiles, catalog, self.interest_shift, rng)
        return profiles


def shift_interests(profiles: list[UserProfile], catalog: Catalog, shift: InterestShift,
                    rng: np.random.Generator) -> list[UserProfile]:
    """Give each user new long-term interests from `shift.day` on: `n_topics` topics they did not favour."""
    out = []
    for p in profiles:
        fresh = [t for t in catalog.topic_names if t not in p.topic_interests]
        if not fresh:
            raise ConfigError(f"user {p.user_id} favours every topic; an interest shift needs a topic left over")
        chosen = rng.choice(len(fresh), size=min(shift.n_topics, len(fresh)), replace=False)
        weights = rng.dirichlet(np.full(len(chosen), shift.interest_concentration))
        order = np.argsort(-weights, kind="stable")
        later = {fresh[int(chosen[j])]: round(float(weights[j]), 4) for j in order}
        out.append(UserProfile.model_validate({**p.model_dump(), "interest_shift_day": shift.day,
                                               "shifted_interests": later}))
    return out


_NEWCOMERS = PopulationSpec(name="newcomers", segments=[
    Segment(name="newcomer", size=70, novelty=Beta(a=2, b=2), patience=Normal(mean=15, std=6, low=4, high=60),
            return_propensity=Beta(a=3, b=4)),
    Segment(name="curious", size=30, n_favorite_topics=4, interest_concentration=0.8, novelty=Beta(a=4, b=2),
            patience=Normal(mean=20, std=6, low=5, high=60), return_propensity=Beta(a=3, b=3)),
])

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario(
        name="retention-30d", version="1.0", seed=0, n_users=200,
        description="30 days of the default population; how many days users come back",
        world={"horizon_days": 30},
        metrics=["retention", "churn_rate", "sessions_per_user", "ctr", "dwell_min_per_user"],
    ),
    Scenario(
        name="cold-start", version="1.0", seed=1, n_users=200,
        description="new, impatient users with no history: the first session and whether they return within 7 days",
        world={"horizon_days": 7},
        population=_NEWCOMERS,
        metrics=["returned_after_first", "first_session_ctr", "first_session_turns", "retention"],
    ),
    Scenario(
        name="interest-shift", version="1.0", seed=2, n_users=200,
        description="long-term interests move to new topics on day 10 of 30; engagement and retention after the move",
        world={"horizon_days": 30},
        interest_shift=InterestShift(day=10, n_topics=2),
        metrics=["retention_after_shift", "ctr_after_shift", "ctr_before_shift", "retention"],
    ),
    Scenario(
        name="instruction-probe", version="1.0", seed=3, n_users=150,
        description="users who instruct early and often (low dynamics thresholds); is the feed following them?",
        world={"horizon_days": 14,
               "dynamics": {"instruction_level": 0.55, "instruction_trend": 0.02, "instruction_cooldown": 1}},
        metrics=["instruction_following", "instruction_rate", "retention", "ctr"],
    ),
    Scenario(
        name="creator-launch", version="1.0", seed=4, n_users=96, kind="creator",
        description="a new creator publishes 30 items for enthusiasts on a shared platform; reach and retention lift",
        world={"horizon_days": 21},
        creator=CreatorSpec(name="Launch Studio", target_segment="enthusiast",
                            items=NewItemsSpec(count=30, popularity=0.5)),
        metrics=["target_new_item_clicks", "retention_lift", "retention"],
    ),
    Scenario(
        name="llm-users-small", version="1.0", seed=5, n_users=6, kind="llm",
        description="6 LLM users for 3 days on the configured chat-model server (cached; no silent fallback)",
        world={"horizon_days": 3, "max_steps": 40, "user_backend": "llm"},
        metrics=["retention", "ctr", "instruction_rate", "llm_fallback_rate"],
    ),
    Scenario(
        name="real-log", version="1.1", seed=6, n_users=100, kind="real-log",
        description="users and items of a log you supply (--data), calibrated before a global time cutoff; 30 days",
        world={"horizon_days": 30},
        metrics=["retention", "churn_rate", "ctr", "sessions_per_user"],
    ),
]}


def get_scenarios(names: list[str]) -> list[Scenario]:
    """The named scenarios in order; an unknown name is a `ConfigError` naming the known ones."""
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], list(SCENARIOS), n=1)
        raise ConfigError(f"unknown scenario {unknown[0]!r}; known scenarios: {', '.join(SCENARIOS)}"
                          + (f". Did you mean {hint[0]!r}?" if hint else ""))
    check_distinct(names, "scenario")
    if not names:
        raise ConfigError(f"no scenario named; known scenarios: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in names]
