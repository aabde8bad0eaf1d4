"""Benchmark: what one ToolRec turn costs, how its loop ends, and whether it follows instructions.

Each probe turn plays a warmed-up user; the agent is told "more of <topic>" for a topic that
is among the candidates but not the greedy favourite, and the probe measures the share of
slate items on that topic (`intent_match`) for ToolRec, greedy relevance (which ignores
instructions) and the instruction-aware baseline. Also reported: seconds and model calls
per turn, tool-call errors, and how each turn ended (finish, step budget, server down).

    python experiments/bench_toolrec.py [--turns 5] [--max-steps 3] [--backend local]
    python experiments/bench_toolrec.py --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tyro

from recoworld.agents import GreedyRelevanceRecommender, InstructionAwareRecommender
from recoworld.agents.toolrec import ToolRecConfig, ToolRecRecommender
from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.evaluation.metrics import intent_match
from recoworld.llm import LLMConfig, SamplingParams, make_backend


@dataclass
class Args:
    turns: int = 5
    """probe turns (one ToolRec `act` each)"""
    max_steps: int = 3
    """ToolRec model calls per turn (the paper's code uses 7)"""
    max_tokens: int = 96
    """completion tokens per model call"""
    slate_size: int = 3
    """items per slate"""
    candidates: int = 20
    """candidates per turn"""
    backend: Literal["local", "openai"] = "local"
    """chat backend: local (Gemma 3 270M in-process) or any OpenAI-compatible server"""
    base_url: str | None = None
    """OpenAI-compatible endpoint (backend openai)"""
    model: str | None = None
    """model name on the server (backend openai)"""
    seed: int = 0
    """seed of the catalog users, the agent and the probes"""


if __name__ == "__main__":
    args = tyro.cli(Args)

    # ------------------------------------------------------------------ setup
    catalog = cached_catalog(CatalogConfig(n_items=600, seed=args.seed))
    env = RecoWorldEnv(catalog=catalog, slate_size=args.slate_size, n_candidates=args.candidates, horizon_days=30)
    llm = LLMConfig(backend=args.backend, base_url=args.base_url, model=args.model, cache="off", max_retries=0,
                    repair=False)
    backend = make_backend(llm)
    config = ToolRecConfig(max_steps=args.max_steps, sampling=SamplingParams(temperature=0.3,
                                                                             max_tokens=args.max_tokens))
    toolrec = ToolRecRecommender(args.slate_size, catalog, seed=args.seed, config=config, backend=backend)
    greedy = GreedyRelevanceRecommender(args.slate_size)
    instruct = InstructionAwareRecommender(args.slate_size, catalog)
    rng = np.random.default_rng(args.seed)

    # ------------------------------------------------------------------ probe turns
    match: dict[str, list[float]] = {"toolrec": [], "greedy": [], "instruct": []}
    seconds: list[float] = []
    calls: list[int] = []
    endings: Counter[str] = Counter()
    steps = errors = 0
    obs, info = env.reset(seed=args.seed)
    for turn in range(args.turns):
        for _ in range(2):  # a little history, so relevance has something to go on
            obs, _, term, trunc, info = env.step(greedy.act(obs, info))
            if term or trunc:
                obs, info = env.reset(seed=int(rng.integers(2**31)))
        favourite = catalog.topic[obs["candidate_ids"][greedy.act(obs, info)[0]]]
        others = [t for t in np.unique(catalog.topic[obs["candidate_ids"]]) if t != favourite]
        topic = catalog.topic_names[int(rng.choice(others))]
        intent = {"kind": "more", "topics": [topic], "related": [], "attributes": {}}
        said = {"instruction": f"Show me more {topic}, please.", "instruction_intent": intent, "left": False}
        for agent in (toolrec, instruct):
            agent.observe(np.zeros(0, dtype=np.int64), said)
        before = backend.usage.requests
        start = time.perf_counter()
        slate = toolrec.act(obs, info)
        seconds.append(time.perf_counter() - start)
        calls.append(backend.usage.requests - before)
        trace = toolrec.last_trace or []
        endings[trace[-1]["ended_by"]] += 1
        steps += len(trace) - 1
        errors += sum("error" in s for s in trace[:-1])
        slates = {"toolrec": slate, "greedy": greedy.act(obs, info), "instruct": instruct.act(obs, info)}
        for name, chosen in slates.items():
            match[name].append(float(intent_match(intent, catalog, obs["candidate_ids"][chosen]).mean()))
        print(f"turn {turn}: asked for {topic!r}; {calls[-1]} calls, {seconds[-1]:.1f} s, ended by "
              f"{trace[-1]['ended_by']}; tools: {[s.get('tool') for s in trace[:-1]]}")

    # ------------------------------------------------------------------ report
    print(f"\nToolRec with {backend.model_name} ({args.backend}), {args.turns} turns, max_steps {args.max_steps}, "
          f"slate {args.slate_size} of {args.candidates}")
    print(f"{'seconds / turn':<28}{np.mean(seconds):>8.2f}")
    print(f"{'model calls / turn':<28}{np.mean(calls):>8.2f}")
    print(f"{'tool-call errors / step':<28}{errors / max(steps, 1):>8.2f}")
    print(f"{'turns ended by':<28}{dict(endings)}")
    print(f"\n{'recommender':<12}{'intent match':>14}")
    for name, values in match.items():
        print(f"{name:<12}{np.mean(values):>14.2f}")
    print(backend.usage.describe())
