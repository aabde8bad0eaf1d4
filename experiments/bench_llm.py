"""Benchmark: LLM-user decisions per second at several concurrency levels, and RecoWorld's overhead.

By default the "model" is the loopback chat-completions server from tests/fault_server.py
with a fixed think time (`--latency-ms`), so the figures isolate RecoWorld: prompt
building, the async client, validation, the parametric physics. `--base-url` points it at
a real OpenAI-compatible server instead (then server time is measured from the client side).

    python experiments/bench_llm.py [--users 32] [--turns 3] [--concurrency 1 4 16] [--latency-ms 50]
                                    [--review-modes slate item]

Overhead = (wall time - time the model spent answering) / time the model spent answering,
measured sequentially (concurrency 1), where the two are comparable. "client" counts the
openai/httpx client as overhead too; "recoworld" counts only RecoWorld's own code.

"Cost per turn" gives, for each review mode (`llm.review_mode`), the model calls, items reviewed
and tokens of an average turn (at the highest concurrency level; the cost does not depend on it).
A user who leaves starts a new session at the next turn, as in the world. The loopback server
answers `leave: true` a quarter of the time, so item-mode turns stop early about as often as a
plain random reply would; a user who watches the whole slate costs `--slate-size` calls a turn.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig, WorldConfig
from recoworld.llm import LLMConfig, make_backend
from recoworld.population import PopulationSpec, sample_population
from recoworld.simulators.llm_user import LLMUsers
from recoworld.streams import UserStreams

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fault_server import FaultServer  # a test helper, reused as the stand-in server


@dataclass
class Args:
    users: int = 32
    """simulated users whose turns run together"""
    turns: int = 3
    """turns per user"""
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    """request limits to compare"""
    latency_ms: float = 50.0
    """think time of the loopback server per request"""
    slate_size: int = 5
    """items per slate"""
    base_url: str | None = None
    """a real OpenAI-compatible server instead of the loopback one"""
    model: str = "loopback"
    """model name on the server"""
    seed: int = 0
    """seed of the users, slates and sampling"""
    review_modes: list[Literal["slate", "item"]] = field(default_factory=lambda: ["slate"])
    """LLM review modes to compare: slate = one call per turn, item = one call per item"""


def run_level(args: Args, url: str, limit: int, cache_dir: Path, mode: str = "slate") -> dict[str, float]:
    catalog = cached_catalog(CatalogConfig(n_items=2000, seed=args.seed))
    llm = LLMConfig(backend="openai", base_url=url, model=args.model, structured_output="json_object",
                    cache="off", cache_path=cache_dir / "unused.sqlite", concurrency=limit, max_retries=0,
                    timeout_s=120, review_mode=mode)
    world = WorldConfig(slate_size=args.slate_size, n_candidates=args.slate_size, user_backend="llm", llm=llm,
                        catalog=CatalogConfig(n_items=2000, seed=args.seed))
    backend = make_backend(llm)
    profiles = sample_population(PopulationSpec.default(), catalog, np.random.default_rng(args.seed), n=args.users)
    users = LLMUsers(catalog, world, args.users, backend)
    streams = UserStreams([np.random.default_rng([args.seed, i]) for i in range(args.users)])
    users.reset(profiles)
    users.start_sessions(np.arange(args.users), np.zeros(args.users), streams)
    slates = np.random.default_rng(args.seed).choice(len(catalog), size=(args.turns, args.users, args.slate_size))

    # ---------------------------------------------------------------- timed section
    started = time.perf_counter()
    fallbacks = items = 0
    for t in range(args.turns):
        fb = users.review(slates[t], streams)  # every user's turn in flight together
        fallbacks += int(fb.fallback.sum())
        items += int((fb.reactions >= 0).sum())
        left = np.flatnonzero(fb.left)
        if len(left):  # as in the world: a user who left comes back for the next turn's session
            users.start_sessions(left, np.full(len(left), t + 1.0), streams)
    wall = time.perf_counter() - started
    decisions = args.users * args.turns
    usage = backend.usage
    return {"wall": wall, "decisions": decisions, "fallbacks": fallbacks, "client_wait": usage.server_s,
            "tokens": usage.total_tokens, "calls": usage.requests, "items": items,
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def main(args: Args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.review_modes:
            for limit in args.concurrency:
                if args.base_url is None:
                    with FaultServer(latency_s=args.latency_ms / 1000) as srv:
                        r = run_level(args, srv.url, limit, Path(tmp), mode)
                        r["server"], r["in_flight"] = srv.busy_s, srv.max_in_flight
                else:
                    r = run_level(args, args.base_url, limit, Path(tmp), mode)
                    r["server"], r["in_flight"] = r["client_wait"], float("nan")
                rows.append((mode, limit, r))

    # ---------------------------------------------------------------- report
    print(f"{args.users} users x {args.turns} turns, slate {args.slate_size}, "
          f"{'loopback ' + str(args.latency_ms) + ' ms' if args.base_url is None else args.base_url}")
    print(f"{'limit':>6} {'in flight':>9} {'decisions/s':>12} {'tokens/dec':>11} {'fallbacks':>9} "
          f"{'overhead client':>16} {'overhead recoworld':>19} {'mode':>6}")
    for mode, limit, r in rows:
        sequential = limit == 1
        client = (r["wall"] - r["server"]) / r["server"] if sequential else float("nan")
        own = (r["wall"] - r["client_wait"]) / r["server"] if sequential else float("nan")
        print(f"{limit:>6} {r['in_flight']:>9} {r['decisions'] / r['wall']:>12.1f} "
              f"{r['tokens'] / r['decisions']:>11.0f} {r['fallbacks']:>9} {client:>15.1%} {own:>18.1%} {mode:>6}")

    top = max(args.concurrency)
    print(f"cost per turn (a turn = one user's slate; limit {top})")
    print(f"{'mode':>6} {'calls/turn':>11} {'items/turn':>11} {'prompt tok/turn':>16} {'reply tok/turn':>15} "
          f"{'tokens/turn':>12} {'x slate':>8} {'tokens/item':>12}")
    per_turn = {mode: r for mode, limit, r in rows if limit == top}
    base = per_turn.get("slate")
    for mode, r in per_turn.items():
        n = r["decisions"]
        ratio = r["tokens"] / base["tokens"] if base else float("nan")
        print(f"{mode:>6} {r['calls'] / n:>11.2f} {r['items'] / n:>11.2f} {r['prompt_tokens'] / n:>16.0f} "
              f"{r['completion_tokens'] / n:>15.0f} {r['tokens'] / n:>12.0f} {ratio:>8.2f} "
              f"{r['tokens'] / max(r['items'], 1):>12.0f}")


if __name__ == "__main__":
    main(tyro.cli(Args))
