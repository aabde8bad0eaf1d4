"""A scripted LLM user with a known hidden rule, for tests/test_distill.py and experiments/bench_distill.py.

Item-by-item review (one call per item). Each user, known by its persona line:
- likes its first two favourite topics, but skips their long items (over `LONG_MIN` minutes);
  every other topic is skipped;
- leaves after three skips in a row within a session;
- on the feed's last item, after two or more skips in a row, asks for more of its favourite topic;
- at a session's end comes back in half a day after two or more likes, else in three days.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from recoworld.llm.backend import Request

LONG_MIN = 6.0
_FAV = re.compile(r"Favourite topics: ([^\n]*)")
_ITEM = re.compile(r'<item id="(\d+)" topic="([^"]*)" creator="[^"]*" minutes="([\d.]+)">')


class HiddenRule:
    """Callable script for `ScriptedBackend`: the rule above, with per-user state (skips in a row, likes)."""

    def __init__(self) -> None:
        self.skips: dict[str, int] = defaultdict(int)
        self.likes: dict[str, int] = defaultdict(int)

    def __call__(self, request: Request) -> Any:
        text = request.messages[1]["content"]
        who = text.split("HOW YOU FEEL")[0]
        if request.name == "SessionEnd":
            back = 0.5 if self.likes[who] >= 2 else 3.0
            self.skips[who] = self.likes[who] = 0
            return {"summary": "done", "come_back": True, "return_in_days": back}
        favourites = [t.strip() for t in _FAV.search(text).group(1).split(",")][:2]  # type: ignore[union-attr]
        item, topic, minutes = _ITEM.search(text.split("THE FEED NOW")[1]).groups()  # type: ignore[union-attr]
        minutes_f = float(minutes)
        if topic in favourites and minutes_f <= LONG_MIN:
            reaction = "like"
            self.skips[who] = 0
            self.likes[who] += 1
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
