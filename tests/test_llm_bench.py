"""Smoke test of experiments/bench_llm.py with a tiny budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_llm_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench_llm.py"), "--users", "2", "--turns", "1",
         "--concurrency", "1", "2", "--latency-ms", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert "decisions/s" in lines[1] and len(lines) == 4
    assert lines[2].split()[0] == "1" and lines[3].split()[0] == "2"
