"""Richer reactions (issue 14 point 5): dislike, exit reasons and the end-of-session interview."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recoworld.catalog import Catalog
from recoworld.config import DynamicsConfig, WorldConfig
from recoworld.envs import RecoWorldEnv, RecoWorldVectorEnv
from recoworld.errors import ConfigError
from recoworld.evaluation.metrics import summarize
from recoworld.evaluation.trajectory import TrajectoryLog
from recoworld.llm.backend import Request
from recoworld.llm.scripted import ScriptedBackend, scripted_config
from recoworld.mindset import EXIT_REASONS, UNSEEN, ReactionType, interview_score
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.simulators.llm_user import LLMUsers
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.prompts import SESSION_END_SCHEMA, SessionEnd, TurnDecision, turn_schema
from recoworld.simulators.scripted import Script, ScriptedUsers
from recoworld.streams import UserStreams

WORLD: dict[str, Any] = {"slate_size": 5, "n_candidates": 30, "horizon_days": 4, "catalog": {"n_items": 500, "seed": 3}}


def _catalog() -> Catalog:
    return RecoWorldEnv(WORLD).catalog


def _profiles(catalog: Catalog, n: int, **update: Any) -> list[UserProfile]:
    found = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(1), n=n)
    return [p.model_copy(update=update) for p in found]


def _worst_slates(catalog: Catalog, users: ParametricUsers, k: int) -> np.ndarray:
    """Per user, the k items least relevant to their interests among the lowest-quality half."""
    low = np.flatnonzero(catalog.quality <= np.median(catalog.quality))
    rel = users.interests @ catalog.embeddings[low].T.astype(np.float64)
    return low[np.argsort(rel, axis=1)[:, :k]]


def _review_bad(dynamics: DynamicsConfig, n: int = 32) -> tuple[ParametricUsers, Any]:
    catalog = _catalog()
    users = ParametricUsers(catalog, dynamics=dynamics)
    users.reset(_profiles(catalog, n, patience=50, time_budget_min=500.0))
    streams = UserStreams([np.random.default_rng(i) for i in range(n)])
    users.start_sessions(np.arange(n), np.zeros(n), streams)
    return users, users.review(_worst_slates(catalog, users, 5), streams)


def test_parametric_users_dislike_clearly_bad_items_and_it_hurts_more_than_a_skip() -> None:
    users, fb = _review_bad(DynamicsConfig())
    never, fb_never = _review_bad(DynamicsConfig(dislike_margin=1e6))
    assert fb.disliked is not None and fb.disliked.any()
    assert not fb_never.disliked.any()
    # A dislike is a skip plus the flag, never a reaction level: every `>= 1` click test stays right.
    assert (fb.reactions[fb.disliked] == ReactionType.SKIP).all()
    assert not (fb.disliked & (fb.reactions == UNSEEN)).any()
    # Same draws either way (no extra randomness), so the reactions agree and only the dislikes differ.
    assert (fb.reactions == fb_never.reactions).all()
    some = fb.disliked.any(axis=1)
    assert (users.satisfaction[some] < never.satisfaction[some]).all()
    assert np.array_equal(users.satisfaction[~some], never.satisfaction[~some])
    # ... and interests move away from the disliked items.
    emb = users.catalog.embeddings.astype(np.float64)
    slates = _worst_slates(users.catalog, never, 5)
    row = int(np.flatnonzero(some)[0])
    item = int(slates[row][fb.disliked[row]][0])
    assert users.interests[row] @ emb[item] < never.interests[row] @ emb[item]
    assert "disliked" in users.mindset(row).model_dump()["memory"][-1]


def test_the_default_dislike_rate_is_a_few_percent_of_impressions() -> None:
    env = RecoWorldVectorEnv(8, {"horizon_days": 5})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    reviewed = disliked = 0
    for _ in range(120):
        _, _, _, _, info = env.step(np.stack([rng.choice(50, 10, replace=False) for _ in range(8)]))
        mask = info["_reactions"]
        reviewed += int((info["reactions"][mask] >= 0).sum())
        disliked += int(info["disliked"][mask].sum())
    assert 0.005 < disliked / reviewed < 0.10


def test_exit_reasons_match_what_made_the_user_leave() -> None:
    catalog = _catalog()
    users = ParametricUsers(catalog)
    n = 6
    users.reset(_profiles(catalog, n, time_budget_min=0.1, patience=50))
    streams = UserStreams([np.random.default_rng(i) for i in range(n)])
    users.start_sessions(np.arange(n), np.zeros(n), streams)
    fb = users.review(np.tile(np.arange(10), (n, 1)), streams)
    assert fb.left.all()
    assert [e.kind for e in fb.exit_reasons] == ["out_of_time"] * n
    # Patience of 1 and plenty of time: bored (or repetitive), never out of time.
    users.reset(_profiles(catalog, n, time_budget_min=500.0, patience=1))
    users.start_sessions(np.arange(n), np.zeros(n), streams)
    fb = users.review(_worst_slates(catalog, users, 10), streams)
    assert fb.left.all()
    assert {e.kind for e in fb.exit_reasons} <= {"bored", "repetitive", "irrelevant"}
    assert all(e.text for e in fb.exit_reasons)
    # Users who stay give no reason.
    users.reset(_profiles(catalog, n, time_budget_min=500.0, patience=50))
    users.start_sessions(np.arange(n), np.zeros(n), streams)
    fb = users.review(np.tile(np.arange(2), (n, 1)), streams)
    assert all(e is None for e, gone in zip(fb.exit_reasons, fb.left) if not gone)


def test_the_interview_score_tracks_satisfaction() -> None:
    assert [interview_score(s) for s in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)] == [1, 1, 2, 3, 4, 5, 5]
    catalog = _catalog()
    users = ParametricUsers(catalog)
    users.reset(_profiles(catalog, 5))
    users.satisfaction[:] = [0.05, 0.3, 0.5, 0.7, 0.95]
    answers = [users.interview(r) for r in range(5)]
    assert [a.score for a in answers] == [1, 2, 3, 4, 5]
    assert all(a.text for a in answers)


def test_env_info_trajectory_and_summary_carry_the_new_fields() -> None:
    env = RecoWorldEnv({**WORLD, "expose_mindset": True})
    log = TrajectoryLog(env.catalog, "random")
    rng = np.random.default_rng(0)
    env.reset(seed=1)
    ended, banded = 0, False
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step(rng.choice(30, 5, replace=False))
        assert env.last_batch is not None and float(env.last_batch.reward[0]) == reward
        log.add_step(env.world, env.last_batch, 1, [None], env.last_searched)
        assert info["disliked"].shape == (5,) and info["disliked"].dtype == bool
        if info["left"]:
            ended += 1
            assert info["exit_reason"] in EXIT_REASONS and info["exit_text"]
            assert 1 <= info["interview_score"] <= 5 and info["interview"]
            if terminated:  # no next session opened: the mindset is still the one the session ended on
                assert info["interview_score"] == interview_score(info["mindset"]["satisfaction"])
                banded = True
        else:
            assert "exit_reason" not in info and "interview_score" not in info
        if terminated or truncated:
            break
    assert ended and banded
    traj = log.frame()
    for column in ("disliked", "exit_reason", "exit_text", "interview_score", "interview"):
        assert column in traj
    left = traj.drop_duplicates("step")
    assert left["exit_reason"].notna().sum() == ended == left["interview_score"].notna().sum()
    episodes = pd.DataFrame({"recommender": ["random"], "retention": [0.5], "sessions": [2.0], "churned": [False],
                             "total_reward": [1.0]})
    row = summarize(traj, episodes).iloc[0]
    reviewed = traj[traj["reaction"] >= 0]
    assert row["dislike_rate"] == pytest.approx(reviewed["disliked"].mean())
    assert sum(row[f"exit_{r}"] for r in EXIT_REASONS) == pytest.approx(1.0)
    assert 1 <= row["interview_score"] <= 5


def test_the_dislike_reward_weight_counts_dislikes_and_bad_values_name_the_field() -> None:
    plain, costly = RecoWorldEnv(WORLD), RecoWorldEnv({**WORLD, "reward": {"dislike": -1.0}})
    plain.reset(seed=3)
    costly.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(60):
        action = rng.choice(30, 5, replace=False)
        _, r1, t1, u1, i1 = plain.step(action)
        r2 = costly.step(action)[1]
        assert r2 == pytest.approx(r1 - i1["disliked"].sum())
        if t1 or u1:
            break
    for bad in (1.0, float("nan"), "lots"):
        with pytest.raises(ConfigError, match=r"reward\.dislike"):
            RecoWorldEnv({**WORLD, "reward": {"dislike": bad}})
    with pytest.raises(ConfigError, match=r"dynamics\.dislike_margin"):
        RecoWorldEnv({**WORLD, "dynamics": {"dislike_margin": 0}})


def test_scripted_users_script_dislikes_exit_reasons_and_interviews() -> None:
    catalog = _catalog()
    users = ScriptedUsers(catalog, Script(reactions=[[1, 1, 1]], dislike_on_turns={1: [1], 2: [0, 2]},
                                          leave_after_turns=2, exit_reason="repetitive", interview_score=2,
                                          interview="Too samey."))
    users.reset(_profiles(catalog, 1))
    streams = UserStreams([np.random.default_rng(0)])
    users.start_sessions(np.zeros(1, dtype=np.int64), np.zeros(1), streams)
    first = users.review(np.array([[1, 2, 3]]), streams)
    assert first.disliked.tolist() == [[False, True, False]] and first.reactions.tolist() == [[1, 0, 1]]
    assert first.exit_reasons == [None]
    second = users.review(np.array([[4, 5, 6]]), streams)
    assert second.disliked.tolist() == [[True, False, True]] and second.left.tolist() == [True]
    assert second.exit_reasons[0].kind == "repetitive"
    assert users.interview(0).model_dump() == {"score": 2, "text": "Too samey."}
    with pytest.raises(ConfigError, match="exit_reason"):
        Script(exit_reason="angry")
    with pytest.raises(ConfigError, match="interview_score"):
        Script(interview_score=6)
    with pytest.raises(ConfigError, match="dislike_on_turns"):
        Script(dislike_on_turns={0: [1]})


def test_llm_decision_schemas_accept_and_validate_dislike_and_exit_reasons() -> None:
    schema = turn_schema([3, 4], ["news"])
    assert "dislike" in schema["properties"]["reactions"]["prefixItems"][0]["properties"]["reaction"]["enum"]
    leaving = [b for b in schema["anyOf"] if b["properties"]["leave"].get("const") is True]
    assert leaving and all({"exit_reason", "exit_text"} <= set(b["required"]) for b in leaving)
    assert "rating" in SESSION_END_SCHEMA["required"]
    ok = TurnDecision.model_validate({"reactions": [{"item": 3, "reaction": "dislike", "dwell_min": 0}],
                                      "satisfaction": 0.2, "fatigue": 0.1, "leave": True,
                                      "exit_reason": "irrelevant", "exit_text": "not my thing"})
    assert ok.reactions[0].reaction == "dislike" and ok.exit_reason == "irrelevant"
    with pytest.raises(ValidationError):
        TurnDecision.model_validate({"reactions": [], "satisfaction": 0.2, "fatigue": 0.1, "exit_reason": "angry"})
    with pytest.raises(ValidationError):
        TurnDecision.model_validate({"reactions": [{"item": 3, "reaction": "hate", "dwell_min": 0}],
                                     "satisfaction": 0.2, "fatigue": 0.1})
    assert SessionEnd.model_validate({"summary": "s", "come_back": True, "return_in_days": 1, "rating": 9}).rating == 5


def test_llm_users_dislike_say_why_they_leave_and_answer_the_interview(tmp_path: Path) -> None:
    catalog = _catalog()
    cfg = WorldConfig(slate_size=3, n_candidates=10, catalog={"n_items": len(catalog), "seed": 3},
                      user_backend="llm", llm=scripted_config(cache_path=tmp_path / "unused.sqlite", max_retries=0,
                                                              repair=False, max_fallback_rate=1.0))

    def answer(request: Request) -> Any:
        if request.name == "SessionEnd":
            return {"summary": "Not for me today.", "come_back": True, "return_in_days": 1.0, "rating": 2}
        items = [p["properties"]["item"]["const"]
                 for p in request.json_schema["properties"]["reactions"]["prefixItems"]]
        return {"reactions": [{"item": i, "reaction": r, "dwell_min": 1.0, "reason": "meh"}
                              for i, r in zip(items, ["dislike", "click", "skip"])],
                "satisfaction": 0.2, "fatigue": 0.3, "feeling": "meh", "disengaging": False, "instruction": None,
                "leave": True, "exit_reason": "irrelevant", "exit_text": "Nothing I care about."}

    users = LLMUsers(catalog, cfg, 1, ScriptedBackend(answer))
    users.reset(_profiles(catalog, 1))
    streams = UserStreams([np.random.default_rng(0)])
    users.start_sessions(np.zeros(1, dtype=np.int64), np.zeros(1), streams)
    fb = users.review(np.array([[5, 6, 7]]), streams)
    assert fb.fallback is not None and not fb.fallback.any()
    assert fb.reactions.tolist() == [[0, 1, 0]] and fb.disliked.tolist() == [[True, False, False]]
    assert fb.left.tolist() == [True]
    assert fb.exit_reasons[0].model_dump() == {"kind": "irrelevant", "text": "Nothing I care about."}
    memory = users.mindset(0).memory
    assert memory[-3].disliked and memory[-3].reaction == "skip"
    users.end_sessions(np.zeros(1, dtype=np.int64), np.array([0.1]), streams)
    assert users.interview(0).model_dump() == {"score": 2, "text": "Not for me today."}
