"""Instruction following: which recommenders listen, through which channel, and does retrieval let them?

Every recommender plays the same seeded users (common random numbers) in six worlds: the
three instruction channels (`structured`: the parsed intent; `text`: the words, embedded;
`none`: nothing) crossed with instruction-aware retrieval on (`retrieval.instruction_share`,
default 0.2) or off (0). Users instruct early and often (the dynamics of RecoWorld-Bench's
`instruction-probe` scenario; `--users-who-instruct default` for the default world's). Per
recommender and world it reports, each as a mean with a 95% CI over users: retention, and
instruction following measured three ways on the turns with an instruction in force (each
user's share of slates with at least half their items honouring the intent, i.e. topic match;
the mean embedding similarity of the slate to the instruction's text; an LLM judge's score,
only when a judge server is given), plus the share of those turns whose candidates could
satisfy the instruction.

ToolRec is an LLM agent, so it gets its own, smaller size (`--toolrec-users`, `--toolrec-days`,
`--toolrec-turns`), and the heuristics replay that size with it so the second table compares
like with like. It runs on the bundled local model (Gemma 3 270M, about 7 tokens/s on 2 cores)
or any OpenAI-compatible server, and searches the catalog through the platform
(`retrieval.search_cap`). Replies are cached (`<out>/llm-cache`), so a rerun replays them.

    python experiments/instruction_following.py --out runs/instruction_following
    python experiments/instruction_following.py --backend openai --base-url http://127.0.0.1:8000/v1 --model m \\
        --toolrec-users 50 --toolrec-days 7 --toolrec-turns 1000
    python experiments/instruction_following.py --judge-base-url http://127.0.0.1:8000/v1 --judge-model m
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import tyro

from recoworld.agents import Recommender, make_recommender
from recoworld.agents.toolrec import ToolRecConfig, ToolRecRecommender
from recoworld.bench.scenarios import SCENARIOS
from recoworld.catalog import Catalog
from recoworld.config import DynamicsConfig, RetrievalConfig, WorldConfig
from recoworld.evaluation.simulation import SimulationConfig, simulate
from recoworld.llm import ChatBackend, LLMConfig, SamplingParams, make_backend
from recoworld.stats import mean_ci

Channel = Literal["structured", "text", "none"]
#: Per-user measures, in table order: (column, header).
MEASURES = (("retention", "retention"), ("following", "topic match"), ("similarity", "similarity"),
            ("judge", "judge"), ("satisfiable", "satisfiable"))


@dataclass
class Args:
    users: int = 100
    """users per world for the heuristics (greedy, instruct, diverse)"""
    days: float = 14.0
    """horizon in days for the heuristics"""
    agents: tuple[str, ...] = ("greedy", "instruct", "diverse", "toolrec")
    """recommenders to compare (any registered name; toolrec runs at the ToolRec size)"""
    channels: tuple[Channel, ...] = ("structured", "text", "none")
    """instruction channels to run"""
    instruction_share: float = 0.2
    """share of candidates answering the instruction when instruction-aware retrieval is on (off = 0)"""
    slate_size: int = 5
    """items per slate"""
    candidates: int = 30
    """candidates per turn"""
    toolrec_users: int = 2
    """users per world at the ToolRec size"""
    toolrec_days: float = 1.0
    """horizon in days at the ToolRec size"""
    toolrec_turns: int = 5
    """turns per user at the ToolRec size (episodes are truncated there; `WorldConfig.max_steps`)"""
    max_steps: int = 2
    """ToolRec model calls per turn (the paper's code uses 7)"""
    max_tokens: int = 96
    """completion tokens per ToolRec model call"""
    backend: Literal["local", "openai"] = "local"
    """ToolRec's chat backend: the bundled local model, or an OpenAI-compatible server"""
    base_url: str | None = None
    """OpenAI-compatible endpoint (backend openai)"""
    model: str | None = None
    """model name on the server (backend openai)"""
    judge_base_url: str | None = None
    """OpenAI-compatible endpoint of an LLM judge of instruction following; none: no judge column"""
    judge_model: str | None = None
    """the judge's model name on that server"""
    users_who_instruct: Literal["often", "default"] = "often"
    """'often': the dynamics of RecoWorld-Bench's instruction-probe scenario (users instruct early and often,
    so a short run has instructions to follow); 'default': the default world's users"""
    seed: int = 0
    """seed of the users, their episodes and the agents"""
    out: Path | None = None
    """folder for results.csv and the LLM cache; none: print only"""


def per_user(result_traj: pd.DataFrame, episodes: pd.DataFrame) -> pd.DataFrame:
    """One row per recommender and user: retention, and the instruction measures over the user's turns
    with an instruction in force (NaN for a user who never gave one)."""
    turns = result_traj.drop_duplicates(["recommender", "user_id", "step"])
    asked = turns[turns["intent_match"].notna()].assign(
        following=lambda t: (t["intent_match"] >= 0.5).astype(float),
        satisfiable=lambda t: t["instruction_satisfiable"].astype(float),
        similarity=lambda t: t["instruction_similarity"].astype(float),
        judge=lambda t: pd.to_numeric(t["instruction_judge"], errors="coerce"),
    )
    measures = asked.groupby(["recommender", "user_id"])[["following", "similarity", "judge", "satisfiable"]].mean()
    users = episodes.set_index(["recommender", "user_id"])[["retention"]]
    return users.join(measures).reset_index()


def summarize_cell(users: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI half-width of each measure per recommender, over its users."""
    rows = []
    for name, group in users.groupby("recommender", sort=False):
        row: dict[str, object] = {"recommender": name, "users": len(group),
                                  "instructed_users": int(group["following"].notna().sum())}
        for column, _ in MEASURES:
            row[column], row[f"{column}_ci"] = mean_ci(group[column])
        rows.append(row)
    return pd.DataFrame(rows)


def run(args: Args, toolrec_backend: ChatBackend | None = None) -> pd.DataFrame:
    """Every world and size; one row per (size, channel, retrieval, recommender). `toolrec_backend`
    replaces the backend the flags describe (tests pass a scripted one)."""
    judge = (LLMConfig(backend="openai", base_url=args.judge_base_url, model=args.judge_model,
                       cache_path=args.out / "llm-cache" / "llm.sqlite" if args.out else None)
             if args.judge_base_url else None)
    heuristics = [a for a in args.agents if a != "toolrec"]
    sizes = [(f"{args.users} users x {args.days:g} days", args.users, args.days, WorldConfig().max_steps,
              heuristics)] if heuristics else []
    backend = toolrec_backend
    if "toolrec" in args.agents:
        sizes.append((f"{args.toolrec_users} users x {args.toolrec_days:g} days, at most {args.toolrec_turns} turns "
                      "each (the ToolRec size)", args.toolrec_users, args.toolrec_days, args.toolrec_turns,
                      list(args.agents)))
        backend = backend or make_backend(LLMConfig(
            backend=args.backend, base_url=args.base_url, model=args.model, max_retries=1,
            cache_path=args.out / "llm-cache" / "llm.sqlite" if args.out else None))
    toolrec_config = ToolRecConfig(max_steps=args.max_steps,
                                   sampling=SamplingParams(temperature=0.3, max_tokens=args.max_tokens))

    def build(name: str, catalog: Catalog, k: int, seed: int | None) -> Recommender:
        if name == "toolrec" and backend is not None:
            return ToolRecRecommender(k, catalog, seed=seed, config=toolrec_config, backend=backend)
        return make_recommender(name, catalog, k, seed)

    probe = SCENARIOS["instruction-probe"].world["dynamics"]
    dynamics = DynamicsConfig(**probe) if args.users_who_instruct == "often" else DynamicsConfig()
    parts = []
    for size, n_users, days, turns, agents in sizes:
        for channel in args.channels:
            for aware in (True, False):
                world = WorldConfig(
                    slate_size=args.slate_size, n_candidates=args.candidates, horizon_days=days, max_steps=turns,
                    instruction_channel=channel, dynamics=dynamics,
                    retrieval=RetrievalConfig(instruction_share=args.instruction_share if aware else 0.0),
                )
                start = time.perf_counter()
                result = simulate(SimulationConfig(n_users=n_users, agents=agents, world=world, seed=args.seed,
                                                   judge=judge), build_agent=build)
                cell = summarize_cell(per_user(result.trajectories, result.episodes))
                parts.append(cell.assign(size=size, channel=channel, retrieval="aware" if aware else "blind"))
                print(f"[{size}] channel={channel} retrieval={'aware' if aware else 'blind'}: {n_users} users x "
                      f"{days:g} days, {time.perf_counter() - start:.0f} s", flush=True)
    return pd.concat(parts, ignore_index=True)


def markdown(table: pd.DataFrame, judged: bool) -> str:
    """One markdown table per size: a row per recommender, channel and retrieval; `mean ± CI` cells."""
    measures = [(c, h) for c, h in MEASURES if judged or c != "judge"]
    blocks = []
    for size, part in table.groupby("size", sort=False):
        lines = [f"**{size}**", "",
                 "| recommender | channel | retrieval | " + " | ".join(h for _, h in measures) + " |",
                 "|---|---|---|" + "---|" * len(measures)]
        order = {name: i for i, name in enumerate(dict.fromkeys(part["recommender"]))}
        for _, row in part.sort_values("recommender", key=lambda s: s.map(order), kind="stable").iterrows():
            cells = [_cell(row[c], row[f"{c}_ci"]) for c, _ in measures]
            lines.append(f"| {row['recommender']} | {row['channel']} | {row['retrieval']} | {' | '.join(cells)} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _cell(mean: float, half: float) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.3f}" if np.isnan(half) else f"{mean:.3f} ± {half:.3f}"


if __name__ == "__main__":
    args = tyro.cli(Args)
    results = run(args)
    print()
    print(markdown(results, judged=args.judge_base_url is not None))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        results.to_csv(args.out / "results.csv", index=False)
        print(f"\nwrote {args.out / 'results.csv'}")
