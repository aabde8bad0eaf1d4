"""A surrogate whose taste has room (issue 33): scripted LLM users with hidden rules the tests write themselves
(tests/distill_rule.py: persona-based, a global topic taste, a length threshold, a persona x topic interaction,
each also with 10% of its decisions flipped) are distilled; on held-out users the distilled user reaches 0.9
reaction accuracy on every noiseless rule and comes within 0.03 of the ceiling (a perfect model's, the rule's own
oracle) on the noisy ones; the distilled world plays the taste it fitted; distill names the terms that carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recoworld.calibration import load_calibration, terms
from recoworld.calibration.agreement import table
from recoworld.calibration.distill import TERMS, distill_run, read_run, with_relevance
from recoworld.catalog import cached_catalog
from recoworld.errors import ConfigError
from recoworld.evaluation.simulation import SimulationConfig, load_world, simulate
from recoworld.llm import backend as llm_backend
from recoworld.llm.scripted import ScriptedBackend
from recoworld.population import UserProfile
from tests.distill_rule import RULES, SHORT_MIN, DeviceTopicRule, LengthRule, Rule, rule_llm, rule_world

AGENTS = ["random", "popular", "greedy", "instruct"]


def distill_rule(rule: Rule, root: Path, monkeypatch: pytest.MonkeyPatch, n_users: int = 24,
                 days: float = 5.0) -> tuple[Path, pd.DataFrame]:
    """An LLM run of `rule` (a real `simulate` with the scripted backend), distilled with the rule's oracle as the
    ceiling; (the distilled folder, its agreement report by model and measure)."""
    llm = rule_llm()
    monkeypatch.setitem(llm_backend._SHARED, llm, ScriptedBackend(rule, llm))
    simulate(SimulationConfig(n_users=n_users, agents=AGENTS, seed=1, world=rule_world(llm, days)), out=root / "run")
    _, report = distill_run(root / "run", root / "distilled", n_boot=20, rank_check=False,
                            ceiling=lambda d: rule.oracle(d.profiles, d.catalog))
    assert "terms carrying the click fit" in table(report)
    return root / "distilled", report.set_index(["model", "measure"])


@pytest.mark.parametrize("noise", [0.0, 0.1])
@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_the_distilled_user_reaches_each_rule_up_to_its_ceiling(rule: type[Rule], noise: float, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _, report = distill_rule(rule(noise=noise, seed=3), tmp_path, monkeypatch)
    value, ceiling = report["value"], report["ceiling"]
    accuracy, auc = value["distilled", "reaction_accuracy"], value["distilled", "click_auc"]
    assert report.loc[("distilled", "reaction_accuracy"), "n_decisions"] > 500, "enough held-out decisions"
    if noise == 0:
        assert ceiling["distilled", "reaction_accuracy"] == 1.0
        assert accuracy >= 0.9 and auc >= 0.9, report
    else:  # the ceiling is the share the flips left alone: 1 - noise, up to the draw
        assert ceiling["distilled", "reaction_accuracy"] == pytest.approx(1 - noise, abs=0.03)
        assert accuracy >= ceiling["distilled", "reaction_accuracy"] - 0.03, report
        assert auc >= ceiling["distilled", "click_auc"] - 0.03, report
    assert value["default", "reaction_accuracy"] < accuracy - 0.3, "the default user has no such taste"


@pytest.fixture(scope="module")
def device_rule(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    mp = pytest.MonkeyPatch()
    try:
        return distill_rule(DeviceTopicRule(), tmp_path_factory.mktemp("device"), mp)
    finally:
        mp.undo()


def test_distill_names_the_terms_that_carry_the_fit(device_rule: tuple[Path, pd.DataFrame]) -> None:
    out, _ = device_rule
    fit = json.loads((out / "calibration.json").read_text())
    importance = fit["terms"]["importance"]
    assert importance[0]["term"] == "persona_topic", "the rule is a persona x topic interaction"
    assert importance[0]["loglik_drop"] > 0.1 > max(r["loglik_drop"] for r in importance[1:])
    assert {r["term"] for r in importance} >= {*terms.TASTE_GROUPS, "relevance", "duration"}
    assert fit["terms"]["ridge"] in terms.RIDGES
    assert set(fit["choice"]) == set(TERMS), "the choice report: the parametric user's own terms, with errors"
    world = load_calibration(out).world
    handheld = world.choice.taste.persona["device=phone"].topic
    topics = world.choice.taste.topics
    liked = [handheld[topics.index(t)] for t in DeviceTopicRule.HANDHELD]
    assert min(liked) > max(w for t, w in zip(topics, handheld) if t not in DeviceTopicRule.HANDHELD)


def test_the_fitted_columns_are_what_the_simulator_plays(device_rule: tuple[Path, pd.DataFrame]) -> None:
    """The fit's design times its weights is the taste `choice.Taste` looks up in simulation, decision by decision."""
    out, _ = device_rule
    world = load_calibration(out)
    decisions = read_run(out.parent / "run")
    by_id = {p.user_id: p for p in world.profiles}
    items = with_relevance(decisions.items, decisions.catalog, world.profiles)
    taste = world.world.choice.taste
    groups = terms.design(items, taste, by_id, decisions.catalog)
    t, k = len(taste.topics), len(taste.minutes_knots)
    weights = {
        "topic": taste.topic, "minutes": taste.minutes, "subtopic": list(taste.subtopic.values()),
        "creator": list(taste.creator.values()), "favourite": taste.favourite,
        "persona_topic": [w for p in taste.persona.values() for w in p.topic],
        "persona_minutes": [w for p in taste.persona.values() for w in p.minutes],
    }
    assert len(weights["persona_topic"]) == len(taste.persona) * t and len(weights["minutes"]) == k
    by_design = sum(groups[g] @ np.asarray(w) for g, w in weights.items())
    played = terms.taste_utility(items, taste, by_id, decisions.catalog)
    np.testing.assert_allclose(by_design, played, atol=1e-9)
    assert np.ptp(played) > 5, "the taste moves utilities by more than the logistic noise"


def test_the_surrogate_plays_the_fitted_taste_on_a_fresh_population(device_rule: tuple[Path, pd.DataFrame],
                                                                     tmp_path: Path) -> None:
    """A fresh draw of users played by the surrogate clicks as the rule would have them: the taste is simulated,
    not only fitted."""
    out, _ = device_rule
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({
        "slate_size": 5, "n_candidates": 20, "horizon_days": 3, "max_steps": 60, "user_backend": "surrogate",
        "surrogate": str(out), "catalog": {"n_items": 400, "n_topics": 6, "seed": 3}}))
    world = load_world(tmp_path / "world.yaml")
    cfg = SimulationConfig(n_users=30, agents=["random"], seed=11, world=world)
    result = simulate(cfg)
    catalog = cached_catalog(world.catalog)
    seen = result.trajectories[result.trajectories["reaction"] >= 0]
    profiles: dict[str, UserProfile] = {p.user_id: p for p in result.profiles}
    rule = DeviceTopicRule()
    would = np.array([rule.likes(profiles[u].persona, [], catalog.topic_names[catalog.topic[i]], 0.0)
                      for u, i in zip(seen["user_id"], seen["item"])])
    clicked = seen["reaction"].to_numpy() >= 1
    assert len(seen) > 300 and np.mean(would == clicked) >= 0.9


def test_the_calibrated_world_plays_a_length_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--calibrated DIR` (the run's own users) clicks short items and skips long ones, as the rule does: the
    threshold is simulated, whichever terms carry it (on a noiseless rule the steep `duration` term can alone)."""
    out, _ = distill_rule(LengthRule(), tmp_path, monkeypatch, n_users=16, days=3.0)
    fit = json.loads((out / "calibration.json").read_text())
    assert {r["term"] for r in fit["terms"]["importance"][:2]} & {"duration", "minutes"}, fit["terms"]
    world = load_calibration(out)
    result = simulate(SimulationConfig(n_users=len(world.profiles), agents=["random"], seed=5, world=world.world),
                      catalog=world.catalog, profiles=world.profiles)
    seen = result.trajectories[result.trajectories["reaction"] >= 0]
    short = np.round(world.catalog.duration_min[seen["item"].to_numpy()], 1) <= SHORT_MIN
    assert len(seen) > 300 and np.mean(short == (seen["reaction"].to_numpy() >= 1)) >= 0.9


def test_a_bad_taste_block_is_an_error_naming_it(tmp_path: Path) -> None:
    taste = {"topics": ["cooking", "football"], "minutes_knots": [2.0, 5.0], "topic": [1.0], "minutes": [0.0, -2.0],
             "favourite": [0.0, 0.0, 0.0]}
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({"choice": {"taste": taste}}))
    with pytest.raises(ConfigError, match=r"taste.*topic has 1 weights for 2"):
        load_world(tmp_path / "world.yaml")
    taste |= {"topic": [1.0, 0.0], "persona": {"shoe size": {"topic": [0.0, 0.0], "minutes": [0.0, 0.0]}}}
    (tmp_path / "world.yaml").write_text(yaml.safe_dump({"choice": {"taste": taste}}))
    with pytest.raises(ConfigError, match=r"persona keys \['shoe size'\] are neither attribute=value"):
        load_world(tmp_path / "world.yaml")
