"""Benchmark: how a study scales with Ray workers, and what a million-user study would take (issue 32, part 3).

Prints, for one study spec (five baseline recommenders on the default world):

- user-days simulated per second with 1 and 2 Ray workers on this machine, and the efficiency
  (the 2-worker rate over twice the 1-worker rate; target >= 0.8). A user-day is one user, one
  simulated day, one recommender run (a recommender and an arm). Each rate is a whole `run_study`
  (shards, checkpoints, the final assembly) after a warm-up study on the same workers;
- memory per 100,000 users in flight: the peak memory of one shard's task, measured at two shard
  sizes in fresh processes, its growth per user (the catalog and the code are shared by all users);
- what the driver does alone, per user-day: write a shard's parts (encoded as Parquet by its task)
  and record them, append them to the streamed `trajectories.parquet` (pages copied, footers merged:
  `recoworld.studies.parquet_concat`), and the bytes of results per user-day (as Arrow in a task, on disk
  as Parquet);
- from those figures, the wall time of a 1M-user, 30-day, 5-recommender study on 64 cores:
  the workers' time (the 1-worker rate x 64 x the measured efficiency, held to 64 workers) against
  the driver's (checkpointing and appending every shard, the manifest's writes; one core), the results'
  size on disk, and what the driver holds (every user's plan and episodes: `check_fits`).

The machine's load average is printed beside each timing: on a shared machine the figures move with it.

    python experiments/bench_study.py [--users 256] [--shard-size 32] [--days 7] [--memory-users 200 600]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per worker: BLAS threads would compete with the other workers
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import multiprocessing  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import tyro  # noqa: E402

from recoworld.studies.spec import StudySpec  # noqa: E402

#: The projected study (issue 32): users, days, recommenders, cores.
TARGET_USERS, TARGET_DAYS, TARGET_RECOMMENDERS, TARGET_CORES = 1_000_000, 30, 5, 64


@dataclass
class Args:
    users: int = 256
    """users of each timed study"""
    shard_size: int = 32
    """users per shard (each shard one task)"""
    days: float = 7.0
    """simulated days of every study here"""
    recommenders: list[str] = field(default_factory=lambda: ["random", "popular", "greedy", "diverse", "instruct"])
    """the recommenders every study runs"""
    memory_users: tuple[int, int] = (200, 600)
    """the two shard sizes whose peak memory gives the memory per user in flight"""
    workers: tuple[int, ...] = (1, 2)
    """Ray workers (CPUs of a local Ray runtime) to time the study with"""
    seed: int = 0
    """the studies' seed"""


def spec_of(args: Args, users: int, shard_size: int, days: float | None = None) -> StudySpec:
    return StudySpec.parse(
        {
            "name": "bench-study",
            "seed": args.seed,
            "n_users": users,
            "shard_size": shard_size,
            "recommenders": args.recommenders,
            "world": {"horizon_days": days or args.days},
        }
    )


def user_days(spec: StudySpec) -> float:
    """Users x simulated days x recommender runs (recommenders x arms)."""
    return float(spec.n_users or 0) * spec.world.horizon_days * len(spec.recommenders) * len(spec.arms)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min) {five:.1f} (5 min) on {os.cpu_count()} cores"


# ---------------------------------------------------------------------- throughput


def time_study(args: Args, workers: int) -> dict[str, float]:
    """A study on a local Ray runtime of `workers` CPUs, after a warm-up study on the same worker processes."""
    import ray

    from recoworld.studies.runner import run_study

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
            # One shard per worker: every worker process imports and compiles before the timed study.
            run_study(spec_of(args, workers, 1, days=1.0), Path(tmp) / "warm-up")
            spec = spec_of(args, args.users, args.shard_size)
            before = load()
            start = time.perf_counter()
            result = run_study(spec, Path(tmp) / "timed")
            seconds = time.perf_counter() - start
            turns = int(result.episodes["turns"].sum())
    finally:
        ray.shutdown()
    rate = user_days(spec) / seconds
    print(
        f"  {workers} worker(s): {user_days(spec):,.0f} user-days in {seconds:.1f} s = {rate:,.0f} user-days/s "
        f"({turns / seconds:,.0f} user-turns/s); {before} before, {load()} after"
    )
    return {"rate": rate, "seconds": seconds}


# ---------------------------------------------------------------------- memory and the driver's share


def rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


class PeakMemory:
    """The most resident memory this process holds while inside, sampled every `every_s` by a thread (Arrow's
    and NumPy's buffers are outside Python's allocator, so only the process's pages see them all)."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.every_s)

    def __enter__(self) -> PeakMemory:
        self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def shard_memory(args: Args, users: int, queue: Any) -> None:
    """In a fresh process: the memory one shard of `users` users takes at its peak above what the process held
    before it (the task's encoding of its results included), the time the driver takes to write them, and their
    size."""
    from recoworld.studies.runner import TrajectoryFile, encode_parts, prepare, run_shard, write_parts

    spec = spec_of(args, users, users)
    setup = prepare(spec)
    tiny = spec_of(args, 1, 1, days=1.0)  # compiles the kernels and builds every recommender once
    run_shard(tiny, setup.catalog, setup.release_day, setup.new_items, prepare(tiny).users.shard(0))
    before, cpu = rss(), time.process_time()
    with PeakMemory() as memory:
        traj, eps = run_shard(spec, setup.catalog, setup.release_day, setup.new_items, setup.users.shard(0))
        parts = encode_parts(traj, eps)
    peak, cpu_s = memory.peak, time.process_time() - cpu
    manifest: dict[str, Any] = {"shards": {}}
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        start = time.perf_counter()
        write_parts(Path(tmp), manifest, 0, setup.users.shard(0).user_ids(), parts)
        checkpoint_s = time.perf_counter() - start
        start = time.perf_counter()
        streamed = TrajectoryFile(Path(tmp), 1)
        streamed.extend(manifest)
        streamed.commit()
        append_s = time.perf_counter() - start
    parquet = sum(len(data) for data in parts.values())
    queue.put(
        {
            "users": users,
            "before": before,
            "peak": peak,
            "checkpoint_s": checkpoint_s,
            "append_s": append_s,
            "episodes": eps.to_pandas().memory_usage(deep=True).sum() / eps.num_rows,
            "cpu_s": cpu_s,
            "arrow": traj.nbytes + eps.nbytes,
            "parquet": parquet,
            "user_days": user_days(spec),
            "entry": manifest["shards"]["0"],
        }
    )


def manifest_write_s(entry: dict[str, Any], shards: int, shard_size: int) -> float:
    """Seconds to write the manifest as it stands when the last of `shards` shards of `shard_size` users is
    checkpointed: every shard's record (the runner rewrites it as `manifest_due` says)."""
    from recoworld.storage import write_json_atomic

    one = {**entry, "n_episodes": shard_size}
    manifest = {
        "study": "bench-study",
        "fingerprint": "0" * 16,
        "n_shards": shards,
        "shards": {str(i): one for i in range(shards)},
    }
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        start = time.perf_counter()
        write_json_atomic(manifest, Path(tmp) / "manifest.json")
        return time.perf_counter() - start


def measure_shard(args: Args, users: int) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=shard_memory, args=(args, users, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def manifest_writes(shards: int, last_write_s: float) -> tuple[int, float]:
    """How often the runner writes the manifest over a study of `shards` shards (`manifest_due`), and the seconds
    that takes, each write in proportion to the shards it records."""
    from recoworld.studies.runner import manifest_due

    written, writes, seconds = 0, 0, 0.0
    for done in range(1, shards + 1):
        if manifest_due(done - written, written) or done == shards:
            written, writes, seconds = done, writes + 1, seconds + last_write_s * done / shards
    return writes, seconds


# ---------------------------------------------------------------------- main


def main(args: Args) -> None:
    print(
        f"Study: {args.users} users in shards of {args.shard_size}, {args.days:g} days, "
        f"recommenders {', '.join(args.recommenders)} (default world); {load()}"
    )
    print("Throughput (a whole run_study: shards, checkpoints, assembly):")
    rates = {w: time_study(args, w)["rate"] for w in args.workers}
    one = rates[min(rates)]
    efficiency = {w: rates[w] / (w / min(rates) * one) for w in rates}
    for w in rates:
        if w != min(rates):
            print(f"  efficiency {min(rates)} -> {w} workers: {efficiency[w]:.2f} (target >= 0.8)")

    print("One shard's task (fresh process per size):")
    small, large = (measure_shard(args, n) for n in args.memory_users)
    for m in (small, large):
        ud = m["user_days"]
        print(
            f"  {m['users']} users: peak {(m['peak'] - m['before']) / 2**20:,.0f} MiB over the warm process's "
            f"{m['before'] / 2**20:,.0f} MiB; results {m['arrow'] / ud / 1e3:.1f} KB a user-day as Arrow, "
            f"{m['parquet'] / ud / 1e3:.2f} KB as Parquet; driver's write {m['checkpoint_s']:.3f} s, "
            f"append to trajectories.parquet {m['append_s']:.3f} s; "
            f"{ud / m['cpu_s']:,.0f} user-days per CPU-second of the task ({m['cpu_s']:.1f} s)"
        )
    grown = (large["peak"] - large["before"]) - (small["peak"] - small["before"])
    per_user = grown / (large["users"] - small["users"])
    print(
        f"  memory per 100k users in flight: {per_user * 1e5 / 2**30:,.1f} GiB "
        f"({per_user / 1e3:,.0f} KB a user at {args.days:g} days x {len(args.recommenders)} recommenders)"
    )
    # A shard's write: a fixed part (files, fsyncs) and a part per user-day, from the two sizes.
    parts_per_ud = max(large["checkpoint_s"] - small["checkpoint_s"], 0.0) / (large["user_days"] - small["user_days"])
    parts_fixed_s = max(small["checkpoint_s"] - parts_per_ud * small["user_days"], 0.0)
    append_per_ud = max(large["append_s"] - small["append_s"], 0.0) / (large["user_days"] - small["user_days"])
    append_fixed_s = max(small["append_s"] - append_per_ud * small["user_days"], 0.0)
    arrow_per_ud, parquet_per_ud = large["arrow"] / large["user_days"], large["parquet"] / large["user_days"]

    target = float(TARGET_USERS * TARGET_DAYS * TARGET_RECOMMENDERS)
    w2 = max(rates)
    eff = efficiency[w2] if w2 != min(rates) else 1.0
    workers_s = target / (one * TARGET_CORES * eff)
    shards = -(-TARGET_USERS // args.shard_size)
    last_manifest_s = manifest_write_s(large["entry"], shards, args.shard_size)
    parts_s = shards * parts_fixed_s + target * parts_per_ud
    append_s = shards * append_fixed_s + target * append_per_ud
    writes, manifests_s = manifest_writes(shards, last_manifest_s)
    driver_s = parts_s + append_s + manifests_s
    print(
        f"Projection: {TARGET_USERS:,} users x {TARGET_DAYS} days x {TARGET_RECOMMENDERS} recommenders = "
        f"{target:,.0f} user-days on {TARGET_CORES} cores"
    )
    print(
        f"  workers: {target:,.0f} / ({one:,.0f} user-days/s x {TARGET_CORES} x efficiency {eff:.2f}) = "
        f"{workers_s / 3600:.2f} h"
    )
    per_cpu_s = large["user_days"] / large["cpu_s"]  # what a core does when it is the task's alone
    cpu_bound_h = target / per_cpu_s / TARGET_CORES / 3600
    print(
        f"  workers from a task's CPU time instead (the load on this machine does not slow it): {target:,.0f} / "
        f"({per_cpu_s:,.0f} user-days per CPU-second x {TARGET_CORES}) = {cpu_bound_h:.2f} h with perfect scaling"
    )
    print(
        f"  driver, on its own core alongside the workers: the shards' parts at {parts_fixed_s * 1e3:.1f} ms a "
        f"shard + {parts_per_ud * 1e6:.1f} us a user-day = {parts_s / 3600:.2f} h, appending them to "
        f"trajectories.parquet at {append_fixed_s * 1e3:.1f} ms a shard + {append_per_ud * 1e6:.1f} us a user-day "
        f"= {append_s / 3600:.2f} h, and the manifest written {writes:,} times over "
        f"{shards:,} shards of {args.shard_size} (the last write {last_manifest_s:.2f} s) = "
        f"{manifests_s / 3600:.2f} h; "
        f"{driver_s / 3600:.2f} h in all"
    )
    print(
        f"  wall time: about {max(workers_s, driver_s) / 3600:.2f} h (target < 1 h); with workers that scale "
        f"perfectly (efficiency 1) {max(workers_s * eff, driver_s) / 3600:.2f} h"
    )
    from recoworld.studies.runner import PLAN_BYTES_PER_USER, SHARD_RECORD_BYTES

    plan = PLAN_BYTES_PER_USER + SHARD_RECORD_BYTES / args.shard_size
    held = TARGET_USERS * (plan + TARGET_RECOMMENDERS * large["episodes"])
    print(
        f"  results: {target * arrow_per_ud / 1e12:.2f} TB as Arrow, never in memory (streamed shard by shard), "
        f"{2 * target * parquet_per_ud / 1e12:.2f} TB of Parquet on disk (the parts and trajectories.parquet); "
        f"the driver holds every user's plan and episodes, {held / 1e9:.2f} GB ({large['episodes']:.0f} bytes an "
        f"episode in pandas); a shard in flight at {TARGET_DAYS} days x {TARGET_RECOMMENDERS} recommenders "
        f"about {per_user * TARGET_DAYS / args.days * TARGET_RECOMMENDERS / len(args.recommenders) / 1e6:.1f} MB "
        "a user"
    )


if __name__ == "__main__":
    main(tyro.cli(Args))
