"""Configs of the chat backends, as they appear in `WorldConfig.llm` and on the command line.

Kept free of any client import so that `recoworld.config` can embed them cheaply.
The API key is a `SecretStr`: it prints and serialises as '**********', so a dumped
config, a log line or a report never carries it. Prefer the `OPENAI_API_KEY` variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

StructuredOutput = Literal["auto", "json_schema", "json_object", "prompt"]
CacheMode = Literal["read", "write", "replay", "off"]

#: Where the cache goes when neither `cache_path` nor a run's output folder says (library use).
DEFAULT_CACHE_PATH = Path(".recoworld_cache/llm.sqlite")
#: The cache file of a run, relative to its output folder (`LLMConfig.for_run`).
RUN_CACHE = Path("llm-cache/llm.sqlite")
#: The study-wide budget ledger, relative to a study's output folder.
RUN_LEDGER = Path("llm-budget.json")


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
    decoding: Literal["schema", "grammar"] = Field(
        "schema", description="schema: write the reply from its JSON schema, the model choosing only where the "
        "schema leaves a choice (valid by construction, several times faster); grammar: llama.cpp's "
        "grammar-constrained sampling of every token (also used for schemas outside the schema decoder's subset)"
    )
    batch: int = Field(
        1, ge=1, le=64, description="schema decoding: requests in flight (users' turns of one step) decoded "
        "together, each in its own sequence of one llama.cpp context (memory: batch x n_ctx tokens of cache). "
        "Above 1, a reply can depend on which requests shared its batch (llama.cpp's kernels vary with a step's "
        "size), so runs reproduce through the LLM cache, not from the seed alone; 1 keeps replies seed-exact"
    )
    cache_slots: int = Field(
        8, ge=1, le=256, description="schema decoding: sequences the model keeps cached, each with its own "
        "cache; a call reuses the longest prefix any of them holds, copied into the least recently used one "
        "when that sequence holds another user's persona, so users who take turns each keep their own system "
        "prompt and persona cached. Memory: cache_slots x n_ctx tokens of cache (about 18 KB a token on Gemma 3 "
        "270M: 590 MB at 8 x 4096). Set it to at least the users in flight per model process; with fewer, users "
        "evict each other's personas"
    )
    call_timeout_s: float = Field(900.0, gt=0, description="a reply slower than this means a hung model: kill it")
    load_timeout_s: float = Field(300.0, gt=0, description="time allowed for the child to load the model")
    max_consecutive_deaths: int = Field(3, ge=1, le=100, description="deaths in a row that stop the run")
    restart_backoff_s: float = Field(0.5, ge=0, description="wait before the first restart; doubles per death")
    restart_backoff_max_s: float = Field(10.0, ge=0, description="cap of the restart backoff")
    log_path: Path | None = Field(
        None, description="the model process's log (stderr); default: local-model.log beside the LLM cache"
    )

    @model_validator(mode="after")
    def _batch_fits_the_slots(self) -> LocalModelConfig:
        if self.batch > self.cache_slots:
            raise ValueError(f"batch ({self.batch}) decodes each request in its own cached sequence: it cannot "
                             f"exceed cache_slots ({self.cache_slots})")
        return self


class LLMConfig(BaseModel):
    """Which chat model drives LLM users (and, later, LLM agents) and how it is called.

    `backend="local"` runs a GGUF model (default: the bundled Gemma 3 270M) through
    llama-cpp-python (extra `recoworld[local]`) in a supervised child process (`local`);
    `backend="openai"` talks to any OpenAI-compatible server.

    Reliability: runs probe an OpenAI-compatible server once before they start
    (`recoworld.llm.health.check_server`; skipped with `cache="replay"`, which never calls the
    model). During a run, more than `max_fallback_rate` x `fallback_window` failed model calls
    among the last `fallback_window` stop it with `FallbackRateExceeded` instead of letting the
    parametric fallback quietly take over. Budgets are checked before every model call; in a
    study they are charged to one ledger file shared by all workers (`budget_ledger`), so
    they hold for the whole study, not per worker.

    The cache lives at `cache_path` when set (share one file between runs that way), else
    under the run's output folder (`for_run`: `<out>/llm-cache/llm.sqlite`), else, outside a
    run, at `.recoworld_cache/llm.sqlite`.
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
    review_mode: Literal["slate", "item"] = Field(
        "slate", description="LLM users: 'slate' = one call per turn for the whole slate; 'item' = one call per "
        "item, in slate order, the mindset updated between calls, stopping when the user leaves (never sees "
        "later items; costs up to slate_size calls a turn)"
    )
    reasons: bool = Field(
        False, description="LLM users: also ask for a short free-text reason per item (in `info['reasons']` and "
        "the trajectory). Off by default: on the local model every free-text token is a step over the whole "
        "vocabulary, and the reasons were a fifth of a turn's steps"
    )
    cache: CacheMode = Field(
        "write", description="write: replay hits, record misses; read: replay hits, record nothing; "
        "replay: replay hits, never call the model (a miss stops the run; no server needed); off"
    )
    cache_path: Path | None = Field(
        None, description="SQLite record/replay cache; default: llm-cache/llm.sqlite under the run's output "
        "folder (.recoworld_cache/llm.sqlite outside a run). Set it to share one cache between runs"
    )
    max_fallback_rate: float = Field(
        0.25, ge=0, le=1, description="stop the run once more than this share of the last `fallback_window` "
        "model calls failed (fell back); 1 disables the check"
    )
    fallback_window: int = Field(20, ge=1, le=100_000, description="model calls the fallback rate is taken over")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens, for cost reports")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")
    budget_usd: float | None = Field(None, gt=0, description="stop the study once the estimated cost reaches this")
    budget_tokens: int | None = Field(None, gt=0, description="stop the study once this many tokens are used")
    budget_requests: int | None = Field(None, gt=0, description="stop the study before model call number N+1")
    budget_ledger: Path | None = Field(
        None, description="file that charges the budgets across processes (set by studies under their output "
        "folder); default: each process keeps its own account"
    )

    @property
    def resolved_cache_path(self) -> Path:
        """The cache file this config uses: `cache_path`, else the default outside a run."""
        return self.cache_path if self.cache_path is not None else DEFAULT_CACHE_PATH

    def for_run(self, out: str | Path, *, ledger: bool = False) -> LLMConfig:
        """This config with the defaults a run's output folder decides filled in.

        The cache goes to `<out>/llm-cache/llm.sqlite` unless `cache_path` is set; with
        `ledger` (studies: many worker processes), budgets are charged to `<out>/llm-budget.json`
        unless `budget_ledger` is set. Explicit settings are kept as they are.
        """
        update: dict[str, Path] = {}
        if self.cache_path is None:
            update["cache_path"] = Path(out) / RUN_CACHE
        if ledger and self.budget_ledger is None:
            update["budget_ledger"] = Path(out) / RUN_LEDGER
        return self.model_copy(update=update) if update else self
