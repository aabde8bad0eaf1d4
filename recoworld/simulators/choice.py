"""The parametric choice model: how one reviewed item turns into a reaction.

The click logit combines relevance to current interests, quality, popularity scaled by the
user's conformity, the gap between the item's novelty and the user's appetite for novelty,
fatigue, position and a per-user activity offset. Like and
share are further thresholds on the same logit, so reactions are ordinal. Noise comes
in pre-drawn, which keeps the per-position loop to a few array operations.

A distilled world adds tastes the persona's favourite topics do not explain (`ChoiceConfig.taste`, fitted by
`recoworld distill`): `Taste` turns them into one utility per item (topic, subtopic, creator and minutes effects
shared by every user) and one (topic x minutes bin) table per user (favourite score x minutes, persona features x
topic and minutes), so playing them costs two lookups per reviewed item.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, cast

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from recoworld.config import ChoiceConfig, TasteConfig

if TYPE_CHECKING:
    from recoworld.catalog import Catalog
    from recoworld.population import UserProfile


#: The type of a choice model's relevance term, (relevance, `ChoiceConfig.relevance`) -> utility: a `numba.cfunc` of
#: this signature, so that the compiled review (`review_kernels.relevance_in_order`) calls the model's own term at
#: each position, where a click moves every later relevance. The kernels take its `address`, an integer: a cfunc
#: passed as such cost 20 us of typing per call, twenty times the old kernel's whole call for one user.
RELEVANCE_TERM = types.float64(types.float64, types.float64)


@numba.cfunc(RELEVANCE_TERM, cache=True)
def linear_relevance(relevance: float, weight: float) -> float:
    """The default relevance term: the logit rises by `weight` per unit of relevance."""
    return weight * relevance


@intrinsic
def _call_relevance_term(typingctx: object, address: types.Integer, relevance: types.Float,
                        weight: types.Float) -> tuple:
    """In compiled code: the `RELEVANCE_TERM` cfunc at `address` (its `.address`), called on (relevance, weight)."""
    def codegen(context: object, builder: ir.IRBuilder, signature: object, args: tuple) -> ir.Value:
        pointer = ir.FunctionType(ir.DoubleType(), [ir.DoubleType(), ir.DoubleType()]).as_pointer()
        return builder.call(builder.inttoptr(args[0], pointer), [args[1], args[2]])
    return types.float64(types.intp, types.float64, types.float64), codegen


#: `_call_relevance_term` as compiled code calls it: numba types an `@intrinsic` by its typing function
#: (typingctx and numba types), not by the (address, relevance, weight) -> float it compiles to.
call_relevance_term = cast("Callable[[int, float, float], float]", _call_relevance_term)


@numba.njit(cache=True)
def _relevance_terms(address: int, relevance: np.ndarray, weight: float) -> np.ndarray:
    out = np.empty(len(relevance))
    for i in range(len(relevance)):
        out[i] = call_relevance_term(address, relevance[i], weight)
    return out


@functools.cache
def _position_penalty(weight: float, k: int) -> np.ndarray:
    return weight * np.log1p(np.arange(k))


class ChoiceModel:
    """Vectorized: arguments broadcast, e.g. (B, K) arrays for a whole slate.

    The utility is `base_utility` (everything but relevance) plus the relevance term `relevance_term` (a
    `RELEVANCE_TERM` cfunc; linear by default): users, the compiled review and the oracle all read relevance
    through it, so a subclass that replaces it (a step, a square) changes each of them alike."""

    relevance_term = linear_relevance

    def __init__(self, config: ChoiceConfig) -> None:
        self.config = config

    def taste_on(self, catalog: Catalog) -> Taste | None:
        """The config's tastes as lookups on `catalog`; None when it has none (the synthetic world)."""
        return None if self.config.taste is None else Taste(self.config.taste, catalog)

    def utility(
        self,
        relevance: np.ndarray | float,
        quality: np.ndarray,
        novelty: np.ndarray,
        novelty_propensity: np.ndarray | float,
        fatigue: np.ndarray | float,
        position: np.ndarray | int,
        popularity: np.ndarray | float = 0.0,
        conformity: np.ndarray | float = 1.0,
        activity: np.ndarray | float = 0.0,
        duration: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """The click logit: `base_utility` of the other arguments plus `relevance_utility(relevance)`."""
        return self.base_utility(quality, novelty, novelty_propensity, fatigue, position, popularity, conformity,
                                 activity, duration) + self.relevance_utility(relevance)

    def relevance_utility(self, relevance: np.ndarray | float) -> np.ndarray:
        """`relevance_term` of each relevance (any shape), with the config's relevance weight."""
        x = np.asarray(relevance, dtype=np.float64)
        return _relevance_terms(self.relevance_address, x.ravel(), self.config.relevance).reshape(x.shape)

    @property
    def relevance_address(self) -> int:
        """Where compiled code calls `relevance_term` (`call_relevance_term`)."""
        address = self.relevance_term.address
        if address is None:  # a cfunc is compiled when it is defined: only a broken subclass gets here
            raise TypeError(f"relevance_term {self.relevance_term!r} is not a compiled RELEVANCE_TERM cfunc")
        return address

    def base_utility(
        self,
        quality: np.ndarray,
        novelty: np.ndarray,
        novelty_propensity: np.ndarray | float,
        fatigue: np.ndarray | float,
        position: np.ndarray | int,
        popularity: np.ndarray | float = 0.0,
        conformity: np.ndarray | float = 1.0,
        activity: np.ndarray | float = 0.0,
        duration: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """The click logit without the relevance term (the review adds that one position at a time, as clicks move
        relevance). `popularity`: the items' standardized log popularity; `conformity`, `activity`: per user;
        `duration`: the items' minutes (weighed by `config.duration` on a log scale, when non-zero)."""
        c = self.config
        u = (
            c.bias
            + activity
            + c.quality * quality
            - c.novelty_mismatch * np.abs(novelty - novelty_propensity)
            - c.fatigue * fatigue
            - self.position_penalty(position)
        )
        if c.duration:
            u = u - c.duration * np.log1p(duration)
        return u + c.popularity * conformity * popularity if c.popularity else u

    def position_penalty(self, position: np.ndarray | int) -> np.ndarray | float:
        """Position bias: attention decays with the log of the slot index (a table lookup for arrays)."""
        if isinstance(position, np.ndarray):
            return _position_penalty(self.config.position, int(position.max()) + 1)[position]
        return self.config.position * float(np.log1p(position))

    def react(self, utility: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Reaction level (0 skip .. 3 share) from logistic `noise` of shape utility.shape + (3,)."""
        return self.engagement(utility + noise[..., 0] > 0, utility, noise[..., 1:])

    def engagement(self, click: np.ndarray, utility: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Reaction level given the click decisions; `noise[..., 0]` drives likes, `[..., 1]` shares."""
        c = self.config
        like = click & (utility + noise[..., 0] > c.like_threshold)
        share = like & (utility + noise[..., 1] > c.share_threshold)
        return click.astype(np.int8) + like + share

    @staticmethod
    def draw_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Standard logistic noise: `u + noise > 0` happens with probability sigmoid(u)."""
        p = rng.random(shape)
        return np.log(p) - np.log1p(-p)


def minutes_bins(knots: Sequence[float], minutes: np.ndarray) -> np.ndarray:
    """How many minutes steps each item has on (knots strictly below its minutes): its bin, 0 .. len(knots)."""
    return np.searchsorted(np.asarray(knots, dtype=np.float64), np.asarray(minutes, dtype=np.float64), side="left")


def persona_features(profile: UserProfile, names: Sequence[str]) -> np.ndarray:
    """The persona features `names` of one profile (`TasteConfig.persona`'s keys): `attribute=value` is 1 when the
    profile's attribute has that value; the traits are centred on a typical user (novelty 0.5, 30 minutes a day),
    so that their interaction weights leave the shared effects the typical user's."""
    out = np.zeros(len(names))
    for j, name in enumerate(names):
        if name == "novelty_trait":
            out[j] = profile.novelty_trait - 0.5
        elif name == "time_budget":
            out[j] = math.log(profile.time_budget_min / 30.0)
        else:
            attribute, _, value = name.partition("=")
            out[j] = float(profile.attributes.get(attribute) == value)
    return out


class Taste:
    """A `TasteConfig` on one catalog, as lookups: `item`, the utility every user adds for an item; `tables`, each
    user's (catalog topic, minutes bin) table of what the persona adds. Catalog topics, subtopics and creators the
    config does not name add nothing."""

    def __init__(self, config: TasteConfig, catalog: Catalog) -> None:
        self.config = config
        self.topic_names = list(catalog.topic_names)
        index = {t: i for i, t in enumerate(config.topics)}
        self._topic_map = np.array([index.get(t, len(config.topics)) for t in self.topic_names])
        self.topic = catalog.topic.astype(np.int64)
        self.bin = minutes_bins(config.minutes_knots, catalog.duration_min)
        per_topic = np.append(np.asarray(config.topic, dtype=np.float64), 0.0)[self._topic_map]
        subtopic = np.array([config.subtopic.get(n, 0.0) for n in catalog.subtopic_names])
        creator = np.array([config.creator.get(n, 0.0) for n in catalog.creator_names])
        self.item = (per_topic[self.topic] + _steps(config.minutes)[self.bin]
                     + subtopic[catalog.subtopic.astype(np.int64)] + creator[catalog.creator.astype(np.int64)])
        names = list(config.persona)
        self._persona_names = names
        self._persona_topic = np.array([np.append(config.persona[n].topic, 0.0)[self._topic_map] for n in names]
                                       ).reshape(len(names), len(self.topic_names))
        self._persona_minutes = np.array([_steps(config.persona[n].minutes) for n in names]
                                         ).reshape(len(names), len(config.minutes_knots) + 1)

    def tables(self, profiles: Sequence[UserProfile]) -> np.ndarray:
        """(B, topics, minutes bins): the persona's part of each user's utility for an item of that topic and bin."""
        c = self.config
        fav = np.array([[p.topic_interests.get(t, 0.0) for t in self.topic_names] for p in profiles],
                       dtype=np.float64).reshape(len(profiles), len(self.topic_names))
        table = fav[:, :, None] * (c.favourite[0] + _steps(c.favourite[1:]))[None, None, :]
        if self._persona_names:
            z = np.stack([persona_features(p, self._persona_names) for p in profiles])
            table = table + (z @ self._persona_topic)[:, :, None] + (z @ self._persona_minutes)[:, None, :]
        return table

    def bonus(self, tables: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Utility the tastes add to `items` (R, K) of the users whose `tables` (R, topics, bins) these are."""
        rows = np.arange(len(items))[:, None]
        return self.item[items] + tables[rows, self.topic[items], self.bin[items]]


def _steps(weights: Sequence[float]) -> np.ndarray:
    """Utility of minutes bin 0 .. len(weights): the weights of the steps an item of that bin has on, summed."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(weights, dtype=np.float64))])
