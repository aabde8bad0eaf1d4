"""Benchmark: loading a MovieLens-format log, building the world, and the fidelity report.

Writes a made-up log of MovieLens-100K shape (users x items; MovieLens itself may not be
redistributed), then times each stage and prints the fidelity table.

    python experiments/bench_data.py [--users 943] [--items 1682] [--embedding tfidf]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from recoworld.data import DataConfig, load_dataset, temporal_split
from recoworld.data.items import RepresentationConfig, build_catalog
from recoworld.data.sample import write_movielens_100k
from recoworld.data.users import build_profiles
from recoworld.evaluation.fidelity import FidelityConfig, default_scorers, eval_users, evaluate


@dataclass
class Args:
    users: int = 943
    """users in the made-up log (MovieLens 100K has 943)"""
    items: int = 1682
    """items in the made-up log (MovieLens 100K has 1,682)"""
    embedding: str = "tfidf"
    """item representation: auto, sentence, tfidf"""
    negatives: int = 99
    """sampled negatives per user in the fidelity report"""
    seed: int = 0
    """seed of the log, the split's simulated traits and the negatives"""


def main(args: Args) -> None:
    import numpy as np

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # ---------------------------------------------------------------- data
        path = write_movielens_100k(Path(tmp) / "ml", args.users, args.items, args.seed)
        t = time.perf_counter()
        dataset = load_dataset(path)
        timings["load/s"] = time.perf_counter() - t

    cfg = DataConfig(path=path, representation=RepresentationConfig(embedding=args.embedding), seed=args.seed)
    t = time.perf_counter()
    split = temporal_split(dataset.interactions, cfg.test_fraction, cfg.split, cfg.min_train)
    timings["split/s"] = time.perf_counter() - t
    t = time.perf_counter()
    catalog = build_catalog(dataset, split.train, cfg.representation)
    timings["catalog/s"] = time.perf_counter() - t
    t = time.perf_counter()
    profiles = build_profiles(dataset, catalog, split.train, np.random.default_rng(args.seed))
    timings["profiles/s"] = time.perf_counter() - t

    # ---------------------------------------------------------------- fidelity
    fid = FidelityConfig(n_negatives=args.negatives, seed=args.seed)
    t = time.perf_counter()
    users = eval_users(catalog, profiles, split.train, split.test, fid)
    summary, _ = evaluate(users, default_scorers(catalog), fid)
    timings["fidelity/s"] = time.perf_counter() - t

    print(f"{dataset!r}; {split.describe()}; embedding={catalog.metadata['embedding']} d={catalog.embedding_dim}")
    print(" ".join(f"{k}={v:.3f}" for k, v in timings.items()))
    print(f"fidelity users/s (3 scorers): {len(users) / timings['fidelity/s']:.0f}")
    print(summary.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main(tyro.cli(Args))
