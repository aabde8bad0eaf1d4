"""Benchmark: what an LLM-user turn costs on the bundled local model, supervised or in-process.

For each isolation mode it loads Gemma 3 270M, plays `--turns` LLM-user turns on slates of
`--slate-size` items (cache off, so every turn calls the model), and prints the load time,
seconds per turn, tokens per second and the share of turns the model answered validly. For
the supervised mode it then SIGKILLs the model process and times the next turn: the price
of a crash is one restart.

    python experiments/bench_local_llm.py [--turns 6] [--slate-size 2] [--max-tokens 192]
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from recoworld.catalog import cached_catalog
from recoworld.config import CatalogConfig, WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.llm import LLMConfig, LocalModelConfig, make_backend
from recoworld.llm.local import LocalLlamaBackend
from recoworld.llm.supervisor import close_all
from recoworld.simulators.llm_user import LLMUsers


@dataclass
class Args:
    turns: int = 6
    slate_size: int = 2
    max_tokens: int = 192
    n_threads: int | None = None
    seed: int = 0


def run(args: Args, isolation: Literal["process", "in_process"], cache: Path) -> None:
    catalog = cached_catalog(CatalogConfig(n_items=300, seed=3))
    llm = LLMConfig(backend="local", cache="off", cache_path=cache, max_retries=0, repair=False, n_ctx=2048,
                    n_threads=args.n_threads, sampling={"max_tokens": args.max_tokens},
                    local=LocalModelConfig(isolation=isolation, log_path=cache.parent / "model.log"))
    cfg = WorldConfig(slate_size=args.slate_size, n_candidates=max(5, args.slate_size), max_steps=args.turns,
                      catalog={"n_items": len(catalog), "seed": 3}, user_backend="llm", llm=llm)
    backend = make_backend(llm)
    assert isinstance(backend, LocalLlamaBackend)
    user = LLMUsers(catalog, cfg, 1, backend)
    env = RecoWorldEnv(cfg, catalog=catalog, user_simulator=user)
    rng = np.random.default_rng(args.seed)

    started = time.perf_counter()
    env.reset(seed=args.seed)
    turns, valid, turn_s = 0, 0, 0.0
    while turns < args.turns:
        t0 = time.perf_counter()
        _, _, terminated, truncated, info = env.step(rng.permutation(cfg.n_candidates)[: cfg.slate_size])
        turn_s += time.perf_counter() - t0
        turns += 1
        valid += not info["llm_fallback"]
        if terminated or truncated:
            env.reset(seed=args.seed + turns)
    u = backend.usage
    load_s = u.model_load_s if isolation == "process" else float("nan")
    print(f"{isolation:>10}: load {load_s:5.1f} s | {turn_s / turns:5.1f} s per turn ({turns} turns, "
          f"{u.requests} calls) | {u.completion_tokens / max(u.server_s, 1e-9):5.1f} completion tokens/s | "
          f"valid replies {valid}/{turns} | total {time.perf_counter() - started:5.1f} s")
    if isolation == "process":
        os.kill(backend.process().pid or 0, signal.SIGKILL)
        time.sleep(0.5)  # killed while idle: the next call restarts it first, and loses nothing
        t0 = time.perf_counter()
        env.reset(seed=args.seed)
        env.step(rng.permutation(cfg.n_candidates)[: cfg.slate_size])
        print(f"{'':>10}  after SIGKILL: the next turn took {time.perf_counter() - t0:5.1f} s "
              f"(restarts {u.model_restarts}, deaths {u.model_deaths})")
        close_all()


def main(args: Args) -> None:
    print(f"Gemma 3 270M on {os.cpu_count()} CPUs, slate of {args.slate_size}, max_tokens {args.max_tokens}")
    with tempfile.TemporaryDirectory() as tmp:
        for isolation in ("process", "in_process"):
            run(args, isolation, Path(tmp) / isolation / "llm.sqlite")


if __name__ == "__main__":
    main(tyro.cli(Args))
