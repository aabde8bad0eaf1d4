"""Scripted LLM users with known hidden rules, for tests/test_distill*.py and experiments/bench_distill.py.

Item-by-item review (one call per item). Every rule's user, known by its persona line:
- likes the items its rule picks and skips the others (`Rule.likes`, which reads only what the prompt shows:
  the persona line, the favourite topics, the item's topic and minutes);
- with `noise`, flips each decision (like <-> skip) with that probability: a draw seeded by the rule's seed, the
  persona, the item and how often this user has reviewed it, so it does not depend on the order concurrent calls
  arrive in. A perfect model then agrees with 1 - noise of the decisions (`Rule.oracle`, the ceiling);
- leaves after three skips in a row within a session;
- on the feed's last item, after two or more skips in a row, asks for more of its favourite topic;
- at a session's end comes back in half a day after two or more likes, else in three days.

The rules (`RULES`): `PersonaRule` likes its first two favourite topics but skips their long items (over
`LONG_MIN` minutes); `TopicRule`, a taste for some topics the same for every persona; `LengthRule`, short items
(at most `SHORT_MIN` minutes) of any topic; `DeviceTopicRule`, a persona x topic interaction: people who watch on
a phone or tablet like some topics, the others other topics. `HiddenRule` is `PersonaRule` without noise.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.llm.backend import Request
from recoworld.llm.config import LLMConfig
from recoworld.llm.scripted import scripted_config
from recoworld.population import UserProfile

LONG_MIN = 6.0
SHORT_MIN = 5.0
_FAV = re.compile(r"Favourite topics: ([^\n]*)")
_ITEM = re.compile(r'<item id="(\d+)" topic="([^"]*)" creator="[^"]*" minutes="([\d.]+)">')
_DEVICE = re.compile(r"usually on an? (\w+)")


class Rule:
    """Callable script for `ScriptedBackend`: the behaviour above, with per-user state (skips in a row, likes,
    reviews per item). Subclasses define `likes`."""

    name = "rule"

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0 <= noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {noise}")
        self.noise, self.seed = noise, seed
        self.skips: dict[str, int] = defaultdict(int)
        self.likes_in_session: dict[str, int] = defaultdict(int)
        self.seen: dict[tuple[str, int], int] = defaultdict(int)

    def likes(self, persona: str, favourites: list[str], topic: str, minutes: float) -> bool:
        raise NotImplementedError

    def __call__(self, request: Request) -> Any:
        text = request.messages[1]["content"]
        who = text.split("HOW YOU FEEL")[0]
        if request.name == "SessionEnd":
            back = 0.5 if self.likes_in_session[who] >= 2 else 3.0
            self.skips[who] = self.likes_in_session[who] = 0
            return {"summary": "done", "come_back": True, "return_in_days": back}
        favourites = [t.strip() for t in _FAV.search(text).group(1).split(",")]  # type: ignore[union-attr]
        item, topic, minutes = _ITEM.search(text.split("THE FEED NOW")[1]).groups()  # type: ignore[union-attr]
        minutes_f = float(minutes)
        liked = self.likes(who, favourites, topic, minutes_f)
        self.seen[who, int(item)] += 1
        if self.noise and self._draw(who, int(item)) < self.noise:
            liked = not liked
        if liked:
            reaction = "like"
            self.skips[who] = 0
            self.likes_in_session[who] += 1
        else:
            reaction = "skip"
            self.skips[who] += 1
        reply: dict[str, Any] = {"item": int(item), "reaction": reaction,
                                 "dwell_min": minutes_f if reaction != "skip" else 0.0, "reason": "rule",
                                 "satisfaction": 0.6, "fatigue": 0.1, "feeling": "ok",
                                 "leave": self.skips[who] >= 3}
        if "instruction" in request.json_schema["properties"] and self.skips[who] >= 2 and not reply["leave"]:
            reply["instruction"] = {"text": f"more {favourites[0]} please", "kind": "more",
                                    "topics": favourites[:1]}
        return reply

    def _draw(self, who: str, item: int) -> float:
        """A uniform draw for this user's n-th review of this item, seeded by the rule's seed."""
        key = f"{self.seed}|{who}|{item}|{self.seen[who, item]}".encode()
        return np.random.default_rng(zlib.crc32(key)).random()

    def oracle(self, profiles: dict[str, UserProfile], catalog: Catalog) -> Any:
        """A perfect model of this rule, as a scorer of decisions (`agreement.predict`'s columns): it knows what
        the rule likes and how often it flips, so its agreement is the ceiling of any model's."""

        def predict(items: pd.DataFrame) -> pd.DataFrame:
            liked = np.array([self.likes(profiles[u].persona, list(profiles[u].topic_interests),
                                         catalog.topic_names[t], round(float(m), 1))
                              for u, t, m in zip(items["user_id"], items["topic"], items["duration"])], dtype=bool)
            p_like = np.where(liked, 1.0 - self.noise, self.noise)
            return pd.DataFrame({"user_id": items["user_id"].to_numpy(), "reaction": np.where(p_like > 0.5, 2, 0),
                                 "p_click": p_like, "dwell": p_like * items["duration"].to_numpy(),
                                 "leaves": (items["skip_run"].to_numpy() >= 3)
                                 | (items["spent"].to_numpy() >= items["budget"].to_numpy())})

        return predict


class PersonaRule(Rule):
    """Likes its first two favourite topics, but not their items over `LONG_MIN` minutes."""

    name = "persona"

    def likes(self, persona: str, favourites: list[str], topic: str, minutes: float) -> bool:
        return topic in favourites[:2] and minutes <= LONG_MIN


class TopicRule(Rule):
    """Likes some topics whoever the persona is."""

    name = "topic"
    TOPICS = ("cooking", "science", "travel")

    def likes(self, persona: str, favourites: list[str], topic: str, minutes: float) -> bool:
        return topic in self.TOPICS


class LengthRule(Rule):
    """Likes short items (at most `SHORT_MIN` minutes) of any topic."""

    name = "length"

    def likes(self, persona: str, favourites: list[str], topic: str, minutes: float) -> bool:
        return minutes <= SHORT_MIN


class DeviceTopicRule(Rule):
    """A persona x topic interaction: on a phone or tablet likes football, movies and travel; on a tv or laptop,
    cooking, programming and science."""

    name = "device x topic"
    HANDHELD = ("football", "movies", "travel")

    def likes(self, persona: str, favourites: list[str], topic: str, minutes: float) -> bool:
        device = _DEVICE.search(persona)
        handheld = device is not None and device.group(1) in ("phone", "tablet")
        return (topic in self.HANDHELD) == handheld


RULES: tuple[type[Rule], ...] = (PersonaRule, TopicRule, LengthRule, DeviceTopicRule)


class HiddenRule(PersonaRule):
    """The rule of issue 15's tests: `PersonaRule`, noiseless."""


def rule_llm(**overrides: Any) -> LLMConfig:
    """The scripted LLM block the rules are played under (item-by-item review, no retries, every fallback kept)."""
    return scripted_config(**({"review_mode": "item", "concurrency": 8, "max_retries": 0, "repair": False,
                               "max_fallback_rate": 1.0} | overrides))


def rule_world(llm: LLMConfig, days: float = 5.0, backend: str = "llm") -> WorldConfig:
    """The small world the rules are distilled in: 400 items of 6 topics, slates of 5."""
    return WorldConfig(slate_size=5, n_candidates=20, horizon_days=days, max_steps=60, user_backend=backend,
                       catalog={"n_items": 400, "n_topics": 6, "seed": 3}, llm=llm)
