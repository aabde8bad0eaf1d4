"""LLM users playing turns, one at a time: the timed unit of `bench_local_llm.py`.

    python experiments/llm_turns.py --users 4 --turns 3 --slate-size 2 [--n-threads 2] [--seed 0]

Run as a script, it serves turns to a driver: it loads the local model with its default settings
(decoding, token limits, prompts: whatever the `recoworld` on its PYTHONPATH has), plays one
untimed warm-up turn, then plays one turn of N users per `turn` line on stdin and answers with one
JSON line (each round's seconds, counts and decisions so far). `bench_local_llm.py --before DIR` runs it on a
checkout of an older RecoWorld, so the code from before a change takes turns with today's in one run,
under the same load, on the same users, slates and seeds, and their decisions compare item by item.
It uses only what older checkouts have too (`LLMUsers`, `UserStreams`, `sample_population`,
`BatchFeedback`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from recoworld.catalog import cached_catalog
from recoworld.config import WorldConfig
from recoworld.llm import LLMConfig, make_backend
from recoworld.llm.backend import ChatBackend
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators.base import BatchFeedback
from recoworld.simulators.llm_user import LLMUsers
from recoworld.streams import UserStreams

COUNTED = ("prompt", "cached", "completion", "calls")
#: An item's decision as `decisions` names it: a reaction, "dislike" (a skip marked not interested) or "unseen".
REACTION_NAMES = ("skip", "click", "like", "share")


def decisions(fb: BatchFeedback) -> list[list[str]]:
    """Each user's decision on each slate position, by name."""
    disliked = fb.disliked if fb.disliked is not None else np.zeros(fb.reactions.shape, bool)
    return [["unseen" if r < 0 else "dislike" if d else REACTION_NAMES[r] for r, d in zip(row, flags)]
            for row, flags in zip(fb.reactions.tolist(), disliked.tolist())]


def _usage(backend: ChatBackend) -> tuple[int, ...]:
    u = backend.usage
    return u.prompt_tokens, getattr(u, "cached_prompt_tokens", 0), u.completion_tokens, u.requests


class Rounds:
    """What a run of turns shows: the seconds of each round (one turn of every user), the counts and every
    decision so far (per turn, per user, per slate position)."""

    n: int
    walls: list[float]
    counts: Counter[str]
    decided: list[list[list[str]]]

    @property
    def wall(self) -> float:
        return sum(self.walls)

    def turn(self) -> None:
        """Play one more round."""
        raise NotImplementedError


class Play(Rounds):
    """`n` users playing turns on random slates, one turn at a time, so that the settings compared can take
    turns in one run and share whatever load the machine is under; a user who leaves opens the next
    session at once."""

    def __init__(self, world: WorldConfig, backend: ChatBackend, n: int, turns: int, seed: int) -> None:
        catalog = cached_catalog(world.catalog)
        profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(seed), n=n)
        self.backend, self.n, self.t = backend, n, 0
        self.users = LLMUsers(catalog, world, n, backend)
        self.streams = UserStreams([np.random.default_rng([seed, i]) for i in range(n)])
        self.users.reset(profiles)
        self.users.start_sessions(np.arange(n), np.zeros(n), self.streams)
        self.slates = np.random.default_rng(seed).choice(len(catalog), size=(turns, n, world.slate_size))
        self.walls, self.counts, self.decided = [], Counter(), []

    def turn(self) -> None:
        t, before = self.t, _usage(self.backend)
        started = time.perf_counter()
        fb = self.users.review(self.slates[t], self.streams)
        left = np.flatnonzero(fb.left)
        if len(left):
            self.users.end_sessions(left, np.full(len(left), t + 0.5), self.streams)
            self.users.start_sessions(left, np.full(len(left), t + 1.0), self.streams)
        self.walls.append(time.perf_counter() - started)
        self.counts.update({"turns": self.n, "fallbacks": int(fb.fallback.sum()),
                            "items": int((fb.reactions >= 0).sum()),
                            **{k: b - a for k, a, b in zip(COUNTED, before, _usage(self.backend))}})
        self.decided.append(decisions(fb))
        self.t += 1


def play(world: WorldConfig, backend: ChatBackend, n: int, turns: int, seed: int) -> Play:
    """`n` users, `turns` turns each."""
    game = Play(world, backend, n, turns, seed)
    for _ in range(turns):
        game.turn()
    return game


class Served(Rounds):
    """A `Play` in a child process running `python llm_turns.py` on another checkout (see the module docstring)."""

    def __init__(self, checkout: Path, n: int, turns: int, slate_size: int, seed: int) -> None:
        command = [sys.executable, __file__, "--users", str(n), "--turns", str(turns), "--slate-size",
                   str(slate_size), "--seed", str(seed)]
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=checkout)
        self.n, self.walls, self.counts, self.decided = n, [], Counter(), []
        self._read()  # ready: model loaded and warmed up

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the turn server exited with {self.proc.wait()}")
        return dict(json.loads(line))

    def turn(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("turn\n")
        self.proc.stdin.flush()
        state = self._read()
        self.walls, self.counts, self.decided = state["walls"], Counter(state["counts"]), state["decided"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--turns", type=int, required=True)
    parser.add_argument("--slate-size", type=int, default=10)
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        llm = LLMConfig(backend="local", cache="off", cache_path=Path(tmp) / "c.sqlite", n_threads=args.n_threads,
                        max_fallback_rate=1.0)
        world = WorldConfig(user_backend="llm", llm=llm, slate_size=args.slate_size)
        backend = make_backend(world.llm)
        play(world, backend, 1, 1, args.seed + 999)  # load and warm the model: not timed
        game = Play(world, backend, args.users, args.turns, args.seed)
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip() == "turn":
                game.turn()
                print(json.dumps({"walls": game.walls, "counts": dict(game.counts), "decided": game.decided}),
                      flush=True)
        from recoworld.llm.supervisor import close_all

        close_all()


if __name__ == "__main__":
    serve()
