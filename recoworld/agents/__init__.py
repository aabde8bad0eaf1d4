"""Recommender agents and the registry that builds them by name."""

from __future__ import annotations

from collections.abc import Callable

from recoworld.agents.base import Observation, Recommender
from recoworld.agents.baselines import (
    DiverseRelevanceRecommender,
    GreedyRelevanceRecommender,
    InstructionAwareRecommender,
    MostPopularRecommender,
    RandomRecommender,
)
from recoworld.catalog import Catalog
from recoworld.errors import ConfigError

AgentFactory = Callable[[Catalog, int, int | None], Recommender]

AGENTS: dict[str, AgentFactory] = {
    "random": lambda catalog, k, seed: RandomRecommender(k, seed),
    "popular": lambda catalog, k, seed: MostPopularRecommender(k, seed),
    "greedy": lambda catalog, k, seed: GreedyRelevanceRecommender(k, seed),
    "diverse": lambda catalog, k, seed: DiverseRelevanceRecommender(k, seed),
    "instruct": lambda catalog, k, seed: InstructionAwareRecommender(k, catalog, seed),
}


def make_recommender(name: str, catalog: Catalog, slate_size: int, seed: int | None = None) -> Recommender:
    """Build a registered recommender by name (see `AGENTS`)."""
    if name not in AGENTS:
        import difflib

        hint = difflib.get_close_matches(name, AGENTS, n=1)
        raise ConfigError(
            f"unknown agent {name!r}; known agents: {', '.join(AGENTS)}"
            + (f". Did you mean {hint[0]!r}?" if hint else "")
        )
    return AGENTS[name](catalog, slate_size, seed)


__all__ = [
    "AGENTS",
    "DiverseRelevanceRecommender",
    "GreedyRelevanceRecommender",
    "InstructionAwareRecommender",
    "MostPopularRecommender",
    "Observation",
    "RandomRecommender",
    "Recommender",
    "make_recommender",
]
