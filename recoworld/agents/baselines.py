"""Baseline recommenders: the yardsticks every learning or agentic recommender must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from recoworld.agents.base import Observation, Recommender
from recoworld.catalog import Catalog, embedding_part, scalar_feature

#: Weight of each reaction level when building a taste profile (skip, click, like, share).
_REACTION_WEIGHT = np.array([0.0, 1.0, 2.0, 3.0])


class RandomRecommender(Recommender):
    """A uniformly random slate of distinct candidates."""

    name = "random"

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        n = len(observation["candidate_ids"])
        return self.rng.choice(n, size=self.slate_size, replace=False).astype(np.int64)


class MostPopularRecommender(Recommender):
    """The most popular candidates, by the catalog's popularity prior."""

    name = "popular"

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        return self.top_k(scalar_feature(observation["candidate_features"], "log_popularity"), observation)


class GreedyRelevanceRecommender(Recommender):
    """Candidates most similar to the items the user engaged with: pure exploitation.

    The taste vector weights the user's latest `memory` engaged items by reaction (like > click)
    and recency. The observation's history holds only the last `history_len` (20) reviewed
    items, and at the few percent of impressions that users click (issue 12) that window holds
    under one click on average: a taste read from it alone fell back to popularity on about half
    of the turns and pointed at whichever item the user last clicked, by chance or not (issue 27).
    So `taste` keeps every engaged item that passes through the window, for the episode, as a
    platform keeps a user's watch history. Without any engaged item it falls back to popularity.
    """

    name = "greedy"

    def __init__(self, slate_size: int, seed: int | None = None, recency: float = 0.9, memory: int = 20) -> None:
        super().__init__(slate_size, seed)
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self.recency = recency
        self.memory = memory
        self._engaged: dict[int, tuple[float, np.ndarray]] = {}  # item -> (reaction weight, embedding), oldest first

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._engaged = {}

    def remember(self, observation: Observation) -> None:
        """Keep the engaged items of the observation's history window, the latest `memory` of them.

        An empty window is a new user (the world empties it only when an episode begins), so it
        also forgets: a caller that never calls `begin_episode` (the oracle's first-turn fallback)
        does not carry one user's taste over to the next."""
        ids, reactions = observation["history_ids"], observation["history_reactions"]
        if not (ids >= 0).any():
            self._engaged = {}
            return
        engaged = np.flatnonzero((ids >= 0) & (reactions > 0))
        if not len(engaged):
            return
        emb = embedding_part(observation["history_features"])
        for i in engaged.tolist():
            self._engaged.setdefault(int(ids[i]), (float(_REACTION_WEIGHT[reactions[i]]), emb[i]))
        for item in list(self._engaged)[: max(len(self._engaged) - self.memory, 0)]:
            del self._engaged[item]

    def taste(self, observation: Observation) -> np.ndarray | None:
        """The user's taste vector from the engaged items remembered so far, this observation's
        included (`remember`; calling it again on the same observation changes nothing); None
        before the first engaged item."""
        self.remember(observation)
        if not self._engaged:
            return None
        weights = np.array([w for w, _ in self._engaged.values()])
        embeddings = np.stack([e for _, e in self._engaged.values()])
        return (weights * self.recency ** np.arange(len(weights))[::-1]) @ embeddings

    def scores(self, observation: Observation) -> np.ndarray:
        feats = observation["candidate_features"]
        taste = self.taste(observation)
        if taste is None:
            return scalar_feature(feats, "log_popularity").astype(np.float64)
        return embedding_part(feats) @ (taste / max(float(np.linalg.norm(taste)), 1e-9))

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        return self.top_k(self.scores(observation), observation)


class InstructionAwareRecommender(GreedyRelevanceRecommender):
    """Greedy relevance that follows the user's last structured instruction for the session.

    `more` boosts the named topics; `less`/`different` demote them and boost the
    suggested related topics; `quality: high` adds a quality term.

    Without a parsed intent (`instruction_channel="text"`), an instruction the user gave this
    session boosts candidates by their cosine to the observation's instruction direction (the
    text's embedding in item space), which reads words, not negation. With
    `instruction_channel="none"` nothing reaches it and it is plain greedy relevance.
    """

    name = "instruct"

    def __init__(self, slate_size: int, catalog: Catalog, seed: int | None = None, strength: float = 1.0) -> None:
        super().__init__(slate_size, seed)
        self.catalog = catalog
        self.strength = strength
        self._intent: dict[str, Any] | None = None
        self._heard = False  # an instruction (text only) is in force this session

    def begin_episode(self, seed: int | None = None) -> None:
        super().begin_episode(seed)
        self._intent = None
        self._heard = False

    def observe(self, reactions: np.ndarray, info: dict[str, Any]) -> None:
        if info.get("instruction_intent"):
            self._intent = info["instruction_intent"]
        elif info.get("instruction"):
            self._intent, self._heard = None, True
        if info.get("left"):
            self._intent, self._heard = None, False

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        return self.top_k(self.instructed_scores(observation), observation)

    def instructed_scores(self, observation: Observation, relevance: np.ndarray | None = None) -> np.ndarray:
        """What `act` ranks by: `relevance` (greedy's `scores` by default) plus the bonus of the instruction
        in force. A variant that estimates relevance its own way keeps instruct's way of following."""
        scores = self.scores(observation) if relevance is None else relevance
        if self._intent is not None:
            return scores + self.strength * self.intent_bonus(observation, self._intent)
        if self._heard:
            return scores + self.strength * self.direction_bonus(observation)
        return scores

    @staticmethod
    def direction_bonus(observation: Observation) -> np.ndarray:
        """Candidates' cosine to the observation's instruction direction, scaled to at most 1."""
        direction = np.asarray(observation["instruction"][4:], dtype=np.float64)
        cos = embedding_part(observation["candidate_features"]).astype(np.float64) @ direction
        return cos / max(float(np.abs(cos).max()), 1e-9)

    def intent_bonus(self, observation: Observation, intent: dict[str, Any]) -> np.ndarray:
        cat = self.catalog
        topics = cat.topic[observation["candidate_ids"]]
        named = np.isin(topics, [cat.topic_index(t) for t in intent["topics"]])
        related = np.isin(topics, [cat.topic_index(t) for t in intent.get("related", [])])
        bonus = np.where(named, 1.0 if intent["kind"] == "more" else -1.0, 0.0) + related * 1.0
        if intent.get("attributes", {}).get("quality") == "high":
            bonus = bonus + scalar_feature(observation["candidate_features"], "quality")
        return bonus


class DiverseRelevanceRecommender(GreedyRelevanceRecommender):
    """Greedy relevance re-ranked by maximal marginal relevance (Carbonell & Goldstein, 1998).

    Each slot takes the candidate maximising `lam * relevance - (1 - lam) * max similarity
    to the items already in the slate`: relevant, but not all the same.
    """

    name = "diverse"

    def __init__(self, slate_size: int, seed: int | None = None, lam: float = 0.5) -> None:
        super().__init__(slate_size, seed)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.lam = lam

    def act(self, observation: Observation, info: dict[str, Any]) -> np.ndarray:
        feats = observation["candidate_features"]
        emb = embedding_part(feats).astype(np.float64)
        relevance = self.scores(observation)
        relevance = relevance - np.where(observation["candidate_mask"].astype(bool), 0.0, 1e3)
        chosen: list[int] = []
        max_sim = np.full(len(relevance), -np.inf)
        for _ in range(self.slate_size):
            penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
            score = self.lam * relevance - (1 - self.lam) * penalty
            score[chosen] = -np.inf
            pick = int(np.argmax(score))
            chosen.append(pick)
            max_sim = np.maximum(max_sim, emb @ emb[pick])
        return np.asarray(chosen, dtype=np.int64)
