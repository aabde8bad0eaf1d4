"""Instruction channels (what a recommender is told) and instruction following measured three ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recoworld.agents.baselines import GreedyRelevanceRecommender, InstructionAwareRecommender
from recoworld.catalog import Catalog
from recoworld.catalog.text_space import instruction_text_space
from recoworld.config import WorldConfig, build
from recoworld.envs import RecoWorldEnv, RecoWorldVectorEnv
from recoworld.errors import ConfigError
from recoworld.evaluation.judge import JudgeVerdict, judge_frame, judge_table
from recoworld.evaluation.metrics import summarize
from recoworld.evaluation.simulation import SimulationConfig, run_episode, simulate
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.scripted import ScriptedBackend, scripted_config
from recoworld.mindset import Instruction, Intent
from recoworld.simulators.scripted import Script, ScriptedUsers

WORLD: dict[str, Any] = {"slate_size": 5, "n_candidates": 30, "horizon_days": 5}


def _topic(catalog: Catalog) -> str:
    """The most common topic: a "more X" instruction can always be answered."""
    return catalog.topic_names[int(np.bincount(catalog.topic).argmax())]


def _asking(catalog: Catalog, channel: str, topic: str, **world: Any) -> RecoWorldEnv:
    """A user who asks for more `topic` on turn 1 and leaves after three turns."""
    said = Instruction(text=f"None of this is really me. Show me more {topic}.",
                       intent=Intent(kind="more", topics=[topic]))
    script = Script(instruct_on_turns={1: said}, leave_after_turns=3, return_gaps=[0.5])
    return RecoWorldEnv({**WORLD, "instruction_channel": channel, **world}, catalog=catalog,
                        user_simulator=ScriptedUsers(catalog, script))


def _centroid(catalog: Catalog, topic: str) -> np.ndarray:
    c = catalog.embeddings[catalog.topic == catalog.topic_index(topic)].mean(axis=0)
    return c / np.linalg.norm(c)


@pytest.mark.parametrize("channel", ["structured", "text", "none"])
def test_what_each_channel_tells_the_recommender(catalog: Catalog, channel: str) -> None:
    topic = _topic(catalog)
    env = _asking(catalog, channel, topic)
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.arange(5))
    said = f"None of this is really me. Show me more {topic}."
    vec = obs["instruction"]
    # The truth is always logged, for trajectories and metrics, whatever the recommender was told.
    assert info["logged_instruction"] == said
    assert info["logged_intent"]["kind"] == "more" and info["logged_intent"]["topics"] == [topic]
    if channel == "structured":
        assert info["instruction"] == said and info["instruction_intent"]["topics"] == [topic]
        assert vec[:4].tolist() == [1.0, 1.0, 0.0, 0.0]
    elif channel == "text":
        assert info["instruction"] == said and info["instruction_intent"] == {}
        assert vec[:4].tolist() == [1.0, 0.0, 0.0, 0.0]
        assert np.linalg.norm(vec[4:]) == pytest.approx(1.0, abs=1e-5)
        assert env.observation_space.contains(obs)
    else:
        assert info["instruction"] is None and info["instruction_intent"] == {}
        assert not vec.any()
    # The world answers the true instruction in every channel: retrieval and the measures are the same.
    obs, _, _, _, info = env.step(np.arange(5))
    assert (catalog.topic[obs["candidate_ids"][:6]] == catalog.topic_index(topic)).all()
    assert info["instruction_followed"] is not None and info["instruction_similarity"] is not None


def test_the_text_direction_points_at_the_asked_topic(catalog: Catalog) -> None:
    env = _asking(catalog, "text", _topic(catalog))
    env.reset(seed=0)
    obs, *_ = env.step(np.arange(5))
    direction = obs["instruction"][4:]
    present = np.unique(catalog.topic)
    centroids = {catalog.topic_names[t]: _centroid(catalog, catalog.topic_names[t]) for t in present}
    sims = {t: float(direction @ c) for t, c in centroids.items()}
    assert max(sims, key=sims.get) == _topic(catalog)
    assert sims[_topic(catalog)] > 0.5
    # Every "more X" instruction points closest to X's centroid among the topics.
    space = instruction_text_space(catalog)
    names = list(centroids)
    directions = space.encode([f"Show me more {t} please." for t in names])
    matrix = directions @ np.stack([centroids[t] for t in names]).T
    assert (matrix.argmax(axis=1) == np.arange(len(names))).mean() >= 0.9
    assert instruction_text_space(catalog) is space  # fit once per catalog
    assert not space.encode(["zzzz qqqq"]).any()  # no known word: no direction


def test_vector_env_follows_the_channel(catalog: Catalog) -> None:
    said = Instruction(text="more cooking", intent=Intent(kind="more", topics=[_topic(catalog)]))
    env = RecoWorldVectorEnv(2, {**WORLD, "instruction_channel": "none"}, catalog=catalog)
    env.reset(seed=0)
    env.world.listen(np.array([0]), [said])
    assert not env.world.observe()["instruction"].any()
    assert env.world.asked.active[0] and env.world.asked_text[0].any()


def test_bad_values_name_the_field() -> None:
    for field, value in (("instruction_channel", "telepathy"), ("instruction_encoder", "word2vec")):
        with pytest.raises(ConfigError, match=field):
            build(WorldConfig, "RecoWorld config", **{field: value})
        with pytest.raises(ConfigError, match=field):
            RecoWorldEnv(**{field: value})


class _Spy(GreedyRelevanceRecommender):
    """Greedy, keeping what it was told each turn: (observation instruction, info text, info intent)."""

    def __init__(self, slate_size: int, seed: int | None = None) -> None:
        super().__init__(slate_size, seed)
        self.seen: list[Any] = []

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        self.seen.append((observation["instruction"].copy(), info.get("instruction"), info.get("instruction_intent")))
        return super().act(observation, info)


def test_none_hides_everything_but_trajectories_keep_the_instruction(catalog: Catalog) -> None:
    topic = _topic(catalog)
    logs = {}
    for channel in ("structured", "none"):
        env = _asking(catalog, channel, topic)
        log = TrajectoryLog(catalog, channel)
        env.reset(seed=1)  # draws the user
        spy = _Spy(5, seed=0)
        run_episode(env, spy, env.profile, 1, log)
        logs[channel] = log.frame().drop_duplicates("step")
        if channel == "none":
            assert all(not vec.any() and text is None and not intent for vec, text, intent in spy.seen)
    for frame in logs.values():
        assert frame["instruction"].notna().sum() >= 1
        assert frame["intent"].dropna().str.contains(topic).all()
    assert logs["none"]["instruction"].tolist() == logs["structured"]["instruction"].tolist()
    assert logs["none"]["intent_match"].notna().sum() >= 1


def test_instruct_reads_the_text_direction_and_ignores_nothing(catalog: Catalog) -> None:
    """Over six users: the parsed intent is followed exactly; the text's direction alone is followed
    on most of the slate, on every user more than with nothing told (text reads words, not intent)."""
    topic = _topic(catalog)
    followed: dict[str, list[float]] = {"structured": [], "text": [], "none": []}
    for seed in range(6):
        for channel, shares in followed.items():
            env = _asking(catalog, channel, topic)
            agent = InstructionAwareRecommender(5, catalog, seed=0)
            obs, info = env.reset(seed=seed)
            agent.begin_episode(0)
            obs, _, _, _, info = env.step(agent.act(obs, info))
            agent.observe(info["reactions"], info)
            obs, _, _, _, info = env.step(agent.act(obs, info))
            shares.append(info["instruction_followed"])
    assert followed["structured"] == [1.0] * 6
    assert np.mean(followed["text"]) >= 0.75
    assert all(text > none for text, none in zip(followed["text"], followed["none"]))
    greedy_env = _asking(catalog, "none", topic)
    obs, info = greedy_env.reset(seed=0)
    greedy = GreedyRelevanceRecommender(5, seed=0)
    obs, *_ = greedy_env.step(greedy.act(obs, info))
    *_, info = greedy_env.step(greedy.act(obs, {}))
    assert followed["none"][0] == info["instruction_followed"]  # told nothing, it is plain greedy


def test_embedding_similarity_is_higher_for_an_on_topic_slate(catalog: Catalog) -> None:
    topic = _topic(catalog)
    sims = {}
    for on_topic in (True, False):
        env = _asking(catalog, "structured", topic)
        env.reset(seed=0)
        obs, *_ = env.step(np.arange(5))
        match = catalog.topic[obs["candidate_ids"]] == catalog.topic_index(topic)
        picks = np.flatnonzero(match if on_topic else ~match)[:5]
        assert len(picks) == 5
        *_, info = env.step(picks)
        sims[on_topic] = info["instruction_similarity"]
        assert info["instruction_followed"] == (1.0 if on_topic else 0.0)
    assert sims[True] > sims[False] + 0.2


def _judged_run(catalog: Catalog) -> Any:
    topic = _topic(catalog)
    env = _asking(catalog, "structured", topic)
    log = TrajectoryLog(catalog, "greedy")
    env.reset(seed=0)
    run_episode(env, GreedyRelevanceRecommender(5, seed=0), env.profile, 0, log)
    return log


def test_llm_judge_scores_turns_under_an_instruction_and_is_cached(catalog: Catalog, tmp_path: Path) -> None:
    log = _judged_run(catalog)
    config = scripted_config(cache="write", cache_path=tmp_path / "judge.sqlite")
    backend = ScriptedBackend(lambda request: JudgeVerdict(score=0.75, reason="mostly on topic"), config)
    frame = judge_frame(log.frame(), catalog, backend)
    turns = frame.drop_duplicates("step").set_index("step")
    under = turns["intent_match"].notna()
    assert under.sum() >= 1
    assert (turns.loc[under, "instruction_judge"] == 0.75).all()
    assert turns.loc[~under, "instruction_judge"].isna().all()
    assert (turns.loc[under, "instruction_judge_reason"] == "mostly on topic").all()
    calls = len(backend.requests)
    assert calls >= 1
    request = backend.requests[0].messages[-1]["content"]
    assert f"Show me more {_topic(catalog)}" in request and "Items shown:" in request
    # Judging again costs no model call: every verdict comes from the cache.
    again = ScriptedBackend(lambda request: JudgeVerdict(score=0.0, reason="never asked"), config)
    table = judge_table(log.table(), catalog, again)
    assert len(again.requests) == 0 and again.usage.cache_hits == calls
    assert table.schema == log.table().schema
    judged = table.to_pandas().drop_duplicates("step")
    assert (judged["instruction_judge"].dropna() == 0.75).all()


def test_judge_failures_leave_a_null_score_with_the_reason(catalog: Catalog) -> None:
    log = _judged_run(catalog)
    backend = ScriptedBackend(lambda request: "not json", scripted_config(max_retries=0, repair=False,
                                                                          max_fallback_rate=1.0))
    turns = judge_frame(log.frame(), catalog, backend).drop_duplicates("step")
    under = turns["intent_match"].notna()
    assert turns.loc[under, "instruction_judge"].isna().all()
    assert turns.loc[under, "instruction_judge_reason"].str.startswith("judge failed").all()


def test_summary_and_simulate_report_all_three(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    from recoworld.llm import backend as backend_module

    judge = scripted_config(model="judge-model")
    scripted = ScriptedBackend(lambda request: JudgeVerdict(score=0.5, reason="half"), judge)
    monkeypatch.setitem(backend_module._SHARED, judge, scripted)
    cfg = SimulationConfig(n_users=6, agents=["instruct"], judge=judge,
                           world=WorldConfig(**{**WORLD, "n_candidates": 50}, instruction_channel="text",
                                             dynamics={"instruction_level": 0.6, "instruction_cooldown": 1}))
    result = simulate(cfg, catalog=catalog)
    row = result.summary.iloc[0]
    assert row["instruction_rate"] > 0
    for measure in ("instruction_following", "instruction_similarity"):
        assert np.isfinite(row[measure])
    assert row["instruction_judge"] == pytest.approx(0.5)
    assert len(scripted.requests) >= 1
    plain = summarize(result.trajectories.assign(instruction_judge=np.nan), result.episodes).iloc[0]
    assert np.isnan(plain["instruction_judge"])


def test_a_turns_similarity_read_later_is_that_of_the_turn(catalog: Catalog) -> None:
    """`StepBatch.similarity` is worked out when read: it is still the turn's, after later turns change the
    instructions in force and the slates handed out are written over."""
    env = RecoWorldVectorEnv(16, WORLD, catalog=catalog)
    env.reset(seed=0)
    world, rng = env.world, np.random.default_rng(0)
    batches, expected = [], []
    for _ in range(12):
        actions = np.stack([rng.permutation(30)[:5] for _ in range(16)])
        slates = np.take_along_axis(world.candidates, actions, axis=1)
        active, text = world.asked.active.copy(), world.asked_text.astype(np.float64)
        emb = catalog.embeddings[slates].astype(np.float64)
        expected.append(np.where(active, np.einsum("akd,ad->a", emb, text) / 5, np.nan))
        batches.append(world.step(actions))
        batches[-1].slates[:] = 0
    assert any(np.isfinite(e).any() for e in expected) and any(np.isnan(e).any() for e in expected)
    for batch, want in zip(batches, expected):
        assert np.array_equal(batch.similarity, want, equal_nan=True)
