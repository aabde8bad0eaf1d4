"""PPO on RecoWorld with real Ray RLlib: wrappers, a short training, checkpoints, resume, inference."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import gymnasium as gym
import numpy as np
import pytest
from typer.testing import CliRunner

from recoworld.agents import make_recommender
from recoworld.catalog import cached_catalog
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.envs.vector_env import RecoWorldVectorEnv
from recoworld.errors import ConfigError
from recoworld.population import PopulationSpec
from recoworld.rl.features import (
    EPISODE,
    INTENT,
    N_CANDIDATE_FEATURES,
    N_GLOBAL_FEATURES,
    RECENT_ITEMS,
    SESSION,
    EpisodeProfile,
    FeatureSet,
    UserRelativeObservation,
    UserRelativeVectorObservation,
    user_relative_features,
)
from recoworld.rl.policy import RLlibRecommender, distinct_slate
from tests.conftest import require

TINY_WORLD = {"slate_size": 2, "n_candidates": 6, "history_len": 5, "horizon_days": 2,
              "catalog": {"n_items": 300, "seed": 1}}


def tiny_config(runners: int, iterations: int = 2, seed: int = 0, network: str = "shared_scorer",
                num_envs: int = 4):  # -> TrainConfig
    from recoworld.rl.train_config import TrainConfig

    # Episodes end within 40 turns, so every iteration of 200 env steps over 4 users completes some
    # (its episode return is finite) whatever users the population draws.
    return TrainConfig.load(None, seed=seed, iterations=iterations, num_env_runners=runners,
                            num_envs_per_env_runner=num_envs, world={**TINY_WORLD, "max_steps": 40},
                            ppo={"train_batch_size": 200, "minibatch_size": 50, "num_epochs": 2, "hidden": [16],
                                 "network": network},
                            eval={"every": 1, "n_users": 4, "baselines": ["random"]})


# ---------------------------------------------------------------------------- wrappers (no Ray)


def test_user_relative_observation_matches_a_direct_computation() -> None:
    base = RecoWorldEnv(TINY_WORLD)
    env = UserRelativeObservation(base)
    raw, _ = base.reset(seed=4)
    for _ in range(6):  # build some history
        raw, _, terminated, truncated, _ = base.step(np.array([0, 1]))
        if terminated or truncated:
            raw, _ = base.reset(seed=5)
    obs = env.observation(raw)  # what the wrapped env's step returns for this raw observation
    assert env.observation_space.contains(obs)
    c, d = 6, raw["candidate_features"].shape[1] - 3
    rows = obs["observations"][: c * N_CANDIDATE_FEATURES].reshape(c, N_CANDIDATE_FEATURES)
    emb, hist = raw["candidate_features"][:, :d], raw["history_features"][:, :d]
    engaged = raw["history_reactions"] >= 1
    if engaged.any():
        np.testing.assert_allclose(rows[:, 0], (emb @ hist[engaged].T).mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(rows[:, 4:7], raw["candidate_features"][:, d:], atol=1e-6)
    np.testing.assert_array_equal(rows[:, 7], raw["candidate_mask"])
    assert obs["observations"].shape == (c * N_CANDIDATE_FEATURES + N_GLOBAL_FEATURES,)
    # one copy of the candidate mask per slate slot, matching MultiDiscrete's concatenated logits
    np.testing.assert_array_equal(obs["action_mask"], np.tile(raw["candidate_mask"], 2))


def test_consumed_candidates_are_masked_in_every_slot() -> None:
    base = RecoWorldEnv(TINY_WORLD)
    env = UserRelativeObservation(base)
    raw, _ = base.reset(seed=0)
    clicked: set[int] = set()
    for _ in range(20):  # the env masks exactly the candidates the user clicked earlier in the episode
        raw, _, terminated, truncated, info = base.step(np.array([0, 1]))
        clicked |= set(info["slate"][info["reactions"] > 0].tolist())
        np.testing.assert_array_equal(raw["candidate_mask"] == 0, np.isin(raw["candidate_ids"], list(clicked)))
        if terminated or truncated:
            break
    raw["candidate_mask"][:] = 1
    raw["candidate_mask"][[1, 3]] = 0  # as if the user had clicked these two earlier
    obs = env.observation(raw)
    assert obs["action_mask"].reshape(2, 6)[:, [1, 3]].sum() == 0
    assert obs["action_mask"].sum() == 2 * 4


def test_unmasked_variant_is_a_plain_box() -> None:
    env = UserRelativeObservation(RecoWorldEnv(TINY_WORLD), action_mask=False)
    obs, _ = env.reset(seed=0)
    assert isinstance(env.observation_space, gym.spaces.Box)
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize("features", [EPISODE, SESSION, INTENT], ids=lambda f: f.name)
def test_vector_wrapper_gives_each_user_the_single_wrappers_observation_bit_for_bit(features: FeatureSet) -> None:
    """User i of the wrapped vector env is the wrapped RecoWorld-v0 reset with seed + i, features and mask included."""
    n, seed = 3, 11
    vec = UserRelativeVectorObservation(RecoWorldVectorEnv(num_envs=n, **TINY_WORLD), features=features)
    singles = [UserRelativeObservation(RecoWorldEnv(TINY_WORLD), features=features) for _ in range(n)]
    assert vec.single_observation_space == singles[0].observation_space
    width = features.width(6)
    assert vec.observation_space.shape is None and vec.observation_space["observations"].shape == (n, width)
    obs, _ = vec.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    rng = np.random.default_rng(0)
    restarting = np.zeros(n, dtype=bool)  # NEXT_STEP autoreset: the step after an episode's end starts the next
    ended = intents = 0
    for _ in range(80):
        assert vec.observation_space.contains(obs)
        for i in range(n):
            for key in ("observations", "action_mask"):
                np.testing.assert_array_equal(obs[key][i], single_obs[i][key])
        actions = np.stack([rng.choice(6, 2, replace=False) for _ in range(n)])
        obs, _, terminated, truncated, info = vec.step(actions)
        intents += sum(bool(intent) for intent in info.get("instruction_intent", []))  # the intent block reads them
        for i, env in enumerate(singles):
            if restarting[i]:
                single_obs[i], _ = env.reset()  # the next episode, from the same user stream
            else:
                single_obs[i], _, term, trunc, _ = env.step(actions[i])
                assert (term, trunc) == (terminated[i], truncated[i])
        restarting = terminated | truncated
        ended += int(restarting.sum())
    assert ended >= 1 and intents >= 1


def test_episode_profile_remembers_engaged_items_beyond_the_history_window() -> None:
    """The profile sums the embeddings of every engaged and skipped item of the episode, decayed
    per turn, from the newest history rows; the features read its cosine per candidate."""
    from recoworld.rl.features import EpisodeProfile

    d = 3
    profile = EpisodeProfile(2, d, decay=0.5)
    eye = np.eye(d, dtype=np.float32)
    obs = {"history_reactions": np.array([[-1, 0, 1], [0, 0, 0]]),
           "history_features": np.zeros((2, 3, d + 3), np.float32), "context": np.array([[0, 0, 1, 0]] * 2)}
    obs["history_features"][0, 1, :d], obs["history_features"][0, 2, :d] = eye[0], eye[1]
    profile.update(obs, np.array([2, 0]))  # user 0 reviewed two items (a skip, a click); user 1 did not play
    np.testing.assert_array_equal(profile.engaged, [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(profile.skipped, [[1, 0, 0], [0, 0, 0]])
    obs["history_reactions"] = np.array([[0, 1, 2], [0, 0, 0]])
    obs["history_features"][0, 2, :d] = eye[2]
    profile.update(obs, np.array([1, 0]))  # then a like on a third item; the click stays, decayed
    np.testing.assert_array_equal(profile.engaged[0], [0, 0.5, 1])
    assert profile.n_engaged.tolist() == [2, 0]
    shown = profile.augment({"x": np.zeros(2)})
    np.testing.assert_allclose(np.linalg.norm(shown["engaged_profile"][0]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(shown["engaged_profile"][1], 0)  # no engagement yet: zeros
    profile.reset(np.array([0]))
    assert not profile.engaged.any() and not profile.n_engaged.any()


def test_session_block_remembers_recent_items_and_forgets_the_session_at_its_start() -> None:
    """The `SESSION` state: the ring of the last `RECENT_ITEMS` reviewed items, turns since the last engagement and
    this session's engaged items (both forgotten when an observation opens a session, turn 0), and how familiar
    engaged and skipped items were when shown."""
    d = 3
    profile = EpisodeProfile(1, d)
    eye = np.eye(d, dtype=np.float32)
    features = np.zeros((1, 2, d + 3), np.float32)
    features[0, 0, :d], features[0, 1, :d] = eye[0], eye[0]
    obs = {"history_reactions": np.array([[0, 0]]), "history_features": features, "context": np.array([[0, 0, 1, 0]])}
    profile.update(obs, np.array([1]))  # one skip of item e0: nothing engaged this session yet
    assert profile.since_engaged.tolist() == [1] and profile.recent_seen[0].sum() == 1
    obs["history_reactions"] = np.array([[0, 1]])
    obs["context"] = np.array([[0, 0, 2, 0]])
    profile.update(obs, np.array([1]))  # a click on e0 again: engaged, and fully familiar when shown
    assert profile.since_engaged.tolist() == [0] and profile.session_n_engaged.tolist() == [1]
    state = profile.augment({})["session_state"][0]
    np.testing.assert_allclose(state[2:], [1.0, 0.0])  # engaged items were familiar (1), the first skip was new (0)
    for turn in range(RECENT_ITEMS):  # the ring keeps the newest RECENT_ITEMS items only
        features[0, 1, :d] = eye[1]
        obs["context"] = np.array([[0, 0, 3 + turn, 0]])
        profile.update(obs, np.array([1]))
    assert (profile.recent[0] @ eye[0] == 0).all(), "e0 fell out of the ring"
    obs["context"] = np.array([[1, 1, 0, 1]])  # the step ended the session and opened the next
    profile.update(obs, np.array([1]))
    assert profile.session_n_engaged.tolist() == [0] and profile.since_engaged.tolist() == [0]
    assert profile.n_engaged.tolist() == [RECENT_ITEMS + 2], "the episode's profile stays"


@pytest.mark.parametrize("features", [EPISODE, SESSION, INTENT], ids=lambda f: f.name)
def test_recommender_sees_the_training_wrappers_features_over_a_whole_episode(features: FeatureSet) -> None:
    """Deployed, the policy must see what it trained on: `RLlibRecommender` keeps the same episode
    profile as `UserRelativeObservation`, turn after turn, across sessions, and reads from the
    module's input size which feature set that is."""
    require("ray")
    from recoworld.rl.rl_module import SlateScorerRLModule

    world = {**TINY_WORLD, "horizon_days": 5}
    wrapped, raw_env = UserRelativeObservation(RecoWorldEnv(world), features=features), RecoWorldEnv(world)
    module = SlateScorerRLModule(observation_space=wrapped.observation_space, action_space=wrapped.action_space,
                                 model_config={"hidden": [8]})
    agent = RLlibRecommender(module, 2, seed=0, catalog=raw_env.catalog)
    assert agent.feature_set == features and module.features == features
    for seed in (3, 4):  # two episodes: the profile is forgotten between them
        shown, _ = wrapped.reset(seed=seed)
        raw, info = raw_env.reset(seed=seed)
        agent.begin_episode(seed)
        done, sessions, engaged = False, set(), 0
        while not done:
            slate = agent.act(raw, info)
            np.testing.assert_array_equal(agent.last_features[0], shown["observations"])
            shown, *_ = wrapped.step(slate)
            raw, _, terminated, truncated, info = raw_env.step(slate)
            agent.observe(info["reactions"], info)
            done, sessions = terminated or truncated, sessions | {info["session"]}
            engaged += int((info["reactions"] > 0).sum())
        assert wrapped.profile.n_engaged[0] == engaged


def _intent_rows(shown: dict[str, np.ndarray], c: int) -> np.ndarray:
    """(C, 5) the `INTENT` block's columns of one user's policy observation."""
    rows = shown["observations"][: c * INTENT.per_candidate].reshape(c, INTENT.per_candidate)
    return rows[:, N_CANDIDATE_FEATURES:]


def test_intent_columns_say_which_candidates_the_sessions_intent_names_and_suggests() -> None:
    """A candidate on a topic the intent names gets +1 under `more` and -1 under `less`/`different`, one on a
    suggested (related) topic 1, its quality counts only when the intent asked for quality, and the intent holds
    for the rest of its session: an observation that opens a session forgets it."""
    catalog = RecoWorldEnv(TINY_WORLD).catalog
    profile = EpisodeProfile(1, catalog.embedding_dim, catalog=catalog)
    ids = np.array([[int(np.flatnonzero(catalog.topic == t)[0]) for t in range(4)]])  # one item of topics 0..3
    names = catalog.topic_names
    features = catalog.item_features
    obs = {"candidate_ids": ids, "candidate_features": features[ids], "candidate_mask": np.ones((1, 4)),
           "history_reactions": np.full((1, 2), -1), "history_features": np.zeros((1, 2, features.shape[1])),
           "history_ids": np.full((1, 2), -1), "instruction": np.zeros((1, 4 + catalog.embedding_dim), np.float32),
           "context": np.array([[0.0, 0.0, 1.0, 0.0]], np.float32)}

    def columns() -> np.ndarray:
        return user_relative_features(profile.augment(obs), INTENT)[0, : 4 * INTENT.per_candidate].reshape(4, -1)[
            :, N_CANDIDATE_FEATURES:]

    assert not columns()[:, :3].any(), "no intent in force: no membership, no quality"
    profile.update(obs, np.array([0]), intents=[{"kind": "less", "topics": [names[0]], "related": [names[1]]}])
    np.testing.assert_array_equal(columns()[:, :3], [[-1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    profile.update(obs, np.array([0]), intents=[None])  # a turn without an instruction: the intent holds
    np.testing.assert_array_equal(columns()[:, 0], [-1, 0, 0, 0])
    profile.update(obs, np.array([0]), intents=[{"kind": "more", "topics": [names[2]], "related": [],
                                                 "attributes": {"quality": "high"}}])
    quality = features[ids[0], catalog.embedding_dim]
    np.testing.assert_allclose(columns()[:, :3], np.c_[[0, 0, 1, 0], [0, 0, 0, 0], quality], atol=1e-6)
    obs["context"] = np.array([[1.0, 1.0, 0.0, 1.0]], np.float32)  # the next observation opens a session
    profile.update(obs, np.array([0]), intents=[None])
    assert not columns()[:, :3].any(), "the intent is about the session it was given in"


def test_intent_score_column_is_the_instruct_baselines_score() -> None:
    """The last `INTENT` column is what `InstructionAwareRecommender` ranks by (its taste of the last engaged items,
    popularity before any, plus its intent bonus), / 3, turn after turn over whole episodes; the taste column is
    the cosine to its taste vector."""
    from recoworld.agents.baselines import InstructionAwareRecommender

    world = {**TINY_WORLD, "horizon_days": 5}
    env, raw_env = UserRelativeObservation(RecoWorldEnv(world), features=INTENT), RecoWorldEnv(world)
    instruct = InstructionAwareRecommender(2, raw_env.catalog, seed=0)
    intents = 0
    for seed in (3, 4):
        shown, _ = env.reset(seed=seed)
        raw, info = raw_env.reset(seed=seed)
        instruct.begin_episode(seed)
        done = False
        while not done:
            slate = instruct.act(raw, info)
            score = instruct.scores(raw)
            if instruct._intent is not None:
                score = score + instruct.intent_bonus(raw, instruct._intent)
                intents += 1
            rows = _intent_rows(shown, 6)
            np.testing.assert_allclose(rows[:, 4] * 3, score, atol=1e-5)
            taste = instruct.taste(raw)
            if taste is not None:
                cos = raw["candidate_features"][:, :-3] @ (taste / np.linalg.norm(taste))
                np.testing.assert_allclose(rows[:, 3], cos, atol=1e-5)
            shown, *_ = env.step(slate)
            raw, _, terminated, truncated, info = raw_env.step(slate)
            instruct.observe(info["reactions"], info)
            done = terminated or truncated
    assert intents > 0, "no turn had an intent in force: the test did not test it"


def test_batched_features_equal_one_users_features() -> None:
    env = RecoWorldVectorEnv(num_envs=5, **TINY_WORLD)
    obs, _ = env.reset(seed=2)
    rng = np.random.default_rng(1)
    for _ in range(15):
        batch = user_relative_features(obs)
        assert batch.shape == (5, 6 * N_CANDIDATE_FEATURES + N_GLOBAL_FEATURES) and batch.dtype == np.float32
        for i in range(5):
            np.testing.assert_array_equal(batch[i], user_relative_features({k: v[i] for k, v in obs.items()}))
        obs, *_ = env.step(rng.integers(0, 6, (5, 2)))


def test_training_env_creator_builds_the_vector_env_when_rllib_asks_for_num_envs() -> None:
    require("ray")
    from recoworld.rl.training_env import DisjointRunnerSeeds, make_training_env, training_env_config

    env_config = training_env_config(tiny_config(0))
    single = make_training_env(env_config)
    assert isinstance(single, UserRelativeObservation) and isinstance(single.unwrapped, RecoWorldEnv)
    vec = make_training_env({**env_config, "num_envs": 3})
    assert isinstance(vec, UserRelativeVectorObservation) and isinstance(vec.unwrapped, RecoWorldVectorEnv)
    assert vec.num_envs == 3 and vec.single_observation_space == single.observation_space
    # RLlib seeds runner w with seed + w: runners' users must not be each other's shifted by one
    obs, _ = vec.reset(seed=5)
    for i in range(3):
        np.testing.assert_array_equal(obs["observations"][i], single.reset(seed=5 * 3 + i)[0]["observations"])
    assert isinstance(vec.env.env, DisjointRunnerSeeds)


def test_new_day_reward_sums_to_the_days_active_of_each_episode() -> None:
    require("ray")
    from recoworld.rl.training_env import make_training_env, training_env_config

    world = {**TINY_WORLD, "horizon_days": 5}
    env_config = {**training_env_config(tiny_config(0)), "world": world, "day_reward": 2.5}
    plain = make_training_env({**env_config, "day_reward": 0.0, "num_envs": 3})
    shaped = make_training_env({**env_config, "num_envs": 3})
    plain.reset(seed=1)
    shaped.reset(seed=1)
    rng = np.random.default_rng(0)
    extra, episodes = np.zeros(3), 0
    for _ in range(400):
        actions = np.stack([rng.choice(6, 2, replace=False) for _ in range(3)])
        _, r0, *_ = plain.step(actions)
        _, r1, term, trunc, info = shaped.step(actions)
        extra += r1 - r0
        for i in np.flatnonzero(term | trunc):
            assert extra[i] == pytest.approx(2.5 * (info["episode_stats"]["days_active"][i] - 1))
            extra[i], episodes = 0.0, episodes + 1
    assert episodes >= 3


def test_finished_episodes_keeps_each_ended_episodes_training_return_and_turns() -> None:
    """The logged return's source: what the policy was rewarded (day reward included) over each whole episode."""
    require("ray")
    from recoworld.rl.training_env import FinishedEpisodes, make_training_env, training_env_config

    env = make_training_env({**training_env_config(tiny_config(0)), "day_reward": 1.5, "num_envs": 3})
    finished = env.env
    assert isinstance(finished, FinishedEpisodes)
    env.reset(seed=2)
    rng = np.random.default_rng(1)
    total, expected = np.zeros(3), []
    for _ in range(300):
        _, reward, term, trunc, info = env.step(np.stack([rng.choice(6, 2, replace=False) for _ in range(3)]))
        total += reward  # a user's restart step is rewarded 0
        for i in np.flatnonzero(term | trunc):
            expected.append((total[i], int(info["episode_stats"]["turns"][i])))
            total[i] = 0.0
    assert len(expected) >= 3 and len(finished.finished) == len(expected)
    for (ret, turns), (want_ret, want_turns) in zip(finished.finished, expected):
        assert ret == pytest.approx(want_ret) and turns == want_turns


def test_num_envs_per_env_runner_is_validated() -> None:
    from recoworld.rl.train_config import TrainConfig

    assert TrainConfig().num_envs_per_env_runner > 1
    with pytest.raises(ConfigError, match="num_envs_per_env_runner"):
        TrainConfig.load(None, num_envs_per_env_runner=0)
    with pytest.raises(ConfigError, match=r"num_envs_per_env_runner=300 x 2 sampling env runner\(s\) = 600 users"):
        TrainConfig.load(None, num_envs_per_env_runner=300, num_env_runners=2, ppo={"train_batch_size": 500})


def test_wrapper_rejects_other_observation_spaces() -> None:
    with pytest.raises(ConfigError, match="Dict observation"):
        UserRelativeObservation(gym.make("CartPole-v1"))


def test_distinct_slate_prefers_available_candidates_and_never_repeats() -> None:
    logits = np.array([[5.0, 4.0, 0.0, 1.0], [5.0, 4.0, 0.0, 1.0], [5.0, 4.0, 0.0, 1.0]])
    np.testing.assert_array_equal(distinct_slate(logits, np.array([True, True, True, True])), [0, 1, 3])
    np.testing.assert_array_equal(distinct_slate(logits, np.array([False, True, True, True])), [1, 3, 2])
    # fewer available candidates than slots: unavailable ones fill the rest, still distinct
    np.testing.assert_array_equal(distinct_slate(logits, np.array([False, False, True, False])), [2, 0, 1])


def test_compare_reports_paired_advantage_and_gap_closed_and_seeds_summarise() -> None:
    import pandas as pd

    from recoworld.rl.evaluation import compare, format_seed_summary, format_table, seed_summary

    users = [f"u{i}" for i in range(4)]
    retention = {"ppo": [0.5, 0.6, 0.4, 0.5], "random": [0.3, 0.4, 0.3, 0.2], "oracle": [0.7, 0.8, 0.6, 0.7]}
    episodes = pd.DataFrame([{"recommender": name, "user_id": u, "retention": r, "sessions": 3, "churned": False,
                              "total_reward": 1.0} for name, rs in retention.items() for u, r in zip(users, rs)])
    table = compare(episodes).set_index("recommender")
    assert table.loc["random", "ppo_minus_this"] == pytest.approx(0.2)
    assert table.loc["random", "gap_closed"] == pytest.approx(0.0)
    assert table.loc["oracle", "gap_closed"] == pytest.approx(1.0)
    assert table.loc["ppo", "gap_closed"] == pytest.approx(0.2 / 0.4)
    text = format_table(table.reset_index())
    assert "+50%" in text and "reference: reads the hidden mindset" in text
    summary = seed_summary({0: table.reset_index(), 1: table.reset_index()}).set_index("recommender")
    assert summary.loc["random", "ppo_minus_this"] == pytest.approx(0.2)
    assert summary.loc["random", "ppo_minus_this_ci"] == pytest.approx(0.0)
    assert summary.loc["random", "seeds_ci_above_0"] == 2
    assert "2 of 2" in format_seed_summary(summary.reset_index())


def test_train_config_names_the_bad_field() -> None:
    from recoworld.rl.train_config import TrainConfig

    with pytest.raises(ConfigError, match=r"ppo\.lr"):
        TrainConfig.load(None, ppo={"lr": -1})
    with pytest.raises(ConfigError, match="itrations"):
        TrainConfig.load(None, itrations=3)


def test_rllib_prefix_with_a_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no RLlib policy"):
        make_recommender(f"rllib:{tmp_path}", cached_catalog(RecoWorldEnv(TINY_WORLD).config.catalog), 2)


def test_small_config_file_is_valid() -> None:
    from recoworld.rl.train_config import TrainConfig

    cfg = TrainConfig.load(Path(__file__).parents[1] / "configs" / "ppo_small.yaml")
    assert cfg.world.slate_size <= cfg.world.n_candidates
    assert cfg.population == PopulationSpec.default()


# ---------------------------------------------------------------------------- real PPO


@pytest.mark.slow
@pytest.mark.parametrize("runners", [0, 1])
def test_train_save_resume_restore_and_infer(ray_session: ModuleType, tmp_path: Path, runners: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.columns import Columns

    from recoworld.rl.evaluation import POLICY
    from recoworld.rl.training import latest_checkpoint, train

    cfg = tiny_config(runners)
    logged: list[str] = []
    result = train(cfg, tmp_path, log=logged.append)
    # the sampling runners (the driver's, or the one remote runner) step 4 users in one native vector env
    assert cfg.num_envs_per_env_runner == 4
    assert result.envs == [("RecoWorldVectorEnv", 4)]
    assert "sampling: 1 env runner(s), each a RecoWorldVectorEnv of 4 user(s)" in logged
    # progress: the baselines' users, then every iteration with its return window, and retention at each evaluation
    assert "evaluating random: 4/4 users" in logged and "evaluating oracle: 4/4 users" in logged
    iters = [line for line in logged if line.startswith("iter ")]
    assert [line.split()[1] for line in iters] == ["1/2", "1", "2/2", "2"]
    assert f"(last {result.curve['charts/episodes_in_window'].iloc[0]} episodes)" in iters[0]
    assert "retention" in iters[1] and "on 4 evaluation users" in iters[1]
    assert np.isfinite(result.curve[["losses/policy_loss", "losses/vf_loss", "charts/episode_return_mean"]]).all(None)
    # the return is smoothed over every episode finished so far (under 100 here), not over one iteration's
    assert result.curve["charts/episodes"].is_monotonic_increasing
    assert (result.curve["charts/episodes_in_window"] == result.curve["charts/episodes"].clip(upper=100)).all()
    assert list(result.curve["iteration"]) == [1, 2]
    assert result.curve["env_steps"].iloc[-1] >= 2 * cfg.ppo.train_batch_size
    assert result.checkpoint == latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "iter_000002"
    assert list(result.table["recommender"]) == [POLICY, "random", "oracle"]  # the oracle: headroom reference
    assert result.table["users"].tolist() == [4, 4, 4]
    assert {"paired/random", "paired_ci/random", "retention_ci/oracle"} <= set(result.curve.columns)
    assert result.plot.exists() and result.plot.stat().st_size > 0

    # resume: one more iteration continues the same run and its learning curve
    resumed = train(tiny_config(runners, iterations=3), tmp_path, resume=True, log=lambda msg: None)
    assert list(resumed.curve["iteration"]) == [1, 2, 3]
    assert resumed.checkpoint.name == "iter_000003"
    assert resumed.curve["env_steps"].iloc[-1] > result.curve["env_steps"].iloc[-1]

    # restore the whole algorithm, and separately the module as a RecoWorld recommender
    algo = Algorithm.from_checkpoint(str(resumed.checkpoint))
    try:
        assert algo.iteration == 3
        module = algo.get_module()
        agent = make_recommender(f"rllib:{tmp_path}", cached_catalog(RecoWorldEnv(TINY_WORLD).config.catalog), 2)
        assert isinstance(agent, RLlibRecommender) and agent.masked
        env = RecoWorldEnv(TINY_WORLD)
        obs, info = env.reset(seed=7)
        wrapped = UserRelativeObservation(RecoWorldEnv(TINY_WORLD)).observation(obs)

        def logits(m: object) -> np.ndarray:  # the module pops keys from the batch, so build a fresh one
            batch = {Columns.OBS: {k: torch.from_numpy(v)[None] for k, v in wrapped.items()}}
            return m.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0].detach().numpy()

        np.testing.assert_allclose(logits(agent.module), logits(module), atol=1e-6)  # same trained weights
        monkeypatch.chdir(tmp_path.parent)  # `rllib:runs/ppo`, relative to the current folder, as train's hint says
        catalog = cached_catalog(RecoWorldEnv(TINY_WORLD).config.catalog)
        relative = make_recommender(f"rllib:{tmp_path.name}", catalog, 2)
        assert isinstance(relative, RLlibRecommender)
        np.testing.assert_allclose(logits(relative.module), logits(module), atol=1e-6)
        done, turns = False, 0
        while not done:
            slate = agent.act(obs, info)
            assert slate.shape == (2,) and len(set(slate.tolist())) == 2
            assert obs["candidate_mask"][slate].all() or obs["candidate_mask"].sum() < 2
            obs, _, terminated, truncated, info = env.step(slate)
            assert info["duplicates_replaced"] == 0
            done, turns = terminated or truncated, turns + 1
        assert turns > 0
    finally:
        algo.stop()


@pytest.mark.slow
@pytest.mark.parametrize("network", ["shared_scorer", "mlp"])
def test_masked_policy_never_samples_consumed_candidates(ray_session: ModuleType, tmp_path: Path, network: str) -> None:
    import torch
    from ray.rllib.core.columns import Columns

    from recoworld.rl.training import train

    result = train(tiny_config(0, iterations=1, network=network), tmp_path, log=lambda msg: None)
    module = RLlibRecommender.from_checkpoint(result.checkpoint, 2).module
    mask = np.tile(np.array([0, 1, 0, 1, 1, 0], np.float32), 2)
    obs = {"observations": torch.zeros(256, module.observation_space["observations"].shape[0]),
           "action_mask": torch.from_numpy(mask).repeat(256, 1)}
    out = module.forward_exploration({Columns.OBS: obs})
    dist = module.get_exploration_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    actions = dist.sample().numpy()  # (256, slate_size) candidate positions
    assert np.isin(actions, [1, 3, 4]).all()


@pytest.mark.slow
@pytest.mark.parametrize("runners", [0, 1])
def test_same_seed_gives_the_same_training(ray_session: ModuleType, tmp_path: Path, runners: int) -> None:
    """Same config and seed: the same learning curve, bit for bit, and the same final table, whether
    the driver samples or a remote env runner does."""
    import pandas as pd

    from recoworld.rl.training import train

    a = train(tiny_config(runners, iterations=2, seed=3), tmp_path / "a", log=lambda msg: None)
    b = train(tiny_config(runners, iterations=2, seed=3), tmp_path / "b", log=lambda msg: None)
    timing = ["seconds"]
    pd.testing.assert_frame_equal(a.curve.drop(columns=timing), b.curve.drop(columns=timing))
    pd.testing.assert_frame_equal(a.table, b.table)
    c = train(tiny_config(runners, iterations=2, seed=4), tmp_path / "c", log=lambda msg: None)
    assert not np.array_equal(a.curve["losses/policy_loss"], c.curve["losses/policy_loss"])


@pytest.mark.slow
def test_passing_max_minutes_after_an_iteration_is_an_error_that_keeps_it_for_resume(
        ray_session: ModuleType, tmp_path: Path) -> None:
    """The safety stop never ends a run as if finished: it raises, after checkpointing the iteration it reached."""
    import pandas as pd

    from recoworld.rl.evaluation import evaluate_references
    from recoworld.rl.train_config import TrainConfig
    from recoworld.rl.training import TrainingTimeLimit, latest_checkpoint, train

    cfg = TrainConfig.model_validate({**tiny_config(0, iterations=3).model_dump(), "max_minutes": 1e-4,
                                      "eval": {"every": 10, "n_users": 4, "baselines": ["random"]}})
    references = evaluate_references(cfg)  # given, so the first check of the clock is after iteration 1
    with pytest.raises(TrainingTimeLimit, match=r"^max_minutes=0.0001 passed \(.* min\) after PPO iteration 1 of 3; "
                                               r"the last checkpoint, .*iter_000001, is kept"):
        train(cfg, tmp_path, log=lambda msg: None, references=references)
    assert latest_checkpoint(tmp_path).name == "iter_000001"
    assert pd.read_parquet(tmp_path / "curve.parquet")["iteration"].tolist() == [1]
    resumed = train(cfg.model_copy(update={"max_minutes": None}), tmp_path, resume=True, log=lambda msg: None,
                    references=references)
    assert resumed.curve["iteration"].tolist() == [1, 2, 3]


@pytest.mark.slow
def test_cli_train_then_simulate_with_the_policy(ray_session: ModuleType, tmp_path: Path) -> None:
    import yaml

    from recoworld.cli import app

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(0, iterations=1).model_dump(mode="json")))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert "ppo" in trained.output and "random" in trained.output and "training time" in trained.output
    assert re.search(r"^\[\d\d:\d\d:\d\d\] iter +1/1 ", trained.output, re.M), "progress lines carry their time"
    closing, run = trained.output.strip().splitlines()[-1], tmp_path / "run"
    assert closing.startswith(f"outputs: {run} (checkpoints/iter_000001, curve.parquet, evaluation.parquet")
    assert closing.endswith(f"use it: recoworld simulate --agents rllib:{run / 'checkpoints' / 'iter_000001'}")
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump(TINY_WORLD))
    sim = runner.invoke(app, ["simulate", "--config", str(world), "--users", "3", "--out", str(tmp_path / "sim"),
                              "--agents", f"random,rllib:{tmp_path / 'run'}"])
    assert sim.exit_code == 0, sim.output
    assert (tmp_path / "sim" / "summary.csv").exists()
    bad = runner.invoke(app, ["train", "--config", str(world), "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "slate_size" in bad.output



def test_distinct_slate_draws_each_slate_without_repeats_and_its_argmax_is_the_evaluation_decode() -> None:
    """`DistinctSlate` (ppo.slate: distinct): slot by slot without the candidates already drawn; its
    log-probabilities sum to 1 over all slates of distinct candidates, and its deterministic slate is
    `distinct_slate`'s, what `RLlibRecommender` shows in evaluation."""
    import itertools

    torch = require("torch")
    from recoworld.rl.rl_module import DistinctSlate

    torch.manual_seed(0)
    k, c = 3, 4
    logits = torch.randn(6, k * c)
    dist = DistinctSlate.from_logits(logits, input_lens=[c] * k)
    for _ in range(20):
        drawn = dist.sample()
        assert all(len(set(row.tolist())) == k for row in drawn)
    total = sum(dist.logp(torch.tensor([slate] * 6)).exp() for slate in itertools.permutations(range(c), k))
    np.testing.assert_allclose(total.numpy(), 1.0, rtol=1e-5)
    greedy = dist.to_deterministic().loc
    for row in range(6):
        expected = distinct_slate(logits[row].numpy().reshape(k, c), np.ones(c, dtype=bool))
        assert greedy[row].tolist() == expected.tolist()
