"""Configs of the chat backends, as they appear in `WorldConfig.llm` and on the command line.

Kept free of any client import so that `recoworld.config` can embed them cheaply.
The API key is a `SecretStr`: it prints and serialises as '**********', so a dumped
config, a log line or a report never carries it. Prefer the `OPENAI_API_KEY` variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

StructuredOutput = Literal["auto", "json_schema", "json_object", "prompt"]
CacheMode = Literal["read", "write", "off"]


class SamplingParams(BaseModel):
    """Per-request sampling; part of the cache key, so changing any of them misses the cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(400, ge=1, le=32_768)
    seed: int = Field(0, ge=0, description="sampling seed; callers derive it from their rng")


class LocalModelConfig(BaseModel):
    """How the local backend runs its model: in a supervised child process (default) or in-process.

    In a child, a crash of native model code (a segfault, an OOM kill) costs the turn in
    flight, which is retried or becomes a counted fallback; the child restarts with bounded
    backoff, and a crash loop stops the run with an error naming the cause and the log.
    `in_process` saves the pipe round trip (well under 1 ms against seconds per reply)
    but a crash then takes the whole run down.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolation: Literal["process", "in_process"] = "process"
    call_timeout_s: float = Field(900.0, gt=0, description="a reply slower than this means a hung model: kill it")
    load_timeout_s: float = Field(300.0, gt=0, description="time allowed for the child to load the model")
    max_consecutive_deaths: int = Field(3, ge=1, le=100, description="deaths in a row that stop the run")
    restart_backoff_s: float = Field(0.5, ge=0, description="wait before the first restart; doubles per death")
    restart_backoff_max_s: float = Field(10.0, ge=0, description="cap of the restart backoff")
    log_path: Path | None = Field(
        None, description="the model process's log (stderr); default: local-model.log beside llm.cache_path"
    )


class LLMConfig(BaseModel):
    """Which chat model drives LLM users (and, later, LLM agents) and how it is called.

    `backend="local"` runs a GGUF model (default: the bundled Gemma 3 270M) through
    llama-cpp-python (extra `recoworld[local]`) in a supervised child process (`local`);
    `backend="openai"` talks to any OpenAI-compatible server.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "openai"] = "local"
    model: str | None = Field(None, description="server model name; the GGUF file name for local")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key: SecretStr | None = Field(None, description="falls back to $OPENAI_API_KEY; never written anywhere")
    model_path: Path | None = Field(None, description="local GGUF file; default: the bundled Gemma 3 270M")
    n_ctx: int = Field(4096, ge=256, description="local context window in tokens")
    n_threads: int | None = Field(None, ge=1, description="local CPU threads; default: llama.cpp's choice")
    local: LocalModelConfig = Field(default_factory=LocalModelConfig, description="local model process")
    structured_output: StructuredOutput = Field(
        "auto", description="how JSON is requested; 'auto' probes the server once, on the first cache miss"
    )
    tool_calling: Literal["native", "json"] = Field(
        "native", description="'json' turns tools into a constrained JSON action schema (servers without tools)"
    )
    sampling: SamplingParams = SamplingParams()
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(2, ge=0, le=10, description="retries per request before repair or giving up")
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff after a transport error; doubles")
    repair: bool = Field(True, description="after the retries, show the model its invalid reply and the error")
    concurrency: int = Field(8, ge=1, le=1024, description="requests in flight at once on the async path")
    cache: CacheMode = Field(
        "write", description="write: replay hits, record misses; read: replay hits, record nothing; off"
    )
    cache_path: Path = Field(Path(".recoworld_cache/llm.sqlite"), description="SQLite record/replay cache")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens, for cost reports")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    budget_usd: float | None = Field(None, gt=0, description="stop the study once the estimated cost reaches this")
    budget_tokens: int | None = Field(None, gt=0, description="stop the study once this many tokens are used")
