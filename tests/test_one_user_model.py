"""One user model (issue 30): the world's users, the oracle and the returns replay of `recoworld distill` read the
same injected `ChoiceModel` and the same satisfaction and fatigue rule (`review_kernels`), whose constants live in
`DynamicsConfig` and nowhere else."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

import numba
import numpy as np
import pytest
from test_distill_returns import _parametric_log

from recoworld.agents.oracle import OracleRecommender
from recoworld.calibration.returns import replay_satisfaction
from recoworld.catalog import Catalog
from recoworld.config import ChoiceConfig, DynamicsConfig, ReturnConfig
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators import review_kernels
from recoworld.simulators.choice import RELEVANCE_TERM, ChoiceModel
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams


@numba.cfunc(RELEVANCE_TERM)
def _below_zero(relevance: float, weight: float) -> float:
    """A step, and the wrong way round: an item is irresistible exactly when its relevance is below 0."""
    return 12.5 * weight if relevance < 0.0 else -12.5 * weight


class _Contrarian(ChoiceModel):
    """Clicks what is not relevant, everything else as the default model (a step of +-50 in the logit)."""

    relevance_term = _below_zero


def _relevance(catalog: Catalog, items: np.ndarray, interests: np.ndarray) -> np.ndarray:
    """Relevance as the review computes it (float32 products)."""
    emb = catalog.embeddings[items].astype(np.float32)
    return (emb @ interests.astype(np.float32)[:, :, None])[:, :, 0].astype(np.float64)


@pytest.mark.parametrize("model", [_Contrarian, ChoiceModel])
def test_the_users_click_as_the_injected_relevance_term_says(catalog: Catalog, model: type[ChoiceModel]) -> None:
    """Interests held still (no drift): under the step every seen item is clicked exactly when its relevance is
    below 0; the default logit clicks a few percent, whatever the sign."""
    users = ParametricUsers(catalog, dynamics=DynamicsConfig(interest_drift=0.0), choice_model=model(ChoiceConfig()))
    users.reset(sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=8))
    streams = UserStreams.spawn(np.random.default_rng(1), 8)
    users.start_sessions(np.arange(8), np.zeros(8), streams)
    slates = np.random.default_rng(2).integers(0, len(catalog), (8, 10))
    rel = _relevance(catalog, slates, users.interests)
    fb = users.review(slates, streams)
    seen = (fb.reactions >= 0) & (np.abs(rel) > 1e-4)
    follows = ((fb.reactions >= 1) == (rel < 0.0))[seen]
    assert seen.sum() >= 20 and (rel[seen] < 0).any() and (rel[seen] > 0).any()
    assert follows.all() == (model is _Contrarian)


def _candidates(catalog: Catalog, interests: np.ndarray, below: int, above: int) -> np.ndarray:
    rel = catalog.embeddings.astype(np.float64) @ interests
    return np.concatenate([np.flatnonzero(rel < -0.01)[:below], np.flatnonzero(rel > 0.01)[:above]])


@pytest.mark.parametrize("model", [_Contrarian, ChoiceModel])
def test_the_oracle_predicts_clicks_with_the_injected_model(catalog: Catalog, model: type[ChoiceModel]) -> None:
    """Skips moving nothing and no fatigue penalty, the oracle's score is the click probability times the click's
    target: under the step, the three irrelevant candidates are the only clicks, so they fill the first slots;
    the default model puts relevant ones first."""
    interests = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(0), n=1)[0] \
        .interest_vector(catalog).astype(np.float64)
    ids = _candidates(catalog, interests, below=3, above=27)
    oracle = OracleRecommender(5, catalog, dynamics=DynamicsConfig(skip_weight=0.0),
                               choice_model=model(ChoiceConfig()), fatigue_weight=0.0)
    observation = {"candidate_ids": ids, "candidate_mask": np.ones(len(ids), dtype=np.int8)}
    mindset = {"interests": interests.tolist(), "fatigue": 0.0, "satisfaction": 0.0, "novelty_propensity": 0.5,
               "memory": []}
    slate = oracle.rank(observation, mindset)
    assert (set(slate[:3].tolist()) == {0, 1, 2}) == (model is _Contrarian)
    with pytest.raises(ValueError, match="either choice"):
        OracleRecommender(5, catalog, choice=ChoiceConfig(), choice_model=model(ChoiceConfig()))


def test_the_returns_replay_follows_a_world_of_the_injected_model() -> None:
    """A distilled world's returns are fitted on satisfaction replayed through the user's rule: on the reactions
    of contrarian users (who click far more than the default world's) it is their own satisfaction."""
    dynamics = DynamicsConfig(fatigue_repetition=0.0, fatigue_low_quality=0.0, dislike_margin=1.0)
    returns = ReturnConfig(churn_bias=-20.0, base_rate=2.0)
    items, ends, profiles, catalog = _parametric_log(dynamics, returns, choice_model=_Contrarian(ChoiceConfig()))
    default_items, _, _, _ = _parametric_log(dynamics, returns)
    assert (items["reaction"] >= 1).mean() > 0.2 > 2 * (default_items["reaction"] >= 1).mean()
    sat = replay_satisfaction(items, profiles, catalog, dynamics, returns)
    last = items.groupby(["user_id", "session"], sort=False).tail(1).index.to_numpy()
    np.testing.assert_allclose(sat[last], ends, atol=1e-5)


#: The code that plays the user's satisfaction, fatigue and return dynamics. Its only float literals are 0 and 1
#: (clips, complements); every other number is a `DynamicsConfig` or `ReturnConfig` field. `settle` keeps 0.5:
#: the share of near-duplicates that names an exit "repetitive", a label, not a dynamic.
_RULE_CODE: tuple[tuple[Callable, frozenset[float]], ...] = (
    (review_kernels.satisfaction_pull.py_func, frozenset()),
    (review_kernels.satisfaction_step.py_func, frozenset()),
    (review_kernels.fatigue_increase.py_func, frozenset()),
    (review_kernels.fatigue_step.py_func, frozenset()),
    (review_kernels.novelty_appetite.py_func, frozenset()),
    (review_kernels.low_quality_fatigue.py_func, frozenset()),
    (review_kernels.slate_geometry.py_func, frozenset()),
    (review_kernels.relevance_in_order.py_func, frozenset()),
    (review_kernels.settle.py_func, frozenset({0.5})),
    (replay_satisfaction, frozenset()),
    (OracleRecommender.rank, frozenset({1e6})),  # the unavailable candidates' demotion
    (ParametricUsers.__init__, frozenset()),
    (ParametricUsers._initial_state, frozenset()),
    (ParametricUsers.start_sessions, frozenset()),
    (ParametricUsers.review, frozenset()),
    (ParametricUsers.set_mindset, frozenset()),
)


@pytest.mark.parametrize("code, allowed", _RULE_CODE, ids=lambda x: getattr(x, "__qualname__", ""))
def test_the_user_models_numbers_live_in_its_config(code: Callable, allowed: frozenset[float]) -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(code)))
    body = tree.body[0]
    assert isinstance(body, ast.FunctionDef)
    if ast.get_docstring(body):
        body.body = body.body[1:]
    literals = {node.value for node in ast.walk(body)
                if isinstance(node, ast.Constant) and isinstance(node.value, float)}
    assert literals <= {0.0, 1.0} | allowed, f"{code.__qualname__} types in {sorted(literals - {0.0, 1.0})}"


def test_the_rules_constants_are_read_from_the_config() -> None:
    """Each constant that moved into `DynamicsConfig` changes what the rule computes."""
    base = DynamicsConfig()
    cases = {
        "click_satisfaction": lambda p: review_kernels.satisfaction_step(0.5, True, False, 0.2, 0.5, 0.1, p),
        "click_relevance": lambda p: review_kernels.satisfaction_step(0.5, True, False, 0.2, 0.5, 0.1, p),
        "click_quality": lambda p: review_kernels.satisfaction_step(0.5, True, False, 0.2, 0.5, 0.1, p),
        "click_fatigue": lambda p: review_kernels.satisfaction_step(0.5, True, False, 0.2, 0.5, 0.1, p),
        "fatigue_novelty": lambda p: review_kernels.novelty_appetite(0.3, 0.5, p),
        "low_quality_threshold": lambda p: review_kernels.low_quality_fatigue(np.array([0.3]), p)[0],
    }
    for name, rule in cases.items():
        moved = DynamicsConfig(**{name: getattr(base, name) * 1.5})
        before = rule(review_kernels.settle_params(dict(base)))
        after = rule(review_kernels.settle_params(dict(moved)))
        assert before != after, name
