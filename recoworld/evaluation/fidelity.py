"""Fidelity: do simulated users, initialised from a real train log, choose what the real users chose next?

Protocol (sampled ranking, the same candidates for every scorer):

1. Split the log in time (`recoworld.data.split`, one global cutoff by default); build the
   catalog and one profile per user from the train part only.
2. Every test user is accounted for (`eval_population`, `EvalPopulation.counts`):
   - *warm* users have a profile and held-out items they had not interacted with in train;
     the candidates are those held-out items (positives) plus `n_negatives` items the user
     never interacted with, drawn uniformly with the report's seed (`n_negatives=0`: all of
     them, i.e. full ranking);
   - *cold-start* users have no train history (a global split has them: they arrive after
     the cutoff). They are scored, never dropped, with what a scorer can do without history:
     the population's prior profile (`prior_profile`: the train users' mean interests and
     median traits) and an empty history, against the same kind of candidates. They are a
     row group of their own (`group` = "cold-start"), since a number that mixes them with
     warm users measures the population's cold-start share as much as the user model;
   - users whose held-out items are all in their train history have nothing new to rank and
     are counted (`no_new_items`).
3. Each scorer turns (profile, train history, candidates) into scores; higher means "more
   likely to be chosen". Per user: AUC (ties count half), NDCG@k and Hit@k (ties in the
   ranking broken at random, seeded). The report gives means and 95% CI half-widths per
   scorer and group.

Scorers are a one-method protocol (`ChoiceScorer`), so any simulated user can be measured:

- `ChoiceModelScorer`: the parametric user's click utility for each candidate at the start
  of a session whose memory holds the user's last train items: the expected choice,
  without sampling noise.
- `SimulatorScorer`: any `BatchUserSimulator` (parametric, LLM or scripted), as one user
  (B = 1, row 0, on a stream of the scorer's rng), reviews the candidates in shuffled
  slates, one fresh session per slate; the score is its reaction (skip 0 .. share 3, -1
  for items it never reached). This is the behavioural number, and the one
  that compares LLM users with parametric users on equal terms. A realistic user clicks a
  few percent of what it sees, so a handful of passes leaves most candidates tied at "not
  clicked" and measures the pass count rather than the user: `DEFAULT_PASSES` (200) is the
  one default of `recoworld fidelity` and `recoworld validate`, enough for the simulated
  AUC to settle near the expected choice's, so both commands give the same number. `BatchParametricScorer`
  runs the same protocol for parametric users as one vectorized review.
- `PopularityScorer`: train popularity, the reference any user model should beat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from pydantic import Field
from rich.table import Table

from recoworld.catalog import Catalog
from recoworld.config import ChoiceConfig, StrictModel, WorldConfig
from recoworld.population import UserProfile
from recoworld.simulators.base import BatchUserSimulator
from recoworld.simulators.choice import ChoiceModel
from recoworld.simulators.parametric import ParametricUsers
from recoworld.stats import mean_ci
from recoworld.streams import UserStreams

#: Passes of shuffled slates behind the simulated AUC, the default of both `fidelity` and `validate`.
DEFAULT_PASSES = 200
WARM, COLD = "warm", "cold-start"


class ChoiceScorer(Protocol):
    """Scores candidates for one user; higher = more likely to be chosen."""

    name: str

    def score(
        self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """`history`: the user's train items (catalog indices, oldest first). Returns (len(candidates),)."""
        ...


class FidelityConfig(StrictModel):
    n_negatives: int = Field(99, ge=0, description="sampled negatives per user; 0 ranks every unseen item")
    k: int = Field(10, ge=1, description="cutoff of NDCG@k and Hit@k")
    max_users: int | None = Field(None, ge=1, description="evaluate the first N eligible users (natural id order), "
                                  "and at most N cold-start users")
    seed: int = Field(0, ge=0)


@dataclass(frozen=True)
class EvalUser:
    profile: UserProfile
    history: np.ndarray  # train items, oldest first
    candidates: np.ndarray  # positives first, then negatives
    n_positives: int
    group: str = WARM  # WARM, or COLD: no train history, scored with the prior profile


@dataclass(frozen=True)
class EvalPopulation:
    """Every test user, accounted for: who is scored (warm and cold-start) and who is not, and why."""

    warm: list[EvalUser]
    cold: list[EvalUser]
    counts: dict[str, int]  # see `eval_population`

    @property
    def users(self) -> list[EvalUser]:
        """Warm users, then cold-start ones: each scorer's draws for the warm users come first, so
        adding the cold-start group never changes the warm numbers."""
        return [*self.warm, *self.cold]

    def describe(self) -> str:
        c = self.counts
        parts = [f"{c['test_users']} test users: {c['eligible']} with train history and new held-out items "
                 f"({c['warm']} evaluated)", f"{c['cold_start']} cold-start, no train history "
                 f"({c['cold']} evaluated with the population's prior profile)",
                 f"{c['no_new_items']} with no new held-out items"]
        if c["not_compared"]:
            parts.append(f"{c['not_compared']} with train history outside the compared users")
        if c["no_negatives"]:
            parts.append(f"{c['no_negatives']} with no unseen item left as a negative")
        return "; ".join(parts)


class ChoiceModelScorer:
    """The parametric choice model's utility at the start of a session (fatigue 0, position 0)."""

    name = "parametric (choice model)"

    def __init__(self, catalog: Catalog, choice: ChoiceConfig | None = None, memory_size: int = 30) -> None:
        self.catalog = catalog
        self.model = ChoiceModel(choice or ChoiceConfig())
        self.memory_size = memory_size

    def score(
        self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        cat = self.catalog
        emb = cat.embeddings[candidates].astype(np.float64)
        relevance = emb @ profile.interest_vector(cat)
        recent = cat.embeddings[history[-self.memory_size :]].astype(np.float64)
        max_sim = (emb @ recent.T).max(axis=1) if len(recent) else np.zeros(len(candidates))
        novelty = 1.0 - np.minimum(max_sim, 1.0)
        return self.model.utility(relevance, cat.quality[candidates], novelty, profile.novelty_trait, 0.0, 0,
                                  cat.popularity_z[candidates], profile.popularity_affinity, profile.activity)


class _SlateScorer:
    """Scores candidates by showing them in shuffled slates of `slate_size`, `repeats` times over."""

    def __init__(self, name: str, slate_size: int, repeats: int) -> None:
        if slate_size < 1 or repeats < 1:
            raise ValueError(f"slate_size and repeats must be >= 1, got {slate_size} and {repeats}")
        self.name = name
        self.slate_size = slate_size
        self.repeats = repeats


class SimulatorScorer(_SlateScorer):
    """A user simulator's mean reaction to each candidate over `repeats` passes of shuffled slates.

    The simulator holds one user (B = 1, row 0), reset to the profile before each slate;
    its stream is the scorer's rng, so its draws interleave with the shuffles, as before.
    """

    def __init__(self, name: str, simulator: BatchUserSimulator, slate_size: int = 10, repeats: int = 1) -> None:
        super().__init__(name, slate_size, repeats)
        self.simulator = simulator

    def score(
        self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        streams, row, start_day = UserStreams([rng]), np.zeros(1, dtype=np.int64), np.zeros(1)
        scores = np.zeros(len(candidates))
        for _ in range(self.repeats):
            order = rng.permutation(len(candidates))
            for start in range(0, len(order), self.slate_size):
                pos = order[start : start + self.slate_size]
                self.simulator.reset([profile])
                self.simulator.start_sessions(row, start_day, streams)
                scores[pos] += self.simulator.review(candidates[pos][None, :], streams, row).reactions[0]
        return scores / self.repeats


class BatchParametricScorer(_SlateScorer):
    """`SimulatorScorer`'s protocol for parametric users, with every slate of every pass reviewed in one batch.

    Each batch row is a fresh user with the same profile, exactly as `SimulatorScorer` resets
    the user per slate, on a stream of its own spawned from the scorer's rng. A short last
    slate is padded at its end, which is harmless: no position depends on a later one.
    """

    def __init__(self, name: str, users: ParametricUsers, slate_size: int = 10, repeats: int = 1) -> None:
        super().__init__(name, slate_size, repeats)
        self.users = users

    def score(
        self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        k, n = self.slate_size, len(candidates)
        per_pass = -(-n // k) * k
        order = np.concatenate([np.resize(rng.permutation(n), per_pass) for _ in range(self.repeats)])
        real = np.concatenate([np.arange(per_pass) < n] * self.repeats)
        slates = candidates[order].reshape(-1, k)
        b = len(slates)
        streams = UserStreams.spawn(rng, b)
        self.users.reset([profile] * b)
        self.users.start_sessions(np.arange(b), np.zeros(b), streams)
        reactions = self.users.review(slates, streams).reactions.ravel()
        return np.bincount(order[real], weights=reactions[real], minlength=n) / self.repeats


class PopularityScorer:
    """Train popularity: what a user model has to beat to be worth simulating."""

    name = "popularity (reference)"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def score(
        self, profile: UserProfile, history: np.ndarray, candidates: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return self.catalog.popularity[candidates].astype(np.float64)


def prior_profile(profiles: Sequence[UserProfile], catalog: Catalog, user_id: str) -> UserProfile:
    """What a simulator knows of a user without history: the population's prior.

    Interests are the mean of the train users' interest vectors (so the prior prefers what
    the population prefers, in the catalog's own space), topic interests their mean mix,
    and every trait the train users' median.
    """
    if not profiles:
        raise ValueError("a prior profile needs at least one train user")
    vectors = np.stack([p.interest_vector(catalog) for p in profiles]).astype(np.float64)
    mean = vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)
    topics: dict[str, float] = {}
    for p in profiles:
        for name, w in p.topic_interests.items():
            topics[name] = topics.get(name, 0.0) + w / len(profiles)
    top = dict(sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))[:5])

    def median(field: str) -> float:
        return float(np.median([getattr(p, field) for p in profiles]))

    return UserProfile(
        user_id=user_id, segment=COLD, persona="A new user the platform knows nothing about yet.", attributes={},
        topic_interests=top, novelty_trait=median("novelty_trait"), patience=max(1, round(median("patience"))),
        time_budget_min=median("time_budget_min"), return_propensity=median("return_propensity"),
        interest_embedding=[round(float(x), 6) for x in mean], popularity_affinity=median("popularity_affinity"),
        activity=median("activity"),
    )


def eval_population(
    catalog: Catalog, profiles: Sequence[UserProfile], train: pd.DataFrame, test: pd.DataFrame,
    config: FidelityConfig, cold_start: bool = True,
) -> EvalPopulation:
    """Every test user, scored or counted (module docstring), deterministic in `config.seed`.

    Counts: `test_users`; `eligible` (warm: a profile, train history and new held-out items)
    and `warm` (of them evaluated, at most `max_users`); `cold_start` (no train history) and
    `cold` (of them evaluated; 0 when `cold_start` is False); `no_new_items`; `not_compared`
    (train history but no profile among `profiles`, e.g. validation's users not drawn);
    `no_negatives` (every item seen).
    """
    from recoworld.data.users import natural_order

    row = pd.Series(np.arange(len(catalog)), index=catalog.item_ids)
    train_items = train.assign(item=row.reindex(train["item_id"].to_numpy()).to_numpy())
    test_items = test.assign(item=row.reindex(test["item_id"].to_numpy()).to_numpy())
    history = train_items.sort_values("timestamp", kind="stable").groupby("user_id")["item"].agg(list)
    held_out = test_items.groupby("user_id")["item"].agg(list)
    n = len(catalog)
    counts = dict.fromkeys(("test_users", "eligible", "warm", "cold_start", "cold", "no_new_items", "not_compared",
                            "no_negatives"), 0)
    counts["test_users"] = len(held_out)
    cap = config.max_users

    def candidates(hist: np.ndarray, items: list[int], rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
        seen = np.zeros(n, dtype=bool)
        seen[hist] = True
        positives = np.array([i for i in dict.fromkeys(items) if not seen[i]], dtype=np.int64)
        if not len(positives):
            counts["no_new_items"] += 1
            return None
        seen[positives] = True
        pool = np.flatnonzero(~seen)
        if not len(pool):
            counts["no_negatives"] += 1
            return None
        negatives = pool if config.n_negatives == 0 else rng.choice(pool, min(config.n_negatives, len(pool)), False)
        return np.concatenate([positives, negatives]), len(positives)

    rng = np.random.default_rng(config.seed)
    warm: list[EvalUser] = []
    profiled = set()
    for profile in profiles:
        uid = profile.user_id
        profiled.add(uid)
        if uid not in held_out.index or uid not in history.index:
            continue
        hist = np.asarray(history[uid], dtype=np.int64)
        # Past the cap the rest is only counted: no draw, so the evaluated users' candidates never depend on it.
        if cap is not None and len(warm) >= cap:
            seen = set(hist.tolist())
            if all(i in seen for i in held_out[uid]):
                counts["no_new_items"] += 1
            else:
                counts["eligible"] += 1
            continue
        found = candidates(hist, held_out[uid], rng)
        if found is not None:
            counts["eligible"] += 1
            warm.append(EvalUser(profile, hist, *found))
    counts["warm"] = len(warm)
    counts["not_compared"] = int(sum(1 for u in held_out.index if u in history.index and u not in profiled))
    cold_ids = [u for u in natural_order(held_out.index.to_numpy()) if u not in history.index]
    counts["cold_start"] = len(cold_ids)
    cold: list[EvalUser] = []
    if cold_start and cold_ids and profiles:
        empty = np.zeros(0, dtype=np.int64)
        cold_rng = np.random.default_rng([config.seed, 1])  # its own stream: the warm candidates never move
        prior = prior_profile(profiles, catalog, COLD)
        for uid in cold_ids[:cap]:
            found = candidates(empty, held_out[uid], cold_rng)
            if found is not None:
                cold.append(EvalUser(prior.model_copy(update={"user_id": uid}), empty, *found, group=COLD))
    counts["cold"] = len(cold)
    return EvalPopulation(warm, cold, counts)


def eval_users(
    catalog: Catalog, profiles: Sequence[UserProfile], train: pd.DataFrame, test: pd.DataFrame,
    config: FidelityConfig,
) -> list[EvalUser]:
    """The warm users and candidate sets every scorer is measured on (deterministic in `config.seed`);
    `eval_population` also accounts for the cold-start users and those left out."""
    return eval_population(catalog, profiles, train, test, config, cold_start=False).warm


def user_metrics(scores: np.ndarray, n_positives: int, k: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(AUC, NDCG@k, Hit@k) for candidates whose first `n_positives` entries are the positives."""
    labels = np.zeros(len(scores), dtype=bool)
    labels[:n_positives] = True
    n_neg = len(scores) - n_positives
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    auc = (ranks[labels].sum() - n_positives * (n_positives + 1) / 2) / (n_positives * n_neg)
    order = np.lexsort((rng.random(len(scores)), -scores))
    top = labels[order[:k]]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg = float((top * discounts[: len(top)]).sum() / discounts[: min(n_positives, k)].sum())
    return float(auc), ndcg, float(top.any())


def evaluate(
    users: Sequence[EvalUser], scorers: Sequence[ChoiceScorer], config: FidelityConfig,
    on_user: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per scorer and group (warm, cold-start) with means and CI half-widths,
    per_user: one row per scorer x user)."""
    rows = []
    for scorer in scorers:
        # Each scorer draws from its own stream, so adding a scorer never changes another's numbers.
        rng = np.random.default_rng([config.seed, *map(ord, scorer.name)])
        for user in users:
            scores = np.asarray(scorer.score(user.profile, user.history, user.candidates, rng), dtype=np.float64)
            if scores.shape != user.candidates.shape:
                raise ValueError(f"scorer {scorer.name!r} returned shape {scores.shape}, "
                                 f"expected {user.candidates.shape}")
            auc, ndcg, hit = user_metrics(scores, user.n_positives, config.k, rng)
            rows.append({"scorer": scorer.name, "group": user.group, "user_id": user.profile.user_id,
                         "segment": user.profile.segment,
                         "positives": user.n_positives, "candidates": len(user.candidates),
                         "auc": auc, f"ndcg@{config.k}": ndcg, f"hit@{config.k}": hit})
            if on_user is not None:
                on_user(scorer.name)
    per_user = pd.DataFrame(rows)
    summary = []
    for (name, kind), group in per_user.groupby(["scorer", "group"], sort=False):
        entry: dict[str, float | str | int] = {"scorer": str(name), "group": str(kind), "users": len(group),
                                               "candidates": float(group["candidates"].mean())}
        for metric in ("auc", f"ndcg@{config.k}", f"hit@{config.k}"):
            entry[metric], entry[f"{metric}_ci"] = mean_ci(group[metric])
        summary.append(entry)
    return pd.DataFrame(summary), per_user


def default_scorers(
    catalog: Catalog, world: WorldConfig | None = None, repeats: int = DEFAULT_PASSES,
) -> list[ChoiceScorer]:
    """The parametric user measured both ways (`repeats` passes when simulated), and the popularity reference."""
    w = world or WorldConfig()
    users = ParametricUsers(catalog, w.choice, w.dynamics, w.returns)
    return [
        ChoiceModelScorer(catalog, w.choice, w.dynamics.memory_size),
        BatchParametricScorer("parametric (simulated)", users, w.slate_size, repeats),
        PopularityScorer(catalog),
    ]


def llm_scorer(catalog: Catalog, world: WorldConfig) -> SimulatorScorer:
    """LLM users (`world.llm` picks the chat model) behind the same slate protocol; one pass, calls are costly."""
    from recoworld.simulators.llm_user import LLMUsers

    return SimulatorScorer("llm", LLMUsers(catalog, world, 1), world.slate_size)


def fidelity_table(summary: pd.DataFrame, k: int = 10, title: str = "Fidelity on held-out interactions") -> Table:
    """Warm users first, then the cold-start group (scored with the prior profile), each under its own header."""
    table = Table(title=title)
    table.add_column("user model", style="bold")
    table.add_column("users group")
    for header in ("users", "candidates", "AUC", f"NDCG@{k}", f"Hit@{k}"):
        table.add_column(header, justify="right")
    groups = summary["group"] if "group" in summary else pd.Series(WARM, index=summary.index)
    for kind in dict.fromkeys(groups):
        for _, row in summary[groups == kind].iterrows():
            cells = [f"{row[m]:.3f} ± {row[f'{m}_ci']:.3f}" for m in ("auc", f"ndcg@{k}", f"hit@{k}")]
            table.add_row(str(row["scorer"]), str(kind), str(int(row["users"])), f"{row['candidates']:.0f}", *cells)
    return table
