"""Item-by-item LLM review (`llm.review_mode: item`, issue 14 point 4), against the scripted backend:
one call per reviewed item, no look-ahead, the mindset carried from item to item, fallback, concurrency."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.llm import LLMConfig
from recoworld.llm.backend import Request
from recoworld.llm.scripted import ScriptedBackend, scripted_config
from recoworld.mindset import UNSEEN, ReactionType
from recoworld.population import PopulationSpec, UserProfile, sample_population
from recoworld.simulators.llm_user import LLMUser, LLMUsers
from recoworld.simulators.prompts import REACTIONS, data
from recoworld.streams import UserStreams

K = 5
SLATE = np.array([11, 42, 97, 230, 404])
_POSITION = re.compile(r"THE FEED NOW \(item (\d+) of (\d+)\)")


def item_world(catalog: Catalog, tmp_path: Path, mode: str = "item", **llm: Any) -> WorldConfig:
    base: dict[str, Any] = dict(cache_path=tmp_path / "unused.sqlite", max_retries=0, repair=False,
                                concurrency=4, max_fallback_rate=1.0, review_mode=mode, reasons=True)
    return WorldConfig(slate_size=K, n_candidates=10, catalog={"n_items": len(catalog), "seed": 3},
                       user_backend="llm", llm=scripted_config(**{**base, **llm}))


def position(request: Request) -> int:
    """0-based position of the item a request asks about (from the prompt's "item k of K")."""
    found = _POSITION.search(request.messages[1]["content"])
    assert found is not None, "an item request names its position"
    return int(found.group(1)) - 1


def by_position(leave_at: int | None = None, fail_at: int | None = None) -> Callable[[Request], Any]:
    """A model whose satisfaction and feeling after item k say k, that leaves at `leave_at` and gives
    no JSON at `fail_at`; session ends come back tomorrow."""

    def answer(request: Request) -> Any:
        if request.name == "SessionEnd":
            return {"summary": "fine", "come_back": True, "return_in_days": 1.0}
        assert request.name == "ItemDecision"
        k = position(request)
        if k == fail_at:
            return "no JSON here"
        reply = {"item": request.json_schema["properties"]["item"]["const"], "reaction": "like", "dwell_min": 1.0,
                 "reason": f"reason {k}", "satisfaction": 0.1 * (k + 1), "fatigue": 0.05 * (k + 1),
                 "feeling": f"feeling after item {k}", "leave": k == leave_at}
        if "instruction" in request.json_schema["properties"]:
            reply["instruction"] = {"text": "more history please", "kind": "more", "topics": ["history"]}
        return reply

    return answer


def one_user(catalog: Catalog, cfg: WorldConfig, backend: ScriptedBackend, seed: int = 0) -> LLMUsers:
    users = LLMUsers(catalog, cfg, 1, backend)
    users.reset(profiles(catalog, 1))
    users.start_sessions(np.zeros(1, dtype=np.int64), np.zeros(1), streams([seed]))
    return users


def profiles(catalog: Catalog, n: int) -> list[UserProfile]:
    return sample_population(PopulationSpec.default(), catalog, np.random.default_rng(1), n=n)


def streams(seeds: list[int]) -> UserStreams:
    return UserStreams([np.random.default_rng(s) for s in seeds])


def test_review_mode_is_validated_and_slate_by_default(catalog: Catalog) -> None:
    assert LLMConfig().review_mode == "slate"
    assert LLMConfig(review_mode="item").review_mode == "item"
    with pytest.raises(ValidationError, match="review_mode"):
        LLMConfig(review_mode="page")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="review_mode"):
        WorldConfig(user_backend="llm", llm={"review_mode": "items"})
    with pytest.raises(ValueError, match="review_mode"):
        LLMUser(catalog, ScriptedBackend([]), None, review_mode="page")  # type: ignore[arg-type]


def test_one_call_per_item_until_the_user_leaves(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    backend = ScriptedBackend(by_position(leave_at=2), cfg.llm)
    users = one_user(catalog, cfg, backend)
    fb = users.review(SLATE[None, :], streams([0]))
    assert len(backend.requests) == 3 and all(r.name == "ItemDecision" for r in backend.requests)
    assert fb.left.tolist() == [True] and not fb.fallback[0]
    assert fb.reactions[0].tolist() == [ReactionType.LIKE] * 3 + [UNSEEN] * 2, "after leaving: unseen"
    assert fb.dwell_min[0, 3:].tolist() == [0.0, 0.0]
    assert fb.reasons == [["reason 0", "reason 1", "reason 2"]]
    assert fb.instructions == [None], "a user who leaves gives no instruction"
    assert users.stats["llm_turns"] == 1 and users.stats["llm_item_decisions"] == 3
    assert backend.usage.requests == 3, "each item call is an ordinary, accounted backend call"
    assert users.mindset(0).satisfaction == pytest.approx(0.3)


def test_call_k_never_sees_later_items(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    backend = ScriptedBackend(by_position(), cfg.llm)
    fb = one_user(catalog, cfg, backend).review(SLATE[None, :], streams([0]))
    assert len(backend.requests) == K and not fb.left[0]
    for k, request in enumerate(backend.requests):
        text = "\n".join(m["content"] for m in request.messages)
        assert position(request) == k and f'<item id="{SLATE[k]}"' in text
        for later in SLATE[k + 1:].tolist():
            assert f'id="{later}"' not in text, f"call {k} mentions later item {later}"
            assert data(catalog.titles[later], 80) not in text, f"call {k} shows the title of later item {later}"
            assert str(later) not in str(request.json_schema)
        for earlier in SLATE[:k].tolist():
            assert f'<item id="{earlier}"' in text, "earlier items of the feed are in the memory"
        # Only the last item's schema lets the user give an instruction.
        assert ("instruction" in request.json_schema["properties"]) == (k == K - 1)
    assert fb.instructions[0] is not None and fb.instructions[0].intent.topics == ["history"]


def test_call_k_sees_the_mindset_left_by_item_k_minus_1(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    backend = ScriptedBackend(by_position(), cfg.llm)
    one_user(catalog, cfg, backend).review(SLATE[None, :], streams([0]))
    prompts = [r.messages[1]["content"] for r in backend.requests]
    first_line = re.compile(r"satisfaction [0-9.]+ \(0 = fed up")
    assert "feeling after item" not in prompts[0]
    for k in range(1, K):
        assert f"feeling after item {k - 1}" in prompts[k]
        assert f"satisfaction {0.1 * k:.2f} (0 = fed up" in prompts[k]
        assert f"fatigue {0.05 * k:.2f} (0 = fresh" in prompts[k]
        assert re.search(rf'<item id="{SLATE[k - 1]}" topic="[^"]*">[^<]*</item> like, 1\.0 min', prompts[k])
        assert first_line.search(prompts[k]).group(0) != first_line.search(prompts[k - 1]).group(0)  # type: ignore[union-attr]


def test_a_failed_item_call_hands_the_rest_to_the_parametric_user(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    backend = ScriptedBackend(by_position(fail_at=2), cfg.llm)
    users = one_user(catalog, cfg, backend)
    fb = users.review(SLATE[None, :], streams([0]))
    assert len(backend.requests) == 3, "no model call after the failed one"
    assert fb.fallback.tolist() == [True]
    assert fb.reactions[0, :2].tolist() == [ReactionType.LIKE] * 2, "the model's decisions before it stand"
    assert fb.reactions[0, 2] != UNSEEN, "the parametric user reviewed the item whose call failed"
    assert fb.reasons == [["reason 0", "reason 1"]]
    assert users.stats["fallback_turns"] == 1 and users.stats["fallback_invalid_output"] == 1
    assert users.stats["llm_turns"] == 0 and users.stats["llm_item_decisions"] == 2
    assert users.users[0].fallback.turn[0] == 1, "the turn is counted once"
    # A failure on the first item is a whole parametric turn, as in slate mode.
    first = ScriptedBackend(by_position(fail_at=0), cfg.llm)
    fb = one_user(catalog, cfg, first).review(SLATE[None, :], streams([0]))
    assert len(first.requests) == 1 and fb.fallback[0] and fb.reasons == [[]]


def test_slate_mode_is_unchanged(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path, mode="slate")

    def turn(request: Request) -> dict[str, Any]:
        slots = request.json_schema["properties"]["reactions"]["prefixItems"]
        items = [r["properties"]["item"]["const"] for r in slots]
        return {"reactions": [{"item": i, "reaction": "click", "dwell_min": 1.0, "reason": "ok"} for i in items],
                "satisfaction": 0.5, "fatigue": 0.1, "feeling": "ok", "disengaging": False, "instruction": None,
                "leave": False}

    backend = ScriptedBackend(turn, cfg.llm)
    fb = one_user(catalog, cfg, backend).review(SLATE[None, :], streams([0]))
    assert [r.name for r in backend.requests] == ["TurnDecision"], "one call per turn"
    text = backend.requests[0].messages[1]["content"]
    assert all(f'<item id="{i}"' in text for i in SLATE.tolist()), "the whole slate at once"
    assert fb.reactions[0].tolist() == [ReactionType.CLICK] * K


def decide(request: Request) -> Any:
    """A model whose reply depends on the request alone (item, position, sampling seed), not on arrival order."""
    seed = request.params.seed
    if request.name == "SessionEnd":
        return {"summary": f"session {seed % 97}", "come_back": True, "return_in_days": (seed % 30) / 10}
    if seed % 9 == 0:
        return "I would rather not say"
    item = request.json_schema["properties"]["item"]["const"]
    return {"item": item, "reaction": REACTIONS[(seed + item) % 4], "dwell_min": 1.0 + seed % 3,
            "reason": f"because {item}", "satisfaction": (seed % 100) / 100, "fatigue": (seed % 13) / 13,
            "feeling": f"mood {seed % 11}", "leave": seed % 6 == 0}


def run(catalog: Catalog, cfg: WorldConfig, backend: ScriptedBackend, n: int, turns: int,
        one_at_a_time: bool = False) -> list[list[tuple[Any, ...]]]:
    users = LLMUsers(catalog, cfg, n, backend)
    users.reset(profiles(catalog, n))
    st = streams([20 + i for i in range(n)])
    users.start_sessions(np.arange(n), np.zeros(n), st)
    slates = np.random.default_rng(3).choice(len(catalog), size=(turns, n, K))
    out: list[list[tuple[Any, ...]]] = [[] for _ in range(n)]
    for t in range(turns):
        parts = [(users.review(slates[t][[r]], st, np.array([r])), [r]) for r in range(n)] if one_at_a_time \
            else [(users.review(slates[t], st), list(range(n)))]
        for fb, rows in parts:
            for j, r in enumerate(rows):
                out[r].append((fb.reactions[j].tolist(), fb.dwell_min[j].tolist(), bool(fb.left[j]),
                               bool(fb.fallback[j]), fb.reasons[j]))
                if fb.left[j]:
                    users.start_sessions(np.array([r]), np.array([float(t + 1)]), st)
    return out


def test_users_review_concurrently_and_each_user_in_order(catalog: Catalog, tmp_path: Path) -> None:
    """Users of a step are in flight together (a barrier proves it), one user's items one after another;
    each row's results depend only on its own stream."""
    cfg = item_world(catalog, tmp_path)
    n, turns = 4, 3
    together = ScriptedBackend(decide, cfg.llm, barrier=4)
    concurrent = run(catalog, cfg, together, n, turns)
    assert together.barrier_met and together.max_in_flight == 4
    serial = ScriptedBackend(decide, cfg.llm)
    assert run(catalog, cfg, serial, n, turns, one_at_a_time=True) == concurrent
    assert serial.max_in_flight == 1
    assert len(together.requests) == len(serial.requests) > n * turns, "more than one call per turn"
    steps = [s for user in concurrent for s in user]
    assert any(s[2] and UNSEEN in s[0] for s in steps), "someone left mid-slate"
    assert any(s[3] for s in steps) and not all(s[3] for s in steps), "some turns fell back, most did not"


def test_sync_and_async_paths_agree(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    batch = LLMUsers(catalog, cfg, 1, ScriptedBackend(decide, cfg.llm))
    batch.reset(profiles(catalog, 1))
    st = streams([5])
    batch.start_sessions(np.zeros(1, dtype=np.int64), np.zeros(1), st)
    fb = batch.review(SLATE[None, :], st)
    user = LLMUser.from_world(catalog, cfg, ScriptedBackend(decide, cfg.llm))
    user.reset(profiles(catalog, 1)[0])
    rng = np.random.default_rng(5)
    user.start_session(0.0, rng)
    alone = user.review(SLATE, rng)
    assert alone.reactions.tolist() == fb.reactions[0].tolist() and alone.reasons == fb.reasons[0]
    assert alone.left == bool(fb.left[0])


def test_item_mode_runs_in_the_env(catalog: Catalog, tmp_path: Path) -> None:
    cfg = item_world(catalog, tmp_path)
    backend = ScriptedBackend(by_position(leave_at=3), cfg.llm)
    env = RecoWorldEnv(cfg, catalog=catalog, user_simulator=LLMUsers(catalog, cfg, 1, backend))
    env.reset(seed=0)
    info = env.step(np.arange(K))[4]
    assert len(backend.requests) >= 4 and not info["llm_fallback"]
    assert info["reasons"] == ["reason 0", "reason 1", "reason 2", "reason 3"]
