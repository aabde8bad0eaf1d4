"""Recommender agents and the registry that builds them by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from recoworld.agents import plugins
from recoworld.agents.base import CatalogSearcher, Observation, Recommender
from recoworld.agents.baselines import (
    DiverseRelevanceRecommender,
    GreedyRelevanceRecommender,
    InstructionAwareRecommender,
    MostPopularRecommender,
    RandomRecommender,
)
from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.errors import ConfigError, check_distinct
from recoworld.llm.config import LLMConfig

#: Builds a recommender for a catalog, a seed and an optional `top_k`: what `AGENTS` maps names to.
AgentFactory = Callable[[Catalog, int, int | None], Recommender]
#: Builds a recommender by name (`make_recommender` and its wrappers): what runs take to build their agents.
AgentBuilder = Callable[[str, Catalog, int, int | None], Recommender]


def _slate_ts(policy: str) -> AgentFactory:
    def build(catalog: Catalog, k: int, seed: int | None) -> Recommender:
        from recoworld.agents.slate_ts import SlateTSRecommender  # torch is imported only when used

        return SlateTSRecommender(k, catalog, seed=seed, policy=policy)

    return build


def _novelty(hierarchical: bool) -> AgentFactory:
    def build(catalog: Catalog, k: int, seed: int | None) -> Recommender:
        from recoworld.agents.hrl_novelty import NoveltyRecommender

        return NoveltyRecommender(k, catalog, seed=seed, hierarchical=hierarchical)

    return build


def _oracle(catalog: Catalog, k: int, seed: int | None) -> Recommender:
    from recoworld.agents.oracle import OracleRecommender

    return OracleRecommender(k, catalog, seed)


def _toolrec(catalog: Catalog, k: int, seed: int | None, llm: LLMConfig) -> Recommender:
    from recoworld.agents.toolrec import ToolRecRecommender

    return ToolRecRecommender(k, catalog, llm, seed)


AGENTS: dict[str, AgentFactory] = {
    "random": lambda catalog, k, seed: RandomRecommender(k, seed),
    "popular": lambda catalog, k, seed: MostPopularRecommender(k, seed),
    "greedy": lambda catalog, k, seed: GreedyRelevanceRecommender(k, seed),
    "diverse": lambda catalog, k, seed: DiverseRelevanceRecommender(k, seed),
    "instruct": lambda catalog, k, seed: InstructionAwareRecommender(k, catalog, seed),
    "slate-greedy": _slate_ts("greedy"),
    "slate-ts": _slate_ts("ts"),
    "slate-inslate-ts": _slate_ts("inslate"),
    "hrl-novelty": _novelty(hierarchical=True),
    "flat-novelty": _novelty(hierarchical=False),
    # A headroom reference, not a recommender: reads the hidden mindset (needs `expose_mindset=True`).
    "oracle": _oracle,
}


#: Recommenders that read the hidden mindset (`info["mindset"]`). Without it they fall back on every turn
#: (the oracle to greedy), and their results are another recommender's under their name.
MINDSET_READERS = frozenset({"oracle"})


def mindset_ready(world: WorldConfig, agents: Iterable[str]) -> WorldConfig:
    """`world` with the mindset exposed when one of `agents` reads it. Users behave the same either way:
    exposing it only fills `info["mindset"]` (and the trajectory's mindset columns)."""
    if world.expose_mindset or not MINDSET_READERS.intersection(agents):
        return world
    return world.model_copy(update={"expose_mindset": True})


LLMAgentFactory = Callable[[Catalog, int, int | None, LLMConfig], Recommender]

#: Recommenders driven by a chat model; their factories also get the study's `LLMConfig` (`WorldConfig.llm`).
#: Kept apart from `AGENTS` so that code looping over the conventional recommenders stays offline and fast.
LLM_AGENTS: dict[str, LLMAgentFactory] = {
    "toolrec": _toolrec,
}


def uses_llm(user_backend: str, recommenders: Iterable[str] = ()) -> bool:
    """Whether a run with these users and recommenders calls a chat model (its server is probed first)."""
    return user_backend == "llm" or any(name in LLM_AGENTS for name in recommenders)

#: `make_recommender("rllib:PATH", ...)` loads a policy trained by `recoworld train` (needs `recoworld[rllib]`).
RLLIB_PREFIX = "rllib:"


def make_recommender(
    name: str, catalog: Catalog, slate_size: int, seed: int | None = None, llm: LLMConfig | None = None
) -> Recommender:
    """Build a registered recommender by name (see `AGENTS`, `LLM_AGENTS`), `rllib:PATH` for a trained
    RLlib policy, or your own class: `module:Class`, `file.py:Class` or an installed plug-in (see
    `recoworld.agents.plugins`). `llm` configures the chat model of `LLM_AGENTS` (default: the local
    in-process model)."""
    if name.startswith(RLLIB_PREFIX):
        from recoworld.rl.policy import RLlibRecommender

        return RLlibRecommender.from_checkpoint(name[len(RLLIB_PREFIX) :], slate_size, seed, catalog=catalog)
    if name in LLM_AGENTS:
        return LLM_AGENTS[name](catalog, slate_size, seed, llm or LLMConfig())
    if name not in AGENTS and (plugins.is_reference(name) or name in plugins.plugin_names()):
        return plugins.build(name, catalog, slate_size, seed)
    check_recommender_names([name])
    try:
        return AGENTS[name](catalog, slate_size, seed)
    except ModuleNotFoundError as err:  # torch is an extra: the slate and novelty recommenders import it
        if err.name != "torch":
            raise
        raise ConfigError(f"recommender {name!r} needs torch: pip install 'recoworld[torch]'") from None


def check_recommender_names(names: list[str]) -> None:
    """Raise `ConfigError` for the first unknown name, a `module:Class` reference that does not
    load a `Recommender`, or two names that runs would label alike (`agent_labels`), before any
    work starts on the others."""
    import difflib

    check_distinct(names, "recommender")
    known = [*AGENTS, *LLM_AGENTS, *plugins.plugin_names()]
    for name in names:
        if name.startswith(RLLIB_PREFIX):
            if not Path(name[len(RLLIB_PREFIX) :]).expanduser().exists():  # before Ray starts workers to load it
                raise ConfigError(f"{name}: no such checkpoint; give the --out of `recoworld train` or a checkpoint")
            continue
        if name in known:
            continue
        if plugins.is_reference(name):
            plugins.load_class(name)
            continue
        hint = difflib.get_close_matches(name, known, n=1)
        raise ConfigError(
            f"unknown agent {name!r}; known agents: {', '.join(known)}, {RLLIB_PREFIX}PATH, "
            "or your own module:Class / file.py:Class" + (f". Did you mean {hint[0]!r}?" if hint else "")
        )
    agent_labels(names)


def agent_label(name: str) -> str:
    """What runs call the recommender `name` builds, in their tables, file names, plots and reports:
    a `module:Class` or `file.py:Class` reference by its class's `name` (`plugins.label`, whose
    module docstring has the rules), any other name as it is."""
    if name.startswith(RLLIB_PREFIX) or name in AGENTS or name in LLM_AGENTS or not plugins.is_reference(name):
        return name
    return plugins.label(name)


def agent_labels(names: Sequence[str]) -> list[str]:
    """`agent_label` of each name, in order. Two names labelled alike, or a reference labelled like a
    built-in or installed recommender, raise `ConfigError` naming both: one's results would be read
    as the other's, and their files would overwrite each other."""
    builtin = {known: f"the built-in recommender {known!r}" for known in [*AGENTS, *LLM_AGENTS]}
    builtin.update({known: f"the installed plug-in {known!r}" for known in plugins.plugin_names()})
    seen: dict[str, tuple[str, str]] = {}  # label, in lower case (one file on macOS and Windows) -> name, label
    labels: list[str] = []
    for name in names:
        label = agent_label(name)
        if label != name and label in builtin:
            raise ConfigError(f"agent {name!r} is named {label!r} (its class's `name`), as is {builtin[label]}; "
                              "give the class another `name`")
        other, its = seen.setdefault(label.lower(), (name, label))
        if other != name:
            named = f"both named {label!r}" if its == label else f"named {its!r} and {label!r}"
            raise ConfigError(f"agents {other!r} and {name!r} are {named}: their tables and files would mix; "
                              "give one class another `name`")
        labels.append(label)
    return labels


_LAZY = {
    "check_recommender": "recoworld.agents.check",
    "RecommenderCheckError": "recoworld.agents.check",
    "SlateTSConfig": "recoworld.agents.slate_ts",
    "SlateTSRecommender": "recoworld.agents.slate_ts",
    "NoveltyPolicyConfig": "recoworld.agents.hrl_novelty",
    "NoveltyRecommender": "recoworld.agents.hrl_novelty",
    "ToolRecRecommender": "recoworld.agents.toolrec",
    "OracleRecommender": "recoworld.agents.oracle",
}


def __getattr__(name: str) -> object:
    """Torch- and LLM-backed agents load on first use, so `import recoworld.agents` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGENTS",
    "LLM_AGENTS",
    "MINDSET_READERS",
    "CatalogSearcher",
    "DiverseRelevanceRecommender",
    "GreedyRelevanceRecommender",
    "InstructionAwareRecommender",
    "MostPopularRecommender",
    "NoveltyPolicyConfig",
    "NoveltyRecommender",
    "Observation",
    "OracleRecommender",
    "RandomRecommender",
    "Recommender",
    "RecommenderCheckError",
    "SlateTSConfig",
    "SlateTSRecommender",
    "ToolRecRecommender",
    "agent_label",
    "agent_labels",
    "check_recommender",
    "check_recommender_names",
    "make_recommender",
    "mindset_ready",
]
