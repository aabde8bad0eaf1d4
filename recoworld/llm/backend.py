"""The chat-backend contract: `complete(messages, spec, params) -> validated object`.

A backend owns everything between a list of chat messages and a validated Python object:
the structured-output mode, retries, repair, the record/replay cache and token accounting.
Callers never see raw JSON.

    backend = make_backend(LLMConfig(backend="openai", base_url=..., model=...))
    decision = backend.complete(messages, Structured(TurnDecision, json_schema=..., check=...))
    call = backend.complete(messages, Tools((Tool("retrieve", "...", RetrieveArgs),), choice="auto"))
    decision = await backend.acomplete(...)          # same, for many requests in flight

`Structured(model, json_schema=None, check=None)`: the reply must validate as `model`.
`json_schema` is what the server is constrained to (default: the model's own schema; a
tighter per-request schema, e.g. with `const` item ids, helps small models), and `check`
runs semantic validation on the parsed object (raise `ValueError` to reject, or return a
repaired object). `Tools(...)` returns a `ToolCall(name, arguments)` whose arguments are
validated against the tool's pydantic model: natively through OpenAI function calling, or,
where a server has none (`tool_calling="json"`, the local backend), through a constrained
JSON action `{"tool": name, "arguments": {...}}`.

What happens per request:
1. With `structured_output="auto"`, the mode is the one the cache recorded for this model,
   else probed once (a server that cannot be reached is `LLMUnavailable`, never "unsupported").
   Then the cache lookup (`cache="write"|"read"|"replay"`), keyed by that mode among the rest;
   a hit makes no model call. Only valid replies are recorded: a failure is never replayed.
   With `cache="replay"` a miss raises `ReplayMiss`: replay never calls the model.
2. The budget is checked before every model call, probes, retries and repairs included
   (`BudgetExceeded` stops the study); with `budget_ledger` set, against the totals of every
   process sharing that file (`recoworld.llm.ledger`), so a study's budget is study-wide.
3. Timeouts, connection errors and 5xx are retried `max_retries` times with exponential
   backoff, then raise `LLMUnavailable`.
4. Invalid JSON, refusals and replies failing validation or `check` are resampled (seed+1)
   `max_retries` times; then one repair request shows the model its reply and the error;
   then `LLMOutputError`. Both are `LLMError`s, which simulators turn into a counted fallback.
5. Every model call's outcome feeds the circuit breaker (`recoworld.llm.health.FallbackBreaker`):
   once too many recent calls failed (`max_fallback_rate` over `fallback_window`), the failing
   call raises `FallbackRateExceeded` instead of its `LLMError`, and the run stops.

The retry logic is written once, as a generator that yields requests (and backoff delays)
and receives replies; `complete` and `acomplete` are thin sync and async drivers around it.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from recoworld.llm.cache import ResponseCache, cache_key
from recoworld.llm.config import LLMConfig, SamplingParams
from recoworld.llm.errors import LLMError, LLMOutputError, LLMUnavailable, ReplayMiss
from recoworld.llm.health import FallbackBreaker
from recoworld.llm.ledger import BudgetLedger
from recoworld.llm.schema_decoder import reply_bound
from recoworld.llm.usage import Usage

T = TypeVar("T", bound=BaseModel)
Message = dict[str, str]
Mode = Literal["json_schema", "json_object", "prompt", "tools"]
ErrorKind = Literal["transient", "rejected", "fatal"]

_REPAIR = (
    "Your previous reply could not be used: {problem}\n"
    "Reply again with only the corrected JSON object, nothing else."
)
_PROMPT_SCHEMA = "Reply with only a JSON object, no other text, that follows this JSON schema:\n{schema}"


@dataclass(frozen=True)
class Structured(Generic[T]):
    """Ask for one JSON object that validates as `model` (and passes `check`)."""

    model: type[T]
    json_schema: dict[str, Any] | None = None
    check: Callable[[T], T] | None = None

    @property
    def name(self) -> str:
        return self.model.__name__

    def schema(self) -> dict[str, Any]:
        return self.json_schema if self.json_schema is not None else self.model.model_json_schema()

    def parse(self, data: Any) -> T:
        value = self.model.model_validate(data)
        return self.check(value) if self.check is not None else value


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` validates its arguments.

    `json_schema` optionally replaces the arguments' schema in the JSON action form only: a
    tighter one (e.g. with `anyOf` branches, which OpenAI rejects at the root of function
    parameters) helps constrained decoders, as `Structured.json_schema` does.
    """

    name: str
    description: str
    parameters: type[BaseModel]
    json_schema: dict[str, Any] | None = None

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters.model_json_schema()}}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: BaseModel


@dataclass(frozen=True)
class Tools:
    """Ask for one tool call. `choice`: "auto", "required" or the name of the tool to force."""

    tools: tuple[Tool, ...]
    choice: str = "auto"

    @property
    def name(self) -> str:
        return "action"

    def openai_choice(self) -> str | dict[str, Any]:
        if self.choice in ("auto", "required", "none"):
            return self.choice
        return {"type": "function", "function": {"name": self.choice}}

    def schema(self) -> dict[str, Any]:
        """The JSON action form, for servers without function calling.

        One branch per tool, so the tool name fixes the shape of its arguments: a
        constrained decoder cannot pair one tool's name with another tool's arguments.
        """
        tools = [t for t in self.tools if self.choice in ("auto", "required", t.name)]
        return {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"tool": {"const": t.name},
                                   "arguments": t.json_schema or t.parameters.model_json_schema()},
                    "required": ["tool", "arguments"],
                }
                for t in tools
            ]
        }

    def parse(self, data: Any) -> ToolCall:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object with 'tool' and 'arguments', got {type(data).__name__}")
        return self.call(data.get("tool"), data.get("arguments"))

    def call(self, name: Any, arguments: Any) -> ToolCall:
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            raise ValueError(f"unknown tool {name!r}; the tools are {[t.name for t in self.tools]}")
        return ToolCall(tool.name, tool.parameters.model_validate(arguments or {}))


Spec = Structured[Any] | Tools


@dataclass
class Request:
    messages: list[Message]
    mode: Mode
    name: str
    json_schema: dict[str, Any] | None
    params: SamplingParams
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


@dataclass
class Reply:
    content: str | None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, arguments as JSON text)
    refusal: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the server reused from its cache
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"content": self.content, "tool_calls": self.tool_calls}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Reply:
        return cls(data["content"], [tuple(c) for c in data["tool_calls"]])  # type: ignore[misc]


def extract_json(text: str | None) -> Any:
    """The first-to-last brace span of a reply: tolerates code fences and chatter around the object."""
    if not text or not text.strip():
        raise ValueError("the reply was empty")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError(f"no JSON object in the reply: {text[:120]!r}")
    return json.loads(text[start : end + 1])


def _short(err: Exception) -> str:
    return " ".join(str(err).split())[:400]


class ChatBackend(ABC):
    """Base of every backend: subclasses only send one request (`_send`, `_asend`)."""

    name: str = "abstract"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.usage = Usage(
            price_input_per_mtok=config.price_input_per_mtok, price_output_per_mtok=config.price_output_per_mtok,
            budget_usd=config.budget_usd, budget_tokens=config.budget_tokens, budget_requests=config.budget_requests,
        )
        self.cache = ResponseCache(config.resolved_cache_path, config.cache)
        self.ledger = BudgetLedger(config.budget_ledger) if config.budget_ledger is not None else None
        self.breaker = FallbackBreaker(config.max_fallback_rate, config.fallback_window)
        self._limit: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._detected: Mode | None = None  # what `structured_output="auto"` settled on

    @property
    @abstractmethod
    def model_name(self) -> str: ...

    @abstractmethod
    def _send(self, request: Request) -> Reply: ...

    @abstractmethod
    async def _asend(self, request: Request) -> Reply: ...

    def _classify(self, err: Exception) -> ErrorKind:
        """transient: retry; rejected: this request cannot succeed; fatal: re-raise (a bug or bad config)."""
        return "fatal"

    def _fatal(self, err: Exception) -> Exception:
        return err

    def _mode_for(self, spec: Spec) -> Mode | None:
        """The structured-output mode for `spec`, or None when it has to be detected first."""
        configured = self.config.structured_output
        return self._detected if configured == "auto" else configured

    def _detect_mode(self) -> Generator[Request | float, Reply, Mode]:
        raise NotImplementedError(f"{type(self).__name__} cannot detect a structured-output mode")
        yield  # pragma: no cover

    # ------------------------------------------------------------------ public API

    def complete(self, messages: list[Message], spec: Spec, params: SamplingParams | None = None) -> Any:
        """The validated object for `spec` (a `Structured` model instance or a `ToolCall`)."""
        proto = self._protocol(messages, spec, params or self.config.sampling)
        try:
            step = next(proto)
            while True:
                if isinstance(step, float):
                    time.sleep(step)
                    step = proto.send(None)  # type: ignore[arg-type]
                    continue
                started = time.perf_counter()
                try:
                    reply = self._send(step)
                except Exception as err:  # classified by the protocol
                    step = proto.throw(err)
                else:
                    reply.seconds = time.perf_counter() - started
                    step = proto.send(reply)
        except StopIteration as stop:
            return stop.value
        except LLMError as err:
            self.breaker.failure(err)  # raises FallbackRateExceeded once too many recent calls failed
            raise

    async def acomplete(self, messages: list[Message], spec: Spec, params: SamplingParams | None = None) -> Any:
        """`complete` for the event loop; at most `config.concurrency` requests run at once."""
        async with self._semaphore():
            proto = self._protocol(messages, spec, params or self.config.sampling)
            try:
                step = next(proto)
                while True:
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                        step = proto.send(None)  # type: ignore[arg-type]
                        continue
                    started = time.perf_counter()
                    try:
                        reply = await self._asend(step)
                    except Exception as err:  # classified by the protocol
                        step = proto.throw(err)
                    else:
                        reply.seconds = time.perf_counter() - started
                        step = proto.send(reply)
            except StopIteration as stop:
                return stop.value
            except LLMError as err:
                self.breaker.failure(err)
                raise

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._limit is None or self._limit[0] is not loop:
            self._limit = (loop, asyncio.Semaphore(self.config.concurrency))
        return self._limit[1]

    # ------------------------------------------------------------------ the protocol

    def _charge(self) -> None:
        """Before every model call (probes, retries and repairs included): check the budget, count the call."""
        if self.ledger is not None:
            self.ledger.reserve(self.usage)
        else:
            self.usage.check_budget()
        self.usage.add(requests=1)

    def _spend(self, reply: Reply) -> None:
        self.usage.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                       cached_prompt_tokens=reply.cached_tokens, server_s=reply.seconds)
        if self.ledger is not None:
            self.ledger.spend(reply.prompt_tokens, reply.completion_tokens)

    def _replay_miss(self, what: str) -> ReplayMiss:
        return ReplayMiss(
            f"llm.cache=replay: the cache {self.cache.path} has no {what} for model {self.model_name!r}; replay "
            "never calls the model: rerun with llm.cache=write (--llm-cache write) and a reachable server to fill it"
        )

    def _protocol(
        self, messages: list[Message], spec: Spec, params: SamplingParams
    ) -> Generator[Request | float, Reply, Any]:
        cfg = self.config
        mode = self._mode_for(spec)
        if mode is None:  # `auto`: the mode this cache recorded for this model, else probe the server once
            mode_key = cache_key(backend=self.name, model=self.model_name, structured_output_mode=True)
            recorded = self.cache.get(mode_key)
            if recorded is None and cfg.cache == "replay":
                raise self._replay_miss("structured-output mode")
            mode = recorded["mode"] if recorded is not None else (yield from self._detect_mode())
            self._detected = mode
            if recorded is None:
                self.cache.put(mode_key, {"mode": mode})
        tool_key = [t.openai() for t in spec.tools] if isinstance(spec, Tools) else None
        key = cache_key(
            backend=self.name, model=self.model_name, mode=mode, tool_calling=cfg.tool_calling,
            messages=messages, schema=spec.schema() if tool_key is None else None, tools=tool_key,
            tool_choice=spec.choice if isinstance(spec, Tools) else None, params=params.model_dump(),
        )
        hit = self.cache.get(key)
        if hit is not None:
            self.usage.add(cache_hits=1)
            return self._parse(spec, Reply.from_record(hit))
        if cfg.cache == "replay":
            raise self._replay_miss(f"reply to this {spec.name} request")

        base = self._with_schema_prompt(messages, spec, mode)
        convo, transient, invalid = base, 0, 0
        # A token limit below what the schema allows could cut a constrained reply mid-JSON: raise it to the bound.
        limit = params.max_tokens if mode == "tools" else max(params.max_tokens, reply_bound(spec.schema()))
        while True:
            self._charge()
            request = Request(
                convo, mode, spec.name, None if mode == "tools" else spec.schema(),
                params.model_copy(update={"seed": params.seed + transient + invalid, "max_tokens": limit}),
                tools=tool_key if mode == "tools" else None,
                tool_choice=spec.openai_choice() if mode == "tools" and isinstance(spec, Tools) else None,
            )
            try:
                reply = yield request
            except Exception as err:
                kind = self._classify(err)
                if kind == "fatal":
                    fatal = self._fatal(err)
                    if fatal is err:
                        raise
                    raise fatal from None
                transient += 1
                self.usage.add(transport_errors=1)
                if kind == "rejected" or transient > cfg.max_retries:
                    self.usage.add(failures=1)
                    raise LLMUnavailable(
                        f"{self.name} backend ({self.model_name}): request failed after {transient} "
                        f"attempt(s): {type(err).__name__}: {_short(err)}"
                    ) from None
                yield cfg.retry_backoff_s * 2.0 ** (transient - 1)
                continue
            self._spend(reply)
            try:
                value = self._parse(spec, reply)
            except ValueError as err:  # JSON, pydantic validation, refusals and `check` all raise ValueError
                self.usage.add(invalid_outputs=1)
                invalid += 1
                problem = _short(err)
                if convo is not base or (invalid > cfg.max_retries and not cfg.repair):
                    self.usage.add(failures=1)
                    raise LLMOutputError(f"{self.name} backend ({self.model_name}): no valid {spec.name} after "
                                         f"{invalid} replies: {problem}") from None
                if invalid > cfg.max_retries:
                    self.usage.add(repairs=1)
                    convo = [*base, {"role": "assistant", "content": reply.content or ""},
                             {"role": "user", "content": _REPAIR.format(problem=problem)}]
                continue
            self.breaker.success()
            self.cache.put(key, reply.record())
            return value

    @staticmethod
    def _with_schema_prompt(messages: list[Message], spec: Spec, mode: Mode) -> list[Message]:
        """In prompt mode the schema travels in the last user message instead of the response format."""
        if mode != "prompt":
            return list(messages)
        note = _PROMPT_SCHEMA.format(schema=json.dumps(spec.schema(), separators=(",", ":")))
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        out = list(messages)
        out[last] = {**out[last], "content": f"{out[last]['content']}\n\n{note}"}
        return out

    @staticmethod
    def _parse(spec: Spec, reply: Reply) -> Any:
        if reply.refusal:
            raise ValueError(f"the model refused: {reply.refusal}")
        if isinstance(spec, Tools) and reply.tool_calls:
            name, arguments = reply.tool_calls[0]
            return spec.call(name, json.loads(arguments or "{}"))
        return spec.parse(extract_json(reply.content))


_SHARED: dict[LLMConfig, ChatBackend] = {}


def make_backend(config: LLMConfig) -> ChatBackend:
    """A new backend for `config` (clients and files open lazily, on the first request)."""
    if config.backend == "local":
        from recoworld.llm.local import LocalLlamaBackend

        return LocalLlamaBackend(config)
    from recoworld.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(config)


def shared_backend(config: LLMConfig) -> ChatBackend:
    """One backend per distinct config in this process, so every env of a study shares one
    model, one cache connection and one usage account."""
    if config not in _SHARED:
        _SHARED[config] = make_backend(config)
    return _SHARED[config]


def shared_usage() -> list[tuple[LLMConfig, Usage]]:
    """Usage of every shared backend this process has made, for run reports."""
    return [(cfg, backend.usage) for cfg, backend in _SHARED.items()]
