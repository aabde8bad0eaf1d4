from __future__ import annotations

import numpy as np
import pytest

from recoworld.agents import AGENTS, InstructionAwareRecommender, make_recommender
from recoworld.catalog import Catalog
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError
from recoworld.evaluation.metrics import intent_match
from recoworld.simulators.scripted import Script, ScriptedUsers


@pytest.fixture()
def env(catalog: Catalog) -> RecoWorldEnv:
    return RecoWorldEnv(catalog=catalog, slate_size=5, n_candidates=30, horizon_days=5)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_baseline_plays_valid_slates(env: RecoWorldEnv, name: str) -> None:
    agent = make_recommender(name, env.catalog, 5, seed=0)
    obs, info = env.reset(seed=0)
    agent.begin_episode(0)
    for _ in range(60):
        action = agent.act(obs, info)
        assert action.shape == (5,) and len(set(action.tolist())) == 5
        assert ((action >= 0) & (action < 30)).all()
        obs, _, term, trunc, info = env.step(action)
        assert info["duplicates_replaced"] == 0
        agent.observe(info["reactions"], info)
        if term or trunc:
            break


def test_popular_and_greedy_rank_what_they_claim(env: RecoWorldEnv) -> None:
    obs, info = env.reset(seed=1)
    popular = make_recommender("popular", env.catalog, 5).act(obs, info)
    pop = env.catalog.popularity[obs["candidate_ids"]]
    assert set(obs["candidate_ids"][popular]) == set(obs["candidate_ids"][np.argsort(-pop)[:5]])
    # A scripted user who clicks the first item of every slate gives the history a taste.
    clicker = ScriptedUsers(env.catalog, Script(reactions=[[1]] * 5, leave_after_turns=10))
    scripted = RecoWorldEnv(env.config, catalog=env.catalog, user_simulator=clicker)
    obs, info = scripted.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, _, _, _, info = scripted.step(rng.permutation(30)[:5])
    greedy = make_recommender("greedy", env.catalog, 5)
    taste = greedy.taste(obs)
    assert taste is not None
    chosen = greedy.act(obs, info)
    d = env.catalog.embedding_dim
    sims = obs["candidate_features"][:, :d] @ taste
    available = obs["candidate_mask"].astype(bool)  # consumed candidates come last, whatever their score
    assert available.sum() >= 5 and available[chosen].all()
    assert sims[chosen].min() >= np.sort(sims[available])[-5] - 1e-6


def test_diverse_slates_are_more_diverse_than_greedy(env: RecoWorldEnv) -> None:
    from recoworld.catalog import slate_diversity

    obs, info = env.reset(seed=2)
    rng = np.random.default_rng(0)
    for _ in range(4):
        obs, _, _, _, info = env.step(rng.permutation(30)[:5])
    greedy = make_recommender("greedy", env.catalog, 5).act(obs, info)
    diverse = make_recommender("diverse", env.catalog, 5).act(obs, info)
    ids = obs["candidate_ids"]
    assert slate_diversity(env.catalog, ids[diverse]) > slate_diversity(env.catalog, ids[greedy])


def test_instruction_aware_follows_the_intent(env: RecoWorldEnv) -> None:
    obs, info = env.reset(seed=3)
    agent = InstructionAwareRecommender(5, env.catalog, seed=0)
    neutral = agent.act(obs, info)
    # The candidates' most common topic among those the neutral slate shows: "more" has items of it
    # to bring in, and "different" has items of it to take out.
    topics = env.catalog.topic[obs["candidate_ids"]]
    counts = np.bincount(topics, minlength=env.catalog.n_topics)
    shown = np.isin(np.arange(env.catalog.n_topics), topics[neutral])
    wanted = env.catalog.topic_names[int(np.where(shown, counts, -1).argmax())]
    intent = {"kind": "more", "topics": [wanted], "related": [], "attributes": {}}
    agent.observe(np.zeros(5), {"instruction_intent": intent, "left": False})
    slate = obs["candidate_ids"][agent.act(obs, info)]
    assert intent_match(intent, env.catalog, slate).mean() >= 0.6
    avoid = {"kind": "different", "topics": [wanted], "related": [], "attributes": {}}
    agent.observe(np.zeros(5), {"instruction_intent": avoid, "left": False})
    slate = obs["candidate_ids"][agent.act(obs, info)]
    assert intent_match(avoid, env.catalog, slate).all()
    assert not np.array_equal(agent.act(obs, info), neutral)
    agent.observe(np.zeros(5), {"left": True})  # a new session forgets the instruction
    np.testing.assert_array_equal(agent.act(obs, info), neutral)


def test_unknown_agent_suggests_a_fix(catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'greedy'"):
        make_recommender("gredy", catalog, 5)


def test_a_run_calls_a_chat_model_with_llm_users_or_an_llm_recommender() -> None:
    """Whether a study probes its server first (`recoworld.studies.runner`)."""
    from recoworld.agents import uses_llm

    assert uses_llm("parametric", ["greedy", "toolrec"]) and uses_llm("llm")
    assert not uses_llm("parametric", ["greedy"])
