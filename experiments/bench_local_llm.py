"""Benchmark: LLM users on the bundled local model (Gemma 3 270M), by decoding: speed, validity, agreement.

    python experiments/bench_local_llm.py [--users 1 4 16] [--turns 2] [--decodings grammar schema] [--batches 1 8]
        [--cache-slots 1 16] [--threads 0 1] [--reasons False True] [--grammar-users 1 4] [--validity-users 10]
        [--validity-turns 10] [--agreement 6] [--before DIR]

`grammar` is llama.cpp's grammar-constrained sampling (the decoding before schema decoding);
`schema` is `recoworld.llm.schema_decoder` (`llm.local.decoding`, the default), one request at a
time (`llm.local.batch: 1`, the default) and batched (`--batches`), with one cached sequence or
several (`--cache-slots`, `llm.local.cache_slots`: a user's persona stays cached while others take
their turns), on the model's default threads or others (`--threads`, `llm.n_threads`), with or without
a reason per item (`--reasons`, `llm.reasons`). All run in the supervised model process, on the default
world (slate of 10 items, prompts as users get them).

- **Speed.** For each decoding and each N in `--users`, N LLM users play `--turns` turns each,
  all of a step's turns in flight together as in a study. The settings compared at one N take
  turns (in a rotating order), so a load that comes and goes on the machine falls on all of
  them alike. Prints seconds per turn (wall time / turns, and its range over the rounds), turns/s
  and items decided/s, the model's tokens per turn (prompt, of which taken from the cache, and
  reply) and the fallbacks. The model answers one request at a time, so grammar decoding's time per turn does
  not fall with N; it runs at `--grammar-users` only (it takes about a minute a turn).
- **Before and after.** With `--before DIR` (a checkout of an older RecoWorld), its code plays the
  same users, slates and seeds at each of `--grammar-users`, with its own defaults, taking turns with
  the settings above (see `llm_turns.py`). Each setting's decisions are then compared with its: the
  share of items both saw with the same decision (on first turns the users' states are still
  equal), the decision shares of each and their total-variation distance, and the fallbacks.
- **Validity.** `--validity-users` users x `--validity-turns` turns with schema decoding: the
  share of turns the model decided (first reply or after repair), against the 95% target.
- **Agreement.** On `--agreement` first turns (the same users, slates, prompts and seeds under
  both decodings), the share of items with the same reaction under grammar and schema
  decoding, beside each decoding against itself with another seed (what sampling alone
  changes); the reaction shares of each over both seeds, and the total-variation distance
  between shares (grammar's two seeds against each other, and grammar against schema).
- **A crash.** The model process is killed with SIGKILL and the next turn timed: it restarts the
  process (one load and warm-up) and loses nothing.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro
from llm_turns import Play, Rounds, Served, play

from recoworld.catalog import cached_catalog
from recoworld.config import WorldConfig
from recoworld.llm import LLMConfig, LocalModelConfig, make_backend
from recoworld.llm.backend import ChatBackend, Structured
from recoworld.llm.local import LocalLlamaBackend
from recoworld.llm.supervisor import close_all
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators.parametric import ParametricUsers
from recoworld.simulators.prompts import TurnDecision, turn_messages, turn_schema

Decoding = Literal["grammar", "schema"]


@dataclass
class Args:
    users: list[int] = field(default_factory=lambda: [1, 4, 16])
    """numbers of users whose turns run together (schema decoding)"""
    grammar_users: list[int] = field(default_factory=lambda: [1, 4])
    """numbers of users for grammar decoding (a minute a turn: kept small)"""
    turns: int = 2
    """turns per user in the speed runs"""
    batches: list[int] = field(default_factory=lambda: [1, 8])
    """schema decoding's `llm.local.batch` settings to compare (requests decoded together)"""
    cache_slots: list[int] = field(default_factory=lambda: [1, 16])
    """schema decoding's `llm.local.cache_slots` settings to compare (sequences kept cached; at least `batch`)"""
    decodings: list[Decoding] = field(default_factory=lambda: ["grammar", "schema"])
    validity_users: int = 10
    validity_turns: int = 10
    agreement: int = 6
    """first-turn prompts compared between decodings (0 = skip)"""
    slate_size: int = 10
    """items per slate (the default world's)"""
    threads: list[int] = field(default_factory=lambda: [0])
    """schema decoding's `llm.n_threads` settings to compare (0 = the default: every core)"""
    reasons: list[bool] = field(default_factory=lambda: [False])
    """`llm.reasons` settings to compare (a free-text reason per item, or none: the default)"""
    seed: int = 0
    before: Path | None = None
    """a checkout of RecoWorld from before a change (`git worktree add DIR REV`): its code, with its own
    defaults, plays turns too at each of `--grammar-users`, taking turns with the settings above"""


#: A speed run's model settings: decoding (or "before": `--before`'s code), `llm.local.batch`,
#: `llm.local.cache_slots`, `llm.n_threads` (0: the default), `llm.reasons`.
Setting = tuple[str, int, int, int, bool]
BEFORE: Setting = ("before", 1, 1, 0, True)


def config(setting: tuple[Decoding, int, int, int, bool], args: Args, cache: Path) -> WorldConfig:
    decoding, batch, slots, threads, reasons = setting
    llm = LLMConfig(backend="local", cache="off", cache_path=cache, n_threads=threads or None,
                    max_fallback_rate=1.0, reasons=reasons,
                    local=LocalModelConfig(decoding=decoding, batch=batch, cache_slots=slots,
                                           log_path=cache.parent / "m.log"))
    return WorldConfig(user_backend="llm", llm=llm, slate_size=args.slate_size)


def row(setting: Setting, game: Rounds) -> str:
    c, wall, t = game.counts, game.wall, game.counts["turns"]
    threads, rounds = setting[3] or "def", [w / game.n for w in game.walls]
    return (f"{setting[0]:>9} {setting[1]:>5} {setting[2]:>5} {threads:>7} {setting[4]!s:>7} {game.n:>5} {t:>5} "
            f"{wall / t:>7.2f} "
            f"{min(rounds):>5.1f}-{max(rounds):<5.1f} "
            f"{t / wall:>8.3f} {c['items'] / wall:>8.2f} {c['prompt'] / t:>15.0f} {c['cached'] / t:>6.0f} "
            f"{c['completion'] / t:>14.0f} {c['calls'] / t:>10.2f} {c['fallbacks']:>9}")


def first_turn_reactions(backend: ChatBackend, world: WorldConfig, k: int, seed: int,
                         sampling_seed: int) -> list[list[str]]:
    """The reactions of `k` users to their first slate, through `backend` (one call each)."""
    catalog = cached_catalog(world.catalog)
    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(seed), n=k)
    state = ParametricUsers(catalog, world.choice, world.dynamics, world.returns)
    state.reset(profiles)
    slates = np.random.default_rng(seed).choice(len(catalog), size=(k, world.slate_size))
    topics = list(catalog.topic_names)
    out = []
    for u in range(k):
        slate = slates[u].tolist()
        messages = turn_messages(catalog, profiles[u], state.mindset(u), "", [], 8, slate, world.llm.reasons)
        spec = Structured(TurnDecision, json_schema=turn_schema(slate, topics,
                                                                [float(catalog.duration_min[i]) for i in slate],
                                                                world.llm.reasons))
        params = backend.config.sampling.model_copy(update={"seed": sampling_seed + u})
        decision = backend.complete(messages, spec, params)
        out.append([r.reaction for r in decision.reactions])
    return out


def agree(a: list[list[str]], b: list[list[str]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(x == y for x, y in pairs) / len(pairs)


REACTION_NAMES = ("skip", "dislike", "click", "like", "share")


def shares(runs: list[list[str]]) -> np.ndarray:
    counts = Counter(r for run in runs for r in run)
    return np.array([counts[name] for name in REACTION_NAMES]) / sum(counts.values())


def shown(share: np.ndarray) -> str:
    return " ".join(f"{name} {x:.2f}" for name, x in zip(REACTION_NAMES, share))


def distance(a: list[list[str]], b: list[list[str]]) -> float:
    """Total-variation distance between the reaction shares of `a` and `b`."""
    return float(np.abs(shares(a) - shares(b)).sum() / 2)


def against(before: Rounds, now: Rounds) -> str:
    """How `now`'s decisions compare with `before`'s on the same users, slates and seeds."""

    def both_saw(turns: slice) -> tuple[list[list[str]], list[list[str]]]:
        pairs = [(x, y) for ta, tb in zip(before.decided[turns], now.decided[turns]) for ua, ub in zip(ta, tb)
                 for x, y in zip(ua, ub) if "unseen" not in (x, y)]
        return [[x for x, _ in pairs]], [[y for _, y in pairs]]

    first, every = both_saw(slice(0, 1)), both_saw(slice(None))
    return (f"  vs before: same decision on {agree(*first):.2f} of {len(first[0][0])} first-turn items, "
            f"{agree(*every):.2f} of {len(every[0][0])} items both saw | shares: before {shown(shares(every[0]))}; "
            f"this {shown(shares(every[1]))} | distance {distance(*every):.2f} | fallbacks {before.counts['fallbacks']}"
            f" before, {now.counts['fallbacks']} this")


def main(args: Args) -> None:
    print(f"Gemma 3 270M (portable llama.cpp build) on {os.cpu_count()} CPUs, slate of {args.slate_size}")
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[tuple[Decoding, int, int, int, bool], list[int]] = (
            {("grammar", 1, 1, 0, r): args.grammar_users for r in args.reasons} if "grammar" in args.decodings
            else {})
        if "schema" in args.decodings:
            runs |= {("schema", batch, slots, threads, r): args.users for batch in args.batches
                     for slots in args.cache_slots for threads in args.threads for r in args.reasons
                     if slots >= batch}
        worlds = {key: config(key, args, Path(tmp) / "-".join(map(str, key)) / "c.sqlite") for key in runs}
        made = {key: make_backend(w.llm) for key, w in worlds.items()}
        print(f"{'decoding':>9} {'batch':>5} {'slots':>5} {'threads':>7} {'reasons':>7} {'users':>5} {'turns':>5} "
              f"{'s/turn':>7} "
              f"{'per round':>11} {'turns/s':>8} {'items/s':>8} {'prompt tok/turn':>15} {'cached':>6} "
              f"{'reply tok/turn':>14} {'calls/turn':>10} {'fallbacks':>9}")
        for key in runs:  # start and warm each model process: not timed
            play(worlds[key], made[key], 1, 1, args.seed + 999)
        for n in sorted({n for users in runs.values() for n in users}):
            games: dict[Setting, Rounds] = {
                key: Play(worlds[key], made[key], n, args.turns, args.seed) for key, users in runs.items()
                if n in users}
            if args.before is not None and n in args.grammar_users:
                games[BEFORE] = Served(args.before, n, args.turns, args.slate_size, args.seed)
            order = list(games)
            for t in range(args.turns):  # the settings take turns, in a rotating order
                for setting in order[t % len(order):] + order[: t % len(order)]:
                    games[setting].turn()
            for setting, game in games.items():
                print(row(setting, game))
            before = games.pop(BEFORE, None)
            if isinstance(before, Served):
                before.close()
                for setting, game in games.items():
                    print(f"{setting[0]} batch {setting[1]} slots {setting[2]} threads {setting[3] or 'def'} "
                          f"reasons {setting[4]}:")
                    print(against(before, game))
        schema = [key for key in runs if key[0] == "schema"]
        if schema:  # the price of a crash: the next turn restarts the model process first
            local = made[schema[0]]
            assert isinstance(local, LocalLlamaBackend)
            os.kill(local.process().pid or 0, signal.SIGKILL)
            time.sleep(0.5)
            game = play(worlds[schema[0]], local, 1, 1, args.seed + 3)
            print(f"after kill -9 of the model process: the next turn took {game.wall:.1f} s "
                  f"(restarts {local.usage.model_restarts}, fallbacks {game.counts['fallbacks']})")
        if schema and args.validity_users:  # decisions do not depend on the batch: the widest is the quickest
            key = max(schema, key=lambda k: k[1])
            c = (game := play(worlds[key], made[key], args.validity_users, args.validity_turns, args.seed + 1)).counts
            print(f"validity (schema, batch {key[1]}, reasons {key[4]}): {c['turns'] - c['fallbacks']}/{c['turns']} "
                  f"turns decided by the model ({1 - c['fallbacks'] / c['turns']:.1%}; target 95%) | "
                  f"{game.wall / c['turns']:.2f} s/turn, {c['calls']} calls")
        grammar_key = next((key for key in runs if key[0] == "grammar"), None)
        if args.agreement and schema and grammar_key is not None:
            k, first = args.agreement, schema[0]
            world = worlds[first]
            grammar, grammar2 = (first_turn_reactions(made[grammar_key], world, k, args.seed + 2, s)
                                 for s in (0, 10_000))
            decoded, decoded2 = (first_turn_reactions(made[first], world, k, args.seed + 2, s) for s in (0, 10_000))
            print(f"agreement over {k} first turns ({k * args.slate_size} items): grammar vs schema "
                  f"{agree(grammar, decoded):.2f} | another seed: grammar vs grammar {agree(grammar, grammar2):.2f}, "
                  f"schema vs schema {agree(decoded, decoded2):.2f}")
            print(f"  reaction shares, both seeds: grammar {shown(shares(grammar + grammar2))} | "
                  f"schema {shown(shares(decoded + decoded2))}")
            print(f"  total-variation distance of shares: grammar seed vs seed {distance(grammar, grammar2):.2f} | "
                  f"grammar vs schema {distance(grammar + grammar2, decoded + decoded2):.2f}")
    close_all()


if __name__ == "__main__":
    main(tyro.cli(Args))
