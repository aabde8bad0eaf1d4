"""Chat backends for LLM users and agents: OpenAI-compatible servers and a supervised local llama.cpp model.

The contract is `ChatBackend.complete(messages, spec, params) -> validated object` (and
`acomplete` for many requests in flight); see `recoworld.llm.backend` for the full API,
retry/repair rules and caching; `recoworld.llm.health` for the health check before a run and
the fallback-rate circuit breaker, `recoworld.llm.ledger` for a study-wide budget. Nothing
here imports `openai` or `llama_cpp` until a backend sends its first request.
"""

from recoworld.llm.backend import (
    ChatBackend,
    Structured,
    Tool,
    ToolCall,
    Tools,
    make_backend,
    shared_backend,
    shared_usage,
)
from recoworld.llm.cache import ResponseCache
from recoworld.llm.config import LLMConfig, LocalModelConfig, SamplingParams
from recoworld.llm.errors import (
    BudgetExceeded,
    CacheUnreadable,
    FallbackRateExceeded,
    LLMError,
    LLMOutputError,
    LLMRunHalted,
    LLMServerUnreachable,
    LLMUnavailable,
    ReplayMiss,
)
from recoworld.llm.health import check_server
from recoworld.llm.ledger import BudgetLedger
from recoworld.llm.usage import Usage

__all__ = [
    "BudgetExceeded",
    "BudgetLedger",
    "CacheUnreadable",
    "ChatBackend",
    "FallbackRateExceeded",
    "LLMConfig",
    "LLMError",
    "LLMOutputError",
    "LLMRunHalted",
    "LLMServerUnreachable",
    "LLMUnavailable",
    "LocalModelConfig",
    "ReplayMiss",
    "ResponseCache",
    "SamplingParams",
    "Structured",
    "Tool",
    "ToolCall",
    "Tools",
    "Usage",
    "check_server",
    "make_backend",
    "shared_backend",
    "shared_usage",
]
