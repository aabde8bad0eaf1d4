"""Chat backends for LLM users and agents: OpenAI-compatible servers and a supervised local llama.cpp model.

The contract is `ChatBackend.complete(messages, spec, params) -> validated object` (and
`acomplete` for many requests in flight); see `recoworld.llm.backend` for the full API,
retry/repair rules and caching. Nothing here imports `openai` or `llama_cpp` until a
backend sends its first request.
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
from recoworld.llm.errors import BudgetExceeded, LLMError, LLMOutputError, LLMUnavailable
from recoworld.llm.usage import Usage

__all__ = [
    "BudgetExceeded",
    "ChatBackend",
    "LLMConfig",
    "LLMError",
    "LLMOutputError",
    "LLMUnavailable",
    "LocalModelConfig",
    "ResponseCache",
    "SamplingParams",
    "Structured",
    "Tool",
    "ToolCall",
    "Tools",
    "Usage",
    "make_backend",
    "shared_backend",
    "shared_usage",
]
