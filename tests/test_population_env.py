"""The multi-agent population world: PettingZoo conformance, shared platform state, publishing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig, WorldConfig
from recoworld.envs.platform import SharedPlatform, SocialConfig
from recoworld.envs.population_env import PopulationParallelEnv
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.errors import ConfigError, InvalidActionError
from recoworld.mindset import ReactionType
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators import ParametricUsers
from recoworld.streams import UserStreams

WORLD = {"slate_size": 4, "n_candidates": 20, "horizon_days": 4, "catalog": {"n_items": 400, "seed": 2}}


def make(**kwargs) -> PopulationParallelEnv:
    return PopulationParallelEnv(**{"n_users": 6, "world": WORLD, **kwargs})


def play(env: PopulationParallelEnv, seed: int, positions: np.ndarray) -> tuple[list[float], list[dict]]:
    """Every live user is shown the same candidate positions until the episode ends."""
    env.reset(seed=seed)
    rewards, infos = [], []
    while env.agents:
        _, rew, _, _, info = env.step({a: positions for a in env.agents})
        rewards += [rew[a] for a in sorted(rew)]
        infos += [info[a] for a in sorted(info)]
    return rewards, infos


def test_parallel_api_test_passes_without_warnings() -> None:
    env = make(new_item_share=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Live agent was not given ..." and friends fail the test
        parallel_api_test(env, num_cycles=1000)


def test_parallel_seed_test_passes() -> None:
    parallel_seed_test(lambda: make(new_item_share=0.1))


def test_same_seed_same_world_and_different_seed_differs() -> None:
    positions = np.arange(4)
    a, _ = play(make(), 3, positions)
    b, _ = play(make(), 3, positions)
    c, _ = play(make(), 4, positions)
    assert a == b
    assert a != c


def test_observation_and_action_match_recoworld_v0() -> None:
    """A policy trained on the single-user env runs unchanged on every user slot."""
    env = make()
    single = RecoWorldEnv(WORLD)
    assert env.observation_space("user_0") == single.observation_space
    assert env.action_space("user_3") == single.action_space
    obs, infos = env.reset(seed=0)
    for agent in env.agents:
        assert single.observation_space.contains(obs[agent])
        assert infos[agent]["user_id"] == env.profiles[int(agent.split("_")[1])].user_id


def test_every_agent_ends_once_with_episode_stats() -> None:
    env = make()
    _, infos = play(env, 0, np.arange(4))
    final = [i for i in infos if "episode_stats" in i]
    assert sorted(i["user_id"] for i in final) == sorted(p.user_id for p in env.profiles)
    for info in final:
        assert 0 < info["episode_stats"]["retention"] <= 1
    assert env.agents == []


def test_social_proof_changes_what_others_see_and_prefer() -> None:
    """Herding: with social effects on, impressions concentrate on few items and clicks rise."""

    def concentration_and_ctr(social: dict) -> tuple[float, float]:
        # Enough users that likes are more than a handful: with 24 the effect is there but within noise.
        env = PopulationParallelEnv(n_users=96, world=WORLD, social=social)
        _, infos = play(env, 0, np.arange(8, 12))
        shown = np.concatenate([i["slate"] for i in infos])
        reactions = np.concatenate([i["reactions"] for i in infos])
        counts = np.sort(np.bincount(shown))[::-1]
        return counts[:20].sum() / counts.sum(), float((reactions[reactions >= 0] >= 1).mean())

    off = concentration_and_ctr({"utility_bonus": 0.0, "retrieval_weight": 0.0})
    on = concentration_and_ctr({"utility_bonus": 3.0, "retrieval_weight": 1.0})
    # Relative: the popular block of retrieval (45% of the candidates since issue 27) already concentrates
    # impressions without social proof (top-20 share 0.26; herding takes it to 0.34).
    assert on[0] > 1.2 * off[0]


def test_social_proof_makes_the_same_users_click_more_on_liked_items() -> None:
    """What others liked is preferred: the same users, slates and random streams, with and without
    the platform's utility bonus (a whole-run CTR mixes this with the fatigue herding brings)."""
    cat = cached_catalog(CatalogConfig(n_items=400, seed=2))
    platform = SharedPlatform(cat, SocialConfig(utility_bonus=3.0), np.zeros(len(cat)))
    slates = np.tile(np.arange(8), (200, 1))
    for _ in range(10):
        platform.update(slates[:, :4], np.full((200, 4), int(ReactionType.SHARE)))  # items 0-3 are a hit
    clicks = []
    for bonus in (None, platform.utility_bonus(slates)):
        users = ParametricUsers(cat)
        users.reset(sample_population(PopulationSpec.default(), cat, np.random.default_rng(0), n=200))
        streams = UserStreams.spawn(np.random.default_rng(1), 200)
        users.start_sessions(np.arange(200), np.zeros(200), streams)
        clicks.append(users.review(slates, streams, utility_bonus=bonus).reactions >= 1)
    plain, social = clicks
    assert social[:, :4].mean() > 1.5 * plain[:, :4].mean()


def test_shared_platform_update_moves_popularity_toward_liked_items() -> None:
    cat = cached_catalog(CatalogConfig(n_items=400, seed=2))
    platform = SharedPlatform(cat, SocialConfig(), np.zeros(len(cat)))
    before = platform.popularity().copy()
    item = int(np.argmin(cat.popularity))
    pop = platform.update(np.array([[item, 0]]), np.array([[3, 0]]))  # a share of `item`, a skip of item 0
    assert pop[item] > before[item] * 10
    assert platform.social_proof(np.array([item, 0])).tolist()[1] == 0.0
    assert platform.social_proof(np.array([item]))[0] > 0
    assert platform.features[item, -1] == pytest.approx(1.0)  # now the most popular item on the platform
    assert pop.sum() == pytest.approx(1.0)


def test_items_are_offered_only_after_their_release_day() -> None:
    cat = cached_catalog(WorldConfig.model_validate(WORLD).catalog)
    late = np.arange(0, 400, 4)  # a quarter of the catalog goes live on day 2
    release = np.zeros(len(cat))
    release[late] = 2.0
    env = PopulationParallelEnv(n_users=6, world=WORLD, release_day=release)
    obs, _ = env.reset(seed=1)
    offered_late = 0
    while env.agents:
        for o in obs.values():
            is_late = np.isin(o["candidate_ids"], late)
            if o["context"][0] < 2.0:
                assert not is_late.any(), "an unpublished item was offered"
            offered_late += int(is_late.sum())
        obs, *_ = env.step({a: np.arange(4) for a in env.agents})
    assert offered_late > 0, "items published on day 2 were never offered afterwards"


def test_explicit_profiles_fill_the_slots() -> None:
    cat = cached_catalog(WorldConfig.model_validate(WORLD).catalog)
    users = sample_population(PopulationSpec.default(), cat, np.random.default_rng(0), n=5)
    env = PopulationParallelEnv(world=WORLD, population=users)
    assert env.possible_agents == [f"user_{i}" for i in range(5)]
    _, infos = env.reset(seed=0)
    assert [infos[f"user_{i}"]["user_id"] for i in range(5)] == [u.user_id for u in users]


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="release_day must have shape"):
        make(release_day=np.zeros(3))
    with pytest.raises(ConfigError, match="n_users"):
        cat = cached_catalog(WorldConfig.model_validate(WORLD).catalog)
        users = sample_population(PopulationSpec.default(), cat, np.random.default_rng(0), n=3)
        PopulationParallelEnv(world=WORLD, population=users, n_users=4)
    with pytest.raises(ConfigError, match="fewer than n_candidates"):
        make(release_day=np.full(400, 5.0))
    with pytest.raises(ConfigError, match=r"social\.decay"):
        make(social={"decay": 0})
    env = make()
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="no action for live agents"):
        env.step({"user_0": np.arange(4)})
    with pytest.raises(InvalidActionError, match="out of range"):
        env.step({a: np.array([0, 1, 2, 99]) for a in env.agents})
    wrong = {a: np.arange(4) for a in env.agents}
    wrong[env.agents[1]] = np.arange(5)  # slates are stacked in one call: a bad one is still named
    with pytest.raises(InvalidActionError, match=rf"actions\['{env.agents[1]}'\] must have shape \(4,\)"):
        env.step(wrong)
    with pytest.raises(InvalidActionError, match=rf"actions\['{env.agents[0]}'\] must have shape \(4,\)"):
        env.step({a: np.arange(4)[None] for a in env.agents})


def test_slates_given_as_lists_or_arrays_play_alike() -> None:
    played = []
    for as_list in (False, True):
        env = make()
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(6):
            slates = {a: rng.permutation(4) for a in env.agents}
            obs, reward, *_ = env.step({a: s.tolist() for a, s in slates.items()} if as_list else slates)
            rewards.append(reward)
        played.append((rewards, {a: o["candidate_ids"].tolist() for a, o in obs.items()}))
    assert played[0] == played[1]


def test_stacked_slates_are_np_stacks() -> None:
    """The live agents' (K,) arrays are joined in one call: np.stack's rows and dtype, mixed dtypes included."""
    env = make()
    env.reset(seed=3)
    rng = np.random.default_rng(1)
    k = env.config.world.slate_size
    for dtypes in ((np.int64,), (np.int32,), (np.int32, np.int64), (np.uint8, np.int16)):
        slates = {a: rng.permutation(k).astype(dtypes[j % len(dtypes)]) for j, a in enumerate(env.agents)}
        joined = env._slates(slates)
        expected = np.stack([slates[a] for a in env.agents])
        assert joined.dtype == expected.dtype and np.array_equal(joined, expected)


def test_bad_actions_are_named_and_ended_agents_leave_a_fresh_agent_list() -> None:
    """The step's checks run as C loops over every action; each failing one still names its offenders."""
    env = make()
    env.reset(seed=3)
    k = env.config.world.slate_size
    with pytest.raises(InvalidActionError, match=r"unknown agents \['user_99'\]"):
        env.step({**{a: np.arange(k) for a in env.agents}, "user_99": np.arange(k)})
    zero_d = {a: np.arange(k) for a in env.agents}
    zero_d[env.agents[2]] = np.array(1)  # 0-d: no length to check
    with pytest.raises(InvalidActionError, match=rf"actions\['{env.agents[2]}'\] must have shape \({k},\)"):
        env.step(zero_d)
    while env.agents:
        before = env.agents
        _, _, terms, truncs, _ = env.step({a: np.arange(k) for a in before})
        assert env.agents == [a for a in before if not (terms[a] or truncs[a])] and env.agents is not before


def test_append_items_keeps_existing_indices() -> None:
    cat = cached_catalog(CatalogConfig(n_items=300, seed=5))
    emb = cat.embeddings[:2] + 0.01
    ext = cat.append_items(
        item_ids=["new_0", "new_1"], titles=["a", "b"], descriptions=["a", "b"], topic=cat.topic[:2],
        subtopic=cat.subtopic[:2], creator="Brand New", quality=np.array([0.9, 0.8]),
        duration_min=np.array([5.0, 6.0]), popularity=np.array([1e-3, 1e-3]), embeddings=emb,
    )
    assert len(ext) == 302
    assert ext.item_ids[:300].tolist() == cat.item_ids.tolist()
    np.testing.assert_array_equal(ext.embeddings[:300], cat.embeddings)
    assert ext.item(300).creator == "Brand New"
    np.testing.assert_array_equal(ext.semantic_ids[300:], cat.semantic_ids[:2])  # nearest existing item's code
    assert ext.popularity.sum() == pytest.approx(1.0)
    with pytest.raises(Exception, match="already in the catalog"):
        cat.append_items(
            item_ids=[str(cat.item_ids[0])], titles=["x"], descriptions=["x"], topic=cat.topic[:1],
            subtopic=cat.subtopic[:1], creator="X", quality=np.array([0.5]), duration_min=np.array([1.0]),
            popularity=np.array([1e-3]), embeddings=cat.embeddings[:1],
        )
