"""A scripted, in-process chat backend: declared replies through the real validation path.

For tests and demos that need an LLM user, or an LLM agent, without a server:

    backend = ScriptedBackend([decision_a, decision_b])          # replies in order
    backend = ScriptedBackend(lambda request: reply_for(request))  # or computed per request
    backend = ScriptedBackend(answer, barrier=4)                    # the first calls wait for 4 in flight

`ScriptedBackend` is a `ChatBackend`: only `_send`/`_asend` are scripted, so every reply
goes through the base class's protocol exactly as a server's would: the cache, the budget,
JSON extraction, pydantic and `check` validation, resampling, repair and usage accounting.
A reply that fails validation is resampled and repaired like a real one, and becomes
`LLMOutputError` (a counted fallback for LLM users) when the script keeps failing.

A scripted reply (an entry of the list, or what the callable returns for a `Request`) is:
- a `str`: the raw reply text (it may be invalid on purpose);
- a pydantic model or a dict: serialised to JSON;
- a `ToolCall`: a native tool call in `tools` mode, the JSON action object otherwise;
- a `Reply`: sent as is (e.g. a refusal);
- an exception instance: raised by the transport. `TimeoutError`/`ConnectionError` are
  transient (retried with backoff, then `LLMUnavailable`), `ScriptedRejection` is a request
  the server rejects, and anything else is fatal and propagates.

A list is consumed in order across all calls (`ScriptExhausted`, fatal, when it runs out).
Every request sent is recorded in `requests`, in arrival order.

`barrier=N` holds the first requests until N of them are in flight together, then lets
every request through (one-shot), for threads calling `complete` and for tasks on an
event loop calling `acomplete` alike. A test of concurrency then rests on an event, not on
timing: `barrier_met` says whether N calls overlapped and `max_in_flight` how many did at
most. `barrier_timeout_s` only bounds the wait, so a test that fails to overlap fails
(with `barrier_met` False) instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from recoworld.llm.backend import ChatBackend, ErrorKind, Mode, Reply, Request, Spec, ToolCall, Tools
from recoworld.llm.config import LLMConfig

ScriptedReply = str | BaseModel | dict[str, Any] | ToolCall | Reply | BaseException
Script = Iterable[ScriptedReply] | Callable[[Request], ScriptedReply]


class ScriptExhausted(RuntimeError):
    """The backend got more requests than its list of replies holds."""


class ScriptedRejection(Exception):
    """Raise (or script) this for a request the 'server' rejects: not retried, `LLMUnavailable` at once."""


def scripted_config(**overrides: Any) -> LLMConfig:
    """An `LLMConfig` fit for a scripted backend: no cache file, no backoff, JSON-schema mode."""
    base: dict[str, Any] = dict(backend="openai", model="scripted", structured_output="json_schema", cache="off",
                                retry_backoff_s=0.0)
    return LLMConfig(**{**base, **overrides})


def _tokens(text: str) -> int:
    """A rough token count (4 characters a token), so usage and budgets have something to count."""
    return max(1, len(text) // 4) if text else 0


class ScriptedBackend(ChatBackend):
    """A `ChatBackend` whose replies come from a script (see the module docstring)."""

    name = "scripted"

    def __init__(
        self,
        replies: Script,
        config: LLMConfig | None = None,
        *,
        barrier: int | None = None,
        barrier_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(config or scripted_config())
        if barrier is not None and barrier < 1:
            raise ValueError(f"barrier must be >= 1, got {barrier}")
        self._answer: Callable[[Request], ScriptedReply] | None = replies if callable(replies) else None
        self._queue: list[ScriptedReply] = [] if callable(replies) else list(replies)
        self.requests: list[Request] = []
        self.barrier = barrier or 1
        self.barrier_timeout_s = barrier_timeout_s
        self.barrier_met = self.barrier <= 1
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._met = threading.Event()
        if self.barrier_met:
            self._met.set()
        self._deadline: float | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"ScriptedBackend(requests={len(self.requests)}, pending={len(self._queue)})"

    @property
    def model_name(self) -> str:
        return self.config.model or "scripted"

    @property
    def pending(self) -> int:
        """Listed replies not used yet (0 for a callable script)."""
        return len(self._queue)

    # ------------------------------------------------------------------ the transport

    def _mode_for(self, spec: Spec) -> Mode | None:
        if isinstance(spec, Tools) and self.config.tool_calling == "native":
            return "tools"
        configured = self.config.structured_output
        return "json_schema" if configured == "auto" else configured

    def _send(self, request: Request) -> Reply:
        self._enter(request)
        try:
            self._met.wait(self._wait_s())
            return self._reply(request)
        finally:
            self._leave()

    async def _asend(self, request: Request) -> Reply:
        waiter = self._enter(request, asyncio.get_running_loop())
        try:
            if waiter is not None:
                # Not met in time: go on, and `barrier_met` stays False.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, self._wait_s())
            await asyncio.sleep(0)  # a reply never arrives synchronously, as over a network
            return self._reply(request)
        finally:
            self._leave()

    def _classify(self, err: Exception) -> ErrorKind:
        if isinstance(err, (TimeoutError, ConnectionError)):
            return "transient"
        if isinstance(err, ScriptedRejection):
            return "rejected"
        return "fatal"

    # ------------------------------------------------------------------ in flight

    def _enter(
        self, request: Request, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None] | None:
        """Count a request in (and record it); for an async caller, the future to await at the barrier."""
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if not self.barrier_met and self.in_flight >= self.barrier:
                self.barrier_met = True
                self._met.set()
                for waiter_loop, waiter in self._waiters:
                    waiter_loop.call_soon_threadsafe(_resolve, waiter)
                self._waiters.clear()
            if self._deadline is None and not self.barrier_met:
                self._deadline = time.monotonic() + self.barrier_timeout_s
            if loop is None or self.barrier_met:
                return None
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
            return fut

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _wait_s(self) -> float:
        """One bounded wait for the whole barrier, not one per request."""
        if self._deadline is None:
            return 0.0
        return max(self._deadline - time.monotonic(), 0.0)

    # ------------------------------------------------------------------ the script

    def _next(self, request: Request) -> ScriptedReply:
        if self._answer is not None:
            return self._answer(request)
        with self._lock:
            if not self._queue:
                raise ScriptExhausted(f"the scripted backend has no reply left for request "
                                      f"{len(self.requests)} ({request.name})")
            return self._queue.pop(0)

    def _reply(self, request: Request) -> Reply:
        answer = self._next(request)
        if isinstance(answer, BaseException):
            raise answer
        prompt = _tokens("".join(m.get("content", "") for m in request.messages))
        if isinstance(answer, Reply):
            return answer
        if isinstance(answer, ToolCall):
            arguments = answer.arguments.model_dump_json()
            if request.mode == "tools":
                return Reply(None, [(answer.name, arguments)], prompt_tokens=prompt,
                             completion_tokens=_tokens(arguments))
            answer = {"tool": answer.name, "arguments": json.loads(arguments)}
        if isinstance(answer, BaseModel):
            text = answer.model_dump_json()
        elif isinstance(answer, str):
            text = answer
        else:
            text = json.dumps(answer)
        return Reply(text, prompt_tokens=prompt, completion_tokens=_tokens(text))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
