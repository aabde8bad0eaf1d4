"""Smoke test of experiments/bench_llm.py with a tiny budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(*extra: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_llm.py"), "--users", "2", "--turns", "1",
         "--latency-ms", "1", *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()


def test_bench_llm_runs() -> None:
    lines = bench("--concurrency", "1", "2")
    assert "decisions/s" in lines[1] and len(lines) == 7
    assert lines[2].split()[0] == "1" and lines[3].split()[0] == "2"
    assert lines[4].startswith("cost per turn") and "calls/turn" in lines[5]
    assert lines[6].split()[:2] == ["slate", "1.00"], "slate mode: one call per turn"


def test_bench_llm_compares_review_modes() -> None:
    lines = bench("--concurrency", "2", "--review-modes", "slate", "item", "--slate-size", "3")
    assert [line.split()[-1] for line in lines[2:4]] == ["slate", "item"]
    cost = {line.split()[0]: line.split() for line in lines[-2:]}
    assert set(cost) == {"slate", "item"}
    calls, items = float(cost["item"][1]), float(cost["item"][2])
    assert 1.0 <= calls <= 3.0 and calls == items, "item mode: one call per reviewed item"
