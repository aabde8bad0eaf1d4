"""Speed of the distilled surrogate (issue 15): user-item evaluations per second, on one pinned core.

    python experiments/bench_distill.py                     # a surrogate fitted on the spot (scripted LLM user)
    python experiments/bench_distill.py --world runs/distilled --batch 4096 --slate 10

Without --world it runs the scripted hidden-rule LLM user of tests/distill_rule.py through a small `simulate`
run and distills it with `--neural`. One evaluation = one user reviewing one item. Two figures:
- the distilled parametric user: `ParametricUsers.review` on the distilled world, B users x K items per call,
  the way the vector env and studies drive it (reactions, dwell, mindset updates, leaving, instructions);
- the neural choice model (DIR/neural.pt, when distill ran with --neural): `NeuralChoice.scores` on B x K
  decisions per call (reaction probabilities, share watched, leaving), from prepared inputs; and end to end from
  a decision table (`inputs` + `scores`), as the agreement report calls it.
"""

from __future__ import annotations

import os

# One core: pin the process and keep BLAS and torch single-threaded (as experiments/bench_env.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from recoworld.calibration import load_calibration  # noqa: E402
from recoworld.calibration.distill import distill_run, read_run  # noqa: E402
from recoworld.calibration.neural import inputs, load_neural  # noqa: E402
from recoworld.simulators.parametric import ParametricUsers  # noqa: E402
from recoworld.streams import UserStreams  # noqa: E402


def scripted_world(tmp: Path) -> Path:
    """Distill (with --neural) a small run of the hidden-rule LLM user; the distilled folder."""
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
    distill_run(tmp / "run", tmp / "distilled", n_boot=20, neural=True)
    return tmp / "distilled"


def rate(call: Callable[[int], None], per_call: int, seconds: float) -> str:
    """Evaluations per second of `call(i)` (each `per_call` evaluations) after a warm-up call: the median over
    the calls of `seconds`, and the best call's (what the core does when no other process takes it: on a shared
    machine the median moves with the load, the best much less)."""
    call(0)
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call(len(times) + 1)
        times.append(time.perf_counter() - t0)
    return f"median {per_call / float(np.median(times)):>11,.0f}, best {per_call / min(times):>11,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=Path, help="a distilled folder (recoworld distill --out)")
    ap.add_argument("--run", type=Path, help="its LLM run (for the end-to-end neural figure; default: none)")
    ap.add_argument("--batch", type=int, default=4096, help="users reviewing at once")
    ap.add_argument("--slate", type=int, default=10, help="items per slate")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to time each figure")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    folder = args.world or scripted_world(Path(tmp.name))
    run = args.run or (None if args.world else Path(tmp.name) / "run")
    world = load_calibration(folder)
    n = args.batch * args.slate
    print(f"one pinned core (cpu {min(os.sched_getaffinity(0))}), batch {args.batch} x slate {args.slate}")

    users = ParametricUsers(world.catalog, world.world.choice, world.world.dynamics, world.world.returns)
    users.reset([world.profiles[i % len(world.profiles)] for i in range(args.batch)])
    streams = UserStreams([np.random.default_rng(i) for i in range(args.batch)])
    slates = np.random.default_rng(0).integers(0, len(world.catalog), (8, args.batch, args.slate))
    users.start_sessions(np.arange(args.batch), np.zeros(args.batch), streams)
    print(f"distilled parametric user: {rate(lambda i: users.review(slates[i % 8], streams), n, args.seconds)}"
          f" user-item evaluations/s (choice.duration {world.world.choice.duration:.2f})")

    if not (folder / "neural.pt").is_file():
        print("neural choice model: none in this folder (distill without --neural)")
        return
    model = load_neural(folder / "neural.pt")
    table = None
    if run is not None:
        items = read_run(run).items
        table = items.iloc[np.arange(n) % len(items)].reset_index(drop=True)
        x = inputs(table)
    else:  # inputs drawn around the fitted standardization: the scorer's cost does not depend on their values
        x = (model.mean + model.std * np.random.default_rng(0).standard_normal((n, len(model.mean)))).astype(
            np.float32)
    print(f"neural choice model:       {rate(lambda i: model.scores(x), n, args.seconds)}"
          " user-item evaluations/s (scores on prepared inputs)")
    if table is not None:
        print(f"neural, from a table:      {rate(lambda i: model.scores(inputs(table)), n, args.seconds)}"
              " user-item evaluations/s (inputs + scores)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
