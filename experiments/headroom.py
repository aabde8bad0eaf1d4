"""Where the oracle's edge over the best heuristic comes from, and how much of it a platform can recover (issue 28).

The retention target of issue 28 asks PPO, which reads only what a platform logs, to beat the best hand-written
recommender (instruct) by a paired 95% CI, about 75% of the random-to-oracle gap on the evaluation users. The
`oracle` reads the whole hidden mindset. This script asks which part of it the oracle's edge rests on, and whether
an estimate built from the platform's own log recovers it, on the evaluation users of a train config (the same
users, episode seeds and world as `recoworld train`'s final table):

- **the oracle with one part of the mindset taken away**: fatigue (read as 0), the session's novelty appetite (the
  population's typical 0.3), satisfaction (the initial 0.6), the memory of reviewed items (empty), or the current
  interests (replaced by the platform's estimate: greedy's taste of the last 20 engaged items, unit length), and
  the oracle's interests alone (candidates ranked by their true relevance, nothing else);
- **deployable estimators** in instruct's place: instruct plus the oracle's penalty for near-duplicates of the
  items the user reviewed lately (the platform knows what it showed); a per-topic click posterior (clicks over
  exposures per topic of the catalog, with an optimistic bonus for topics seldom shown) added to greedy's taste
  and instruct's intent; and greedy's taste with each click weighted by how much of the item was watched
  (dwell / duration, which follows the click's utility and so its relevance);
- **a log that showed the interests**: instruct's intent on a ranking by a ridge regression, on the item embeddings,
  of a noisy read of each reviewed item's true relevance (its relevance to the hidden interests plus Gaussian noise
  of 0.3 or 1.0), what a watch time on every impression, skips included, would give a platform if it grew with
  relevance: a diagnostic of how strong such a signal would have to be, not a deployable recommender.

Every row plays the same users with the same episode seeds (`expose_mindset` changes no draw), so the paired
difference against instruct is per user.

    python experiments/headroom.py --users 300
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tyro

from recoworld.agents import AgentFactory
from recoworld.agents.base import Observation, Recommender
from recoworld.agents.baselines import InstructionAwareRecommender
from recoworld.agents.oracle import OracleRecommender
from recoworld.catalog import Catalog, embedding_part
from recoworld.config import DynamicsConfig
from recoworld.mindset import UNSEEN
from recoworld.rl.evaluation import baseline_agents, compare, evaluate
from recoworld.rl.train_config import TrainConfig
from recoworld.simulators.review_kernels import repetition_fatigue, settle_params

#: A `Forgetful` oracle's name, by the part of the mindset it does without.
FORGETFUL = {"fatigue": "oracle-no-fatigue", "novelty_propensity": "oracle-no-novelty",
             "satisfaction": "oracle-no-satisfaction", "memory": "oracle-no-memory",
             "interests": "oracle-taste-as-interests", "relevance": "oracle-interests-only"}
#: What a `Forgetful` oracle reads in place of a hidden part: the typical value a platform could assume.
ASSUMED = {"fatigue": 0.0, "novelty_propensity": 0.3, "satisfaction": DynamicsConfig().initial_satisfaction,
           "memory": []}


@dataclass
class Args:
    config: Path = Path("configs/ppo_retention.yaml")
    """the train config whose world and evaluation users to play"""
    users: int = 300
    """evaluation users (the config's `eval.seed` draws them)"""
    out: Path | None = None
    """write the per-user episodes here (parquet)"""


class Forgetful(OracleRecommender):
    """The oracle with one part of the hidden mindset replaced: by `ASSUMED`'s value, or (`interests`) by the
    platform's taste estimate; `relevance` ranks by the true current interests alone."""

    def __init__(self, slate_size: int, catalog: Catalog, seed: int | None = None, *, forget: str) -> None:
        super().__init__(slate_size, catalog, seed)
        self.forget = forget
        self.name = FORGETFUL[forget]
        self._platform = InstructionAwareRecommender(slate_size, catalog, seed)  # its taste, and its act without info

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._platform.begin_episode(seed)

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        self._platform.observe(reactions, info)

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        taste = self._platform.taste(observation)
        mindset = info.get("mindset")
        if not mindset or (self.forget == "interests" and taste is None):
            return self._platform.act(observation, info)
        mindset = dict(mindset)
        if self.forget == "relevance":
            ids = np.asarray(observation["candidate_ids"], dtype=np.int64)
            return self.top_k(self._emb[ids] @ np.asarray(mindset["interests"], dtype=np.float64), observation)
        if self.forget == "interests":
            assert taste is not None
            mindset["interests"] = list(taste / max(float(np.linalg.norm(taste)), 1e-9))
        else:
            mindset[self.forget] = ASSUMED[self.forget]
        return self.rank(observation, mindset)


class LoggedRecommender(InstructionAwareRecommender):
    """instruct that also keeps what the platform logged of each slate it chose: the reviewed items and reactions."""

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._slate: np.ndarray | None = None
        self.reviewed: list[int] = []

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        super().observe(reactions, info)
        if self._slate is not None:
            seen = np.asarray(reactions) != UNSEEN
            self.log(self._slate[seen], np.asarray(reactions)[seen])
            self.reviewed = (self.reviewed + self._slate[seen].tolist())[-DynamicsConfig().memory_size:]

    def log(self, items: np.ndarray, reactions: np.ndarray) -> None:
        """Hook: the items the user reviewed in the last turn and their reactions."""

    def choose(self, observation: Observation, scores: np.ndarray) -> np.ndarray:
        out = self.top_k(scores, observation)
        self._slate = np.asarray(observation["candidate_ids"], dtype=np.int64)[out]
        return out

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        return self.choose(observation, self.instructed_scores(observation))


class Unrepeated(LoggedRecommender):
    """instruct less the oracle's near-duplicate penalty (`fatigue_weight` x the fatigue a candidate would add),
    against the items the user reviewed lately and the slate so far: all of it known to the platform."""

    name = "instruct+repetition"

    def __init__(self, slate_size: int, catalog: Catalog, seed: int | None = None, weight: float = 2.0) -> None:
        super().__init__(slate_size, catalog, seed)
        self.weight = weight
        self._params = settle_params(dict(DynamicsConfig()))
        self._emb = catalog.embeddings.astype(np.float64)

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        ids = np.asarray(observation["candidate_ids"], dtype=np.int64)
        scores = self.instructed_scores(observation)
        emb = self._emb[ids]
        max_sim = (emb @ self._emb[self.reviewed].T).max(axis=1) if self.reviewed else np.full(len(ids), -np.inf)
        available = observation["candidate_mask"].astype(bool)
        chosen: list[int] = []
        for _ in range(self.slate_size):
            similarity = np.where(np.isfinite(max_sim), max_sim, 0.0)
            score = scores - self.weight * repetition_fatigue(similarity, self._params)
            score = np.where(available, score, score - 1e6)
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
            max_sim = np.maximum(max_sim, emb @ emb[chosen[-1]])
        out = np.asarray(chosen, dtype=np.int64)
        self._slate = ids[out]
        return out


class TopicPosterior(LoggedRecommender):
    """instruct plus each candidate's topic's click log-odds: (clicks + prior) / (exposures + prior strength) per
    topic of the catalog over the episode, with an optimistic bonus (`bonus` / sqrt(exposures)) for topics seldom
    shown: an interest estimate that counts the skips too, and explores the topics it has not seen. Greedy's taste
    weighs `taste_weight` (2: the best of 0.5 and 2 on 300 users), the intent as in instruct."""

    name = "instruct+topic-posterior"

    def __init__(self, slate_size: int, catalog: Catalog, seed: int | None = None, bonus: float = 1.0,
                 prior_rate: float = 0.04, prior_strength: float = 5.0, taste_weight: float = 2.0) -> None:
        super().__init__(slate_size, catalog, seed)
        self.bonus, self.prior_rate, self.prior_strength = bonus, prior_rate, prior_strength
        self.taste_weight = taste_weight

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._exposures = np.zeros(self.catalog.n_topics)
        self._clicks = np.zeros(self.catalog.n_topics)

    def log(self, items: np.ndarray, reactions: np.ndarray) -> None:
        np.add.at(self._exposures, self.catalog.topic[items], 1.0)
        np.add.at(self._clicks, self.catalog.topic[items], (reactions > 0).astype(np.float64))

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        topics = self.catalog.topic[np.asarray(observation["candidate_ids"], dtype=np.int64)]
        shown = self._exposures[topics] + self.prior_strength
        rate = (self._clicks[topics] + self.prior_strength * self.prior_rate) / shown
        optimism = self.bonus * np.sqrt(1.0 / (shown * self.prior_rate))
        scores = self.instructed_scores(observation, self.taste_weight * self.scores(observation))
        return self.choose(observation, scores + np.log(rate / (1 - rate)) + optimism)


class Watched(LoggedRecommender):
    """instruct whose taste weights each engaged item by the share of it the user watched (dwell / duration), which
    follows the click's utility, and so the item's relevance, instead of by the reaction level."""

    name = "instruct+watch-time"

    def remember(self, observation: Observation) -> None:
        ids, reactions = observation["history_ids"], observation["history_reactions"]
        if not (ids >= 0).any():
            self._engaged = {}
            return
        emb = embedding_part(observation["history_features"])
        for i in np.flatnonzero((ids >= 0) & (reactions > 0)).tolist():
            item = int(ids[i])
            watched = float(observation["history_dwell"][i]) / max(float(self.catalog.duration_min[item]), 1e-6)
            self._engaged.setdefault(item, (min(watched, 1.0), emb[i]))
        for item in list(self._engaged)[: max(len(self._engaged) - self.memory, 0)]:
            del self._engaged[item]


class NoisyRelevance(InstructionAwareRecommender):
    """instruct's intent bonus on a ranking by a ridge regression (prior `ridge` x identity, old reads decayed by
    `decay` a turn) of each reviewed item's relevance to the hidden interests, read with Gaussian noise of `noise`."""

    def __init__(self, slate_size: int, catalog: Catalog, seed: int | None = None, *, noise: float,
                 ridge: float = 1.0, decay: float = 0.99) -> None:
        super().__init__(slate_size, catalog, seed)
        self.noise, self.ridge, self.decay = noise, ridge, decay
        self.name = f"noisy-relevance-{noise:g}"
        self._emb = catalog.embeddings.astype(np.float64)
        self._draws = np.random.default_rng(seed)

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        d = self._emb.shape[1]
        self._gram, self._moment = self.ridge * np.eye(d), np.zeros(d)
        self._slate: np.ndarray | None = None
        self._interests: np.ndarray | None = None

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        super().observe(reactions, info)
        if self._slate is not None and self._interests is not None:
            x = self._emb[self._slate[np.asarray(reactions) != UNSEEN]]
            read = x @ self._interests + self.noise * self._draws.standard_normal(len(x))
            prior = (1 - self.decay) * self.ridge * np.eye(len(self._moment))
            self._gram = self.decay * self._gram + x.T @ x + prior
            self._moment = self.decay * self._moment + x.T @ read
        if info.get("mindset"):
            self._interests = np.asarray(info["mindset"]["interests"], dtype=np.float64)

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        ids = np.asarray(observation["candidate_ids"], dtype=np.int64)
        if info.get("mindset"):
            self._interests = np.asarray(info["mindset"]["interests"], dtype=np.float64)
        scores = self._emb[ids] @ np.linalg.solve(self._gram, self._moment)
        if self._intent is not None:
            scores = scores + self.intent_bonus(observation, self._intent)
        out = self.top_k(scores, observation)
        self._slate = ids[out]
        return out


def agents() -> dict[str, AgentFactory]:
    """Every row of the table, by name: the references, the oracle without each part, the deployable estimators."""
    rows: dict[str, AgentFactory] = baseline_agents(["random", "instruct", "oracle"])
    for forget, name in FORGETFUL.items():
        rows[name] = partial(_forgetful, forget)
    for cls in (Unrepeated, TopicPosterior, Watched):
        rows[cls.name] = partial(_logged, cls)
    for noise in (0.3, 1.0):
        rows[f"noisy-relevance-{noise:g}"] = partial(_noisy, noise)
    return rows


def _forgetful(forget: str, catalog: Catalog, k: int, seed: int | None) -> Recommender:
    return Forgetful(k, catalog, seed, forget=forget)


def _noisy(noise: float, catalog: Catalog, k: int, seed: int | None) -> Recommender:
    return NoisyRelevance(k, catalog, seed, noise=noise)


def _logged(cls: type[LoggedRecommender], catalog: Catalog, k: int, seed: int | None) -> Recommender:
    return cls(k, catalog, seed)


def main(args: Args) -> pd.DataFrame:
    cfg = TrainConfig.load(args.config)
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"n_users": args.users})})
    start = time.perf_counter()
    episodes = evaluate(cfg, agents(), expose_mindset=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        episodes.to_parquet(args.out)
    table = compare(episodes, policy="instruct")
    print(f"{args.users} evaluation users of {args.config} (eval.seed {cfg.eval.seed}), "
          f"{time.perf_counter() - start:.0f} s; paired with instruct, the best heuristic")
    print(f"{'recommender':<28} {'retention':>16} {'- instruct (paired)':>20} {'gap closed':>10}")
    for _, row in table.iterrows():
        paired = "" if row["recommender"] == "instruct" else \
            f"{-row['instruct_minus_this']:+.3f} ± {row['instruct_minus_this_ci']:.3f}"
        print(f"{row['recommender']:<28} {row['retention']:>8.3f} ± {row['retention_ci']:.3f} {paired:>20} "
              f"{row['gap_closed']:>+10.0%}")
    return table


if __name__ == "__main__":
    main(tyro.cli(Args))
