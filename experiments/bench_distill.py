"""Speed of the distilled surrogate (issue 15): user-item evaluations per second of the parametric user.

    python experiments/bench_distill.py                     # a distilled world fitted on the spot
    python experiments/bench_distill.py --world runs/distilled --batch 4096 --slate 10

Without --world it runs the scripted hidden-rule LLM user of tests/distill_rule.py through a small
`simulate` run, distills it, then times `ParametricUsers.review` on the distilled world: B users x K
items per call, the way the vector env and studies drive it. One evaluation = one user reviewing one item.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from recoworld.calibration import load_calibration
from recoworld.calibration.distill import distill_run
from recoworld.simulators.parametric import ParametricUsers
from recoworld.streams import UserStreams


def scripted_world(tmp: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from recoworld.config import WorldConfig
    from recoworld.evaluation.simulation import SimulationConfig, simulate
    from recoworld.llm import backend as llm_backend
    from recoworld.llm.scripted import ScriptedBackend, scripted_config
    from tests.distill_rule import HiddenRule

    llm = scripted_config(review_mode="item", concurrency=8, max_retries=0, repair=False, max_fallback_rate=1.0)
    world = WorldConfig(slate_size=5, n_candidates=20, horizon_days=5, max_steps=60, user_backend="llm",
                        catalog={"n_items": 400, "n_topics": 6, "seed": 3}, llm=llm)
    llm_backend._SHARED[llm] = ScriptedBackend(HiddenRule(), llm)
    simulate(SimulationConfig(n_users=20, agents=["random", "popular"], seed=1, world=world), out=tmp / "run")
    distill_run(tmp / "run", tmp / "distilled", n_boot=20)
    return tmp / "distilled"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, help="a distilled (or calibrated) world folder")
    ap.add_argument("--batch", type=int, default=4096, help="users reviewing at once")
    ap.add_argument("--slate", type=int, default=10, help="items per slate")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.world or scripted_world(Path(tmp))
        world = load_calibration(folder)
    users = ParametricUsers(world.catalog, world.world.choice, world.world.dynamics, world.world.returns)
    rng = np.random.default_rng(0)
    profiles = [world.profiles[i % len(world.profiles)] for i in range(args.batch)]
    users.reset(profiles)
    streams = UserStreams([np.random.default_rng(i) for i in range(args.batch)])
    rows = np.arange(args.batch)
    n_items = len(world.catalog)
    slates = rng.integers(0, n_items, (8, args.batch, args.slate))
    users.start_sessions(rows, np.zeros(args.batch), streams)
    evaluations, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        users.review(slates[(evaluations // (args.batch * args.slate)) % len(slates)], streams)
        evaluations += args.batch * args.slate
    rate = evaluations / (time.perf_counter() - start)
    print(f"distilled surrogate: {rate:,.0f} user-item evaluations/s (batch {args.batch} x slate {args.slate}, "
          f"choice.duration {world.world.choice.duration:.2f})")


if __name__ == "__main__":
    main()
