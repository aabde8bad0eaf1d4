"""A supervised model process: the local GGUF model runs in a child, so its crash costs one turn, not the run.

    proc = model_process(path, n_ctx=4096, n_threads=None, settings=LocalModelConfig(), log_path=...)
    result = proc.call({"kwargs": {"messages": [...], "max_tokens": 64}}, report=usage.add)

One child per (model file, n_ctx, n_threads, settings) and Python process, started on the first call
and shared by every backend of that process, since loading dominates short runs. Calls are
serialised: a llama.cpp context answers one request at a time.

What the supervisor guarantees:
- **A death is one failed call.** If the child dies (segfault, OOM kill, SIGKILL) or does
  not answer within `call_timeout_s` (it is then killed), the call in flight raises
  `ModelProcessDied`, which the backend protocol retries like a dropped connection and,
  past `llm.max_retries`, turns into a counted fallback.
- **Restarts with bounded backoff.** The next call starts a new child after
  `restart_backoff_s`, doubling per consecutive death up to `restart_backoff_max_s`.
- **Crash loops stop the run.** After `max_consecutive_deaths` deaths without one good
  reply in between, calls raise `ModelCrashLoop`, naming the last cause and the log file.
- **A model that cannot load** raises `ModelStartError` on the first start: one line with
  the cause and the log file, never a fallback.
- **No orphans.** Children are stopped at interpreter exit (normal end, Ctrl-C, an
  exception) and exit by themselves when their parent dies, even by SIGKILL.

Health (starts, deaths, restarts, seconds spent loading) goes to the caller's `report`
callback, so each backend's `Usage` counts what happened during its own calls.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recoworld.errors import ConfigError, RecoWorldError
from recoworld.llm.config import LocalModelConfig

Report = Callable[..., None]


class ModelProcessDied(RuntimeError):
    """The child died or hung during a call; the call may be retried on a fresh child."""


class ModelRequestError(ValueError):
    """The model refused this request (e.g. a prompt longer than the context); retrying cannot help."""


class ModelStartError(ConfigError):
    """The model process could not load the model: bad path, not a GGUF file, missing library."""


class ModelCrashLoop(RecoWorldError):
    """The model process died too many times in a row; the run stops instead of falling back forever."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class ModelProcess:
    """One supervised child running `recoworld.llm.local_worker` for one model file."""

    def __init__(
        self, model_path: Path, n_ctx: int, n_threads: int | None, settings: LocalModelConfig, log_path: Path
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.settings = settings
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._ever_ready = False
        self._consecutive_deaths = 0
        self._last_cause = ""
        self._next_id = 0
        self._timed_out: str | None = None  # which timeout killed the child, if one did

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs (tests and operators kill it by this)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def call(self, request: dict[str, Any], report: Report) -> Any:
        """One request line in the child (`{"kwargs": ...}` for `Llama.create_chat_completion`, `{"batch": [...]}`
        for schema decoding: see `recoworld.llm.local_worker`) and its result; see the module docstring for
        failures."""
        with self._lock:
            self._ensure_running(report)
            assert self._proc is not None and self._proc.stdin is not None
            self._next_id += 1
            line = json.dumps({"id": self._next_id, **request}).encode() + b"\n"
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
                reply = self._read_line(self.settings.call_timeout_s, "llm.local.call_timeout_s")
            except (BrokenPipeError, ConnectionResetError):
                reply = None
            if reply is None:
                raise self._died(report, during="a request")
            message = json.loads(reply)
            self._consecutive_deaths = 0
            if not message.get("ok"):
                raise ModelRequestError(f"{message.get('error')}: {message.get('message')}")
            return message["result"]

    def close(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL after a grace period."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        self._stop_and_reap()

    # ------------------------------------------------------------------ internals

    def _ensure_running(self, report: Report) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                return
            self._died(report, during="idle time")  # it died between calls: count it, restart, lose nothing
        s = self.settings
        if self._consecutive_deaths >= s.max_consecutive_deaths:
            raise ModelCrashLoop(
                f"the local model process died {self._consecutive_deaths} times in a row "
                f"(llm.local.max_consecutive_deaths={s.max_consecutive_deaths}); last cause: {self._last_cause}; "
                f"model log: {self.log_path}"
            )
        if self._last_cause:  # a restart after a death
            time.sleep(min(s.restart_backoff_s * 2.0 ** max(self._consecutive_deaths - 1, 0),
                           s.restart_backoff_max_s))
            report(model_restarts=1)
        self._start(report)

    def _start(self, report: Report) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "recoworld.llm.local_worker", "--model", str(self.model_path),
                   "--n-ctx", str(self.n_ctx), "--parent", str(os.getpid())]
        if self.n_threads is not None:
            command += ["--n-threads", str(self.n_threads)]
        command += ["--slots", str(self.settings.cache_slots), "--batch", str(self.settings.batch)]
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          close_fds=True, env=model_environment())
        self._buffer = b""
        self._last_cause = ""
        report(model_starts=1)
        ready = self._read_line(self.settings.load_timeout_s, "llm.local.load_timeout_s")
        report(model_load_s=time.perf_counter() - started)
        if ready is not None and json.loads(ready).get("ready"):
            self._ever_ready = True
            return
        code = self._stop_and_reap()
        if not self._ever_ready and code is not None and code > 0:
            # It exited with an error before its first reply: this model cannot load here. A signal
            # (a crash, an OOM kill) or a hang is a death instead, and counts toward a crash loop.
            last = _last_line(self.log_path)
            raise ModelStartError(
                f"llm.model_path: the local model process could not load {self.model_path} ({_describe_exit(code)}"
                f"{': ' + last if last else ''}); model log: {self.log_path}"
            )
        raise self._died(report, during="loading", code=code)

    def _died(self, report: Report, during: str, code: int | None = None) -> ModelProcessDied:
        """Count a death; `code` is the exit status when the child was already reaped."""
        cause = self._exit_cause(self._stop_and_reap() if self._proc is not None else code)
        self._consecutive_deaths += 1
        self._last_cause = cause
        report(model_deaths=1)
        return ModelProcessDied(f"the local model process died during {during}: {cause}; model log: {self.log_path}")

    def _exit_cause(self, code: int | None) -> str:
        timed_out, self._timed_out = self._timed_out, None
        return f"{timed_out}, killed" if timed_out else _describe_exit(code)

    def _stop_and_reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # alive but silent: it hung
            proc.kill()
            return proc.wait()
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()

    def _read_line(self, timeout: float, setting: str) -> bytes | None:
        """The next protocol line, or None when the child closed its end or `timeout` passed (then it is killed)."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out = f"no reply within {timeout:g} s ({setting})"
                self._proc.kill()
                return None
            readable, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not readable:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


_PROCESSES: dict[tuple[str, int, int | None, LocalModelConfig, str], ModelProcess] = {}
_REGISTRY_LOCK = threading.Lock()


#: llama.cpp's CPU threads wait for each other through OpenMP, which by default spins. When anything else
#: wants a core (another model process, a Ray worker, the simulator itself), a spinning thread holds it and
#: the model slows down many times over: on 2 cores with one busy, evaluating 600 prompt tokens took 21 s
#: spinning and 3.3 s waiting passively, a 4-token step 1.7 s against 68 ms. Unless the user chose a policy.
OPENMP_WAIT = {"OMP_WAIT_POLICY": "PASSIVE"}


def model_environment() -> dict[str, str]:
    """The environment the model runs in: this one, with `OPENMP_WAIT` where the user set nothing."""
    return {**OPENMP_WAIT, **os.environ}


def model_process(
    model_path: Path, n_ctx: int, n_threads: int | None, settings: LocalModelConfig, log_path: Path
) -> ModelProcess:
    """The process-wide supervised child for this model file and settings (started on its first call)."""
    key = (str(model_path), n_ctx, n_threads, settings, str(log_path))
    with _REGISTRY_LOCK:
        if key not in _PROCESSES:
            _PROCESSES[key] = ModelProcess(model_path, n_ctx, n_threads, settings, log_path)
        return _PROCESSES[key]


@atexit.register
def close_all() -> None:
    """Stop every model process this interpreter started and forget them (also called at exit)."""
    with _REGISTRY_LOCK:
        processes = list(_PROCESSES.values())
        _PROCESSES.clear()
    for proc in processes:
        proc.close()
